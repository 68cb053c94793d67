//! Token lifecycle beyond bearer tokens (SPEC §13) against the fake portal and real login
//! programs: validity probes, cookie sessions, captchas a person solves, webhooks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support;
use crate::support::harness::{backends, Harness};
use crate::support::portal::Portal;

const RETRY: &str = "[retry]\nnetwork_retry_delay_base = 0.05\ncaptcha_retry_delay = 0.05\n\
                     login_timeout = 10\nmax_network_retries = 0\n";

/// A Prometheus counter's value (0 when the series does not exist yet).
async fn counter(h: &Harness, series: &str) -> f64 {
    h.prometheus_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

/// Probes of court_zxfw that ended with `result` (`valid`, `invalid`, `error`).
async fn probes(h: &Harness, result: &str) -> f64 {
    let series = format!(r#"tokend_probes_total{{site="court_zxfw",result="{result}"}}"#);
    counter(h, &series).await
}

/// Waits until at least `n` probes ended with `result`.
async fn probes_reach(h: &Harness, result: &str, n: f64) {
    let what = format!("{n} {result} probes");
    support::wait_until(&what, Duration::from_secs(10), || async {
        (probes(h, result).await >= n).then_some(())
    })
    .await;
}

/// A harness for court_zxfw with the site keys `keys` on `portal`, and alice's first token.
async fn with_a_token(redis: Option<&str>, portal: Portal, keys: &str) -> (Harness, i64, String) {
    let prefix = format!("tokend-test-{}", support::unique());
    let h = Harness::builder()
        .redis(redis)
        .prefix(&prefix)
        .portal(portal)
        .retry(RETRY)
        .sites(keys)
        .start()
        .await;
    let id = h.add_account("alice", "pw-a", false);
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    (h, id, token)
}

/// The token the cache holds for an account now, if any.
async fn cached_token(h: &Harness, id: i64) -> Option<String> {
    h.tokend
        .state
        .cache
        .token("court_zxfw", Some(id))
        .await
        .map(|hit| hit.token.expose().to_string())
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[actix_rt::test]
async fn a_token_revoked_by_the_portal_is_found_by_the_probe_and_replaced() {
    for redis in backends() {
        let portal = Portal::start();
        let probe = format!(
            "probe_url = \"{}\"\nprobe_interval = 0.2\n",
            portal.url("/probe")
        );
        let (h, id, first) = with_a_token(redis.as_deref(), portal, &probe).await;
        // The probe finds the token good while the portal accepts it.
        probes_reach(&h, "valid", 1.0).await;

        h.portal.state.revoke(&first);
        let second =
            support::wait_until("a replacement token", Duration::from_secs(10), || async {
                cached_token(&h, id).await.filter(|t| *t != first)
            })
            .await;
        assert_eq!(h.portal.state.issued(), 2);
        // The next consumer gets the replacement from the cache, and the portal takes it.
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["token"], second.as_str(), "{body}");
        assert_eq!(body["data"]["source"], "cache", "{body}");
        let accepted = h
            .client
            .get(h.portal.url("/probe"))
            .bearer_auth(&second)
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status().as_u16(), 200);
        assert!(probes(&h, "invalid").await >= 1.0);
        let rows = h.history().await;
        assert!(
            rows.iter()
                .any(|r| r.trigger_reason == "refresh_ahead" && r.status == "success"),
            "no background replacement in the history"
        );
    }
}

#[actix_rt::test]
async fn a_probe_meeting_a_5xx_or_a_refused_connection_keeps_the_token() {
    let down = format!("http://127.0.0.1:{}/probe", closed_port());
    for probe_url in [None, Some(down)] {
        let portal = Portal::start();
        *portal.state.probe_status.lock().unwrap() = Some(503);
        let url = probe_url.unwrap_or_else(|| portal.url("/probe"));
        let keys = format!("probe_url = \"{url}\"\nprobe_interval = 0.1\n");
        let (h, id, token) = with_a_token(None, portal, &keys).await;
        probes_reach(&h, "error", 3.0).await;
        assert_eq!(cached_token(&h, id).await.as_deref(), Some(token.as_str()));
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["token"], token.as_str());
        assert_eq!(body["data"]["source"], "cache");
        assert_eq!(
            h.portal.state.issued(),
            1,
            "a token was thrown away ({url})"
        );
        assert_eq!(probes(&h, "invalid").await, 0.0);
    }
}

