//! The acquisition pipeline end to end: tokend in-process on 127.0.0.1:0 over real HTTP, a
//! real fake portal, real SQLite history, and each test once more on Redis.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokend::accounts::NewAccount;
use tokend::vault::secret::Secret;

use crate::support;
use crate::support::harness::{backends, Harness};
use crate::support::portal::AccountBehaviour;

#[actix_rt::test]
async fn a_cold_burst_gets_one_login_and_later_requests_hit_the_cache() {
    for redis in backends() {
        let h = Harness::start(redis.as_deref(), "").await;
        h.add_account("alice", "pw-alice", false);
        *h.portal.state.latency.lock().unwrap() = Duration::from_millis(300);

        let answers =
            join_all((0..200).map(|_| h.acquire(json!({"site_name": "court_zxfw"})))).await;
        assert_eq!(
            h.portal.state.issued(),
            1,
            "200 cold callers, one login ({redis:?})"
        );
        let tokens: std::collections::HashSet<String> = answers
            .iter()
            .map(|(status, body)| {
                assert_eq!(*status, 200, "{body}");
                body["data"]["token"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(tokens.len(), 1, "everyone gets the same token");
        let logins = answers
            .iter()
            .filter(|(_, b)| b["data"]["source"] == "login")
            .count();
        assert_eq!(logins, 1);

        let (_, later) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(later["data"]["source"], "cache");
        assert_eq!(later["data"]["account"], "alice");
        assert_eq!(h.portal.state.issued(), 1);

        let history = h.history().await;
        assert_eq!(
            history.len(),
            1,
            "one history row per acquisition that logged in"
        );
        assert_eq!(history[0].status, "success");
        assert_eq!(history[0].trigger_reason, "token_needed");
        let token = later["data"]["token"].as_str().unwrap();
        assert_eq!(
            history[0].token_fingerprint.as_deref(),
            Some(tokend::vault::secret::fingerprint(token).as_str())
        );
        assert!(!history[0]
            .token_redacted
            .as_deref()
            .unwrap()
            .contains(&token[5..20]));
    }
}

#[actix_rt::test]
async fn invalidate_and_force_refresh_cause_a_new_login() {
    for redis in backends() {
        let h = Harness::start(redis.as_deref(), "").await;
        let id = h.add_account("alice", "pw-alice", false);
        let (_, first) = h
            .acquire(json!({"site_name": "court_zxfw", "credential_id": id}))
            .await;
        assert_eq!(first["data"]["source"], "login", "{first}");

        let (status, body) = h
            .post(
                "invalidate",
                json!({"site_name": "court_zxfw", "account": "alice"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (_, second) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(second["data"]["source"], "login");
        assert_ne!(second["data"]["token"], first["data"]["token"]);
        assert_eq!(h.portal.state.issued(), 2);

        // Concurrent force_refresh callers share one login.
        let forced = join_all(
            (0..20).map(|_| h.acquire(json!({"site_name": "court_zxfw", "force_refresh": true}))),
        )
        .await;
        assert_eq!(
            h.portal.state.issued(),
            3,
            "20 force_refresh callers, one login"
        );
        for (status, body) in &forced {
            assert_eq!(*status, 200);
            assert_ne!(body["data"]["token"], second["data"]["token"]);
        }
        let triggers: Vec<String> = h
            .history()
            .await
            .iter()
            .map(|r| r.trigger_reason.clone())
            .collect();
        assert_eq!(triggers, ["force_refresh", "token_needed", "token_needed"]);
    }
}

#[actix_rt::test]
async fn tokens_close_to_expiry_are_not_handed_out() {
    for redis in backends() {
        // A 4 s token: its margin is a quarter of its life (1 s), not refresh_ahead (100 s).
        let h = Harness::start(
            redis.as_deref(),
            "[cache]\nrefresh_ahead = 100\nbackground_refresh = false\n",
        )
        .await;
        h.add_account("alice", "pw-alice", false);
        *h.portal.state.expires_in.lock().unwrap() = 4.0;
        let (_, first) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        let expires: chrono::DateTime<chrono::Utc> = first["data"]["expires_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let later = support::wait_until("a new login", Duration::from_secs(6), || async {
            let (_, answer) = h.acquire(json!({"site_name": "court_zxfw"})).await;
            if answer["data"]["source"] == "cache" {
                // Served only while more than the margin was left.
                let left = (expires - chrono::Utc::now()).num_milliseconds();
                assert!(left > 900, "a token with {left} ms left was handed out");
                return None;
            }
            Some(answer)
        })
        .await;
        assert_eq!(later["data"]["source"], "login", "{later}");
        assert_ne!(later["data"]["token"], first["data"]["token"]);
        let left = (expires - chrono::Utc::now()).num_milliseconds();
        assert!(
            left <= 1100,
            "renewed with {left} ms left, before the margin"
        );
    }
}

#[actix_rt::test]
async fn tokens_in_use_are_refreshed_in_the_background() {
    for redis in backends() {
        let h = Harness::start(
            redis.as_deref(),
            "[cache]\nrefresh_ahead = 1\nrefresh_jitter = 0\n",
        )
        .await;
        h.add_account("alice", "pw-alice", false);
        *h.portal.state.expires_in.lock().unwrap() = 6.0;
        let (_, first) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        // Two thirds of 6 s: from 4 s on, a hit triggers a refresh while the old token is
        // served; every answer until the new token is the old one, from the cache.
        let renewed = support::wait_until("a renewed token", Duration::from_secs(6), || async {
            let (_, answer) = h.acquire(json!({"site_name": "court_zxfw"})).await;
            assert_eq!(answer["data"]["source"], "cache", "{answer}");
            (answer["data"]["token"] != first["data"]["token"]).then_some(answer)
        })
        .await;
        assert_ne!(
            renewed["data"]["token"], first["data"]["token"],
            "renewed in the background"
        );
        assert_eq!(h.portal.state.issued(), 2);
        // The refresh records its row after it stores the token: wait for the row.
        support::wait_until(
            "the refresh's history row",
            Duration::from_secs(5),
            || async {
                let rows = h.history().await;
                (rows.len() == 2).then_some(())
            },
        )
        .await;
        assert_eq!(h.history().await[0].trigger_reason, "refresh_ahead");
    }
}

#[actix_rt::test]
async fn a_wrong_password_is_tried_once_and_blacklisted() {
    for redis in backends() {
        let h = Harness::start(redis.as_deref(), "").await;
        let bad = h.add_account("mallory", "pw-old", true);
        h.portal.state.accept("mallory", "pw-new");
        h.add_account("bob", "pw-bob", false);

        // The preferred account fails; the next one is tried within the same acquisition.
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["account"], "bob");
        assert_eq!(
            h.portal.state.attempts_of("mallory"),
            1,
            "a credential error is never retried"
        );

        // Blacklisted now: asking for it explicitly is refused without a login.
        let (status, body) = h
            .acquire(
                json!({"site_name": "court_zxfw", "credential_id": bad, "force_refresh": true}),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("NO_AVAILABLE_ACCOUNT")),
            "{body}"
        );
        assert_eq!(h.portal.state.attempts_of("mallory"), 1);

        let history = h.history().await;
        assert_eq!(history[0].status, "success");
        assert!(history[0]
            .error_details
            .as_deref()
            .unwrap()
            .contains("credential_error"));
        let pool = h.tokend.state.pool.clone();
        let rows = pool
            .run(|c| tokend::db::accounts::list(c, Some("court_zxfw")))
            .await
            .unwrap();
        let mallory = rows.iter().find(|r| r.account == "mallory").unwrap();
        assert_eq!(
            (mallory.login_failure_count, mallory.login_success_count),
            (1, 0)
        );
    }
}

#[actix_rt::test]
async fn only_a_wrong_password_left_is_a_502_with_the_error_type() {
    let h = Harness::start(None, "").await;
    h.add_account("mallory", "pw-old", false);
    h.portal.state.accept("mallory", "pw-new");
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("TOKEN_ACQUISITION_FAILED")),
        "{body}"
    );
    assert_eq!(body["errors"]["error_type"], "credential_error");
    assert!(
        !body.to_string().contains("pw-old"),
        "the password leaked into the error"
    );
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("NO_AVAILABLE_ACCOUNT")),
        "{body}"
    );
    assert_eq!(h.history().await[0].status, "credential_error");
}

