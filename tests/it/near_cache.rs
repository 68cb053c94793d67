//! Issue 23: with Redis, a cached token is served from the near cache without a round trip,
//! and a change made on another instance (an invalidation) is heard at once through the
//! channel of changes, not after the near cache's window.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support;
use crate::support::harness::Harness;

/// Waits until the instance says (in `/cache-stats`) that it hears the changes.
async fn wait_until_hearing(h: &Harness) {
    support::wait_until(
        "the instance hearing changes",
        Duration::from_secs(10),
        || async {
            let (_, stats) = h
                .api_get("/api/v1/automation/performance/cache-stats")
                .await;
            (stats["data"]["backend"]["changes_heard"] == true).then_some(())
        },
    )
    .await;
}

fn token_of(body: &serde_json::Value) -> String {
    body["data"]["token"].as_str().expect("a token").to_string()
}

#[actix_rt::test]
async fn an_invalidation_on_one_instance_is_heard_by_the_other_at_once() {
    if !support::redis_available() {
        return;
    }
    let prefix = format!("tokend-test-{}", support::unique());
    // One database for both, as two hosts of one deployment share it: the invalidated token
    // must leave it too.
    let shared = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", shared.path().join("tokend.db").display());
    let (a, b) = Harness::builder()
        .redis(Some(&support::redis_url()))
        .prefix(&prefix)
        .database(&database)
        .start_pair()
        .await;
    a.add_account("alice", "pw-alice", true);
    wait_until_hearing(&a).await;
    wait_until_hearing(&b).await;
    let site = json!({"site_name": "court_zxfw"});
    for round in 0..5 {
        let (status, first) = a.acquire(site.clone()).await;
        assert_eq!(status, 200, "{first}");
        // A second acquire on A is a hit: its near copy is fresh (well inside the 1 s
        // window a copy had before changes were heard).
        let (_, hit) = a.acquire(site.clone()).await;
        assert_eq!(hit["data"]["source"], "cache", "{hit}");
        let old = token_of(&hit);
        let (status, done) = b
            .post(
                "invalidate",
                json!({"site_name": "court_zxfw", "account": "alice"}),
            )
            .await;
        assert_eq!(status, 200, "{done}");
        let (status, next) = a.acquire(site.clone()).await;
        assert_eq!(status, 200, "{next}");
        assert_ne!(
            token_of(&next),
            old,
            "round {round}: A handed out the token B invalidated: {next}"
        );
    }
}

/// Counts the `GET`s of keys under `prefix` that Redis runs, seen through `MONITOR`.
struct GetCounter {
    gets: Arc<AtomicUsize>,
    ready: Arc<AtomicUsize>,
}

impl GetCounter {
    fn start(prefix: &str) -> GetCounter {
        let url = support::redis_url();
        let hostport = url
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap()
            .rsplit('@')
            .next()
            .unwrap()
            .to_string();
        let (gets, ready) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (g, r) = (gets.clone(), ready.clone());
        let needle = format!("\"GET\" \"{prefix}:");
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(hostport).expect("connect for MONITOR");
            stream.write_all(b"MONITOR\r\n").expect("MONITOR");
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if line.starts_with("+OK") {
                    r.store(1, Ordering::SeqCst);
                } else if line.contains(&needle) {
                    g.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        GetCounter { gets, ready }
    }
}

#[actix_rt::test]
async fn a_near_cached_token_costs_no_round_trip_while_changes_are_heard() {
    if !support::redis_available() {
        return;
    }
    let prefix = format!("tokend-test-{}", support::unique());
    let h = Harness::builder()
        .redis(Some(&support::redis_url()))
        .prefix(&prefix)
        .start()
        .await;
    h.add_account("alice", "pw-alice", true);
    wait_until_hearing(&h).await;
    let site = json!({"site_name": "court_zxfw"});
    assert_eq!(h.acquire(site.clone()).await.0, 200);
    assert_eq!(h.acquire(site.clone()).await.0, 200);
    let counter = GetCounter::start(&prefix);
    support::wait_until("MONITOR running", Duration::from_secs(5), || {
        let ready = counter.ready.clone();
        async move { (ready.load(Ordering::SeqCst) == 1).then_some(()) }
    })
    .await;
    // Three times the window a copy had before changes were heard (1 s).
    let until = Instant::now() + Duration::from_secs(3);
    let mut hits = 0;
    while Instant::now() < until {
        let (status, body) = h.acquire(site.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["source"], "cache", "{body}");
        hits += 1;
    }
    assert!(hits > 10, "only {hits} acquires in 3 s");
    assert_eq!(
        counter.gets.load(Ordering::SeqCst),
        0,
        "{hits} cached acquires asked Redis for the entry"
    );
}
