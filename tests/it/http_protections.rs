//! What a caller cannot step around, through the real daemon (issue 20): roles decided on the
//! route that runs whatever the path's spelling; a default daemon that a web page in the
//! operator's browser cannot drive (Host, Origin, JSON bodies); token roles that need an
//! admin token; a CLI that ignores environment proxies; slow bodies cut off; NUL bytes
//! refused by name on SQLite and PostgreSQL; probes through the account's own proxy.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::portal::Portal;
use crate::support::{self, forward_proxy, harness, write_config, Daemon};

const ADMIN: &str = "admin-token-0123456789";
const CLIENT: &str = "client-token-0123456789";
const METRICS: &str = "metrics-token-0123456789";

/// A request with the given headers and, for a POST/DELETE, `{}` as JSON: the status and
/// the answer's `code`.
async fn status(method: &Method, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new().request(method.clone(), url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !matches!(*method, Method::GET | Method::HEAD) {
        request = request.json(&json!({}));
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    (
        status,
        body["code"].as_str().unwrap_or_default().to_string(),
    )
}

/// The spellings of `path` that the router takes as the same route (or as none).
fn variants(path: &str) -> Vec<String> {
    let encode_all: String = path
        .chars()
        .map(|c| match c.is_ascii_alphabetic() {
            true => format!("%{:02X}", c as u32),
            false => c.to_string(),
        })
        .collect();
    let (head, last) = path.rsplit_once('/').unwrap();
    let encode_last = match last.chars().next() {
        Some(first) if first.is_ascii_alphabetic() => {
            format!("{head}/%{:02x}{}", first as u32, &last[1..])
        }
        _ => path.to_string(),
    };
    vec![
        encode_all,
        encode_last,
        path.replace("/api/", "//api/"),
        path.replace("/automation/", "/automation//"),
        format!("{path}/"),
        path.replacen('/', "/./", 1),
    ]
}

/// Every path and method of the OpenAPI document, with `{parameters}` filled in.
async fn routes(daemon: &Daemon) -> Vec<(Method, String)> {
    let doc: Value = reqwest::Client::new()
        .get(daemon.url("/api/v1/automation/openapi.json"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let path = path.replace("{site}", "court_zxfw").replace("{id}", "0123");
        for method in item.as_object().unwrap().keys() {
            routes.push((method.to_uppercase().parse().unwrap(), path.clone()));
        }
    }
    assert!(routes.len() > 20, "the document lists {routes:?}");
    routes
}

fn refused(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 405 | 421)
}

#[tokio::test]
async fn roles_follow_the_route_that_runs_whatever_the_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
             client_tokens = [\"{CLIENT}\"]\nmetrics_tokens = [\"{METRICS}\"]\n"
        ),
    );
    let daemon = Daemon::start(dir.path(), &config);
    let roles = [
        ("admin", Some(ADMIN)),
        ("client", Some(CLIENT)),
        ("metrics", Some(METRICS)),
        ("none", None),
    ];
    let mut compared = 0;
    for (method, path) in routes(&daemon).await {
        for (role, token) in roles {
            let bearer = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = bearer
                .as_deref()
                .map(|b| vec![("authorization", b)])
                .unwrap_or_default();
            let (canonical, code) = status(&method, &daemon.url(&path), &headers).await;
            if role == "admin" {
                assert_ne!(code, "NOT_FOUND", "{method} {path} is in the document");
            }
            if !refused(canonical) {
                continue;
            }
            for variant in variants(&path) {
                let (got, _) = status(&method, &daemon.url(&variant), &headers).await;
                assert!(
                    refused(got),
                    "{role}: {method} {variant} answered {got}, {path} answered {canonical}"
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 100, "only {compared} refused spellings compared");
    // The issue's case, by name: a metrics token reads no captcha, however spelt.
    let metrics = format!("Bearer {METRICS}");
    for path in [
        "/api/v1/automation/%63aptchas",
        "/api/v1/%61utomation/captchas",
    ] {
        let (got, _) = status(
            &Method::GET,
            &daemon.url(path),
            &[("authorization", &metrics)],
        )
        .await;
        assert_eq!(got, 403, "{path}");
    }
}

/// A daemon with no admin token (the default) and alice on the fake portal.
fn default_daemon(dir: &std::path::Path, portal: &Portal, server_keys: &str) -> Daemon {
    portal.state.accept("alice", "pw-alice");
    let config = write_config(
        dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_keys}\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    );
    support::add_account(dir, &config, "court_zxfw", "alice", "pw-alice");
    Daemon::start(dir, &config)
}

/// A request built by hand, as a browser would send it: the status.
async fn raw(method: Method, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_web_page_cannot_drive_the_default_daemon() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = default_daemon(dir.path(), &portal, "");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let evil = ("origin", "http://evil.example");
    let changes = [
        "/api/v1/automation/history/cleanup?days=1",
        "/api/v1/automation/performance/metrics/reset",
        "/api/v1/automation/performance/optimize-concurrency?apply=true",
        "/api/v1/automation/sites/court_zxfw/circuit/close",
        "/api/v1/automation/performance/resources/cleanup",
        "/api/v1/automation/tokens/acquire",
    ];
    for path in changes {
        let url = daemon.url(path);
        // A cross-site form: refused for its origin.
        let got = raw(
            Method::POST,
            &url,
            &[evil, form],
            Some("site_name=court_zxfw"),
        )
        .await;
        assert_eq!(got, 403, "cross-site form POST {path}");
        // The same form from a page that hides its origin: refused for its body.
        let got = raw(Method::POST, &url, &[form], Some("a=1")).await;
        assert_eq!(got, 415, "form POST {path}");
        let got = raw(Method::POST, &url, &[("content-type", "text/plain")], None).await;
        assert_eq!(got, 415, "text/plain POST {path}");
        // A simple request with no body and no header a page could not send.
        assert_eq!(raw(Method::POST, &url, &[], None).await, 415, "{path}");
        // A JSON request from the daemon's own origin is not refused by these checks.
        let own = format!("http://{}", daemon.addr);
        let json_body = ("content-type", "application/json");
        let got = raw(
            Method::POST,
            &url,
            &[("origin", &own), json_body],
            Some(r#"{"site_name":"court_zxfw"}"#),
        )
        .await;
        assert!(
            !matches!(got, 403 | 415 | 421),
            "{path} from its own origin: {got}"
        );
    }
    assert_eq!(
        portal.state.issued(),
        1,
        "only the own-origin acquire got a token"
    );
    // Cross-site reads are refused too; `Origin: null` (a sandboxed page) is no exception.
    let history = daemon.url("/api/v1/automation/history");
    assert_eq!(raw(Method::GET, &history, &[evil], None).await, 403);
    assert_eq!(
        raw(Method::GET, &history, &[("origin", "null")], None).await,
        403
    );
    // Another local server's page (same address, another port) is another origin.
    let neighbour = format!("http://127.0.0.1:{}", daemon.addr.port().wrapping_add(1));
    let reset = daemon.url("/api/v1/automation/performance/metrics/reset");
    let headers = [
        ("origin", neighbour.as_str()),
        ("content-type", "application/json"),
    ];
    assert_eq!(
        raw(Method::POST, &reset, &headers, None).await,
        403,
        "{neighbour}"
    );
}

#[tokio::test]
async fn a_dns_rebinding_page_gets_nothing() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = default_daemon(dir.path(), &portal, "");
    let history = daemon.url("/api/v1/automation/history");
    // The page's name reaches the daemon's address.
    let port = daemon.addr.port();
    let rebind = format!("rebind.evil.example:{port}");
    let acquire = daemon.url("/api/v1/automation/tokens/acquire");
    let json_headers = [
        ("host", rebind.as_str()),
        ("content-type", "application/json"),
    ];
    let body = Some(r#"{"site_name":"court_zxfw","force_refresh":true}"#);
    assert_eq!(raw(Method::POST, &acquire, &json_headers, body).await, 421);
    assert_eq!(
        raw(Method::GET, &history, &json_headers[..1], None).await,
        421
    );
    assert_eq!(
        raw(Method::GET, &daemon.url("/"), &json_headers[..1], None).await,
        421
    );
    assert_eq!(portal.state.issued(), 0, "a rebinding page got a token");
    // /healthz answers whatever the name (load balancers and probes name what they like).
    let healthz = daemon.url("/healthz");
    assert_eq!(
        raw(Method::GET, &healthz, &json_headers[..1], None).await,
        200
    );
    // Loopback names and addresses are the daemon's own.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let got = raw(Method::GET, &history, &[("host", &host)], None).await;
        assert_eq!(got, 200, "Host: {host}");
    }
    // The same acquire under the daemon's own name gets the token the page did not.
    let own = [("content-type", "application/json")];
    assert_eq!(raw(Method::POST, &acquire, &own, body).await, 200);
    assert_eq!(portal.state.issued(), 1);
}

#[tokio::test]
async fn allowed_hosts_names_the_daemon_for_host_and_origin() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = default_daemon(dir.path(), &portal, "allowed_hosts = [\"tokend.internal\"]");
    let port = daemon.addr.port();
    let host = format!("tokend.internal:{port}");
    let origin = format!("http://tokend.internal:{port}");
    let acquire = daemon.url("/api/v1/automation/tokens/acquire");
    let headers = [
        ("host", host.as_str()),
        ("origin", origin.as_str()),
        ("content-type", "application/json"),
    ];
    let got = raw(
        Method::POST,
        &acquire,
        &headers,
        Some(r#"{"site_name":"court_zxfw"}"#),
    )
    .await;
    assert_eq!(got, 200);
    let other = format!("other.internal:{port}");
    let got = raw(
        Method::GET,
        &daemon.url("/metrics"),
        &[("host", &other)],
        None,
    )
    .await;
    assert_eq!(got, 421);
}

/// `tokend serve` with `config` and `env`: its exit status and what it printed.
fn serve_refused(config_text: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), config_text);
    let mut child = support::tokend(dir.path())
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("TOKEND_METRICS_TOKEN")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // One that starts anyway runs until killed: it has not refused.
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.code(), text)
}

