//! Fencing numbers (SPEC §9): a token write made under an older slot lease than the stored
//! token's is discarded — in the `tokens` table (SQLite and PostgreSQL) and in Redis — and
//! the fencing stays right when Redis restarts empty.

use std::time::Duration;

use chrono::Utc;
use tokend::cache::RedisStore;
use tokend::db::models::NewToken;
use tokend::db::Pool;

use crate::support::{self, harness, redis_server};

fn token<'a>(value: &'a str, fence: i64) -> NewToken<'a> {
    token_expiring(value, fence, chrono::Duration::hours(1))
}

fn token_expiring<'a>(value: &'a str, fence: i64, life: chrono::Duration) -> NewToken<'a> {
    let now = Utc::now().naive_utc();
    NewToken {
        site_name: "court_zxfw",
        account: "alice",
        token: value,
        token_type: "Bearer",
        expires_at: now + life,
        created_at: now,
        updated_at: now,
        fence,
    }
}

fn check_table(url: &str) {
    let pool = Pool::connect(url, 2).unwrap();
    pool.migrate().unwrap();
    let mut conn = pool.get().unwrap();
    use tokend::db::tokens::{find, upsert};
    assert!(upsert(&mut conn, &token("v1.newer", 7)).unwrap());
    assert!(
        !upsert(&mut conn, &token("v1.stale", 5)).unwrap(),
        "an older fence must be discarded"
    );
    assert_eq!(
        find(&mut conn, "court_zxfw", "alice")
            .unwrap()
            .unwrap()
            .token,
        "v1.newer"
    );
    assert!(upsert(&mut conn, &token("v1.next", 9)).unwrap());
    // In-process slots write unfenced (0): always accepted.
    assert!(upsert(&mut conn, &token("v1.local", 0)).unwrap());
    assert_eq!(
        find(&mut conn, "court_zxfw", "alice")
            .unwrap()
            .unwrap()
            .token,
        "v1.local"
    );
    // An expired stored token may always be replaced, whatever its fence.
    let dead = token_expiring("v1.dead", 1 << 60, chrono::Duration::seconds(-1));
    assert!(upsert(&mut conn, &dead).unwrap());
    assert!(
        upsert(&mut conn, &token("v1.after-restart", 3)).unwrap(),
        "an expired token froze the row"
    );
    assert_eq!(tokend::db::tokens::max_fence(&mut conn).unwrap(), 3);
}

#[test]
fn the_tokens_table_discards_stale_writes() {
    let dir = tempfile::tempdir().unwrap();
    check_table(&format!("sqlite://{}/t.db", dir.path().display()));
    if let Some(pg) = support::PgDatabase::create() {
        check_table(&pg.url);
    }
}

#[actix_rt::test]
async fn redis_discards_stale_token_entries() {
    if !support::redis_available() {
        return;
    }
    let link = tokend::redis::RedisLink::open(&support::redis_url(), "tokend-fence").unwrap();
    let store = RedisStore::new(link);
    let key = format!("tokend-fence-{}:token:court_zxfw:1", support::unique());
    let ttl = Duration::from_secs(60);
    assert!(store
        .set_fenced(&key, r#"{"fence":7,"token":"newer"}"#, ttl, 7)
        .await
        .unwrap());
    assert!(!store
        .set_fenced(&key, r#"{"fence":5,"token":"stale"}"#, ttl, 5)
        .await
        .unwrap());
    assert!(store.get(&key).await.unwrap().unwrap().contains("newer"));
    assert!(store
        .set_fenced(&key, r#"{"fence":8,"token":"next"}"#, ttl, 8)
        .await
        .unwrap());
    store.delete(&key).await.unwrap();
}

/// Redis restarted empty: the fencing counter is gone, and the next login's token must still
/// reach the `tokens` table (before, every write was discarded as stale until the new counter
/// caught up with the old one).
#[actix_rt::test]
async fn fencing_survives_a_redis_restarted_empty() {
    let Some(mut redis) = redis_server::RedisServer::start(&[]) else {
        return;
    };
    let h = harness::Harness::start(Some(&redis.url()), "").await;
    h.add_account("alice", "pw-alice", true);
    let stored = || {
        let pool = h.tokend.state.pool.clone();
        async move {
            pool.run(|conn| tokend::db::tokens::find(conn, "court_zxfw", "alice"))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let force = serde_json::json!({"site_name": "court_zxfw", "force_refresh": true});
    for _ in 0..3 {
        assert_eq!(h.acquire(force.clone()).await.0, 200);
    }
    let before = stored().await;
    assert!(before.fence > 0, "the logins ran under Redis slots");

    redis.restart_empty();
    // The shared connection finds the new Redis before the next login, so that the login
    // runs under a Redis slot (not the in-process fallback, which is unfenced).
    let store = match h.tokend.state.cache.store() {
        tokend::cache::CacheStore::Redis(store) => store.clone(),
        tokend::cache::CacheStore::Memory(_) => unreachable!(),
    };
    support::wait_until("Redis to come back", Duration::from_secs(10), || async {
        store.ping().await.ok()
    })
    .await;
    let (status, body) = h.acquire(force.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["source"], "login");
    let after = stored().await;
    assert!(
        after.fence > before.fence,
        "the new epoch ({}) is not newer than the old Redis's numbers ({})",
        after.fence,
        before.fence
    );
    assert_ne!(
        after.token, before.token,
        "the new token was discarded as stale"
    );
    // And the next epoch-mates go on from there.
    assert_eq!(h.acquire(force).await.0, 200);
    assert!(stored().await.fence > after.fence);
}

/// A login whose token the `tokens` table refuses as stale (a newer one is stored under a
/// later fence, by an instance that logged in meanwhile) does not leave its token cached: the
/// next caller gets the stored, newer token.
#[actix_rt::test]
async fn a_token_the_table_refuses_as_stale_is_not_served_from_the_cache() {
    if !support::redis_available() {
        return;
    }
    let h = harness::Harness::start(Some(&support::redis_url()), "").await;
    h.add_account("alice", "pw-alice", true);
    // A first login starts this Redis's fencing counter.
    let plain = serde_json::json!({"site_name": "court_zxfw"});
    assert_eq!(h.acquire(plain.clone()).await.0, 200);
    let newer = h
        .tokend
        .state
        .key
        .seal(
            "newer-token-from-another-instance",
            tokend::vault::crypto::SealContext::Token {
                site: "court_zxfw",
                account: "alice",
            },
        )
        .unwrap();
    let pool = h.tokend.state.pool.clone();
    pool.run(move |conn| tokend::db::tokens::upsert(conn, &token(&newer, i64::MAX / 2)).map(drop))
        .await
        .unwrap();
    // A forced refresh logs in (the stored token was issued before the caller arrived) under
    // the counter's next number, older than the stored token's...
    let force = serde_json::json!({"site_name": "court_zxfw", "force_refresh": true});
    let (status, body) = h.acquire(force).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["source"], "login");
    // ...and the table keeps the newer token, which is what the next caller gets.
    let (status, body) = h.acquire(plain).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["token"], "newer-token-from-another-instance",
        "the stale token was served: {body}"
    );
}
