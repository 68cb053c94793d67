//! The failure policy of SPEC §11 against the fake portal: a portal outage pauses the site
//! (not its accounts), penalties by fault that last, callers that wait for a slow login get
//! its token, short-lived tokens are served, every refused request counts.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support;
use crate::support::harness::{backends, Harness};
use crate::support::portal::AccountBehaviour;

/// One network retry per login, quick backoff: an outage costs two requests per login.
const RETRY: &str = "[retry]\nmax_network_retries = 1\nnetwork_retry_delay_base = 0.05\n\
                     max_captcha_retries = 0\ncaptcha_retry_delay = 0.05\nlogin_timeout = 10\n";

fn alert_kinds(health: &Value) -> Vec<String> {
    health["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap().to_string())
        .collect()
}

#[actix_rt::test]
async fn an_outage_pauses_the_site_not_the_accounts_and_heals_by_itself() {
    for redis in backends() {
        let h = Harness::builder()
            .redis(redis.as_deref())
            .retry(RETRY)
            .extra("[circuit]\nfailure_threshold = 3\nopen_seconds = 1\n")
            .start()
            .await;
        h.add_account("alice", "pw-a", false);
        h.add_account("bob", "pw-b", false);
        h.portal.state.set_outage(true, None);

        let mut statuses = Vec::new();
        for _ in 0..12 {
            let (status, retry_after, body) = h
                .api_call(
                    Method::POST,
                    "/api/v1/automation/tokens/acquire",
                    Some(json!({"site_name": "court_zxfw"})),
                )
                .await;
            if status == 503 {
                assert_eq!(body["code"], "SITE_UNAVAILABLE", "{body}");
                assert!(retry_after.is_some(), "503 without Retry-After");
            }
            statuses.push(status);
        }
        // Three logins (two requests each) opened the circuit; the rest were refused at once.
        assert_eq!(&statuses[..3], &[502, 502, 502], "{statuses:?}");
        assert!(statuses[3..].iter().all(|s| *s == 503), "{statuses:?}");
        assert!(
            h.portal.state.total_attempts() <= 8,
            "{} logins reached a portal that was down",
            h.portal.state.total_attempts()
        );
        let health = h.health().await;
        assert!(
            alert_kinds(&health).contains(&"site_unavailable".into()),
            "{health}"
        );
        assert_eq!(health["status"], "unhealthy");
        let site = &health["components"]["sites"]["court_zxfw"];
        assert_eq!(site["status"], "circuit_open", "{site}");
        assert_eq!(site["circuit"]["state"], "open", "{site}");
        // Nobody's fault but the portal's: no account was penalised.
        for account in ["alice", "bob"] {
            assert_eq!(h.account_state(account).await["state"], "active");
        }

        // The portal comes back: tokend serves again by itself after one pause.
        h.portal.state.set_outage(false, None);
        let body = support::wait_until(
            "a token after the outage",
            Duration::from_secs(10),
            || async {
                let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
                (status == 200).then_some(body)
            },
        )
        .await;
        assert_eq!(body["data"]["source"], "login");
        let health = h.health().await;
        assert_eq!(health["components"]["sites"]["court_zxfw"]["status"], "up");
        let metrics = h.api_get("/api/v1/automation/performance/metrics").await.1;
        assert!(
            metrics["data"]["rejections"]["site_unavailable"]
                .as_u64()
                .unwrap()
                >= 9,
            "{metrics}"
        );
    }
}

#[actix_rt::test]
async fn a_retry_after_from_the_portal_keeps_the_circuit_open_that_long() {
    let h = Harness::builder()
        .retry(RETRY)
        .extra("[circuit]\nfailure_threshold = 1\nopen_seconds = 1\n")
        .start()
        .await;
    h.add_account("alice", "pw-a", false);
    h.portal.state.set_outage(true, Some("60"));
    let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 502);
    // One login only: the portal asked for a minute, the retry did not knock again.
    assert_eq!(h.portal.state.total_attempts(), 1);
    let (status, retry_after, body) = h
        .api_call(
            Method::POST,
            "/api/v1/automation/tokens/acquire",
            Some(json!({"site_name": "court_zxfw"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("SITE_UNAVAILABLE")),
        "{body}"
    );
    let wait: u64 = retry_after.unwrap().parse().unwrap();
    assert!((55..=60).contains(&wait), "Retry-After {wait}");
    let circuit = &h.health().await["components"]["sites"]["court_zxfw"]["circuit"];
    let retry_at: chrono::DateTime<chrono::Utc> =
        circuit["retry_at"].as_str().unwrap().parse().unwrap();
    let left = (retry_at - chrono::Utc::now()).num_seconds();
    assert!((55..=60).contains(&left), "{circuit}");

    // An operator closes it: logins are tried again at once.
    h.portal.state.set_outage(false, None);
    let (status, body) = h
        .api_call(
            Method::POST,
            "/api/v1/automation/sites/court_zxfw/circuit/close",
            None,
        )
        .await
        .into_status_body();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["circuit"]["state"], "closed");
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_rt::test]
async fn a_captcha_failure_cools_the_account_down_and_unblock_brings_it_back() {
    let h = Harness::builder().retry(RETRY).start().await;
    h.add_account("alice", "pw-a", false);
    h.portal.state.set_account(
        "alice",
        AccountBehaviour {
            password: "pw-a".into(),
            captcha_failures: 1,
            ..Default::default()
        },
    );
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errors"]["error_type"], "captcha_error");
    let state = h.account_state("alice").await;
    assert_eq!(state["state"], "cooling_down", "{state}");
    assert_eq!(state["reason"], "captcha_error", "{state}");
    let until: chrono::DateTime<chrono::Utc> = state["until"].as_str().unwrap().parse().unwrap();
    let left = (until - chrono::Utc::now()).num_seconds();
    assert!((110..=120).contains(&left), "cooldown of {left}s");

    // While it cools down, nobody logs in with it; a cache clear does not lift the block.
    let (status, _, _) = h
        .api_call(
            Method::DELETE,
            "/api/v1/automation/performance/cache/clear",
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("NO_AVAILABLE_ACCOUNT")),
        "{body}"
    );
    assert_eq!(h.portal.state.attempts_of("alice"), 1);

    // `tokend accounts unblock` goes through the daemon and lifts it at once.
    let dir = tempfile::tempdir().unwrap();
    let out = support::tokend(dir.path())
        .args(["accounts", "unblock", "court_zxfw", "alice", "--url"])
        .arg(format!("http://{}", h.tokend.addr))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("unblocked"), "{stdout}");
    assert_eq!(h.account_state("alice").await["state"], "active");
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200, "{body}");

    // Unknown accounts and sites are 404; a malformed body is 400 naming the field.
    let unblock = "/api/v1/automation/accounts/unblock";
    let cases = [
        (json!({"site_name": "court_zxfw", "account": "nobody"}), 404),
        (json!({"site_name": "nowhere", "account": "alice"}), 404),
        (json!({"site_name": "court_zxfw"}), 400),
    ];
    for (body, expected) in cases {
        let (status, _, answer) = h.api_call(Method::POST, unblock, Some(body.clone())).await;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    let (status, _, answer) = h
        .api_call(
            Method::POST,
            unblock,
            Some(json!({"site_name": "court_zxfw"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["message"].as_str().unwrap().contains("account"),
        "{answer}"
    );
}

#[actix_rt::test]
async fn a_wrong_password_blacklists_the_account_until_its_password_changes() {
    let h = Harness::builder().retry(RETRY).start().await;
    h.add_account("alice", "wrong", false);
    h.portal.state.accept("alice", "right");
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 502);
    assert_eq!(body["errors"]["error_type"], "credential_error");
    let state = h.account_state("alice").await;
    assert_eq!(state["state"], "blacklisted", "{state}");
    assert_eq!(state["reason"], "credential_error");
    // The blacklist is in the database: a cache clear does not send the wrong password again.
    h.api_call(
        Method::DELETE,
        "/api/v1/automation/performance/cache/clear",
        None,
    )
    .await;
    let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 503);
    assert_eq!(h.portal.state.attempts_of("alice"), 1);

    // A new password (as `tokend accounts set-password` stores it) lifts the blacklist, and
    // the daemon sees the change by itself.
    let state = &h.tokend.state;
    tokend::accounts::set_password(
        &state.pool,
        &state.key,
        "court_zxfw",
        "alice",
        &tokend::vault::secret::Secret::new("right"),
    )
    .unwrap();
    let body = support::wait_until("the new password used", Duration::from_secs(3), || async {
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(body["data"]["account"], "alice");
    let state = h.account_state("alice").await;
    assert_eq!(state["state"], "active");
    assert_eq!(
        state["login_failure_count"], 1,
        "statistics are kept: {state}"
    );
}

#[actix_rt::test]
async fn accounts_added_disabled_or_removed_by_the_cli_are_seen_within_a_second() {
    let h = Harness::start(None, "").await;
    h.add_account("alice", "pw-a", false);
    let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200);
    // Added after the daemon cached the site's accounts: usable without a warm-up.
    h.add_account("lucy", "pw-l", false);
    support::wait_until("lucy usable", Duration::from_secs(3), || async {
        let (status, body) = h
            .acquire(json!({"site_name": "court_zxfw", "account": "lucy"}))
            .await;
        (status == 200).then_some(body)
    })
    .await;
    // Disabled: no longer chosen, and its state says so.
    let state = &h.tokend.state;
    tokend::accounts::set_active(&state.pool, "court_zxfw", "lucy", false).unwrap();
    support::wait_until("lucy inactive", Duration::from_secs(3), || async {
        let (status, body) = h
            .acquire(json!({"site_name": "court_zxfw", "account": "lucy", "force_refresh": true}))
            .await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(h.account_state("lucy").await["state"], "inactive");
    // Removed and added again: a new account, without the old one's block.
    tokend::accounts::remove(&state.pool, "court_zxfw", "lucy").unwrap();
    h.add_account("lucy", "pw-l", false);
    support::wait_until("lucy back", Duration::from_secs(3), || async {
        let (status, body) = h
            .acquire(json!({"site_name": "court_zxfw", "account": "lucy", "force_refresh": true}))
            .await;
        (status == 200).then_some(body)
    })
    .await;
}

#[actix_rt::test]
async fn callers_waiting_on_a_login_longer_than_lock_timeout_all_get_its_token() {
    for redis in backends() {
        let h = Harness::builder()
            .redis(redis.as_deref())
            .retry(RETRY)
            .extra("[concurrency]\nlock_timeout = 1\nacquisition_timeout = 30\n")
            .start()
            .await;
        h.add_account("alice", "pw-a", false);
        *h.portal.state.latency.lock().unwrap() = Duration::from_millis(2500);
        let callers = (0..10).map(|_| h.acquire(json!({"site_name": "court_zxfw"})));
        let answers = join_all(callers).await;
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}");
        }
        assert_eq!(h.portal.state.issued(), 1, "one login for ten callers");
        let tokens: std::collections::HashSet<&str> = answers
            .iter()
            .map(|(_, b)| b["data"]["token"].as_str().unwrap())
            .collect();
        assert_eq!(tokens.len(), 1);
    }
}

/// The case of SPEC §11 as an operator meets it: a 35 s browser login, the default
/// configuration (lock_timeout 30 s), ten callers for one account.
#[actix_rt::test]
async fn ten_callers_and_a_35_second_login_with_the_default_config() {
    let h = Harness::builder().retry("").start().await;
    h.add_account("alice", "pw-a", false);
    *h.portal.state.latency.lock().unwrap() = Duration::from_secs(35);
    let callers = (0..10).map(|_| h.acquire(json!({"site_name": "court_zxfw"})));
    for (status, body) in join_all(callers).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(h.portal.state.issued(), 1);
    assert_eq!(h.portal.state.total_attempts(), 1);
}

#[actix_rt::test]
async fn a_waiter_gets_the_failure_of_the_login_it_waited_for() {
    let h = Harness::builder().retry(RETRY).start().await;
    h.add_account("alice", "pw-a", false);
    h.portal.state.set_account(
        "alice",
        AccountBehaviour {
            password: "pw-a".into(),
            captcha_failures: 5,
            ..Default::default()
        },
    );
    *h.portal.state.latency.lock().unwrap() = Duration::from_millis(500);
    let callers = (0..5).map(|_| h.acquire(json!({"site_name": "court_zxfw", "account": "alice"})));
    for (status, body) in join_all(callers).await {
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["errors"]["error_type"], "captcha_error", "{body}");
    }
    assert_eq!(
        h.portal.state.attempts_of("alice"),
        1,
        "one login for five callers"
    );
}

#[actix_rt::test]
async fn four_minute_tokens_serve_forty_callers_with_one_login() {
    let h = Harness::start(None, "").await;
    h.add_account("alice", "pw-a", false);
    *h.portal.state.expires_in.lock().unwrap() = 240.0;
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200, "{body}");
    let callers = (0..39).map(|_| h.acquire(json!({"site_name": "court_zxfw"})));
    for (status, body) in join_all(callers).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(h.portal.state.issued(), 1);
}

