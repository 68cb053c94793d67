//! The signals of issue 21 against the fake portal, real sockets and real programs:
//! congestion met inside a login's retries lowers the site's limit at once; a dead proxy of
//! one account is that account's fault; network errors name their cause; a portal that
//! changed, or a login program that cannot run, pauses the site instead of blaming accounts.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::support;
use crate::support::harness::{backends, Harness};
use crate::support::portal::Canned;

const QUICK: &str = "[retry]\nnetwork_retry_delay_base = 0.05\ncaptcha_retry_delay = 0.05\n\
                     login_timeout = 10\n";

/// A port on 127.0.0.1 where nothing listens (bound, then let go).
fn refused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

async fn accounts_of(h: &Harness, site: &str) -> Vec<Value> {
    let path = format!("/api/v1/automation/accounts?site_name={site}");
    let (status, body) = h.api_get(&path).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["accounts"].as_array().unwrap().clone()
}

fn alert_kinds(health: &Value) -> Vec<String> {
    health["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap().to_string())
        .collect()
}

/// A portal of capacity 1 answering 429 操作频繁 beyond it: six concurrent logins meet
/// congestion in their retries, and the site's limit halves during the burst, before any
/// login finally fails; the retries then wait for slots under the new limit and succeed.
/// Once the logins sent under the old limit have been answered, the portal never sees more
/// logins at once than the lowered limit (the harness's one site is the portal's only one).
#[actix_rt::test]
async fn congestion_inside_retries_halves_the_limit_at_once() {
    const RETRY: &str =
        "[retry]\nmax_network_retries = 8\nnetwork_retry_delay_base = 0.05\nlogin_timeout = 20\n";
    const LIMITS: &str =
        "[concurrency]\nmax_concurrent_acquisitions = 8\nmax_concurrent_per_site = 4\n\
         acquisition_timeout = 30\nqueue_timeout = 30\n[circuit]\nfailure_threshold = 100\n";
    for redis in backends() {
        let prefix = format!("tokend-test-{}", support::unique());
        let h = Harness::builder()
            .redis(redis.as_deref())
            .prefix(&prefix)
            .retry(RETRY)
            .extra(LIMITS)
            .sites("adaptive_concurrency = true\nadaptive_increase_after = 100\n")
            .start()
            .await;
        let portal = &h.portal.state;
        *portal.capacity.lock().unwrap() = Some(1);
        let accounts: Vec<String> = (1..=6).map(|i| format!("u{i}")).collect();
        for account in &accounts {
            h.add_account(account, &format!("pw-{account}"), false);
        }
        assert_eq!(site_limit(&h).await, 4);
        let failed = AtomicBool::new(false);
        let logins = join_all(accounts.iter().map(|account| {
            let failed = &failed;
            let h = &h;
            async move {
                let body = json!({"site_name": "court_zxfw", "account": account});
                let (status, body) = h.acquire(body).await;
                if status != 200 {
                    failed.store(true, Ordering::SeqCst);
                }
                (status, body)
            }
        }));
        let watch = async {
            let limit = support::wait_until(
                "the site limit lowered during the burst",
                Duration::from_secs(15),
                || async {
                    let limit = site_limit(&h).await;
                    (limit < 4).then_some(limit)
                },
            )
            .await;
            let failed_before = failed.load(Ordering::SeqCst);
            // The logins sent under the old limit are answered; from then on the portal's
            // most at once is counted afresh.
            support::wait_until(
                "the logins sent under the old limit answered",
                Duration::from_secs(15),
                || async {
                    (u64::from(portal.in_flight.load(Ordering::SeqCst)) <= limit).then_some(())
                },
            )
            .await;
            portal.max_in_flight.store(0, Ordering::SeqCst);
            let now = portal.in_flight.load(Ordering::SeqCst);
            portal.max_in_flight.fetch_max(now, Ordering::SeqCst);
            (limit, failed_before)
        };
        let (results, (limit, failed_before)) = tokio::join!(logins, watch);
        assert!(limit <= 2, "limit {limit}");
        assert!(
            !failed_before,
            "the limit moved only after a login failed: {results:?}"
        );
        for (status, body) in &results {
            assert_eq!(*status, 200, "{body}");
        }
        assert!(portal.over_capacity.load(Ordering::SeqCst) > 0);
        let most = u64::from(portal.max_in_flight.load(Ordering::SeqCst));
        assert!(
            most <= limit,
            "{most} logins at once at the portal under a limit of {limit}"
        );
    }
}

/// One account's own proxy refuses connections: that account cools down (`proxy_error`),
/// the next account serves the same acquisition, the site's circuit does not move, and the
/// message names the proxy's host, never its credentials.
#[actix_rt::test]
async fn a_dead_proxy_is_its_accounts_fault_not_the_sites() {
    for redis in backends() {
        let h = Harness::builder()
            .redis(redis.as_deref())
            .retry(QUICK)
            .extra("[circuit]\nfailure_threshold = 1\n")
            .start()
            .await;
        h.add_account("proxied", "pw-p", true);
        h.add_account("healthy", "pw-h", false);
        let port = refused_port();
        let state = &h.tokend.state;
        tokend::accounts::set_proxy(
            &state.pool,
            &state.key,
            "court_zxfw",
            "proxied",
            Some(&tokend::vault::secret::Secret::new(format!(
                "http://user:hunter2@127.0.0.1:{port}"
            ))),
        )
        .unwrap();
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["account"], "healthy", "{body}");
        let health = h.health().await;
        let site = &health["components"]["sites"]["court_zxfw"];
        assert_eq!(site["circuit"]["state"], "closed", "{site}");
        let proxied = h.account_state("proxied").await;
        assert_eq!(proxied["state"], "cooling_down", "{proxied}");
        assert_eq!(proxied["reason"], "proxy_error", "{proxied}");
        assert_eq!(h.portal.state.attempts_of("proxied"), 0);
        let rows = h.history().await;
        let details = rows[0].error_details.clone().unwrap_or_default();
        assert!(
            details.contains(&format!(
                "proxy 127.0.0.1:{port} failed: connection refused"
            )),
            "{details}"
        );
        assert!(!details.contains("hunter2"), "{details}");
    }
}