#[test]
fn token_roles_without_an_admin_token_refuse_to_start() {
    let server = "[server]\nlisten = \"127.0.0.1:0\"\n";
    let cases = [
        (
            format!("{server}client_tokens = [\"{CLIENT}\"]\n"),
            vec![],
            "server.client_tokens",
        ),
        (
            format!("{server}metrics_tokens = [\"{METRICS}\"]\n"),
            vec![],
            "server.metrics_tokens",
        ),
        (
            server.to_string(),
            vec![("TOKEND_METRICS_TOKEN", METRICS)],
            "server.metrics_tokens",
        ),
    ];
    for (text, env, key) in cases {
        let (code, printed) = serve_refused(&text, &env);
        assert_eq!(code, Some(78), "{text}: {printed}");
        assert!(printed.contains(key), "{key} not named: {printed}");
        assert!(
            !printed.contains(CLIENT) && !printed.contains(METRICS),
            "{printed}"
        );
    }
}

/// A listener that counts the connections made to it and answers each with a 502.
fn recording_listener() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (url, count)
}

#[test]
fn the_cli_ignores_environment_proxies() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
         [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
        portal.login_url()
    );
    portal.state.accept("alice", "pw-alice");
    let config = write_config(dir.path(), &config);
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let daemon = Daemon::start_with_env(
        dir.path(),
        &config,
        "info",
        &[("TOKEND_ADMIN_TOKEN", ADMIN)],
    );
    let (proxy, used) = recording_listener();
    let token_get = |url: &str, extra: &[(&str, &str)]| {
        support::tokend(dir.path())
            .args(["token", "get", "court_zxfw", "--url", url, "--config"])
            .arg(&config)
            .env("TOKEND_ADMIN_TOKEN", ADMIN)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env_remove("TOKEND_CLI_PROXY")
            .envs(
                [
                    "HTTP_PROXY",
                    "http_proxy",
                    "HTTPS_PROXY",
                    "https_proxy",
                    "ALL_PROXY",
                    "all_proxy",
                ]
                .map(|name| (name, proxy.as_str())),
            )
            .envs(extra.iter().copied())
            .output()
            .unwrap()
    };
    let got = token_get(&daemon.url(""), &[]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        used.load(Ordering::SeqCst),
        0,
        "the CLI went through HTTP_PROXY"
    );
    // Asked for explicitly, a remote daemon is reached through the named proxy; a loopback
    // one never is.
    let local = token_get(&daemon.url(""), &[("TOKEND_CLI_PROXY", &proxy)]);
    assert!(local.status.success());
    assert_eq!(
        used.load(Ordering::SeqCst),
        0,
        "a loopback daemon went through the proxy"
    );
    let remote = token_get(
        "http://tokend.remote.example:8000",
        &[("TOKEND_CLI_PROXY", &proxy)],
    );
    assert!(!remote.status.success());
    assert_eq!(
        used.load(Ordering::SeqCst),
        1,
        "TOKEND_CLI_PROXY was not used"
    );
}

