//! Site policies (SPEC §12) against the fake portal: lease renewal of long logins, login
//! budgets, account rotation, adaptive concurrency and sticky proxies.

mod common;
#[path = "common/harness.rs"]
mod harness;
#[path = "common/portal.rs"]
mod portal;

use std::time::Duration;

use harness::Harness;
use serde_json::json;

/// A login that outlives its lease (and its caller's acquisition_timeout) keeps its slot and
/// its lock on every instance: nobody logs in beside it, and its token still serves.
#[actix_rt::test]
async fn a_login_longer_than_its_lease_is_never_run_twice() {
    if !common::redis_available() {
        return;
    }
    let redis = common::redis_url();
    let prefix = format!("tokend-test-{}", common::unique());
    let retry = "[retry]\nlogin_timeout = 10\n";
    let limits =
        "[concurrency]\nmax_concurrent_per_site = 1\nacquisition_timeout = 2\nlock_timeout = 1\n";
    let a = Harness::start_shared(Some(&redis), &prefix, None, retry, limits).await;
    let b =
        Harness::start_shared(Some(&redis), &prefix, Some(a.portal.clone()), retry, limits).await;
    for h in [&a, &b] {
        h.add_account("alice", "pw-a", false);
        h.add_account("bob", "pw-b", false);
    }
    *a.portal.state.latency.lock().unwrap() = Duration::from_millis(3500);
    let latency = a.portal.state.clone();
    let lower_latency = async move {
        common::eventually("alice logging in", Duration::from_secs(5), || async {
            (latency.attempts_of("alice") > 0).then_some(())
        })
        .await;
        *latency.latency.lock().unwrap() = Duration::from_millis(50);
    };
    let (alice, ()) = tokio::join!(
        a.acquire(json!({"site_name": "court_zxfw", "account": "alice"})),
        lower_latency
    );
    // Alice's caller stops waiting after acquisition_timeout (2 s, also the lease), while
    // her login goes on; bob must still wait for the site's only slot.
    assert_eq!(alice.0, 504, "{}", alice.1);
    assert_eq!(a.portal.state.issued(), 0, "alice's login is still running");
    let (status_b, body_b) = b
        .acquire(json!({"site_name": "court_zxfw", "account": "bob"}))
        .await;
    assert_eq!(status_b, 200, "{body_b}");
    assert_eq!(
        a.portal
            .state
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "two logins at once on a site limited to one"
    );
    // Alice's login went on after its caller left: its token serves the next caller.
    let (status, body) = b
        .acquire(json!({"site_name": "court_zxfw", "account": "alice"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["data"]["source"], "login");
    assert_eq!(a.portal.state.attempts_of("alice"), 1);
}
