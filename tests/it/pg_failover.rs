//! PostgreSQL that fails over (issue 24, item 4), on private servers started by the test: a
//! `database.url` that lists several hosts (`postgres://h1,h2/db?target_session_attrs=
//! read-write`, libpq's syntax) skips a first host that is down or silent, asks for the
//! primary even when the URL does not say so, and when the primary goes away tokend spools the
//! history, finds the promoted standby by itself and replays the spool there: every
//! acquisition, made before, during or after the failover, has exactly one row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use serde_json::json;

use crate::support::harness::Harness;
use crate::support::pg_server::{self, PgServer, SilentPort};
use crate::support::wait_until;

/// How long the pool may take to find the new primary and the spool to be replayed there
/// (the pool's probe runs every 0.5 s, the spool is retried every 5 s).
const FAILOVER_WITHIN: Duration = Duration::from_secs(30);

/// `postgres://postgres:PASSWORD@127.0.0.1:P1,127.0.0.1:P2/tokend?target_session_attrs=
/// read-write`. The servers trust every connection, so the password is never asked for: it
/// is there to be hidden wherever the URL is shown.
fn multi_host_url(ports: [u16; 2]) -> String {
    format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{},127.0.0.1:{}/tokend\
         ?target_session_attrs=read-write",
        ports[0], ports[1]
    )
}

const PASSWORD: &str = "failover-pw-9d2";

/// The acquisition ids of the history rows on one server, in the order they were written.
fn stored_ids(server: &PgServer) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Text)]
        acquisition_id: String,
    }
    diesel::sql_query("SELECT acquisition_id FROM token_acquisition_history ORDER BY id")
        .load::<Id>(&mut server.connect())
        .unwrap()
        .into_iter()
        .map(|row| row.acquisition_id)
        .collect()
}

/// A forced login for `alice`: its acquisition id.
async fn acquire(h: &Harness) -> String {
    let (status, body) = h
        .acquire(json!({"site_name": "court_zxfw", "account": "alice", "force_refresh": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["acquisition_id"]
        .as_str()
        .expect("an acquisition id")
        .to_string()
}

/// Runs blocking work (a server program) off the test's thread, which tokend's actors share.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    actix_web::rt::task::spawn_blocking(work).await.unwrap()
}

#[actix_rt::test]
async fn a_first_host_that_is_down_is_skipped() {
    let Some(primary) = off_thread(PgServer::primary).await else {
        return;
    };
    let nobody = pg_server::free_port();
    let url = multi_host_url([nobody, primary.port]);
    let h = Harness::builder().database(&url).start().await;
    h.add_account("alice", "pw-alice", true);
    let id = acquire(&h).await;

    let rows = h.history().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].acquisition_id, id);
    assert_eq!(stored_ids(&primary), [id]);
    let database = &h.health().await["components"]["database"];
    assert_eq!(database["status"], "up", "{database}");
    let shown = database.to_string();
    assert!(
        shown.contains(&format!("127.0.0.1:{nobody},127.0.0.1:{}", primary.port)),
        "both hosts are named: {shown}"
    );
    assert!(!shown.contains(PASSWORD), "the password shows: {shown}");
}

/// A first host that does not answer at all (not even with a refusal) costs one
/// `connect_timeout` per new connection; for a URL of several hosts that is 2 s, within the
/// pool's 3 s wait, so the database is never taken for unreachable.
#[actix_rt::test]
async fn a_first_host_that_does_not_answer_costs_no_outage() {
    let Some(primary) = off_thread(PgServer::primary).await else {
        return;
    };
    let silent = SilentPort::start();
    let h = Harness::builder()
        .database(&multi_host_url([silent.port, primary.port]))
        .start()
        .await;
    h.add_account("alice", "pw-alice", true);
    let id = acquire(&h).await;
    assert_eq!(h.tokend.state.broker.flush_history().await.unwrap(), 0);
    assert_eq!(stored_ids(&primary), [id]);
    assert_eq!(
        h.tokend.state.pool.comebacks(),
        0,
        "the pool took the database for unreachable"
    );
}