/// The site's own `proxy` refuses connections: that is the site's failure, not its
/// accounts'. The site's circuit counts it (and opens at the threshold), the account is not
/// penalised, and the caller's message and the history name the site's proxy by host,
/// never its credentials.
#[actix_rt::test]
async fn a_dead_site_proxy_is_the_sites_fault() {
    for redis in backends() {
        let port = refused_port();
        let proxy = format!("proxy = \"http://user:hunter2@127.0.0.1:{port}\"\n");
        let h = Harness::builder()
            .redis(redis.as_deref())
            .retry("[retry]\nmax_network_retries = 0\nlogin_timeout = 5\n")
            .extra("[circuit]\nfailure_threshold = 1\nopen_seconds = 600\n")
            .sites(&proxy)
            .start()
            .await;
        h.add_account("alice", "pw-a", false);
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 502, "{body}");
        let named = format!("the site's proxy 127.0.0.1:{port} failed: connection refused");
        let text = body.to_string();
        assert!(text.contains(&named), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let health = h.health().await;
        let circuit = &health["components"]["sites"]["court_zxfw"]["circuit"];
        assert_eq!(circuit["state"], "open", "{circuit}");
        let alice = h.account_state("alice").await;
        assert_eq!(alice["state"], "active", "{alice}");
        assert_eq!(h.portal.state.total_attempts(), 0);
        let rows = h.history().await;
        let message = rows[0].error_message.clone().unwrap_or_default();
        assert!(message.contains(&named), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        // Refused at once while the circuit is open.
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "SITE_UNAVAILABLE", "{body}");
    }
}

/// A proxy that answers every request with 407 (it wants credentials the account's URL
/// does not carry): the login never reached the portal, and the account cools down.
fn refusing_proxy() -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n\r\n",
            );
        }
    });
    port
}

