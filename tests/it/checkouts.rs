//! Job checkouts against the fake portal, on both backends and across two instances: a
//! held account is handed to nobody else and logged in by nobody, its lease renews and ends
//! (by release with an outcome, or by itself), and every view shows it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::harness::Harness;
use crate::support::{self, court_portal, harness, portal};

async fn checkout(h: &Harness, body: Value) -> (u16, Option<String>, Value) {
    h.api_call(
        Method::POST,
        "/api/v1/automation/tokens/checkout",
        Some(body),
    )
    .await
}

async fn act(h: &Harness, id: &str, what: &str, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/automation/tokens/checkout/{id}/{what}");
    let (status, _, body) = h.api_call(Method::POST, &path, Some(body)).await;
    (status, body)
}

async fn started(backend: Option<&str>) -> Harness {
    let h = Harness::start(backend, "").await;
    h.add_account("u1", "pw1", true);
    h.add_account("u2", "pw2", false);
    h
}

#[actix_rt::test]
async fn a_held_account_is_handed_to_nobody_else() {
    for backend in harness::backends() {
        let h = started(backend.as_deref()).await;
        let (status, _, held) = checkout(
            &h,
            json!({"site_name": "court_zxfw", "lease_seconds": 60, "job": "立案 2026-001"}),
        )
        .await;
        assert_eq!(status, 200, "{held}");
        let held = &held["data"];
        // The preferred account, with its token and the headers to send.
        assert_eq!(held["account"], "u1");
        assert_eq!(held["job"], "立案 2026-001");
        let token = held["token"].as_str().unwrap();
        assert_eq!(held["headers"]["Authorization"], format!("Bearer {token}"));
        let id = held["checkout_id"].as_str().unwrap().to_string();

        // Plain acquires get the other account; naming the held one is refused.
        for _ in 0..3 {
            let (status, other) = h.acquire(json!({"site_name": "court_zxfw"})).await;
            assert_eq!(status, 200, "{other}");
            assert_eq!(other["data"]["account"], "u2");
        }
        for body in [
            json!({"site_name": "court_zxfw", "account": "u1"}),
            json!({"site_name": "court_zxfw", "account": "u1", "force_refresh": true}),
        ] {
            let (status, retry_after, refused) = h
                .api_call(
                    Method::POST,
                    "/api/v1/automation/tokens/acquire",
                    Some(body),
                )
                .await;
            assert_eq!(status, 409, "{refused}");
            assert_eq!(refused["code"], "CHECKED_OUT");
            let wait: u64 = retry_after.unwrap().parse().unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
        }
        assert_eq!(
            h.portal.state.attempts_of("u1"),
            1,
            "nothing logged u1 in again"
        );

        // Every account held: 503 NO_AVAILABLE_ACCOUNT with the first lease end.
        let (status, _, second) =
            checkout(&h, json!({"site_name": "court_zxfw", "lease_seconds": 30})).await;
        assert_eq!(status, 200, "{second}");
        assert_eq!(second["data"]["account"], "u2");
        let (status, retry_after, none) = checkout(&h, json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 503, "{none}");
        assert_eq!(none["code"], "NO_AVAILABLE_ACCOUNT");
        let wait: u64 = retry_after.unwrap().parse().unwrap();
        assert!(
            (25..=30).contains(&wait),
            "the first lease ends in about 30 s: {wait}"
        );

        // Shown in the accounts, the resource usage, the list and Prometheus.
        let u1 = h.account_state("u1").await;
        assert_eq!(u1["checkout"]["checkout_id"], id.as_str());
        let (_, usage) = h
            .api_get("/api/v1/automation/performance/resource-usage")
            .await;
        assert_eq!(usage["data"]["checkouts"].as_array().unwrap().len(), 2);
        let (_, list) = h.api_get("/api/v1/automation/tokens/checkouts").await;
        assert_eq!(list["data"]["checkouts"][0]["checkout_id"], id.as_str());
        support::wait_until("the checkouts gauge", Duration::from_secs(5), || async {
            h.prometheus_text()
                .await
                .contains("tokend_checkouts_active{site=\"court_zxfw\"} 2")
                .then_some(())
        })
        .await;

        // Released: u1 is handed out again.
        let (status, released) = act(&h, &id, "release", json!({"outcome": "ok"})).await;
        assert_eq!(status, 200, "{released}");
        let (status, again) = act(&h, &id, "release", json!({})).await;
        assert_eq!(
            (status, again["code"].as_str()),
            (404, Some("CHECKOUT_NOT_FOUND"))
        );
        let (status, u1) = h
            .acquire(json!({"site_name": "court_zxfw", "account": "u1"}))
            .await;
        assert_eq!(
            (status, u1["data"]["source"].as_str()),
            (200, Some("cache"))
        );
    }
}

