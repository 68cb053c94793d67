//! `tokend serve` as a real child process: it starts on the embedded defaults, answers
//! `/healthz` and `/health`, reports its database and cache components honestly, enforces
//! bearer tokens, refuses bad configuration with the key named, and exits 0 on SIGTERM.

use serde_json::Value;

use crate::support::{self, write_config, Daemon};

async fn get(url: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn serves_on_embedded_defaults_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Only the port differs from the embedded defaults, so tests can run side by side.
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n");
    let daemon = Daemon::start(dir.path(), &config);

    let (status, body) = get(&daemon.url("/healthz"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    let (status, body) = get(&daemon.url("/api/v1/automation/performance/health"), None).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["status"], "healthy");
    assert_eq!(data["components"]["database"]["status"], "up");
    assert_eq!(
        data["components"]["database"]["details"]["backend"],
        "sqlite"
    );
    assert_eq!(data["components"]["cache"]["details"]["backend"], "memory");
    assert_eq!(data["thresholds"]["min_success_rate"], 80.0);

    let (status, body) = get(&daemon.url("/no/such/path"), None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));

    // The embedded defaults put the database and the key in the working folder.
    assert!(dir.path().join("tokend.db").exists());
    assert!(dir.path().join("tokend.key").exists());

    let exit = daemon.terminate();
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn bearer_tokens_guard_everything_but_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "admin-token-0123456789";
    let client = "client-token-0123456789";
    let config = write_config(
        dir.path(),
        &format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{admin}\"\nclient_tokens = [\"{client}\"]\n"),
    );
    let daemon = Daemon::start(dir.path(), &config);
    let health = daemon.url("/api/v1/automation/performance/health");

    assert_eq!(get(&daemon.url("/healthz"), None).await.0, 200);
    let (status, body) = get(&health, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")));
    assert_eq!(get(&health, Some("admin-token-0123456780")).await.0, 401);
    assert_eq!(
        get(&health, Some(client)).await.0,
        403,
        "client tokens only reach /tokens/*"
    );
    assert_eq!(get(&health, Some(admin)).await.0, 200);
}

#[tokio::test]
async fn unreachable_database_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"postgres://tokend:hunter2pw@127.0.0.1:1/tokend\"\n",
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    assert_eq!(get(&daemon.url("/healthz"), None).await.0, 200);
    let (status, body) = get(&daemon.url("/api/v1/automation/performance/health"), None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["data"]["status"], "unhealthy");
    assert_eq!(body["data"]["components"]["database"]["status"], "down");
    let text = body.to_string();
    assert!(
        !text.contains("hunter2pw"),
        "database password in the health answer: {text}"
    );
    let log = daemon.drain_log().join("\n");
    assert!(log.contains("event=database_unreachable"), "{log}");
    assert!(
        !log.contains("hunter2pw"),
        "database password in the log: {log}"
    );
}

/// A password with URL characters, pasted unencoded into the database URL: libpq quotes the
/// part of the URL it cannot parse, and no piece of the password may show.
#[tokio::test]
async fn a_database_password_with_url_characters_never_shows() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\n\
         url = \"postgres://tokend:aB/c+d=e@f:g?h#i@127.0.0.1:1/tokend\"\n",
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    let (_, body) = get(&daemon.url("/api/v1/automation/performance/health"), None).await;
    assert_eq!(body["data"]["components"]["database"]["status"], "down");
    let text = format!("{body}\n{}", daemon.drain_log().join("\n"));
    for piece in ["aB/c", "c+d=e", "g?h", "h#i"] {
        assert!(
            !text.contains(piece),
            "`{piece}` of the password shows: {text}"
        );
    }
}

#[tokio::test]
async fn postgres_and_redis_components() {
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    if !support::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{}\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"tokend-test-{}\"\n",
            pg.url,
            support::redis_url(),
            support::unique()
        ),
    );
    let daemon = Daemon::start(dir.path(), &config);
    let (status, body) = get(&daemon.url("/api/v1/automation/performance/health"), None).await;
    assert_eq!(status, 200, "{body}");
    let components = &body["data"]["components"];
    assert_eq!(components["database"]["details"]["backend"], "postgresql");
    assert_eq!(components["cache"]["status"], "up");
    assert_eq!(components["cache"]["details"]["backend"], "redis");
    assert!(components["cache"]["details"]["latency_ms"]
        .as_f64()
        .is_some());
    assert_eq!(body["data"]["status"], "healthy");
}

#[tokio::test]
async fn unreachable_redis_degrades_the_cache_component() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[redis]\nurl = \"redis://127.0.0.1:1/0\"\n",
    );
    let daemon = Daemon::start(dir.path(), &config);
    let started = std::time::Instant::now();
    let (status, body) = get(&daemon.url("/api/v1/automation/performance/health"), None).await;
    assert!(
        started.elapsed().as_secs() < 10,
        "health waited too long on a dead Redis"
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["components"]["cache"]["status"], "degraded");
    assert_eq!(body["data"]["status"], "degraded");
}

#[test]
fn bad_configuration_names_the_key_and_exits_78() {
    let cases = [
        (
            "[concurrency]\nmax_concurrent_per_site = \"two\"\n",
            "concurrency.max_concurrent_per_site",
        ),
        ("[retry]\nlogin_timeout = 0\n", "retry.login_timeout"),
        ("[cachee]\nrefresh_ahead = 1\n", "cachee"),
        (
            "[[sites]]\nname = \"court zxfw\"\ndriver = \"http\"\nlogin_url = \"https://x\"\n",
            "sites[0].name",
        ),
        (
            "[[sites]]\nname = \"court_zxfw\"\ndriver = \"selenium\"\n",
            "sites[0].driver",
        ),
        (
            "[server]\nlisten = \"0.0.0.0:8000\"\n",
            "server.admin_token",
        ),
        ("[server]\nlisten = \"localhost\"\n", "server.listen"),
        ("this is not toml", "config file"),
    ];
    for (text, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), text);
        let out = support::tokend(dir.path())
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{text:?}: {stderr}");
        assert!(
            stderr.contains(key),
            "{text:?}: the message does not name {key}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A missing config file named on the command line is an error too.
    let dir = tempfile::tempdir().unwrap();
    let out = support::tokend(dir.path())
        .args(["serve", "--config", "missing.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}
