//! Promises of SPEC §9–§10 under faults and hostile input, on tokend in-process: numbers out
//! of range are refused by name and never take the history down; a login that is redirected
//! sends no password anywhere; a portal's 2xx answer is never echoed; an invalidated token is
//! never handed out again, even to an acquire that ran beside the invalidation.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use serde_json::json;

use crate::support::harness::{backends, Harness};
use crate::support::portal::{Canned, Portal};

/// Every number from a request is range-checked: 400 naming the field, never a 500, and
/// never a dead history afterwards.
#[actix_rt::test]
async fn hostile_numbers_are_refused_by_name_and_history_survives() {
    let h = Harness::start(None, "").await;
    h.add_account("alice", "pw-alice", true);
    assert_eq!(h.acquire(json!({"site_name": "court_zxfw"})).await.0, 200);
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let cases = [
        (
            &post,
            "/api/v1/automation/history/cleanup?days=4000000000",
            "days",
        ),
        (
            &post,
            "/api/v1/automation/history/cleanup?days=1000000",
            "days",
        ),
        (&get, "/api/v1/automation/history?before_id=-5", "before_id"),
        (&get, "/api/v1/automation/history?limit=-1", "limit"),
        (
            &get,
            "/api/v1/automation/history?limit=99999999999999999999999",
            "limit",
        ),
        (
            &get,
            "/api/v1/automation/history?before_id=99999999999999999999999",
            "before_id",
        ),
        (
            &get,
            "/api/v1/automation/performance/statistics?days=4000000000",
            "days",
        ),
    ];
    for (method, path, field) in cases {
        let (status, body) = h.call(method.clone(), path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.to_string().contains(field),
            "{path}: the answer does not name `{field}`: {body}"
        );
    }
    // The history still answers, and new rows still reach the database.
    let (status, page) = h.call(get.clone(), "/api/v1/automation/history").await;
    assert_eq!(status, 200, "{page}");
    let (status, fresh) = h
        .acquire(json!({"site_name": "court_zxfw", "force_refresh": true}))
        .await;
    assert_eq!(status, 200, "{fresh}");
    let id = fresh["data"]["acquisition_id"].as_str().unwrap();
    assert!(
        h.history().await.iter().any(|row| row.acquisition_id == id),
        "the new row did not reach the history"
    );
    let (status, health) = h.call(get, "/api/v1/automation/performance/health").await;
    assert_eq!(
        health["data"]["components"]["database"]["status"], "up",
        "{status} {health}"
    );
}

/// A redirect of the login is not followed: the other host sees no request, and the failure
/// names where the portal pointed.
#[actix_rt::test]
async fn a_redirected_login_sends_no_password_anywhere() {
    let elsewhere = Portal::start();
    elsewhere.state.accept("alice", "pw-alice");
    for status in [307, 308, 302] {
        let h = Harness::start(None, "").await;
        h.add_account("alice", "pw-alice", true);
        *h.portal.state.canned.lock().unwrap() =
            Some(Canned::redirect(status, &elsewhere.login_url()));
        let (code, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(code, 502, "{body}");
        assert_eq!(
            elsewhere.state.attempts_of("alice"),
            0,
            "the password followed a {status} to another host"
        );
        let history = h.history().await;
        let message = history[0].error_message.clone().unwrap_or_default();
        assert!(
            message.contains(&elsewhere.login_url()),
            "the failure does not name the Location: {message}"
        );
        assert_eq!(history[0].status, "failed");
    }
}

/// A 2xx answer without a token where the site looks for it is never echoed, even when it
/// matches an error pattern.
#[actix_rt::test]
async fn a_2xx_answer_is_never_echoed() {
    let h = Harness::start(None, "").await;
    h.add_account("alice", "pw-alice", true);
    *h.portal.state.canned.lock().unwrap() = Some(Canned {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: r#"{"msg":"验证码错误","session":"SESSION-SECRET-0123456789"}"#.into(),
    });
    let (code, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_ne!(code, 200, "{body}");
    assert!(!body.to_string().contains("SESSION-SECRET"), "{body}");
    for row in h.history().await {
        let text = format!("{:?} {:?}", row.error_message, row.error_details);
        assert!(
            !text.contains("SESSION-SECRET"),
            "echoed into history: {text}"
        );
    }
}

/// Once invalidate has answered, the invalidated token is never handed out again — also when
/// an acquire ran while the invalidation was under way.
#[actix_rt::test]
async fn an_invalidated_token_is_never_handed_out_again() {
    for redis in backends() {
        let h = Harness::start(redis.as_deref(), "").await;
        let id = h.add_account("alice", "pw-alice", true);
        let (_, first) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        let old = first["data"]["token"].as_str().unwrap().to_string();
        let cache = h.tokend.state.cache.clone();
        let old_entry = cache
            .token("court_zxfw", Some(id))
            .await
            .unwrap()
            .entry
            .clone();

        // A writer holds the database for a while: the invalidation's delete waits for it.
        let pool = h.tokend.state.pool.clone();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let mut conn = pool.get().unwrap();
            conn.batch_execute("BEGIN IMMEDIATE").unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
            conn.batch_execute("ROLLBACK").unwrap();
        });
        locked_rx.recv().unwrap();
        let broker = h.tokend.state.broker.clone();
        let invalidation =
            actix_web::rt::spawn(async move { broker.invalidate("court_zxfw", "alice").await });
        // Acquires beside the invalidation may get the old token; what matters is what they
        // leave behind. Before the fix one of them reads the row the invalidation has not yet
        // deleted and puts it back into the cache.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until && !invalidation.is_finished() {
            let (_, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
            if body["data"]["source"] == "store" {
                break;
            }
        }
        release_tx.send(()).unwrap();
        writer.join().unwrap();
        assert!(
            invalidation.await.unwrap().unwrap().stored_token_removed,
            "a token was stored"
        );
        // An acquire that read the row just before the invalidation caches it just after.
        cache.put_token("court_zxfw", &old_entry).await;

        for _ in 0..5 {
            let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
            assert_eq!(status, 200, "{body}");
            assert_ne!(
                body["data"]["token"].as_str().unwrap(),
                old,
                "the invalidated token was handed out again ({redis:?}): {body}"
            );
        }
    }
}