/// Sends a request head promising 1000 body bytes a byte every 100 ms (or the head itself so
/// slowly): how long until the daemon closes the connection.
fn trickle(addr: std::net::SocketAddr, head_only: bool, path: &str) -> Duration {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    let started = Instant::now();
    if !head_only {
        stream.write_all(head.as_bytes()).unwrap();
    }
    let mut sent = 0;
    let mut buf = [0u8; 512];
    while started.elapsed() < Duration::from_secs(20) {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            // The answer (408); the connection must close after it.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return started.elapsed(),
        }
        let byte = if head_only {
            &head.as_bytes()[sent..=sent]
        } else {
            b" "
        };
        if stream.write_all(byte).is_err() {
            return started.elapsed();
        }
        sent = (sent + 1).min(head.len() - 1);
    }
    started.elapsed()
}

#[tokio::test]
async fn slow_requests_are_cut_off_and_healthz_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\nclient_request_timeout = 1\n",
    );
    let daemon = Daemon::start(dir.path(), &config);
    let addr = daemon.addr;
    // Bodies to a handler that reads them (acquire) and to one that does not (reset).
    let paths = [
        "/api/v1/automation/tokens/acquire",
        "/api/v1/automation/performance/metrics/reset",
    ];
    let slow: Vec<_> = (0..20)
        .map(|i| std::thread::spawn(move || trickle(addr, i % 2 == 0, paths[i / 2 % 2])))
        .collect();
    // While they trickle, the daemon answers.
    let healthz = reqwest::Client::new()
        .get(daemon.url("/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status().as_u16(), 200);
    for (i, thread) in slow.into_iter().enumerate() {
        let took = thread.join().unwrap();
        assert!(
            took < Duration::from_secs(4),
            "slow {} {i} held its connection for {took:?}",
            if i % 2 == 0 { "head" } else { "body" }
        );
    }
}

/// NUL bytes in every text field that reaches SQL: 400 naming the field.
async fn nul_bytes_are_refused_by_name(daemon: &Daemon) {
    let client = harness::json_client();
    let get = |path: &str| client.get(daemon.url(path)).send();
    for (path, field) in [
        ("/api/v1/automation/history?account=%00", "account"),
        ("/api/v1/automation/history?site_name=%00", "site_name"),
        ("/api/v1/automation/accounts?site_name=a%00", "site_name"),
        (
            "/api/v1/automation/tokens/status?site_name=%00",
            "site_name",
        ),
        (
            "/api/v1/automation/performance/statistics?site_name=%00",
            "site_name",
        ),
    ] {
        let answer = get(path).await.unwrap();
        assert_eq!(answer.status().as_u16(), 400, "{path}");
        let body: Value = answer.json().await.unwrap();
        assert!(body["errors"].get(field).is_some(), "{path}: {body}");
    }
    for (path, body, field) in [
        (
            "accounts/unblock",
            json!({"site_name": "court_zxfw", "account": "a\u{0}"}),
            "account",
        ),
        (
            "accounts/unblock",
            json!({"site_name": "\u{0}", "account": "alice"}),
            "site_name",
        ),
        (
            "tokens/invalidate",
            json!({"site_name": "court_zxfw", "account": "\u{0}"}),
            "account",
        ),
        (
            "tokens/acquire",
            json!({"site_name": "court_zxfw", "account": "\u{0}"}),
            "account",
        ),
    ] {
        let url = daemon.url(&format!("/api/v1/automation/{path}"));
        let answer = client.post(url).json(&body).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 400, "{path} {body}");
        let answer: Value = answer.json().await.unwrap();
        assert!(answer["errors"].get(field).is_some(), "{path}: {answer}");
    }
}