#[actix_rt::test]
async fn release_outcomes_and_renewal() {
    for backend in harness::backends() {
        let h = started(backend.as_deref()).await;
        let take = |account: &'static str| {
            let h = &h;
            async move {
                let body =
                    json!({"site_name": "court_zxfw", "account": account, "lease_seconds": 20});
                let (status, _, held) = checkout(h, body).await;
                assert_eq!(status, 200, "{held}");
                held["data"].clone()
            }
        };
        // Renewal extends the lease and keeps the token while it outlives the lease.
        let held = take("u1").await;
        let id = held["checkout_id"].as_str().unwrap();
        let (status, renewed) = act(&h, id, "renew", json!({"lease_seconds": 120})).await;
        assert_eq!(status, 200, "{renewed}");
        assert_eq!(renewed["data"]["token"], held["token"]);
        assert_eq!(renewed["data"]["token_renewed"], false);
        assert!(renewed["data"]["lease_until"].as_str() > held["lease_until"].as_str());
        // A lease past the token's life: the holder's token is renewed, told in the answer.
        let (status, longer) = act(&h, id, "renew", json!({"lease_seconds": 7200})).await;
        assert_eq!(status, 200, "{longer}");
        assert_eq!(longer["data"]["token_renewed"], true);
        assert_ne!(longer["data"]["token"], held["token"]);
        assert_eq!(h.portal.state.attempts_of("u1"), 2);
        let held = longer["data"].clone();

        // token_rejected: the token is invalidated, the next acquire logs in.
        act(&h, id, "release", json!({"outcome": "token_rejected"})).await;
        let (_, after) = h
            .acquire(json!({"site_name": "court_zxfw", "account": "u1"}))
            .await;
        assert_eq!(after["data"]["source"], "login");
        assert_ne!(after["data"]["token"], held["token"]);

        // failed: counted against the account like a failed login (it cools down).
        let held = take("u2").await;
        let id = held["checkout_id"].as_str().unwrap();
        let (status, _) = act(&h, id, "release", json!({"outcome": "failed"})).await;
        assert_eq!(status, 200);
        assert_eq!(h.account_state("u2").await["state"], "cooling_down");

        // Bad input is named.
        let (status, _, bad) =
            checkout(&h, json!({"site_name": "court_zxfw", "lease_seconds": 0})).await;
        assert_eq!((status, bad["code"].as_str()), (400, Some("INVALID_INPUT")));
        assert!(bad["message"].as_str().unwrap().contains("lease_seconds"));
        for (body, field) in [
            (
                json!({"site_name": "court_zxfw", "account": "u\u{0}"}),
                "account",
            ),
            (
                json!({"site_name": "court_zxfw", "job": "a\u{1b}[2J"}),
                "job",
            ),
            (json!({"site_name": "no such site"}), "site_name"),
        ] {
            let (status, _, bad) = checkout(&h, body).await;
            assert_eq!(status, 400, "{bad}");
            assert!(bad["message"].as_str().unwrap().contains(field), "{bad}");
        }
        let (status, gone) = act(&h, "no-such-id", "renew", json!({})).await;
        assert_eq!(
            (status, gone["code"].as_str()),
            (404, Some("CHECKOUT_NOT_FOUND"))
        );
        let (status, _) = act(&h, "no-such-id", "release", json!({"outcome": "maybe"})).await;
        assert_eq!(status, 400, "an unknown outcome is bad input");
    }
}

