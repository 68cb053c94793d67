//! Alerts in the daemon's log as logins fail and recover, `tokend optimize` through the real
//! binary, and the admin/client roles on the admin endpoints.

use std::process::Output;
use std::time::Duration;

use serde_json::json;

use crate::support::portal::Portal;
use crate::support::{self, write_config, Daemon};

const ADMIN: &str = "admin-token-0123456789";
const CLIENT: &str = "client-token-0123456789";

#[test]
fn alerts_fire_and_resolve_and_optimize_runs_its_steps() {
    let portal = Portal::start();
    portal.state.accept("alice", "pw-rotated");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\nclient_tokens = [\"{CLIENT}\"]\n\
             [accounts]\nblacklist_duration_hours = 0\n\
             [alerts]\nevaluate_interval = 0.2\nmin_success_rate = 80\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    );
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let mut daemon = Daemon::start(dir.path(), &config);
    let acquire = daemon.url("/api/v1/automation/tokens/acquire");
    let metrics = daemon.url("/api/v1/automation/performance/metrics");

    actix_web::rt::System::new().block_on(async {
        let client = reqwest::Client::new();
        // Roles: a client token acquires but may not read metrics; no token at all: 401.
        for _ in 0..6 {
            let r = client
                .post(&acquire)
                .bearer_auth(CLIENT)
                .json(&json!({"site_name": "court_zxfw"}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status().as_u16(),
                502,
                "the portal refuses the old password"
            );
        }
        assert_eq!(
            client
                .get(&metrics)
                .bearer_auth(CLIENT)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            403
        );
        assert_eq!(
            client.get(&metrics).send().await.unwrap().status().as_u16(),
            401
        );
        assert_eq!(
            client
                .get(&metrics)
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
    });
    let mut seen = Vec::new();
    daemon.wait_for_log(
        "ALERT firing type=low_success_rate severity=high value=0.00 threshold=80",
        Duration::from_secs(10),
        &mut seen,
    );
    assert_eq!(
        seen.iter()
            .filter(|l| l.contains("ALERT firing type=low_success_rate"))
            .count(),
        1,
        "logged once per transition"
    );

    // The password is fixed; the maintenance command resets the metrics, and the alert resolves.
    portal.state.accept("alice", "pw-alice");
    let url = format!("http://{}", daemon.addr);
    let optimize = |args: &[&str]| -> Output {
        support::tokend(dir.path())
            .args(["optimize", "--url", &url, "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    // Every step runs; the health check fails (the alert is still firing), so the exit is 1.
    let out = optimize(&[
        "--health-check",
        "--cleanup-days",
        "30",
        "--warm-cache",
        "court_zxfw",
        "--optimize-concurrency",
        "--reset-metrics",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "FAILED  health check",
        "ok      history cleanup",
        "ok      warm cache court_zxfw",
        "ok      optimize concurrency",
        "ok      reset metrics",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    assert!(stdout.contains("low_success_rate (high)"), "{stdout}");
    // Refused passwords are the accounts' trouble, not the portal's load: no lower limit.
    assert!(
        !stdout.contains("per_site 2 -> 1"),
        "wrong passwords lowered the site limit: {stdout}"
    );
    assert!(stdout.contains("before: 6 acquisitions"), "{stdout}");
    daemon.wait_for_log(
        "ALERT resolved type=low_success_rate",
        Duration::from_secs(10),
        &mut seen,
    );
    let healthy = optimize(&["--health-check"]);
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stdout)
    );

    let failing = optimize(&["--warm-cache", "court_zxfw", "nowhere"]);
    let stdout = String::from_utf8_lossy(&failing.stdout);
    assert_eq!(failing.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ok      warm cache court_zxfw")
            && stdout.contains("FAILED  warm cache nowhere"),
        "{stdout}"
    );
    assert_eq!(optimize(&[]).status.code(), Some(64), "no step named");
}

/// An alert that fired before a restart is still in `/alerts/history` after it, on both
/// backends; the history cleanup deletes the old transitions with the old history.
#[test]
fn alert_history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    alert_history_kept_on(&format!("sqlite://{}", dir.path().join("t.db").display()));
    if let Some(pg) = support::PgDatabase::create() {
        alert_history_kept_on(&pg.url);
    }
}

fn alert_history_kept_on(database: &str) {
    let portal = Portal::start();
    portal.state.accept("alice", "pw-rotated");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
             [database]\nurl = \"{database}\"\n\
             [alerts]\nevaluate_interval = 0.2\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    );
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let history = |daemon: &Daemon| {
        let url = daemon.url("/api/v1/automation/performance/alerts/history");
        async move {
            let answer: serde_json::Value = reqwest::Client::new()
                .get(url)
                .bearer_auth(ADMIN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            answer["data"]["transitions"].as_array().cloned()
        }
    };
    let firing = |list: &[serde_json::Value]| {
        list.iter()
            .find(|t| t["type"] == "no_available_account" && t["transition"] == "firing")
            .cloned()
    };
    let runtime = actix_web::rt::System::new();

    // The refused password blacklists alice: the site has no usable account, an alert fires.
    let daemon = Daemon::start(dir.path(), &config);
    let fired = runtime.block_on(async {
        let r = reqwest::Client::new()
            .post(daemon.url("/api/v1/automation/tokens/acquire"))
            .bearer_auth(ADMIN)
            .json(&json!({"site_name": "court_zxfw"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 502);
        support::wait_until("the alert firing", Duration::from_secs(10), || async {
            firing(&history(&daemon).await?)
        })
        .await
    });
    assert!(daemon.terminate().success());

    // The same database, a new process: the transition is read back as it was.
    let daemon = Daemon::start(dir.path(), &config);
    let after = runtime.block_on(async { history(&daemon).await }).unwrap();
    assert!(
        after.contains(&fired),
        "{fired} is gone after the restart: {after:?}"
    );

    // A transition older than the retention goes with the old history.
    let pool = tokend::db::Pool::connect(database, 1).unwrap();
    let old = chrono::Utc::now().naive_utc() - chrono::Duration::days(40);
    let mut conn = pool.get().unwrap();
    tokend::db::alerts::insert(
        &mut conn,
        &tokend::db::alerts::AlertTransitionRow {
            id: 0,
            occurred_at: old,
            alert_type: "site_unavailable".into(),
            state: "resolved".into(),
            severity: None,
            message: None,
        },
    )
    .unwrap();
    let epoch = chrono::DateTime::UNIX_EPOCH.naive_utc();
    let stored = |conn: &mut tokend::db::DbConnection| {
        tokend::db::alerts::since(conn, epoch, 1000)
            .unwrap()
            .into_iter()
            .map(|row| row.alert_type)
            .collect::<Vec<_>>()
    };
    assert!(stored(&mut conn).contains(&"site_unavailable".to_string()));
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .post(daemon.url("/api/v1/automation/history/cleanup?days=30"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    let left = stored(&mut conn);
    assert!(!left.contains(&"site_unavailable".to_string()), "{left:?}");
    assert!(
        left.contains(&"no_available_account".to_string()),
        "{left:?}"
    );
}