#[actix_rt::test]
async fn every_refused_request_is_counted_and_health_says_unhealthy() {
    let h = Harness::builder().retry(RETRY).start().await;
    h.add_account("alice", "wrong", false);
    h.portal.state.accept("alice", "right");
    let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 502);
    for _ in 0..4 {
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("NO_AVAILABLE_ACCOUNT"))
        );
    }
    let health = h.health().await;
    assert_eq!(health["status"], "unhealthy", "{health}");
    let kinds = alert_kinds(&health);
    assert!(
        kinds.contains(&"no_available_account".to_string()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"high_rejection_rate".to_string()),
        "{kinds:?}"
    );
    let site = &health["components"]["sites"]["court_zxfw"];
    assert_eq!(
        (site["status"].as_str(), site["usable_accounts"].as_u64()),
        (Some("no_accounts"), Some(0))
    );

    let metrics = h.api_get("/api/v1/automation/performance/metrics").await.1;
    assert_eq!(metrics["data"]["rejected_acquisitions"], 4, "{metrics}");
    assert_eq!(metrics["data"]["rejections"]["no_available_account"], 4);
    assert_eq!(
        metrics["data"]["sites"]["court_zxfw"]["rejected_acquisitions"],
        4
    );
    let text = h.prometheus_text().await;
    assert!(
        text.contains(
            r#"tokend_rejections_total{site="court_zxfw",reason="no_available_account"} 4"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"tokend_site_circuit_open{site="court_zxfw"} 0"#),
        "{text}"
    );
}