/// A URL of several hosts that does not say which session it wants gets the primary all the
/// same (tokend adds `target_session_attrs=read-write`): a standby listed first would take
/// the connections and refuse every write.
#[actix_rt::test]
async fn several_hosts_without_target_session_attrs_still_mean_the_primary() {
    let Some(primary) = off_thread(PgServer::primary).await else {
        return;
    };
    let primary = Arc::new(primary);
    let standby = {
        let primary = primary.clone();
        off_thread(move || PgServer::standby_of(&primary)).await
    };
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/tokend",
        standby.port, primary.port
    );
    let h = Harness::builder().database(&url).start().await;
    h.add_account("alice", "pw-alice", true);
    let id = acquire(&h).await;
    assert_eq!(h.tokend.state.broker.flush_history().await.unwrap(), 0);
    assert_eq!(stored_ids(&primary), [id]);
}

#[actix_rt::test]
async fn after_a_failover_the_pool_finds_the_new_primary_and_no_row_is_lost() {
    let Some(primary) = off_thread(PgServer::primary).await else {
        return;
    };
    let primary = Arc::new(primary);
    let standby = {
        let primary = primary.clone();
        Arc::new(off_thread(move || PgServer::standby_of(&primary)).await)
    };
    let h = Harness::builder()
        .database(&multi_host_url([primary.port, standby.port]))
        .start()
        .await;
    h.add_account("alice", "pw-alice", true);

    let mut acquired = Vec::new();
    for _ in 0..3 {
        acquired.push(acquire(&h).await);
    }
    assert_eq!(h.tokend.state.broker.flush_history().await.unwrap(), 0);
    assert_eq!(stored_ids(&primary), acquired);
    {
        let (primary, standby) = (primary.clone(), standby.clone());
        off_thread(move || {
            pg_server::wait_replayed(&primary, &standby, Duration::from_secs(30));
        })
        .await;
    }

    // The primary dies: no host takes writes (the standby is read-only), so acquisitions go
    // on and their rows wait in the spool.
    {
        let primary = primary.clone();
        off_thread(move || primary.stop_immediate()).await;
    }
    let mut during = Vec::new();
    for _ in 0..3 {
        during.push(acquire(&h).await);
    }
    let waiting = h.tokend.state.broker.flush_history().await.unwrap();
    assert_eq!(waiting, during.len(), "the outage's rows wait in the spool");
    acquired.extend(during);

    // The standby is promoted: tokend finds it by itself and replays the spool there.
    {
        let standby = standby.clone();
        off_thread(move || standby.promote()).await;
    }
    let promoted = Instant::now();
    for _ in 0..2 {
        acquired.push(acquire(&h).await);
    }
    let stored = {
        let (standby, expected) = (standby.clone(), acquired.len());
        wait_until(
            "every acquisition's row on the new primary",
            FAILOVER_WITHIN,
            || {
                let standby = standby.clone();
                async move {
                    let stored = off_thread(move || stored_ids(&standby)).await;
                    (stored.len() >= expected).then_some(stored)
                }
            },
        )
        .await
    };
    eprintln!(
        "failover: every row on the new primary {:.1} s after the promotion",
        promoted.elapsed().as_secs_f64()
    );
    let mut sorted = stored.clone();
    sorted.sort();
    let mut expected = acquired.clone();
    expected.sort();
    assert_eq!(
        sorted, expected,
        "each acquisition once, none lost: {stored:?}"
    );
    // Nothing is left in the spool, and the pool serves from the new primary.
    assert_eq!(h.tokend.state.broker.flush_history().await.unwrap(), 0);
    let database = &h.health().await["components"]["database"];
    assert_eq!(database["status"], "up", "{database}");
    assert!(!database.to_string().contains(PASSWORD), "{database}");
}