#[actix_rt::test]
async fn probes_run_one_per_token_and_no_more_at_once_than_the_site_slots() {
    use std::sync::atomic::Ordering;
    let portal = Portal::start();
    *portal.state.probe_latency.lock().unwrap() = Duration::from_millis(150);
    let keys = format!(
        "probe_url = \"{}\"\nprobe_interval = 0.1\n",
        portal.url("/probe")
    );
    let prefix = format!("tokend-test-{}", support::unique());
    let extra = "[concurrency]\nmax_concurrent_per_site = 2\n";
    let h = Harness::builder()
        .prefix(&prefix)
        .portal(portal)
        .retry(RETRY)
        .extra(extra)
        .sites(&keys)
        .start()
        .await;
    // Every account first: the credential list is cached once read.
    let ids: Vec<i64> = (0..5)
        .map(|n| h.add_account(&format!("a{n}"), "pw", false))
        .collect();
    for id in ids {
        let (status, body) = h
            .acquire(json!({"site_name": "court_zxfw", "credential_id": id}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let state = h.portal.state.clone();
    support::wait_until("twenty probes", Duration::from_secs(20), || async {
        (state.probes.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
    // Every token probed every 0.1 s for 0.15 s each would be 7 at once; the slots say 2.
    assert_eq!(state.max_probes_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(state.max_probes_per_token.load(Ordering::SeqCst), 1);
    assert_eq!(state.issued(), 5, "a good token was replaced");
}

#[actix_rt::test]
async fn a_cookie_login_yields_a_cookie_session_the_portal_accepts_with_the_cookies_life() {
    let portal = Portal::start();
    *portal.state.cookie_max_age.lock().unwrap() = Some(1200);
    let keys = format!(
        "token_from = \"cookies\"\nprobe_url = \"{}\"\nprobe_interval = 0.1\n",
        portal.url("/probe")
    );
    let prefix = format!("tokend-test-{}", support::unique());
    let h = Harness::builder()
        .prefix(&prefix)
        .portal(portal)
        .retry(RETRY)
        .sites(&keys)
        .start()
        .await;
    h.add_account("alice", "pw-a", false);
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["token_type"], "Cookie", "{body}");
    let cookie = data["token"].as_str().unwrap();
    assert!(
        cookie.starts_with("SESSION=tok-alice-1-") && cookie.ends_with("; uid=alice"),
        "{cookie}"
    );
    // Handed out as the header to send (issue 21), not as an `Authorization` value.
    assert_eq!(data["headers"], json!({ "Cookie": cookie }), "{body}");
    assert!(data["authorization"].is_null(), "{body}");
    // The shortest cookie's life (20 minutes), not the JSON answer's hour.
    let expires: chrono::DateTime<chrono::Utc> =
        data["expires_at"].as_str().unwrap().parse().unwrap();
    let life = (expires - chrono::Utc::now()).num_seconds();
    assert!((1180..=1200).contains(&life), "life {life}s");
    let answer = h
        .client
        .get(h.portal.url("/probe"))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    // The probes send it as a cookie too, and the portal finds it good.
    probes_reach(&h, "valid", 1.0).await;
    // Stored and read back with its type.
    let (_, body) = h
        .acquire(json!({"site_name": "court_zxfw", "force_refresh": false}))
        .await;
    assert_eq!(body["data"]["token_type"], "Cookie");
    assert_eq!(body["data"]["source"], "cache");
    assert_eq!(body["data"]["headers"], json!({ "Cookie": cookie }));
    assert!(body["data"]["authorization"].is_null(), "{body}");
}

/// tokend with a `court_captcha` site whose logins run the example hand-off script.
async fn captcha_harness(answer_timeout: f64) -> Harness {
    let portal = Portal::start();
    *portal.state.captcha_text.lock().unwrap() = Some("x7k2".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/captcha_handoff_login.py"
    );
    let extra = format!(
        "[[sites]]\nname = \"court_captcha\"\ndriver = \"command\"\n\
         command = [\"{script}\", \"--captcha-url\", \"{}\", \"--login-url\", \"{}\"]\n",
        portal.url("/captcha"),
        portal.login_url()
    );
    let retry = format!(
        "[retry]\nlogin_timeout = 1.5\ncaptcha_retry_delay = 0.05\ncaptcha_answer_timeout = {answer_timeout}\n"
    );
    let prefix = format!("tokend-test-{}", support::unique());
    let h = Harness::builder()
        .prefix(&prefix)
        .portal(portal)
        .retry(&retry)
        .extra(&extra)
        .start()
        .await;
    h.add_account_on("court_captcha", "alice", "pw-a", false);
    h
}

async fn pending(h: &Harness) -> Vec<Value> {
    let (status, body) = h.api_get("/api/v1/automation/captchas").await;
    assert_eq!(status, 200, "{body}");
    body["data"]["captchas"].as_array().unwrap().clone()
}

#[actix_rt::test]
async fn a_captcha_is_listed_answered_over_the_api_and_the_login_completes() {
    let h = captcha_harness(60.0).await;
    let url = format!("http://{}/api/v1/automation/tokens/acquire", h.tokend.addr);
    let client = h.client.clone();
    let acquisition = actix_web::rt::spawn(async move {
        let answer = client
            .post(url)
            .json(&json!({"site_name": "court_captcha"}))
            .send()
            .await
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json::<Value>().await.unwrap(),
        )
    });
    let challenge = support::wait_until("a pending captcha", Duration::from_secs(10), || async {
        pending(&h).await.into_iter().next()
    })
    .await;
    assert_eq!(challenge["site_name"], "court_captcha");
    assert_eq!(challenge["account"], "alice");
    assert!(challenge["prompt"]
        .as_str()
        .unwrap()
        .contains("Type the characters"));
    assert!(
        challenge["image"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,iVBOR"),
        "{challenge}"
    );
    assert!(challenge["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(challenge["expires_at"].is_string());
    // The person is slow on purpose (the subject of this test): they answer after more than
    // login_timeout (1.5 s), and their time is not the login's.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let id = challenge["id"].as_str().unwrap();
    let path = format!("/api/v1/automation/captchas/{id}");
    let (status, _, body) = h
        .api_call(Method::POST, &path, Some(json!({"answer": "x7k2"})))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = h
        .api_call(Method::POST, &path, Some(json!({"answer": "x7k2"})))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _, body) = h
        .api_call(
            Method::POST,
            "/api/v1/automation/captchas/no-such-id",
            Some(json!({"answer": "x"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = acquisition.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["token"], "tok-alice-1-0123456789abcdef");
    assert_eq!(h.portal.state.attempts_of("alice"), 1);
    assert!(pending(&h).await.is_empty());
}

#[actix_rt::test]
async fn an_unanswered_captcha_is_a_captcha_error_after_the_timeout() {
    let h = captcha_harness(1.0).await;
    let started = Instant::now();
    let (status, body) = h.acquire(json!({"site_name": "court_captcha"})).await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errors"]["error_type"], "captcha_error", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("captcha_answer_timeout"),
        "{body}"
    );
    // One challenge, not retried: nobody is there to answer the next one either.
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(h.portal.state.attempts_of("alice"), 0);
    assert!(pending(&h).await.is_empty());
    let rows = h.history().await;
    assert_eq!(rows[0].status, "captcha_error");
}

/// What the receiver got: each POST's signature header and body.
type Posts = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// A webhook receiver on 127.0.0.1:0 that keeps what it is sent.
struct Receiver {
    url: String,
    posts: Posts,
}

impl Receiver {
    fn start() -> Receiver {
        use actix_web::{web, App, HttpRequest, HttpResponse};
        let posts: Posts = Arc::default();
        let data = web::Data::new(posts.clone());
        let addr = crate::support::serve_on_thread!(1, move || {
            App::new().app_data(data.clone()).route(
                "/hook",
                web::post().to(
                    |posts: web::Data<Posts>, request: HttpRequest, body: web::Bytes| async move {
                        let signature = request
                            .headers()
                            .get("x-tokend-signature")
                            .map(|v| v.to_str().unwrap().to_string());
                        posts.lock().unwrap().push((signature, body.to_vec()));
                        HttpResponse::NoContent().finish()
                    },
                ),
            )
        });
        Receiver {
            url: format!("http://{}/hook", addr),
            posts,
        }
    }

    /// The events received, as JSON, each with whether its signature was right.
    fn events(&self, secret: &str) -> Vec<(Value, bool)> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .map(|(signature, body)| {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                mac.update(body);
                let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                (
                    serde_json::from_slice(body).unwrap(),
                    signature.as_deref() == Some(expected.as_str()),
                )
            })
            .collect()
    }
}

fn of_kind(events: &[(Value, bool)], event: &str, alert: &str) -> usize {
    events
        .iter()
        .filter(|(e, _)| e["event"] == event && e["alert"]["type"] == alert)
        .count()
}

#[actix_rt::test]
async fn a_webhook_gets_one_signed_post_per_alert() {
    let hook = Receiver::start();
    let extra = format!(
        "[alerts]\nevaluate_interval = 0.1\n[circuit]\nfailure_threshold = 1\nopen_seconds = 60\n\
         [notify]\nwebhook_url = \"{}\"\nwebhook_secret = \"s3cret-for-the-hook\"\n",
        hook.url
    );
    let h = Harness::builder().retry(RETRY).extra(&extra).start().await;
    h.add_account("alice", "pw-a", false);
    h.portal.state.set_outage(true, None);
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 502, "{body}");
    support::wait_until(
        "a site_unavailable POST",
        Duration::from_secs(10),
        || async {
            (of_kind(
                &hook.events("s3cret-for-the-hook"),
                "alert_firing",
                "site_unavailable",
            ) > 0)
                .then_some(())
        },
    )
    .await;
    // The alert stays firing over more evaluations (each awaited until its transitions are
    // done): still one POST. Deliveries are in order, so a repeated POST of these would
    // come before the resolution awaited below.
    for _ in 0..5 {
        h.tokend
            .state
            .actors
            .alert
            .send(tokend::actors::alert::Evaluate)
            .await
            .unwrap();
    }
    let events = hook.events("s3cret-for-the-hook");
    assert_eq!(
        of_kind(&events, "alert_firing", "site_unavailable"),
        1,
        "{events:?}"
    );
    assert!(events.iter().all(|(_, signed)| *signed), "{events:?}");
    let firing = events
        .iter()
        .find(|(e, _)| e["alert"]["type"] == "site_unavailable")
        .unwrap();
    assert_eq!(firing.0["alert"]["severity"], "high");

    // Resolved: one POST too.
    h.portal.state.set_outage(false, None);
    let (status, _, body) = h
        .api_call(
            Method::POST,
            "/api/v1/automation/sites/court_zxfw/circuit/close",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    support::wait_until("a resolved POST", Duration::from_secs(10), || async {
        (of_kind(
            &hook.events("s3cret-for-the-hook"),
            "alert_resolved",
            "site_unavailable",
        ) == 1)
            .then_some(())
    })
    .await;
    let events = hook.events("s3cret-for-the-hook");
    assert_eq!(
        of_kind(&events, "alert_firing", "site_unavailable"),
        1,
        "a firing alert was POSTed again: {events:?}"
    );
    // Counted once the receiver has answered, a moment after it recorded the POST.
    support::wait_until("two deliveries counted", Duration::from_secs(5), || async {
        let delivered = r#"tokend_webhook_deliveries_total{result="delivered"}"#;
        (counter(&h, delivered).await >= 2.0).then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn tokend_keeps_serving_while_the_webhook_is_down() {
    let extra = format!(
        "[alerts]\nevaluate_interval = 0.1\n[circuit]\nfailure_threshold = 1\nopen_seconds = 60\n\
         [notify]\nwebhook_url = \"http://127.0.0.1:{}/hook\"\n",
        closed_port()
    );
    let h = Harness::builder().retry(RETRY).extra(&extra).start().await;
    h.add_account("alice", "pw-a", false);
    h.add_account("bob", "pw-b", false);
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200, "{body}");
    let alice = body["data"]["credential_id"].clone();
    // An outage opens the circuit: an alert fires, and its POST fails again and again.
    h.portal.state.set_outage(true, None);
    let other = if alice == json!(1) { 2 } else { 1 };
    let (status, _) = h
        .acquire(json!({"site_name": "court_zxfw", "credential_id": other}))
        .await;
    assert_eq!(status, 502);
    support::wait_until(
        "failing webhook deliveries",
        Duration::from_secs(10),
        || async {
            (counter(&h, r#"tokend_webhook_deliveries_total{result="retried"}"#).await >= 1.0)
                .then_some(())
        },
    )
    .await;
    // Cached tokens are served at once meanwhile ...
    for _ in 0..20 {
        let started = Instant::now();
        let (status, body) = h
            .acquire(json!({"site_name": "court_zxfw", "credential_id": alice}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    // ... and once the portal is back, logins are as quick as ever.
    h.portal.state.set_outage(false, None);
    h.api_call(
        Method::POST,
        "/api/v1/automation/sites/court_zxfw/circuit/close",
        None,
    )
    .await;
    let started = Instant::now();
    let (status, body) = h
        .acquire(json!({"site_name": "court_zxfw", "credential_id": other}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[actix_rt::test]
async fn the_cli_lists_and_answers_a_captcha_and_the_webhook_hears_of_it() {
    const ADMIN: &str = "admin-token-0123456789";
    let hook = Receiver::start();
    let portal = Portal::start();
    portal.state.accept("alice", "pw-a");
    *portal.state.captcha_text.lock().unwrap() = Some("x7k2".into());
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/captcha_handoff_login.py"
    );
    let config = support::write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
             [retry]\nlogin_timeout = 5\ncaptcha_answer_timeout = 60\n\
             [notify]\nwebhook_url = \"{}\"\nwebhook_secret = \"hook-secret\"\n\
             [[sites]]\nname = \"court_captcha\"\ndriver = \"command\"\n\
             command = [\"{script}\", \"--captcha-url\", \"{}\", \"--login-url\", \"{}\"]\n",
            hook.url,
            portal.url("/captcha"),
            portal.login_url()
        ),
    );
    support::add_account(dir.path(), &config, "court_captcha", "alice", "pw-a");
    let daemon = support::Daemon::start(dir.path(), &config);
    let base = format!("http://{}", daemon.addr);
    let acquire_url = daemon.url("/api/v1/automation/tokens/acquire");
    let acquisition = actix_web::rt::spawn(async move {
        let answer = reqwest::Client::new()
            .post(acquire_url)
            .bearer_auth(ADMIN)
            .json(&json!({"site_name": "court_captcha"}))
            .send()
            .await
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json::<Value>().await.unwrap(),
        )
    });
    let cli = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = support::tokend(dir.path())
            .args(args)
            .args(["--url", &base, "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let id = support::wait_until(
        "`tokend captcha list` to show it",
        Duration::from_secs(15),
        || {
            let out = cli(&["captcha", "list"], "");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            async move {
                let line = text.lines().find(|l| l.contains("court_captcha\talice"))?;
                Some(line.split('\t').next().unwrap().to_string())
            }
        },
    )
    .await;
    let out = cli(&["captcha", "answer", &id], "x7k2\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = acquisition.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["token"], "tok-alice-1-0123456789abcdef");
    let again = cli(&["captcha", "answer", &id, "x7k2"], "");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already answered"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // The webhook heard of the captcha, signed.
    let events = support::wait_until("a captcha_pending POST", Duration::from_secs(10), || {
        let events = hook.events("hook-secret");
        async move {
            events
                .iter()
                .any(|(e, _)| e["event"] == "captcha_pending")
                .then_some(events)
        }
    })
    .await;
    let (event, signed) = events
        .iter()
        .find(|(e, _)| e["event"] == "captcha_pending")
        .unwrap();
    assert!(signed);
    assert_eq!(event["captcha"]["id"], id.as_str());
    assert_eq!(event["captcha"]["site_name"], "court_captcha");
}
