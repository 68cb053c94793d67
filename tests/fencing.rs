//! Fencing numbers (SPEC §9): a token write made under an older slot lease than the stored
//! token's is discarded — in the `tokens` table (SQLite and PostgreSQL) and in Redis.

mod common;

use std::time::Duration;

use chrono::Utc;
use tokend::cache::RedisStore;
use tokend::db::models::NewToken;
use tokend::db::Pool;

fn token<'a>(value: &'a str, fence: i64) -> NewToken<'a> {
    let now = Utc::now().naive_utc();
    NewToken {
        site_name: "court_zxfw",
        account: "alice",
        token: value,
        token_type: "Bearer",
        expires_at: now + chrono::Duration::hours(1),
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
}

#[test]
fn the_tokens_table_discards_stale_writes() {
    let dir = tempfile::tempdir().unwrap();
    check_table(&format!("sqlite://{}/t.db", dir.path().display()));
    if let Some(pg) = common::PgDatabase::create() {
        check_table(&pg.url);
    }
}

#[actix_rt::test]
async fn redis_discards_stale_token_entries() {
    if !common::redis_available() {
        return;
    }
    let store = RedisStore::connect(&common::redis_url()).unwrap();
    let key = format!("tokend-fence-{}:token:court_zxfw:1", common::unique());
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