/// A lease that is not renewed ends by itself: counted and logged, and the account is handed
/// out again. Its holder's id is dead for good: once another job has checked the same account
/// out, the stale holder's renew and release are refused and leave the new hold (and its
/// token) as they were.
#[actix_rt::test]
async fn a_lease_not_renewed_ends_by_itself() {
    support::logs::capture();
    for backend in harness::backends() {
        let h = started(backend.as_deref()).await;
        let (status, _, held) = checkout(
            &h,
            json!({"site_name": "court_zxfw", "account": "u1", "lease_seconds": 1, "job": "立案 9"}),
        )
        .await;
        assert_eq!(status, 200, "{held}");
        let id = held["data"]["checkout_id"].as_str().unwrap().to_string();
        support::wait_until("the lease to end", Duration::from_secs(10), || async {
            let (status, _) = h
                .acquire(json!({"site_name": "court_zxfw", "account": "u1"}))
                .await;
            (status == 200).then_some(())
        })
        .await;
        support::wait_until(
            "the expiry to be counted",
            Duration::from_secs(5),
            || async {
                h.prometheus_text()
                    .await
                    .contains(
                        "tokend_checkouts_ended_total{site=\"court_zxfw\",result=\"expired\"} 1",
                    )
                    .then_some(())
            },
        )
        .await;
        let logged = support::wait_until(
            "the expiry to be logged",
            Duration::from_secs(5),
            || async {
                support::logs::lines_with(&format!("checkout_id={id} "))
                    .into_iter()
                    .find(|l| l.contains("event=checkout_expired"))
            },
        )
        .await;
        assert!(logged.starts_with("WARN "), "{logged}");
        for part in [
            "site=court_zxfw",
            "account=u1",
            "job=\"立案 9\"",
            "lease_until=",
        ] {
            assert!(logged.contains(part), "{part} is not in {logged}");
        }
        let (status, gone) = act(&h, &id, "renew", json!({})).await;
        assert_eq!(
            (status, gone["code"].as_str()),
            (404, Some("CHECKOUT_NOT_FOUND"))
        );

        // Another job checks u1 out; the stale holder comes back.
        let (status, _, second) = checkout(
            &h,
            json!({"site_name": "court_zxfw", "account": "u1", "lease_seconds": 60}),
        )
        .await;
        assert_eq!(status, 200, "{second}");
        let second = &second["data"];
        let second_id = second["checkout_id"].as_str().unwrap().to_string();
        assert_ne!(second_id, id);
        let (status, refused) = act(&h, &id, "renew", json!({"lease_seconds": 60})).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (404, Some("CHECKOUT_NOT_FOUND")),
            "the stale holder renewed: {refused}"
        );
        for outcome in ["token_rejected", "ok"] {
            let (status, refused) = act(&h, &id, "release", json!({"outcome": outcome})).await;
            assert_eq!(
                (status, refused["code"].as_str()),
                (404, Some("CHECKOUT_NOT_FOUND")),
                "the stale holder released ({outcome}): {refused}"
            );
        }
        // The new hold stands: u1 is nobody else's, and its token was not invalidated.
        let (status, still) = h
            .acquire(json!({"site_name": "court_zxfw", "account": "u1"}))
            .await;
        assert_eq!(
            (status, still["code"].as_str()),
            (409, Some("CHECKED_OUT")),
            "{still}"
        );
        let u1 = h.account_state("u1").await;
        assert_eq!(u1["checkout"]["checkout_id"], second_id.as_str());
        let (status, renewed) = act(&h, &second_id, "renew", json!({})).await;
        assert_eq!(status, 200, "{renewed}");
        assert_eq!(renewed["data"]["token"], second["token"]);
        assert_eq!(renewed["data"]["token_renewed"], false);
        let (status, released) = act(&h, &second_id, "release", json!({"outcome": "ok"})).await;
        assert_eq!(status, 200, "{released}");
    }
}