#[actix_rt::test]
async fn a_proxy_that_refuses_the_account_is_the_accounts_fault() {
    let h = Harness::builder()
        .retry(QUICK)
        .extra("[circuit]\nfailure_threshold = 1\n")
        .start()
        .await;
    h.add_account("proxied", "pw-p", true);
    h.add_account("healthy", "pw-h", false);
    let port = refusing_proxy();
    let state = &h.tokend.state;
    let proxy = tokend::vault::secret::Secret::new(format!("http://127.0.0.1:{port}"));
    tokend::accounts::set_proxy(
        &state.pool,
        &state.key,
        "court_zxfw",
        "proxied",
        Some(&proxy),
    )
    .unwrap();
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["account"], "healthy", "{body}");
    let proxied = h.account_state("proxied").await;
    assert_eq!(proxied["reason"], "proxy_error", "{proxied}");
    let details = h.history().await[0]
        .error_details
        .clone()
        .unwrap_or_default();
    assert!(details.contains("HTTP 407"), "{details}");
}

/// A network error names its cause in the caller's message and the history row.
#[actix_rt::test]
async fn network_errors_name_their_cause() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let refused = refused_port();
    let extra = format!(
        "[circuit]\nfailure_threshold = 100\n\
         [[sites]]\nname = \"dns\"\ndriver = \"http\"\nlogin_url = \"http://tokend-test.invalid/login\"\n\
         [[sites]]\nname = \"refused\"\ndriver = \"http\"\nlogin_url = \"http://127.0.0.1:{refused}/login\"\n\
         [[sites]]\nname = \"silent\"\ndriver = \"http\"\nlogin_url = \"http://127.0.0.1:{silent_port}/login\"\n"
    );
    let retry = "[retry]\nmax_network_retries = 0\nlogin_timeout = 2\n";
    let h = Harness::builder().retry(retry).extra(&extra).start().await;
    let cases = [
        ("dns", "dns error"),
        ("refused", "connection refused"),
        ("silent", "timed out after 2 s"),
    ];
    for (site, cause) in cases {
        h.add_account_on(site, "alice", "pw-a", false);
        let (status, body) = h.acquire(json!({"site_name": site})).await;
        assert!(status == 502 || status == 504, "{site}: {status} {body}");
        assert!(body.to_string().contains(cause), "{site}: {body}");
        let rows = h.history().await;
        let row = rows.iter().find(|r| r.site_name == site).unwrap();
        let message = row.error_message.clone().unwrap_or_default();
        assert!(message.contains(cause), "{site}: {message}");
    }
    drop(silent);
}