#[actix_rt::test]
async fn captcha_and_server_errors_are_retried_to_success() {
    for redis in backends() {
        let h = Harness::start(redis.as_deref(), "").await;
        h.add_account("alice", "pw-alice", false);
        h.portal.state.set_account(
            "alice",
            AccountBehaviour {
                password: "pw-alice".into(),
                captcha_failures: 2,
                server_errors: 1,
            },
        );
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(h.portal.state.attempts_of("alice"), 4);
        let row = &h.history().await[0];
        assert_eq!(
            (
                row.status.as_str(),
                row.attempt_count,
                row.captcha_attempts,
                row.network_retries
            ),
            ("success", 4, 2, 1)
        );
    }
}

#[actix_rt::test]
async fn bad_requests_are_4xx_with_a_code() {
    let h = Harness::start(None, "").await;
    let cases = [
        (json!({"site_name": "nowhere"}), 404, "UNKNOWN_SITE"),
        (json!({"site_name": "court zxfw"}), 400, "INVALID_INPUT"),
        (
            json!({"site_name": "court_zxfw"}),
            503,
            "NO_AVAILABLE_ACCOUNT",
        ),
        (
            json!({"site_name": "court_zxfw", "credential_id": 999}),
            404,
            "ACCOUNT_NOT_FOUND",
        ),
        (json!({"site": "court_zxfw"}), 400, "INVALID_INPUT"),
        (json!({"site_name": 7}), 400, "INVALID_INPUT"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = h.acquire(body.clone()).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body} -> {answer}"
        );
    }
    let url = format!("http://{}/api/v1/automation/tokens/acquire", h.tokend.addr);
    let big = h
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    let garbage = h
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 400);
}

