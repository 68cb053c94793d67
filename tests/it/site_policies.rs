//! Site policies (SPEC §12) against the fake portal: lease renewal of long logins, login
//! budgets, account rotation, adaptive concurrency and sticky proxies.

use std::time::Duration;

use serde_json::json;

use crate::support::harness::Harness;
use crate::support::{self, forward_proxy, harness};

/// A login that outlives its lease (and its caller's acquisition_timeout) keeps its slot and
/// its lock on every instance: nobody logs in beside it, and its token still serves.
#[actix_rt::test]
async fn a_login_longer_than_its_lease_is_never_run_twice() {
    if !support::redis_available() {
        return;
    }
    let redis = support::redis_url();
    let prefix = format!("tokend-test-{}", support::unique());
    let retry = "[retry]\nlogin_timeout = 10\n";
    let limits =
        "[concurrency]\nmax_concurrent_per_site = 1\nacquisition_timeout = 2\nlock_timeout = 1\n";
    let (a, b) = Harness::builder()
        .redis(Some(&redis))
        .prefix(&prefix)
        .retry(retry)
        .extra(limits)
        .start_pair()
        .await;
    for h in [&a, &b] {
        h.add_account("alice", "pw-a", false);
        h.add_account("bob", "pw-b", false);
    }
    *a.portal.state.latency.lock().unwrap() = Duration::from_millis(3500);
    let latency = a.portal.state.clone();
    let lower_latency = async move {
        support::wait_until("alice logging in", Duration::from_secs(5), || async {
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

async fn site_limit(h: &Harness) -> u64 {
    let usage = h
        .api_get("/api/v1/automation/performance/resource-usage")
        .await
        .1;
    usage["data"]["sites"]["court_zxfw"]["concurrency_limit"]
        .as_u64()
        .unwrap()
}

async fn site_with(redis: Option<&str>, site_keys: &str) -> Harness {
    let prefix = format!("tokend-test-{}", support::unique());
    let retry = "[retry]\nnetwork_retry_delay_base = 0.05\ncaptcha_retry_delay = 0.05\nlogin_timeout = 10\n";
    Harness::builder()
        .redis(redis)
        .prefix(&prefix)
        .retry(retry)
        .sites(site_keys)
        .start()
        .await
}

#[actix_rt::test]
async fn a_login_budget_refuses_logins_not_cached_tokens() {
    for redis in harness::backends() {
        let h = site_with(redis.as_deref(), "login_budget_per_site_per_hour = 2\n").await;
        h.add_account("alice", "pw-a", false);
        h.add_account("bob", "pw-b", false);
        for account in ["alice", "bob"] {
            let (status, body) = h
                .acquire(json!({"site_name": "court_zxfw", "account": account}))
                .await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, retry_after, body) = h
            .api_call(
                reqwest::Method::POST,
                "/api/v1/automation/tokens/acquire",
                Some(json!({"site_name": "court_zxfw", "force_refresh": true})),
            )
            .await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["code"], "LOGIN_BUDGET_EXHAUSTED");
        let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
        assert!((3500..=3600).contains(&wait), "Retry-After {wait}");
        assert_eq!(h.portal.state.total_attempts(), 2);
        // Cached tokens are always served.
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(
            (status, body["data"]["source"].as_str()),
            (200, Some("cache"))
        );
        let metrics = h.api_get("/api/v1/automation/performance/metrics").await.1;
        assert_eq!(metrics["data"]["rejections"]["login_budget_exhausted"], 1);
        let usage = h
            .api_get("/api/v1/automation/performance/resource-usage")
            .await
            .1;
        let budget = &usage["data"]["sites"]["court_zxfw"]["login_budget"];
        assert_eq!(
            (budget["site_used"].as_u64(), budget["site_left"].as_u64()),
            (Some(2), Some(0)),
            "{usage}"
        );
    }
}

#[actix_rt::test]
async fn an_account_budget_moves_logins_to_other_accounts_and_survives_a_restart() {
    let h = site_with(None, "login_budget_per_account_per_hour = 1\n").await;
    h.add_account("alice", "pw-a", true);
    h.add_account("bob", "pw-b", false);
    let forced = json!({"site_name": "court_zxfw", "force_refresh": true});
    let (_, first) = h.acquire(forced.clone()).await;
    let (_, second) = h.acquire(forced.clone()).await;
    assert_eq!(first["data"]["account"], "alice");
    assert_eq!(second["data"]["account"], "bob", "alice's budget is spent");
    let (status, _) = h.acquire(forced.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(h.account_state("alice").await["login_budget_left"], 0);
    // A restarted in-process instance counts the hour's logins from the history.
    h.history().await;
    let budgets = tokend::policy::budget::LoginBudgets::new(None, h.tokend.state.pool.clone());
    let limits = tokend::policy::budget::BudgetLimits {
        per_site: 0,
        per_account: 1,
    };
    for answer in [&first, &second] {
        let id = answer["data"]["credential_id"].as_i64().unwrap();
        let refused = budgets.take("court_zxfw", id, limits).await;
        assert!(
            matches!(refused, Err(tokend::Error::LoginBudgetExhausted { .. })),
            "account {id}: {refused:?}"
        );
    }
}

#[actix_rt::test]
async fn round_robin_spreads_forced_logins_evenly() {
    for redis in harness::backends() {
        let h = site_with(redis.as_deref(), "selection = \"round_robin\"\n").await;
        for account in ["a1", "a2", "a3"] {
            h.add_account(account, &format!("pw-{account}"), account == "a1");
        }
        for _ in 0..6 {
            let (status, body) = h
                .acquire(json!({"site_name": "court_zxfw", "force_refresh": true}))
                .await;
            assert_eq!(status, 200, "{body}");
        }
        for account in ["a1", "a2", "a3"] {
            assert_eq!(h.portal.state.attempts_of(account), 2, "{account}");
        }
    }
}

/// Issue 21: with `round_robin`, plain acquires hand out the accounts in turn — a login for
/// an account without a token, then the cached tokens in the same rotation.
#[actix_rt::test]
async fn round_robin_hands_out_the_accounts_in_turn() {
    for redis in harness::backends() {
        let h = site_with(redis.as_deref(), "selection = \"round_robin\"\n").await;
        for account in ["u1", "u2", "u3"] {
            h.add_account(account, &format!("pw-{account}"), account == "u3");
        }
        let mut handed = Vec::new();
        for _ in 0..6 {
            let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
            assert_eq!(status, 200, "{body}");
            let data = &body["data"];
            handed.push(format!("{}/{}", data["account"], data["source"]).replace('"', ""));
        }
        assert_eq!(
            handed,
            ["u1/login", "u2/login", "u3/login", "u1/cache", "u2/cache", "u3/cache"],
            "backend {redis:?}"
        );
        assert_eq!(h.portal.state.issued(), 3);
        // An acquire naming its account is not part of the rotation.
        let (_, named) = h
            .acquire(json!({"site_name": "court_zxfw", "account": "u3"}))
            .await;
        assert_eq!(named["data"]["account"], "u3");
        let (_, next) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(next["data"]["account"], "u1", "{next}");
    }
}

/// The turn is kept in Redis: two instances on one prefix rotate together.
#[actix_rt::test]
async fn round_robin_turns_are_shared_by_instances() {
    if !support::redis_available() {
        return;
    }
    let redis = support::redis_url();
    let prefix = format!("tokend-test-{}", support::unique());
    let retry = "[retry]\nlogin_timeout = 10\n";
    let keys = "selection = \"round_robin\"\n";
    let (a, b) = Harness::builder()
        .redis(Some(&redis))
        .prefix(&prefix)
        .retry(retry)
        .sites(keys)
        .start_pair()
        .await;
    for h in [&a, &b] {
        for account in ["u1", "u2", "u3"] {
            h.add_account(account, &format!("pw-{account}"), false);
        }
    }
    let mut handed = Vec::new();
    for h in [&a, &b, &a, &b, &a, &b] {
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200, "{body}");
        handed.push(body["data"]["account"].as_str().unwrap().to_string());
    }
    assert_eq!(handed, ["u1", "u2", "u3", "u1", "u2", "u3"]);
    assert_eq!(
        a.portal.state.issued(),
        3,
        "the second round is served cached"
    );
}

#[actix_rt::test]
async fn least_recent_takes_the_account_that_waited_longest() {
    let h = site_with(None, "selection = \"least_recent\"\n").await;
    for account in ["a1", "a2"] {
        h.add_account(account, &format!("pw-{account}"), false);
    }
    let mut order = Vec::new();
    for _ in 0..4 {
        let (_, body) = h
            .acquire(json!({"site_name": "court_zxfw", "force_refresh": true}))
            .await;
        order.push(body["data"]["account"].as_str().unwrap().to_string());
    }
    assert_eq!(order, ["a1", "a2", "a1", "a2"]);
}

#[actix_rt::test]
async fn rate_limit_answers_lower_the_site_limit_and_successes_raise_it() {
    for redis in harness::backends() {
        let prefix = format!("tokend-test-{}", support::unique());
        let h = Harness::builder().redis(redis.as_deref()).prefix(&prefix).retry("[retry]\nmax_network_retries = 0\nlogin_timeout = 10\n").extra("[concurrency]\nmax_concurrent_acquisitions = 8\nmax_concurrent_per_site = 4\n\
             [circuit]\nfailure_threshold = 100\n").sites("adaptive_concurrency = true\nadaptive_increase_after = 2\nrate_limit_pattern = \"操作频繁|too many\"\n").start()
        .await;
        h.add_account("alice", "pw-a", false);
        let forced = json!({"site_name": "court_zxfw", "force_refresh": true});
        assert_eq!(site_limit(&h).await, 4);
        h.portal
            .state
            .rate_limited
            .store(2, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..2 {
            let (status, body) = h.acquire(forced.clone()).await;
            assert_eq!(
                (status, body["errors"]["error_type"].as_str()),
                (502, Some("network_error")),
                "{body}"
            );
        }
        assert_eq!(
            site_limit(&h).await,
            1,
            "4 → 2 → 1 after two rate-limit answers"
        );
        let text = h.prometheus_text().await;
        assert!(
            text.contains(r#"tokend_site_concurrency_limit{site="court_zxfw"} 1"#),
            "{text}"
        );
        // The account was not blamed for the portal's load.
        assert_eq!(h.account_state("alice").await["state"], "active");
        for _ in 0..4 {
            let (status, body) = h.acquire(forced.clone()).await;
            assert_eq!(status, 200, "{body}");
        }
        assert_eq!(
            site_limit(&h).await,
            3,
            "raised by one every two successes (1 → 2 → 3)"
        );
    }
}

#[actix_rt::test]
async fn an_accounts_own_proxy_carries_its_logins_and_no_others() {
    let proxy = forward_proxy::ForwardProxy::start();
    let h = site_with(None, "").await;
    h.add_account("alice", "pw-a", false);
    h.add_account("bob", "pw-b", false);
    let state = &h.tokend.state;
    tokend::accounts::set_proxy(
        &state.pool,
        &state.key,
        "court_zxfw",
        "alice",
        Some(&tokend::vault::secret::Secret::new(proxy.url())),
    )
    .unwrap();
    for _ in 0..2 {
        for account in ["alice", "bob"] {
            let (status, body) = h
                .acquire(
                    json!({"site_name": "court_zxfw", "account": account, "force_refresh": true}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    assert_eq!(
        proxy.requests_of("alice"),
        2,
        "alice's logins go through her proxy"
    );
    assert_eq!(proxy.requests_of("bob"), 0, "bob's do not");
    let alice = h.account_state("alice").await;
    assert_eq!(alice["proxy"], proxy.url(), "{alice}");
    // A proxy that cannot be reached is a network error of that login, not the account's fault.
    tokend::accounts::set_proxy(
        &state.pool,
        &state.key,
        "court_zxfw",
        "alice",
        Some(&tokend::vault::secret::Secret::new(
            "http://user:secret@127.0.0.1:1",
        )),
    )
    .unwrap();
    let (status, body) =
        support::wait_until("the new proxy in use", Duration::from_secs(3), || async {
            let (status, body) = h
                .acquire(
                    json!({"site_name": "court_zxfw", "account": "alice", "force_refresh": true}),
                )
                .await;
            (status != 200).then_some((status, body))
        })
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errors"]["error_type"], "network_error", "{body}");
    assert!(!body.to_string().contains("secret"), "{body}");
    // The account's own proxy is the account's fault (issue 21): it cools down.
    let alice = h.account_state("alice").await;
    assert_eq!(alice["state"], "cooling_down", "{alice}");
    assert_eq!(alice["reason"], "proxy_error", "{alice}");
    assert_eq!(alice["proxy"], "http://user:***@127.0.0.1:1", "{alice}");
}