/// Two instances on one Redis: a checkout on one is respected by the other, at once by its
/// logins and within a second by its cached hand-outs.
#[actix_rt::test]
async fn a_checkout_holds_across_instances() {
    if !support::require("Redis", support::redis_available()) {
        return;
    }
    let redis = support::redis_url();
    let prefix = format!("tokend-test-{}", support::unique());
    let retry = "[retry]\nnetwork_retry_delay_base = 0.05\n";
    let (a, b) = Harness::builder()
        .redis(Some(&redis))
        .prefix(&prefix)
        .retry(retry)
        .start_pair()
        .await;
    // Each harness has a database of its own; the same accounts, in the same order.
    for h in [&a, &b] {
        h.add_account("u1", "pw1", true);
        h.add_account("u2", "pw2", false);
    }
    let (status, _, held) = checkout(&a, json!({"site_name": "court_zxfw", "account": "u1"})).await;
    assert_eq!(status, 200, "{held}");
    // B logs u1 in for nobody, not even a forced refresh naming it (once it knows).
    support::wait_until("B to know the hold", Duration::from_secs(5), || async {
        let (status, _) = b
            .acquire(json!({"site_name": "court_zxfw", "account": "u1", "force_refresh": true}))
            .await;
        (status == 409).then_some(())
    })
    .await;
    let (status, other) = b.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(
        (status, other["data"]["account"].as_str()),
        (200, Some("u2"))
    );
    assert_eq!(a.portal.state.attempts_of("u1"), 1);
    // A second job on B cannot take u1 either.
    let (status, _, refused) =
        checkout(&b, json!({"site_name": "court_zxfw", "account": "u1"})).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("CHECKED_OUT"))
    );
    // Released on B (any instance may end it), u1 is B's to hand out again.
    let id = held["data"]["checkout_id"].as_str().unwrap();
    let (status, _) = act(&b, id, "release", json!({"outcome": "ok"})).await;
    assert_eq!(status, 200);
    support::wait_until("B to see u1 free", Duration::from_secs(5), || async {
        let (status, _) = b
            .acquire(json!({"site_name": "court_zxfw", "account": "u1"}))
            .await;
        (status == 200).then_some(())
    })
    .await;
}

