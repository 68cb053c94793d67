//! The login limits of `[concurrency]` hold exactly: a real portal that records how many
//! logins it sees at once never sees more than 3 in total, 2 per site, 1 per account — in one
//! process, and with three processes sharing one Redis. A crashed instance's slot is freed
//! after its lease.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::support::portal::{AccountBehaviour, Portal};
use crate::support::{self, write_config, Daemon};

const ACCOUNTS: [(&str, &str); 6] = [
    ("court_a", "a1"),
    ("court_a", "a2"),
    ("court_a", "a3"),
    ("court_b", "b1"),
    ("court_b", "b2"),
    ("court_b", "b3"),
];

fn config_text(portal: &Portal, database: &str, redis: Option<&str>, extra: &str) -> String {
    let redis = redis.map_or(String::new(), |prefix| {
        format!(
            "[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
            support::redis_url()
        )
    });
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{database}\"\n{redis}\
         [concurrency]\nmax_concurrent_acquisitions = 3\nmax_concurrent_per_site = 2\nmax_concurrent_per_account = 1\n{extra}\n"
    );
    for site in ["court_a", "court_b"] {
        text += &format!(
            "[[sites]]\nname = \"{site}\"\ndriver = \"http\"\nlogin_url = \"{}\"\nextra_fields = {{ site = \"{site}\" }}\n",
            portal.login_url()
        );
    }
    text
}

fn add_accounts(dir: &Path, config: &Path, portal: &Portal) {
    for (site, account) in ACCOUNTS {
        portal.state.set_account(
            account,
            AccountBehaviour {
                password: format!("pw-{account}"),
                ..Default::default()
            },
        );
        support::add_account(dir, config, site, account, &format!("pw-{account}"));
    }
}

/// 30 callers, spread over the daemons, each making 6 forced acquisitions one after the
/// other for random accounts (concurrent callers of one account share a login, so the
/// callers must keep coming back to make many logins).
async fn hammer(addrs: &[std::net::SocketAddr]) -> Vec<(u16, Value)> {
    let client = reqwest::Client::new();
    let callers = (0..30).map(|i| {
        let client = client.clone();
        let addr = addrs[i % addrs.len()];
        async move {
            let mut answers = Vec::new();
            for _ in 0..6 {
                let (site, account) = ACCOUNTS[fastrand::usize(..ACCOUNTS.len())];
                let response = client
                    .post(format!("http://{addr}/api/v1/automation/tokens/acquire"))
                    .json(&json!({"site_name": site, "account": account, "force_refresh": true}))
                    .send()
                    .await
                    .unwrap();
                answers.push((response.status().as_u16(), response.json().await.unwrap()));
            }
            answers
        }
    });
    join_all(callers).await.into_iter().flatten().collect()
}

fn assert_limits_held(portal: &Portal, answers: &[(u16, Value)]) {
    for (status, body) in answers {
        assert_eq!(*status, 200, "{body}");
    }
    let state = &portal.state;
    let global = state.max_in_flight.load(Ordering::SeqCst);
    let per_site = state.max_in_flight_per_site.lock().unwrap().clone();
    let per_account = state.max_in_flight_per_account.lock().unwrap().clone();
    assert!(global <= 3, "the portal saw {global} logins at once");
    assert!(per_site.values().all(|n| *n <= 2), "per site: {per_site:?}");
    assert!(
        per_account.values().all(|n| *n <= 1),
        "per account: {per_account:?}"
    );
    // The load was enough to reach the limits, so the test shows them holding.
    assert_eq!(global, 3, "the test did not load the portal enough");
    assert!(state.issued() >= 20, "only {} logins", state.issued());
}