#[actix_rt::test]
async fn a_queue_wait_that_times_out_is_a_timeout_row_and_a_rejection() {
    let h = Harness::builder()
        .retry(RETRY)
        .extra("[concurrency]\nmax_concurrent_acquisitions = 1\nqueue_timeout = 0.3\n")
        .start()
        .await;
    h.add_account("alice", "pw-a", false);
    h.add_account("bob", "pw-b", false);
    *h.portal.state.latency.lock().unwrap() = Duration::from_millis(1500);
    let slow = h.acquire(json!({"site_name": "court_zxfw", "account": "alice"}));
    let waiting = async {
        // Bob arrives while alice's login holds the only slot.
        support::wait_until("alice logging in", Duration::from_secs(3), || async {
            (h.portal.state.attempts_of("alice") > 0).then_some(())
        })
        .await;
        h.acquire(json!({"site_name": "court_zxfw", "account": "bob"}))
            .await
    };
    let ((status_a, _), (status_b, body_b)) = tokio::join!(slow, waiting);
    assert_eq!(status_a, 200);
    assert_eq!(status_b, 504, "{body_b}");
    let rows = h.history().await;
    let row = rows
        .iter()
        .find(|r| r.account.as_deref() == Some("bob"))
        .expect("a row for bob");
    assert_eq!(row.status, "timeout");
    let metrics = h.api_get("/api/v1/automation/performance/metrics").await.1;
    assert_eq!(
        metrics["data"]["rejections"]["queue_timeout"], 1,
        "{metrics}"
    );
}