/// A login program for the `command` driver, answering by account name.
const LOGIN_SCRIPT: &str = r#"#!/bin/sh
read -r line
case "$line" in
  *'"account":"good"'*) echo '{"token":"cmd-token-0123456789abcdef","expires_in":3600}' ;;
  *'"account":"wrongpw"'*) echo "portal says: bad password in $line" >&2; exit 10 ;;
  *'"account":"captcha"'*) echo "captcha again" >&2; exit 11 ;;
  *'"account":"garbage"'*) echo 'Login OK!' ;;
  *'"account":"lingering"'*) sleep 60 & echo '{"token":"lingering-token-0123456789","expires_in":3600}' ;;
  *'"account":"slow"'*) sleep 60 & echo $! > "$(dirname "$0")/helper.pid"; wait ;;
  *) exit 3 ;;
esac
"#;

async fn command_harness(redis: Option<&str>) -> (Harness, std::path::PathBuf) {
    let scripts = tempfile::tempdir().unwrap().keep();
    let script = scripts.join("login.sh");
    std::fs::write(&script, LOGIN_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let extra = format!(
        "[[sites]]\nname = \"court_baoquan\"\ndriver = \"command\"\ncommand = [\"{}\"]\n",
        script.display()
    );
    let h = Harness::builder()
        .redis(redis)
        .retry("[retry]\nlogin_timeout = 1.5\ncaptcha_retry_delay = 0.01\n")
        .extra(&extra)
        .start()
        .await;
    (h, scripts)
}

fn add_command_account(h: &Harness, account: &str) -> i64 {
    let state = &h.tokend.state;
    tokend::accounts::add(
        &state.pool,
        &state.key,
        &NewAccount {
            site_name: "court_baoquan".into(),
            account: account.into(),
            password: Secret::new(format!("secret-of-{account}")),
            preferred: false,
            proxy: None,
        },
    )
    .unwrap()
    .id
}

#[actix_rt::test]
async fn the_command_driver_speaks_its_protocol() {
    for redis in backends() {
        let (h, scripts) = command_harness(redis.as_deref()).await;
        let ids: Vec<i64> = ["good", "wrongpw", "captcha", "garbage", "slow", "lingering"]
            .iter()
            .map(|a| add_command_account(&h, a))
            .collect();
        let acquire =
            |id: i64| h.acquire(json!({"site_name": "court_baoquan", "credential_id": id}));

        let (status, body) = acquire(ids[0]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["token"], "cmd-token-0123456789abcdef");

        // A helper left running with the pipes open does not hold the login up.
        let started = std::time::Instant::now();
        let (status, body) = acquire(ids[5]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["token"], "lingering-token-0123456789");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited for the helper: {:?}",
            started.elapsed()
        );

        let (status, body) = acquire(ids[1]).await;
        assert_eq!(body["errors"]["error_type"], "credential_error", "{body}");
        assert_eq!(status, 502);
        assert!(
            !body.to_string().contains("secret-of-wrongpw"),
            "stderr is scrubbed: {body}"
        );

        let (_, body) = acquire(ids[2]).await;
        assert_eq!(body["errors"]["error_type"], "captcha_error", "{body}");

        let (_, body) = acquire(ids[3]).await;
        assert_eq!(body["errors"]["error_type"], "failed", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("not a JSON object"),
            "{body}"
        );

        // A hung program: its whole process group is killed at login_timeout.
        let (_, body) = acquire(ids[4]).await;
        assert_eq!(body["errors"]["error_type"], "timeout", "{body}");
        let helper = std::fs::read_to_string(scripts.join("helper.pid")).unwrap();
        // Gone, or a zombie waiting for a reaper (killed, not yet collected by PID 1).
        support::wait_until(
            "the helper process killed",
            Duration::from_secs(3),
            || async {
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", helper.trim()))
                    .unwrap_or_default();
                let state = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .next()
                    .unwrap_or("X")
                    .to_string();
                matches!(state.as_str(), "X" | "Z").then_some(())
            },
        )
        .await;

        let history = h.history().await;
        let statuses: Vec<&str> = history.iter().map(|r| r.status.as_str()).collect();
        assert_eq!(
            statuses,
            [
                "timeout",
                "failed",
                "captcha_error",
                "credential_error",
                "success",
                "success"
            ]
        );
        let captcha = &history[2];
        assert_eq!(
            captcha.captcha_attempts, 4,
            "1 try + max_captcha_retries (3)"
        );
        for row in &history {
            let text = format!("{row:?}");
            assert!(
                !text.contains("secret-of-"),
                "a password reached the history: {text}"
            );
        }
        std::fs::remove_dir_all(scripts).unwrap();
    }
}