/// A portal that answers every account with a shape tokend does not know: the first
/// account cools down as the policy says, the next are not blamed, and at the third the site
/// pauses (`site_protocol_changed`, a high alert naming the shape) until an operator closes it.
#[actix_rt::test]
async fn a_portal_that_changed_pauses_the_site_not_every_account() {
    for redis in backends() {
        let h = Harness::builder()
            .redis(redis.as_deref())
            .retry(QUICK)
            .extra("[circuit]\nopen_seconds = 600\n")
            .start()
            .await;
        for account in ["a1", "a2", "a3", "a4"] {
            h.add_account(account, &format!("pw-{account}"), false);
        }
        *h.portal.state.canned.lock().unwrap() = Some(Canned {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: r#"{"result": {"jwt": "x"}, "ok": true}"#.into(),
        });
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "SITE_UNAVAILABLE", "{body}");
        let text = body.to_string();
        assert!(text.contains("site_protocol_changed"), "{text}");
        assert!(text.contains(r#"\"result\": object"#), "{text}");
        let states: Vec<(String, String)> = accounts_of(&h, "court_zxfw")
            .await
            .iter()
            .map(|a| (a["account"].to_string(), a["state"].to_string()))
            .collect();
        let cooling = states.iter().filter(|(_, s)| s.contains("cooling")).count();
        assert_eq!(
            cooling, 1,
            "only the first account is penalised: {states:?}"
        );
        assert_eq!(h.portal.state.total_attempts(), 3, "the fourth is spared");
        let health = h.health().await;
        assert!(
            alert_kinds(&health).contains(&"site_protocol_changed".into()),
            "{health}"
        );
        let alert = health["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["type"] == "site_protocol_changed")
            .unwrap();
        assert_eq!(alert["severity"], "high", "{alert}");
        // Refused at once while paused.
        let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 503);
        assert_eq!(h.portal.state.total_attempts(), 3);
        // The operator fixes things and closes the circuit.
        *h.portal.state.canned.lock().unwrap() = None;
        let (status, _, body) = h
            .api_call(
                reqwest::Method::POST,
                "/api/v1/automation/sites/court_zxfw/circuit/close",
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// A paused portal-changed site is probed after `open_seconds`: a probe that meets the same
/// answer keeps it paused (blaming nobody), one that gets a token ends the pause.
#[actix_rt::test]
async fn a_probe_decides_the_end_of_a_protocol_pause() {
    let h = Harness::builder()
        .retry(QUICK)
        .extra("[circuit]\nopen_seconds = 0.5\nsite_changed_threshold = 2\n")
        .start()
        .await;
    for account in ["a1", "a2", "a3"] {
        h.add_account(account, &format!("pw-{account}"), false);
    }
    *h.portal.state.canned.lock().unwrap() = Some(Canned {
        status: 200,
        headers: Vec::new(),
        body: "<html>new login page</html>".into(),
    });
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 503, "{body}");
    let before = h.portal.state.total_attempts();
    assert_eq!(before, 2, "the threshold is the site's: 2");
    // The probe meets the same page: still paused, nobody else blamed.
    support::wait_until("a probe login", Duration::from_secs(10), || async {
        h.acquire(json!({"site_name": "court_zxfw"})).await;
        (h.portal.state.total_attempts() > before).then_some(())
    })
    .await;
    let health = h.health().await;
    let circuit = &health["components"]["sites"]["court_zxfw"]["circuit"];
    assert_eq!(circuit["reason"], "site_protocol_changed", "{circuit}");
    let cooling = accounts_of(&h, "court_zxfw")
        .await
        .iter()
        .filter(|a| a["state"] == "cooling_down")
        .count();
    assert_eq!(cooling, 1, "only the streak's first account");
    // The portal is back: a probe gets a token and the pause ends.
    *h.portal.state.canned.lock().unwrap() = None;
    support::wait_until(
        "a token after the pause",
        Duration::from_secs(10),
        || async {
            let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
            (status == 200).then_some(())
        },
    )
    .await;
    let health = h.health().await;
    let circuit = &health["components"]["sites"]["court_zxfw"]["circuit"];
    assert_eq!(circuit["state"], "closed", "{circuit}");
    assert!(circuit.get("reason").is_none(), "{circuit}");
}

/// A login program deleted after start: the site pauses (`site_misconfigured`, a high alert
/// naming the program), no account is penalised, the next account is not tried.
#[actix_rt::test]
async fn a_login_program_that_cannot_run_pauses_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("login.sh");
    std::fs::write(&program, "#!/bin/sh\nexit 1\n").unwrap();
    let mut perms = std::fs::metadata(&program).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&program, perms).unwrap();
    let extra = format!(
        "[[sites]]\nname = \"cmd\"\ndriver = \"command\"\ncommand = [\"{}\"]\n",
        program.display()
    );
    let h = Harness::builder().retry(QUICK).extra(&extra).start().await;
    h.add_account_on("cmd", "alice", "pw-a", false);
    h.add_account_on("cmd", "bob", "pw-b", false);
    std::fs::remove_file(&program).unwrap();
    let (status, body) = h.acquire(json!({"site_name": "cmd"})).await;
    assert_eq!(status, 503, "{body}");
    let text = body.to_string();
    assert!(text.contains("site_misconfigured"), "{text}");
    assert!(text.contains(&program.display().to_string()), "{text}");
    for account in accounts_of(&h, "cmd").await {
        assert_eq!(account["state"], "active", "{account}");
    }
    let health = h.health().await;
    assert!(
        alert_kinds(&health).contains(&"site_misconfigured".into()),
        "{health}"
    );
}