#[tokio::test]
async fn nul_bytes_are_bad_input_on_sqlite_and_postgresql() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = default_daemon(dir.path(), &portal, "");
    nul_bytes_are_refused_by_name(&daemon).await;
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{}\"\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            pg.url,
            portal.login_url()
        ),
    );
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let daemon = Daemon::start(dir.path(), &config);
    nul_bytes_are_refused_by_name(&daemon).await;
}

#[actix_rt::test]
async fn probes_go_through_the_accounts_own_proxy() {
    let portal = Portal::start();
    let probe = format!(
        "probe_url = \"{}\"\nprobe_interval = 0.2\n",
        portal.url("/probe")
    );
    let prefix = format!("tokend-test-{}", support::unique());
    let retry = "[retry]\nlogin_timeout = 10\n";
    let h = harness::Harness::builder()
        .prefix(&prefix)
        .portal(portal)
        .retry(retry)
        .sites(&probe)
        .start()
        .await;
    let proxy = forward_proxy::ForwardProxy::start();
    h.portal.state.accept("alice", "pw-a");
    let state = &h.tokend.state;
    tokend::accounts::add(
        &state.pool,
        &state.key,
        &tokend::accounts::NewAccount {
            site_name: "court_zxfw".into(),
            account: "alice".into(),
            password: tokend::vault::secret::Secret::new("pw-a"),
            preferred: false,
            proxy: Some(tokend::vault::secret::Secret::new(proxy.url())),
        },
    )
    .unwrap();
    let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.requests_of("alice"),
        1,
        "the login went through the proxy"
    );
    let probes_via_proxy = || {
        proxy
            .carried
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("GET http://") && r.contains("/probe"))
            .count()
    };
    // Every probe the portal saw came through the proxy (counted once both have settled).
    let portal_probes = || h.portal.state.probes.load(Ordering::SeqCst) as usize;
    support::wait_until(
        "probes, all through alice's proxy",
        Duration::from_secs(10),
        || async {
            let via_proxy = probes_via_proxy();
            (via_proxy >= 2 && portal_probes() == via_proxy).then_some(())
        },
    )
    .await;
}
