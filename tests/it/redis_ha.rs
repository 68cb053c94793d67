//! Issue 24: tokend on Redis Sentinel and on Redis Cluster, real processes on 127.0.0.1
//! (support/redis_topology.rs), two tokend instances sharing each. A master killed under load
//! fails no cached acquire and both instances follow the new master within seconds; a failover
//! in the middle of a login never lets a second login of that account start; on a cluster the
//! single flight and the per-site limit hold across the instances. `/health` and
//! `/resource-usage` name the topology and the master(s).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::support;
use crate::support::harness::Harness;
use crate::support::redis_topology::{ClusterSet, SentinelSet};

/// The topologies themselves, without tokend: the sentinels fail over from a killed master
/// to the replica, which then takes writes; the cluster serves keys of every node (`redis-cli
/// -c` follows the redirections).
#[test]
fn the_topologies_fail_over_and_serve_every_slot() {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let Some(set) = SentinelSet::start() else {
                return;
            };
            let old = set.master_addr();
            redis_cli(&old, &["SET", "before", "1"]);
            // Replication is asynchronous: the write is on the replica before the kill.
            assert_eq!(redis_cli(&old, &["WAIT", "1", "5000"]), "1");
            assert_eq!(set.kill_master(), old);
            let new = set.wait_for_failover(&old, Duration::from_secs(30));
            assert_ne!(new, old);
            assert_eq!(redis_cli(&new, &["GET", "before"]), "1", "replicated");
            assert_eq!(redis_cli(&new, &["SET", "after", "2"]), "OK");
        });
        scope.spawn(|| {
            let Some(set) = ClusterSet::start() else {
                return;
            };
            let first = &set.addrs()[0];
            for n in 0..30 {
                let key = format!("k{n}");
                assert_eq!(redis_cli(first, &["-c", "SET", &key, &n.to_string()]), "OK");
            }
            for (n, addr) in set.addrs().iter().enumerate() {
                let key = format!("k{n}");
                assert_eq!(redis_cli(addr, &["-c", "GET", &key]), n.to_string());
            }
            let keys = set.keys_per_node();
            assert!(keys.iter().all(|&k| k > 0), "keys per node: {keys:?}");
            assert_eq!(keys.iter().sum::<u64>(), 30, "keys per node: {keys:?}");
        });
    });
}

/// `redis-cli -h HOST -p PORT ARGS…`'s output, trimmed (the command must succeed).
fn redis_cli(addr: &str, args: &[&str]) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = std::process::Command::new(crate::support::redis_server::cli_binary())
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?} at {addr} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How long an instance may take to connect to Redis at start.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// How long after the sentinels' failover both instances may take to report the new master.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(15);

/// `components.redis` of `/health`.
async fn redis_health(h: &Harness) -> Value {
    h.health().await["components"]["redis"].clone()
}