/// `tokend exec` and `tokend checkout` against a real daemon: COMMAND gets the token in its
/// environment (and none of tokend's secrets), exits with its own status, and with
/// `--checkout` holds the account while it runs, renewed, released by its outcome.
#[actix_rt::test]
async fn tokend_exec_runs_a_command_with_a_token_and_a_checkout() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let portal = portal::Portal::start();
    portal.state.accept("alice", "pw-alice");
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        &format!(
            // Accounts added while it runs are seen at once (the `--account` case).
            "[server]\nlisten = \"127.0.0.1:0\"\n[cache]\ncredentials_ttl = 0.1\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    );
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let daemon = support::Daemon::start(dir.path(), &config);
    let url = format!("http://{}", daemon.addr);
    let exec = |extra: &[&str], script: &str| {
        let mut command = support::tokend(dir.path());
        command
            .args(["exec", "court_zxfw", "--url", &url, "--config"])
            .arg(&config)
            .args(extra)
            .args(["--", "sh", "-c", script])
            .env("TOKEND_WEBHOOK_SECRET", "webhook-secret-value");
        command
    };

    // Plain: the token in the environment, COMMAND's exit status.
    let out = exec(
        &[],
        "echo \"$TOKEND_TOKEN|$TOKEND_AUTHORIZATION|$TOKEND_HEADERS|$TOKEND_ACCOUNT|${TOKEND_WEBHOOK_SECRET:-none}\"; exit 3",
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let parts: Vec<&str> = line.trim().split('|').collect();
    assert!(parts[0].starts_with("tok-alice-1-"), "{line}");
    assert_eq!(parts[1], format!("Bearer {}", parts[0]));
    let headers: Value = serde_json::from_str(parts[2]).unwrap();
    assert_eq!(headers["Authorization"], parts[1]);
    assert_eq!((parts[3], parts[4]), ("alice", "none"));

    // --checkout: held while it runs, the lease renewed, released `ok` on exit 0.
    let list = || {
        let out = support::tokend(dir.path())
            .args(["checkout", "list", "--json", "--url", &url, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["checkouts"].clone()
    };
    for (exit, state) in [("0", "active"), ("1", "cooling_down")] {
        let mut child = exec(
            &["--checkout", "--lease", "1", "--job", "立案 7"],
            "echo \"$TOKEND_ACCOUNT\"; read code; exit $code",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert_eq!(first.trim(), "alice");
        let held = list();
        assert_eq!(held[0]["job"], "立案 7");
        let lease_until = held[0]["lease_until"].as_str().unwrap().to_string();
        support::wait_until(
            "a renewal of the lease",
            Duration::from_secs(10),
            || async {
                let now = list();
                (now[0]["lease_until"].as_str().unwrap() > lease_until.as_str()).then_some(())
            },
        )
        .await;
        // Nobody else is handed alice meanwhile.
        let other = support::tokend(dir.path())
            .args(["token", "get", "court_zxfw", "--url", &url, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(
            other.status.code(),
            Some(69),
            "{}",
            String::from_utf8_lossy(&other.stderr)
        );
        assert!(String::from_utf8_lossy(&other.stderr).contains("checked out by a job"));
        writeln!(child.stdin.as_mut().unwrap(), "{exit}").unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(exit.parse().unwrap()));
        assert_eq!(list(), json!([]));
        let accounts = support::tokend(dir.path())
            .args(["accounts", "list", "--json", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        // One JSON object a line.
        let text = String::from_utf8(accounts.stdout).unwrap();
        let alice: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(alice["state"], state, "{alice}");
    }

    // A checkout left by a job that died is released by hand.
    let mut child = exec(&["--checkout"], "echo x; read y")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let id = list()[0]["checkout_id"].as_str().unwrap().to_string();
    child.kill().unwrap();
    child.wait().unwrap();
    let out = support::tokend(dir.path())
        .args(["checkout", "release", &id, "--url", &url, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(list(), json!([]));

    // --account: that account's token (and with --checkout, that account held), or no run
    // at all when it does not exist.
    portal.state.accept("bob", "pw-bob");
    support::add_account(dir.path(), &config, "court_zxfw", "bob", "pw-bob");
    let out = support::wait_until_blocking(
        "the daemon to know bob (after credentials_ttl)",
        Duration::from_secs(10),
        || {
            let out = exec(
                &["--account", "bob"],
                "echo \"$TOKEND_ACCOUNT|$TOKEND_TOKEN\"",
            )
            .output()
            .unwrap();
            out.status.success().then_some(out)
        },
    );
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("bob|tok-bob-"), "{line}");
    let mut child = exec(
        &["--account", "bob", "--checkout"],
        "echo \"$TOKEND_ACCOUNT\"; read y",
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "bob");
    assert_eq!(list()[0]["account"], "bob");
    writeln!(child.stdin.as_mut().unwrap()).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(list(), json!([]));
    let out = exec(&["--account", "nobody"], "echo ran").output().unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "COMMAND ran");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nobody"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(daemon);
}

/// A probe that finds a held account's token refused invalidates it, but nothing logs the
/// account in while the job holds it: its holder renews (and is told) or releases.
#[actix_rt::test]
async fn a_probe_never_logs_a_held_account_in() {
    let prefix = format!("tokend-test-{}", support::unique());
    let portal = portal::Portal::start();
    let probe = format!(
        "probe_url = \"{}\"\nprobe_interval = 0.1\n",
        portal.url("/probe")
    );
    let retry = "[retry]\nnetwork_retry_delay_base = 0.05\n";
    let h = Harness::builder()
        .prefix(&prefix)
        .portal(portal)
        .retry(retry)
        .sites(&probe)
        .start()
        .await;
    h.add_account("u1", "pw1", true);
    let (status, _, held) =
        checkout(&h, json!({"site_name": "court_zxfw", "lease_seconds": 60})).await;
    assert_eq!(status, 200, "{held}");
    let token = held["data"]["token"].as_str().unwrap().to_string();
    h.portal.state.revoke(&token);
    let invalid = r#"tokend_probes_total{site="court_zxfw",result="invalid"} 1"#;
    support::wait_until(
        "the probe to refuse the token",
        Duration::from_secs(10),
        || async { h.prometheus_text().await.contains(invalid).then_some(()) },
    )
    .await;
    // The token is gone, and u1 was not logged in again behind the job's back.
    support::wait_until(
        "the token to be invalidated",
        Duration::from_secs(5),
        || async {
            let (_, status) = h
                .api_get("/api/v1/automation/tokens/status?site_name=court_zxfw")
                .await;
            (status["data"]["tokens"][0]["expires_at"].is_null()).then_some(())
        },
    )
    .await;
    assert_eq!(h.portal.state.attempts_of("u1"), 1);
    // The holder renews past the token: a login for the holder, told in the answer.
    let id = held["data"]["checkout_id"].as_str().unwrap();
    let (status, renewed) = act(&h, id, "renew", json!({})).await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["data"]["token_renewed"], true);
    assert_ne!(renewed["data"]["token"], token.as_str());
    assert_eq!(h.portal.state.attempts_of("u1"), 2);
}

/// A client token (the role that may only use `/tokens/*`) may check accounts out.
#[actix_rt::test]
async fn a_client_token_may_check_out() {
    const ADMIN: &str = "admin-token-0123456789";
    const CLIENT: &str = "client-token-0123456789";
    let extra =
        format!("server.admin_token = \"{ADMIN}\"\nserver.client_tokens = [\"{CLIENT}\"]\n");
    let h = Harness::start(None, &extra).await;
    h.add_account("u1", "pw1", true);
    let call = |method: Method, path: String, body: Option<Value>| {
        let mut request = h
            .client
            .request(method, format!("http://{}{path}", h.tokend.addr))
            .bearer_auth(CLIENT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let answer = request.send().await.unwrap();
            (
                answer.status().as_u16(),
                answer.json::<Value>().await.unwrap(),
            )
        }
    };
    let base = "/api/v1/automation/tokens";
    let (status, held) = call(
        Method::POST,
        format!("{base}/checkout"),
        Some(json!({"site_name": "court_zxfw"})),
    )
    .await;
    assert_eq!(status, 200, "{held}");
    let id = held["data"]["checkout_id"].as_str().unwrap();
    let (status, _) = call(Method::GET, format!("{base}/checkouts"), None).await;
    assert_eq!(status, 200);
    let (status, _) = call(
        Method::POST,
        format!("{base}/checkout/{id}/renew"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        Method::POST,
        format!("{base}/checkout/{id}/release"),
        Some(json!({"outcome": "ok"})),
    )
    .await;
    assert_eq!(status, 200);
    // Nothing beyond `/tokens/*`.
    let (status, _) = call(Method::GET, "/api/v1/automation/accounts".into(), None).await;
    assert_eq!(status, 403);
}

/// A checkout on a derived site holds its parent's account (the one whose login would end
/// the session) and hands out, and renews, the derived site's token.
#[actix_rt::test]
async fn a_checkout_on_a_derived_site_holds_the_parents_account() {
    let court = court_portal::CourtPortal::start();
    let derived = format!(
        "[[sites]]\nname = \"derived\"\ndriver = \"derived\"\nfrom_site = \"court_zxfw\"\n\
         exchange_url = \"{}\"\nexchange_header = \"X-Parent-Token: {{token}}\"\n\
         token_pointer = \"/access_token\"\nexpires_in_pointer = \"/expires_in\"\n",
        court.url("/exchange")
    );
    let h = Harness::start(None, &derived).await;
    h.add_account("alice", "pw-alice", false);
    let (status, _, held) =
        checkout(&h, json!({"site_name": "derived", "lease_seconds": 60})).await;
    assert_eq!(status, 200, "{held}");
    let held = &held["data"];
    assert_eq!(
        (held["site_name"].as_str(), held["accounts_site"].as_str()),
        (Some("derived"), Some("court_zxfw"))
    );
    let (_, parent) = h
        .api_get("/api/v1/automation/tokens/status?site_name=court_zxfw")
        .await;
    assert_ne!(held["token"], Value::Null);
    // The parent's account is held: nobody gets it on the parent site either.
    let (status, refused) = h
        .acquire(json!({"site_name": "court_zxfw", "account": "alice"}))
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("CHECKED_OUT")),
        "{parent}"
    );
    assert_eq!(
        h.account_state("alice").await["checkout"]["checkout_id"],
        held["checkout_id"]
    );
    // Renewed: still the derived site's token.
    let id = held["checkout_id"].as_str().unwrap();
    let (status, renewed) = act(&h, id, "renew", json!({})).await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["data"]["token"], held["token"]);
    assert_eq!(renewed["data"]["site_name"], "derived");
}