#[test]
fn limits_hold_in_one_process() {
    let portal = Portal::start();
    *portal.state.latency.lock().unwrap() = Duration::from_millis(40);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/tokend.db", dir.path().display());
    let config = write_config(dir.path(), &config_text(&portal, &db, None, ""));
    add_accounts(dir.path(), &config, &portal);
    let daemon = Daemon::start(dir.path(), &config);
    let answers = actix_web::rt::System::new().block_on(hammer(&[daemon.addr]));
    assert_limits_held(&portal, &answers);
}

#[test]
fn limits_hold_across_three_processes_on_one_redis() {
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    if !support::redis_available() {
        return;
    }
    let portal = Portal::start();
    *portal.state.latency.lock().unwrap() = Duration::from_millis(40);
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("tokend-limits-{}", support::unique());
    let config = write_config(
        dir.path(),
        &config_text(&portal, &pg.url, Some(&prefix), ""),
    );
    add_accounts(dir.path(), &config, &portal);
    let daemons: Vec<Daemon> = (0..3).map(|_| Daemon::start(dir.path(), &config)).collect();
    let addrs: Vec<_> = daemons.iter().map(|d| d.addr).collect();
    let answers = actix_web::rt::System::new().block_on(hammer(&addrs));
    assert_limits_held(&portal, &answers);
    // Every instance runs on the shared slots, and every slot was released (releases are
    // sent right after the answers, so they may take a moment to land).
    for daemon in &daemons {
        let url = format!(
            "http://{}/api/v1/automation/performance/resource-usage",
            daemon.addr
        );
        let started = Instant::now();
        loop {
            let usage: Value = actix_web::rt::System::new()
                .block_on(async { reqwest::get(&url).await.unwrap().json().await.unwrap() });
            assert_eq!(usage["data"]["slots_mode"], "redis", "{usage}");
            if usage["data"]["shared_slots"]["active_total"] == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "slots still held: {usage}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_killed_instance_frees_its_slot_after_the_lease() {
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    if !support::redis_available() {
        return;
    }
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("tokend-kill-{}", support::unique());
    let config = write_config(
        dir.path(),
        &config_text(
            &portal,
            &pg.url,
            Some(&prefix),
            // A dead holder's lock lapses after lock_timeout (a live one renews it).
            "acquisition_timeout = 3\nlock_timeout = 2\n",
        ),
    );
    add_accounts(dir.path(), &config, &portal);
    let victim = Daemon::start(dir.path(), &config);
    // The survivor would itself wait longer than the victim's lease.
    let survivor_config = dir.path().join("survivor.toml");
    std::fs::write(
        &survivor_config,
        config_text(
            &portal,
            &pg.url,
            Some(&prefix),
            "acquisition_timeout = 30\n",
        ),
    )
    .unwrap();
    let survivor = Daemon::start(dir.path(), &survivor_config);

    // The victim starts a slow login for a1, holding a1's lock and slot, and is killed -9.
    *portal.state.latency.lock().unwrap() = Duration::from_secs(30);
    let victim_url = victim.url("/api/v1/automation/tokens/acquire");
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let _ = reqwest::Client::new()
                .post(victim_url)
                .json(&json!({"site_name": "court_a", "account": "a1"}))
                .send()
                .await;
        })
    });
    let started = Instant::now();
    while portal.state.attempts_of("a1") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the victim never logged in"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut victim = victim;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let killed_at = Instant::now();
    *portal.state.latency.lock().unwrap() = Duration::from_millis(20);

    // The survivor gets a1 only once the dead instance's lease (3 s) has expired.
    let (status, body) = actix_web::rt::System::new().block_on(async {
        let response = reqwest::Client::new()
            .post(survivor.url("/api/v1/automation/tokens/acquire"))
            .json(&json!({"site_name": "court_a", "account": "a1", "force_refresh": true}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    });
    let waited = killed_at.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["account"], "a1");
    assert!(
        waited >= Duration::from_millis(1500),
        "the slot was taken while the lease was live ({waited:?})"
    );
    assert!(
        waited < Duration::from_secs(10),
        "the slot was not recovered after its lease ({waited:?})"
    );
}