/// Polls `components.redis` of `/health` until `done` holds, failing the test (with the last
/// answer) after `within`.
async fn redis_health_until(
    h: &Harness,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let redis = redis_health(h).await;
        if done(&redis) {
            return redis;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}: components.redis is {redis}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `redis` of `/resource-usage`.
async fn redis_usage(h: &Harness) -> Value {
    h.api_get("/api/v1/automation/performance/resource-usage")
        .await
        .1["data"]["redis"]
        .clone()
}

/// The same accounts, in the same order, on both instances (each has a database of its own).
fn add_accounts(pair: [&Harness; 2], accounts: &[&str]) {
    for h in pair {
        for (n, account) in accounts.iter().enumerate() {
            h.add_account(account, &format!("pw-{account}"), n == 0);
        }
    }
}

/// `n` concurrent `body` acquires, spread over both instances; every answer must be 200.
/// Returns the answers.
async fn burst(pair: [&Harness; 2], n: usize, body: Value) -> Vec<Value> {
    let answers = join_all((0..n).map(|i| pair[i % 2].acquire(body.clone()))).await;
    answers
        .into_iter()
        .map(|(status, answer)| {
            assert_eq!(status, 200, "{answer}");
            answer
        })
        .collect()
}

/// `n` concurrent `force_refresh` callers of `account` over both instances cause exactly one
/// login, and all get its token.
async fn force_refresh_burst_logs_in_once(pair: [&Harness; 2], n: usize, account: &str) {
    let portal = &pair[0].portal;
    // Long enough that every caller arrives while the one login runs.
    *portal.state.latency.lock().unwrap() = Duration::from_millis(300);
    let before = portal.state.issued();
    let body = json!({"site_name": "court_zxfw", "account": account, "force_refresh": true});
    let answers = burst(pair, n, body).await;
    assert_eq!(
        portal.state.issued() - before,
        1,
        "{n} force_refresh callers over two instances, one login"
    );
    let tokens: std::collections::HashSet<&str> = answers
        .iter()
        .map(|a| a["data"]["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 1, "every caller gets the one new token");
    *portal.state.latency.lock().unwrap() = Duration::from_millis(50);
}

/// Both instances say `sentinel`, Redis `up` (once connected), and the master the sentinels
/// name.
async fn assert_sentinel_health(pair: [&Harness; 2], master: &str) {
    for h in pair {
        redis_health_until(h, "Redis up", START_DEADLINE, |r| r["status"] == "up").await;
        for redis in [redis_health(h).await, redis_usage(h).await] {
            assert_eq!(redis["topology"], "sentinel", "{redis}");
            assert_eq!(redis["status"], "up", "{redis}");
            assert_eq!(redis["master"], master, "{redis}");
        }
    }
}

/// A Sentinel set and two instances on it (one key prefix, one fake portal); `None` when
/// `redis-server` is missing outside CI.
async fn sentinel_pair() -> Option<(Arc<SentinelSet>, Harness, Harness)> {
    let set = Arc::new(SentinelSet::start()?);
    let (a, b) = Harness::builder()
        .redis_table(&set.config_lines())
        .start_pair()
        .await;
    Some((set, a, b))
}

/// The master killed while two instances serve a cached token as fast as they can: no acquire
/// fails; both instances report Redis up on the new master within seconds of the failover;
/// then 30 `force_refresh` callers over both instances cause one login.
#[actix_rt::test]
async fn a_sentinel_failover_under_load_fails_no_cached_acquire() {
    let Some((set, a, b)) = sentinel_pair().await else {
        return;
    };
    let pair = [&a, &b];
    add_accounts(pair, &["alice"]);
    assert_sentinel_health(pair, &set.master_addr()).await;
    let site = json!({"site_name": "court_zxfw"});
    let (status, warm) = a.acquire(site.clone()).await;
    assert_eq!(status, 200, "{warm}");
    let (status, hit) = b.acquire(site.clone()).await;
    assert_eq!(status, 200, "{hit}");
    assert_eq!(hit["data"]["source"], "cache", "B finds A's token: {hit}");

    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let load = join_all((0..8).map(|i| {
        let (h, site, stop, served) = (pair[i % 2], site.clone(), &stop, &served);
        async move {
            let mut failed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = h.acquire(site.clone()).await;
                if status != 200 {
                    failed.push(format!("{status} {body}"));
                }
                served.fetch_add(1, Ordering::SeqCst);
            }
            failed
        }
    }));
    let drive = async {
        support::wait_until("the load running", Duration::from_secs(10), || async {
            (served.load(Ordering::SeqCst) >= 50).then_some(())
        })
        .await;
        let old = set.kill_master();
        let at_kill = served.load(Ordering::SeqCst);
        let watcher = set.clone();
        let new = tokio::task::spawn_blocking(move || {
            let new = watcher.wait_for_failover(&old, Duration::from_secs(30));
            (old, new)
        })
        .await
        .unwrap();
        let at_failover = served.load(Ordering::SeqCst);
        for (name, h) in [("A", &a), ("B", &b)] {
            let what = format!("{name} reporting Redis up on the new master {}", new.1);
            redis_health_until(h, &what, FOLLOW_DEADLINE, |redis| {
                redis["status"] == "up" && redis["master"] == new.1.as_str()
            })
            .await;
        }
        // Some more load on the new master before it stops.
        let at_follow = served.load(Ordering::SeqCst);
        support::wait_until(
            "load on the new master",
            Duration::from_secs(10),
            || async { (served.load(Ordering::SeqCst) >= at_follow + 50).then_some(()) },
        )
        .await;
        stop.store(true, Ordering::SeqCst);
        (new, [at_kill, at_failover, at_follow])
    };
    let (failed, ((old, new), counts)) = tokio::join!(load, drive);
    let failed: Vec<String> = failed.into_iter().flatten().collect();
    assert!(
        failed.is_empty(),
        "{} of {} cached acquires failed across the failover {old} -> {new} \
         (served at kill, failover, follow: {counts:?}): {:?}",
        failed.len(),
        served.load(Ordering::SeqCst),
        &failed[..failed.len().min(5)]
    );
    assert_sentinel_health(pair, &new).await;

    force_refresh_burst_logs_in_once(pair, 30, "alice").await;
}

/// A's login of alice is running when the master dies: neither B's `force_refresh` sent
/// during the failover nor the one sent once the sentinels have a new master (the login still
/// running) may start a second login of alice at the portal.
#[actix_rt::test]
async fn a_failover_in_the_middle_of_a_login_never_starts_a_second_one() {
    let Some((set, a, b)) = sentinel_pair().await else {
        return;
    };
    add_accounts([&a, &b], &["alice"]);
    let state = a.portal.state.clone();
    // Longer than the failover (about 2.5 s) and shorter than the login timeout (10 s).
    *state.latency.lock().unwrap() = Duration::from_secs(5);
    let refresh = json!({"site_name": "court_zxfw", "account": "alice", "force_refresh": true});

    let on_a = a.acquire(refresh.clone());
    let rest = async {
        support::wait_until(
            "A's login at the portal",
            Duration::from_secs(10),
            || async { (state.in_flight.load(Ordering::SeqCst) == 1).then_some(()) },
        )
        .await;
        let old = set.kill_master();
        let during = b.acquire(refresh.clone());
        let after = async {
            let watcher = set.clone();
            let new = tokio::task::spawn_blocking(move || {
                watcher.wait_for_failover(&old, Duration::from_secs(30))
            })
            .await
            .unwrap();
            // Sent while A's login still runs, unless the failover took longer than it.
            let running = state.in_flight.load(Ordering::SeqCst) > 0;
            (b.acquire(refresh.clone()).await, new, running)
        };
        tokio::join!(during, after)
    };
    let ((status, first), ((during_status, during), ((after_status, after), new, running))) =
        tokio::join!(on_a, rest);
    let most = state
        .max_in_flight_per_account
        .lock()
        .unwrap()
        .get("alice")
        .copied();
    assert_eq!(
        most,
        Some(1),
        "logins of alice at once across the failover to {new}: A {status} {first}; \
         B during the failover {during_status} {during}; B after it (A's login still \
         running: {running}) {after_status} {after}"
    );
    assert_eq!(status, 200, "A's login: {first}");
}

/// Both instances say `cluster`, Redis `up` (once connected), no single master, and the three
/// masters.
async fn assert_cluster_health(pair: [&Harness; 2], set: &ClusterSet) {
    let mut expected = set.addrs();
    expected.sort();
    for h in pair {
        redis_health_until(h, "Redis up", START_DEADLINE, |r| r["status"] == "up").await;
        for redis in [redis_health(h).await, redis_usage(h).await] {
            assert_eq!(redis["topology"], "cluster", "{redis}");
            assert_eq!(redis["status"], "up", "{redis}");
            assert_eq!(redis["master"], Value::Null, "{redis}");
            let mut masters: Vec<String> = redis["masters"]
                .as_array()
                .unwrap_or_else(|| panic!("no masters: {redis}"))
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect();
            masters.sort();
            assert_eq!(masters, expected, "{redis}");
        }
    }
}

const CLUSTER_ACCOUNTS: [&str; 6] = ["a1", "a2", "a3", "a4", "a5", "a6"];
const PER_SITE: u32 = 2;

/// Two instances on a three-master cluster: 150 cold callers cause one login; forced logins
/// of six accounts never exceed the per-site limit at the portal; 30 `force_refresh` callers
/// of one account cause one login.
#[actix_rt::test]
async fn a_cluster_keeps_single_flight_and_the_limits_across_instances() {
    let Some(set) = ClusterSet::start() else {
        return;
    };
    let (a, b) = Harness::builder()
        .redis_table(&set.config_lines())
        .extra(&format!(
            "[concurrency]\nmax_concurrent_per_site = {PER_SITE}\n"
        ))
        // The portal counts logins per site by this field.
        .sites("extra_fields = { site = \"court_zxfw\" }\n")
        .start_pair()
        .await;
    let pair = [&a, &b];
    add_accounts(pair, &CLUSTER_ACCOUNTS);
    assert_cluster_health(pair, &set).await;
    let state = a.portal.state.clone();

    // 150 cold callers of one account, over both instances: one login, one token.
    *state.latency.lock().unwrap() = Duration::from_millis(300);
    let answers = burst(
        pair,
        150,
        json!({"site_name": "court_zxfw", "account": "a1"}),
    )
    .await;
    assert_eq!(state.issued(), 1, "150 cold callers, one login");
    let tokens: std::collections::HashSet<&str> = answers
        .iter()
        .map(|a| a["data"]["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 1, "everyone gets the same token");

    // 30 callers, each making 4 forced acquisitions of random accounts one after the other.
    *state.latency.lock().unwrap() = Duration::from_millis(100);
    let before = state.issued();
    let callers = (0..30).map(|i| async move {
        let h = pair[i % 2];
        for _ in 0..4 {
            let account = CLUSTER_ACCOUNTS[fastrand::usize(..CLUSTER_ACCOUNTS.len())];
            let (status, body) = h
                .acquire(
                    json!({"site_name": "court_zxfw", "account": account, "force_refresh": true}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    });
    join_all(callers).await;
    let per_site = state.max_in_flight_per_site.lock().unwrap().clone();
    let per_account = state.max_in_flight_per_account.lock().unwrap().clone();
    assert_eq!(
        per_site.get("court_zxfw").copied(),
        Some(PER_SITE),
        "the portal saw {per_site:?} logins of the site at once (limit {PER_SITE}); \
         {} logins",
        state.issued() - before
    );
    assert!(
        per_account.values().all(|n| *n <= 1),
        "per account: {per_account:?}"
    );

    force_refresh_burst_logs_in_once(pair, 30, "a2").await;
    assert_cluster_health(pair, &set).await;
    let keys = set.keys_per_node();
    assert!(
        keys.iter().sum::<u64>() > 0,
        "tokend wrote nothing into the cluster: {keys:?}"
    );
}

/// A manual failover (`SENTINEL FAILOVER`): the old master stays up, now a read-only replica,
/// so nothing breaks the connection to it. The instance still follows the new master (told
/// by `+switch-master`, or by the `READONLY` its next write meets), and a forced login's token
/// is written on the new master, not refused by the old one.
#[actix_rt::test]
async fn a_manual_failover_with_the_old_master_still_up_is_followed() {
    let Some(set) = SentinelSet::start() else {
        return;
    };
    let h = Harness::builder()
        .redis_table(&set.config_lines())
        .start()
        .await;
    h.add_account("alice", "pw-alice", true);
    let old = set.master_addr();
    redis_health_until(&h, "Redis up", START_DEADLINE, |r| {
        r["status"] == "up" && r["master"] == old.as_str()
    })
    .await;
    let refresh = json!({"site_name": "court_zxfw", "account": "alice", "force_refresh": true});
    let (status, first) = h.acquire(refresh.clone()).await;
    assert_eq!(status, 200, "{first}");
    let sentinel = &set.sentinel_addrs()[0];
    assert_eq!(
        redis_cli(sentinel, &["SENTINEL", "FAILOVER", "mymaster"]),
        "OK"
    );
    let new = tokio::task::spawn_blocking({
        let old = old.clone();
        move || {
            let new = set.wait_for_failover(&old, Duration::from_secs(30));
            (set, new)
        }
    })
    .await
    .unwrap();
    let (set, new) = new;
    assert_ne!(new, old);
    redis_health_until(&h, "the instance on the new master", FOLLOW_DEADLINE, |r| {
        r["status"] == "up" && r["master"] == new.as_str()
    })
    .await;
    // The old master is alive and becomes a replica (the sentinels reconfigure it).
    support::wait_until(
        "the old master demoted",
        Duration::from_secs(15),
        || async {
            redis_cli(&old, &["ROLE"])
                .starts_with("slave")
                .then_some(())
        },
    )
    .await;

    let (status, second) = h.acquire(refresh).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(
        second["data"]["token"], first["data"]["token"],
        "a new login"
    );
    // The new token is in Redis on the new master: a second instance that starts now gets it
    // from there without a login.
    let issued = h.portal.state.issued();
    let other = Harness::builder()
        .redis_table(&set.config_lines())
        .prefix(&h.prefix)
        .portal(h.portal.clone())
        .start()
        .await;
    other.add_account("alice", "pw-alice", true);
    let (status, hit) = other
        .acquire(json!({"site_name": "court_zxfw", "account": "alice"}))
        .await;
    assert_eq!(status, 200, "{hit}");
    assert_eq!(hit["data"]["source"], "cache", "{hit}");
    assert_eq!(hit["data"]["token"], second["data"]["token"]);
    assert_eq!(
        h.portal.state.issued(),
        issued,
        "no login for the second instance"
    );
}