#[actix_rt::test]
async fn the_circuit_is_shared_by_two_instances_with_one_probe() {
    if !support::redis_available() {
        return;
    }
    let redis = support::redis_url();
    let prefix = format!("tokend-test-{}", support::unique());
    let circuit = "[circuit]\nfailure_threshold = 1\nopen_seconds = 1\n";
    let (a, b) = Harness::builder()
        .redis(Some(&redis))
        .prefix(&prefix)
        .retry(RETRY)
        .extra(circuit)
        .start_pair()
        .await;
    a.add_account("alice", "pw-a", false);
    b.add_account("alice", "pw-a", false);
    a.portal.state.set_outage(true, None);
    let (status, _) = a.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 502);
    // B has not seen the portal fail, yet its site is paused too.
    let (status, body) = b.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("SITE_UNAVAILABLE")),
        "{body}"
    );
    let before = a.portal.state.total_attempts();
    // After the pause, both ask at once: one probe reaches the portal, the other is refused.
    *a.portal.state.latency.lock().unwrap() = Duration::from_millis(700);
    support::wait_until("half-open", Duration::from_secs(5), || async {
        let state =
            a.health().await["components"]["sites"]["court_zxfw"]["circuit"]["state"].clone();
        (state == "half_open").then_some(())
    })
    .await;
    let ((status_a, _), (status_b, _)) = tokio::join!(
        a.acquire(json!({"site_name": "court_zxfw"})),
        b.acquire(json!({"site_name": "court_zxfw"}))
    );
    let mut statuses = [status_a, status_b];
    statuses.sort_unstable();
    assert_eq!(statuses, [502, 503], "one probe (502), one refused (503)");
    assert_eq!(
        a.portal.state.total_attempts() - before,
        2,
        "one probe login (with its one network retry)"
    );
}

trait StatusBody {
    fn into_status_body(self) -> (u16, Value);
}

impl StatusBody for (u16, Option<String>, Value) {
    fn into_status_body(self) -> (u16, Value) {
        (self.0, self.2)
    }
}