#[actix_rt::test]
async fn the_blacklist_expires_and_a_success_clears_it() {
    for redis in backends() {
        // 0.0003 h is about 1.1 s.
        let h = Harness::start(
            redis.as_deref(),
            "[accounts]\nblacklist_duration_hours = 0.0003\n",
        )
        .await;
        let id = h.add_account("carol", "pw-new", false);
        h.portal.state.accept("carol", "pw-other");
        let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 502);
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("NO_AVAILABLE_ACCOUNT"))
        );

        // The portal accepts the password again; once the blacklist expires, carol logs in.
        h.portal.state.accept("carol", "pw-new");
        support::wait_until("the blacklist over", Duration::from_secs(5), || async {
            let (status, body) = h
                .acquire(json!({"site_name": "court_zxfw", "credential_id": id}))
                .await;
            assert!(matches!(status, 200 | 503), "{body}");
            (status == 200).then_some(())
        })
        .await;
        let pool = h.tokend.state.pool.clone();
        let rows = pool
            .run(|c| tokend::db::accounts::list(c, Some("court_zxfw")))
            .await
            .unwrap();
        assert_eq!(
            (rows[0].login_success_count, rows[0].login_failure_count),
            (1, 1)
        );
        assert!(rows[0].last_login_success_at.is_some());
    }
}

#[actix_rt::test]
async fn tokens_are_served_while_redis_is_unreachable() {
    let h = Harness::start(Some("redis://127.0.0.1:1/0"), "").await;
    h.add_account("alice", "pw-alice", false);
    let (status, first) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200, "{first}");
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let (status, again) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200);
        assert_eq!(
            again["data"]["source"], "cache",
            "served from the in-process fallback"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "requests waited on the dead Redis"
    );
    assert_eq!(h.portal.state.issued(), 1);

    let url = format!(
        "http://{}/api/v1/automation/performance/health",
        h.tokend.addr
    );
    let health: Value = h
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = &health["data"];
    assert_eq!(
        data["components"]["cache"]["status"], "degraded",
        "{health}"
    );
    assert_eq!(
        data["components"]["slots"]["mode"], "memory (redis unreachable)",
        "{health}"
    );
    assert_eq!(data["status"], "degraded");
}
