//! The court portal drivers (SPEC §15) and derived sites (§13) against a test portal that
//! speaks §15 byte for byte: an SM2-encrypted password and a solved captcha give a token the
//! portal accepts raw; a wrong captcha is retried with a fresh one; a wrong password is a
//! credential error; baoquan tokens cost one zxfw login and one OAuth code; a hanging solver
//! is killed; a cycle of `from_site` stops start-up; a generic derived site costs one parent
//! login and one exchange, and goes with its parent's token.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::support::court_portal::CourtPortal;
use crate::support::harness::Harness;
use crate::support::{self, harness};

const RETRY: &str = "[retry]\nmax_network_retries = 1\nnetwork_retry_delay_base = 0.05\n\
                     max_captcha_retries = 3\ncaptcha_retry_delay = 0.05\nlogin_timeout = 20\n";

/// A solver that reads the answer the test portal wrote into its fake image.
const SOLVER: &str = "import re, sys\n\
data = sys.stdin.buffer.read()\n\
m = re.search(rb'answer=(\\w+)', data)\n\
print(m.group(1).decode() if m else '')\n";

fn write_solver(dir: &Path) -> String {
    let path = dir.join("solve.py");
    std::fs::write(&path, SOLVER).unwrap();
    path.display().to_string()
}

/// The zxfw site `zxfw` and its baoquan site `baoquan` on `court`, with `solver`.
fn court_sites(court: &CourtPortal, solver: &str, more: &str) -> String {
    format!(
        "[[sites]]\nname = \"zxfw\"\ndriver = \"court_zxfw\"\nbase_url = \"{}\"\n\
         captcha_solver = {solver}\ncaptcha_solver_timeout = 5\n{more}\n\
         [[sites]]\nname = \"baoquan\"\ndriver = \"court_baoquan\"\nfrom_site = \"zxfw\"\nbase_url = \"{}\"\n",
        court.zxfw_base(),
        court.baoquan_base()
    )
}

async fn start(court: &CourtPortal, solver: &str, retry: &str, more: &str) -> Harness {
    start_on(None, court, solver, retry, more).await
}

/// The same on a cache backend (`Some(redis_url)`: Redis).
async fn start_on(
    redis: Option<&str>,
    court: &CourtPortal,
    solver: &str,
    retry: &str,
    more: &str,
) -> Harness {
    Harness::builder()
        .redis(redis)
        .retry(retry)
        .extra(&court_sites(court, solver, more))
        .start()
        .await
}

fn python_solver(dir: &Path) -> String {
    format!("[\"python3\", \"{}\"]", write_solver(dir))
}

async fn probe(url: &str, authorization: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .header("Authorization", authorization)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn prometheus(h: &Harness) -> String {
    h.prometheus_text().await
}

#[actix_rt::test]
async fn a_zxfw_login_sends_an_sm2_password_and_a_solved_captcha_and_the_token_works_raw() {
    let dir = tempfile::tempdir().unwrap();
    let court = CourtPortal::start();
    // The key as 130 digits with a leading 04: the driver drops it.
    court
        .state
        .key_with_prefix
        .store(true, std::sync::atomic::Ordering::SeqCst);
    court.accept("alice", "密码-Passw0rd");
    let h = start(&court, &python_solver(dir.path()), RETRY, "").await;
    h.add_account_on("zxfw", "alice", "密码-Passw0rd", false);

    let (status, body) = h.acquire(json!({"site_name": "zxfw"})).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    let token = data["token"].as_str().unwrap();
    assert_eq!(data["source"], "login");
    assert_eq!(data["token_type"], "", "zxfw tokens are sent raw: {data}");
    assert_eq!(data["authorization"], token, "{data}");
    assert_eq!(data["headers"], json!({ "Authorization": token }), "{data}");
    // The portal decrypted exactly the password with its private key.
    assert_eq!(
        court.state.decrypted.lock().unwrap().as_slice(),
        ["密码-Passw0rd"]
    );
    let me = court.url("/zxfw/api/v1/me");
    assert_eq!(
        probe(&me, data["authorization"].as_str().unwrap()).await,
        200
    );
    assert_eq!(probe(&me, &format!("Bearer {token}")).await, 401);
    // Its life is the JWT's exp (7200 s), not a default.
    let expires = chrono::DateTime::parse_from_rfc3339(data["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let left = expires - chrono::Utc::now().timestamp();
    assert!((7000..=7200).contains(&left), "{left}");
    assert!(
        prometheus(&h)
            .await
            .contains(r#"tokend_captcha_solves_total{site="zxfw",result="solved"} 1"#),
        "{}",
        prometheus(&h).await
    );
}

#[actix_rt::test]
async fn a_wrong_captcha_is_retried_with_a_fresh_captcha() {
    let dir = tempfile::tempdir().unwrap();
    let court = CourtPortal::start();
    court.accept("alice", "pw-alice");
    court
        .state
        .wrong_answers
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let h = start(&court, &python_solver(dir.path()), RETRY, "").await;
    h.add_account_on("zxfw", "alice", "pw-alice", false);

    let (status, body) = h.acquire(json!({"site_name": "zxfw"})).await;
    assert_eq!(status, 200, "{body}");
    let ids = court.state.login_captcha_ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "each retry fetched a fresh captcha: {ids:?}"
    );
    let rows = h.history().await;
    assert_eq!(rows[0].status, "success");
    assert_eq!(rows[0].captcha_attempts, 2);
    let metrics = prometheus(&h).await;
    assert!(
        metrics.contains(r#"tokend_captcha_solves_total{site="zxfw",result="rejected"} 2"#)
            && metrics.contains(r#"tokend_captcha_solves_total{site="zxfw",result="solved"} 3"#),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn a_wrong_password_is_a_credential_error_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let court = CourtPortal::start();
    court.accept("alice", "the-right-one");
    let h = start(&court, &python_solver(dir.path()), RETRY, "").await;
    h.add_account_on("zxfw", "alice", "a-wrong-one", false);

    let (status, body) = h.acquire(json!({"site_name": "zxfw"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errors"]["error_type"], "credential_error", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("账号或密码错误"),
        "{body}"
    );
    assert!(!body.to_string().contains("a-wrong-one"), "{body}");
    assert_eq!(court.state.login_captcha_ids.lock().unwrap().len(), 1);
    let rows = h.history().await;
    assert_eq!(rows[0].status, "credential_error");
}

#[actix_rt::test]
async fn five_baoquan_acquisitions_cost_one_zxfw_login_and_one_oauth_code() {
    for redis in harness::backends() {
        five_baoquan_acquisitions_on(redis.as_deref()).await;
    }
}

async fn five_baoquan_acquisitions_on(redis: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let court = CourtPortal::start();
    court.accept("alice", "pw-alice");
    // The zxfw token lives shorter than baoquan's would: baoquan's is cut to it.
    *court.state.zxfw_life.lock().unwrap() = 2400;
    *court.state.baoquan_life.lock().unwrap() = 7200;
    let h = start_on(redis, &court, &python_solver(dir.path()), RETRY, "").await;
    h.add_account_on("zxfw", "alice", "pw-alice", false);

    let answers = join_all((0..5).map(|_| h.acquire(json!({"site_name": "baoquan"})))).await;
    let mut tokens = std::collections::HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        let data = &body["data"];
        assert_eq!(data["token_type"], "Bearer");
        assert_eq!(
            data["authorization"],
            format!("Bearer {}", data["token"].as_str().unwrap())
        );
        assert_eq!(data["headers"]["Authorization"], data["authorization"]);
        assert_eq!(data["account"], "alice", "the parent's account: {data}");
        tokens.insert(data["token"].as_str().unwrap().to_string());
    }
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(CourtPortal::count(&court.state.zxfw_logins), 1);
    assert_eq!(CourtPortal::count(&court.state.oauth_codes), 1);
    assert_eq!(CourtPortal::count(&court.state.baoquan_tokens), 1);

    let bq = &answers[0].1["data"];
    let me = court.url("/baoquan/api/me");
    assert_eq!(probe(&me, bq["authorization"].as_str().unwrap()).await, 200);
    assert_eq!(probe(&me, bq["token"].as_str().unwrap()).await, 401);

    // `tokend token get --header` prints the same ready header, as a header line.
    let url = format!("http://{}", h.tokend.addr);
    let cwd = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        support::tokend(&cwd)
            .args(["token", "get", "baoquan", "--header", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("Authorization: {}", bq["authorization"].as_str().unwrap())
    );

    // The zxfw token is served from the cache and works raw; baoquan's ends no later.
    let (_, zx) = h.acquire(json!({"site_name": "zxfw"})).await;
    let zx = &zx["data"];
    assert_eq!(zx["source"], "cache");
    assert_eq!(zx["authorization"], zx["token"]);
    assert_eq!(zx["headers"], json!({ "Authorization": zx["token"] }));
    assert_eq!(
        probe(
            &court.url("/zxfw/api/v1/me"),
            zx["authorization"].as_str().unwrap()
        )
        .await,
        200
    );
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).unwrap()
    };
    assert!(at(bq) <= at(zx), "{bq} outlives {zx}");

    // Invalidating the zxfw token invalidates the baoquan token derived from it.
    let (status, body) = h
        .post(
            "invalidate",
            json!({"site_name": "zxfw", "account": "alice"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, again) = h.acquire(json!({"site_name": "baoquan"})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["source"], "login");
    assert_ne!(again["data"]["token"], bq["token"]);
    assert_eq!(CourtPortal::count(&court.state.zxfw_logins), 2);
    assert_eq!(CourtPortal::count(&court.state.oauth_codes), 2);

    // History: the baoquan row names the zxfw acquisition it used.
    let rows = h.history().await;
    let baoquan = rows.iter().find(|r| r.site_name == "baoquan").unwrap();
    assert_eq!(baoquan.trigger_reason, "token_needed");
    let details = baoquan.error_details.as_deref().unwrap_or_default();
    assert!(details.contains("parent_acquisition_id"), "{details}");
}

#[actix_rt::test]
async fn odd_portal_answers_and_a_silent_solver_are_classified_failures() {
    let dir = tempfile::tempdir().unwrap();
    let solver = python_solver(dir.path());
    let retry = "[retry]\nmax_captcha_retries = 0\nmax_network_retries = 0\nlogin_timeout = 20\n";
    // (what goes wrong, the solver, the error type, words of the message)
    let cases: [(&str, &str, &str, &str); 4] = [
        ("key", &solver, "failed", "4 hex digits"),
        ("jpg", &solver, "captcha_error", "not base64"),
        ("solver", "[\"true\"]", "captcha_error", "printed nothing"),
        ("login", &solver, "failed", "no `data.token`"),
    ];
    for (fault, solver, error_type, words) in cases {
        let court = CourtPortal::start();
        court.accept("alice", "pw-alice");
        match fault {
            "key" => *court.state.canned_key.lock().unwrap() = Some("abcd".into()),
            "jpg" => *court.state.canned_jpg.lock().unwrap() = Some("not base64!".into()),
            "login" => {
                *court.state.canned_login.lock().unwrap() =
                    Some(json!({"code": 200, "data": {"userId": "u"}, "message": "成功"}))
            }
            _ => {}
        }
        let h = start(&court, solver, retry, "").await;
        h.add_account_on("zxfw", "alice", "pw-alice", false);
        let (status, body) = h.acquire(json!({"site_name": "zxfw"})).await;
        assert_eq!(status, 502, "{fault}: {body}");
        assert_eq!(body["errors"]["error_type"], error_type, "{fault}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(words),
            "{fault}: {body}"
        );
        let rows = h.history().await;
        assert_eq!(rows[0].status, error_type, "{fault}");
        assert!(
            rows[0]
                .error_message
                .as_deref()
                .unwrap_or_default()
                .contains(words),
            "{fault}: {:?}",
            rows[0].error_message
        );
    }
}

#[actix_rt::test]
async fn a_zxfw_token_the_portal_revoked_is_dropped_when_baoquan_meets_it() {
    let dir = tempfile::tempdir().unwrap();
    let court = CourtPortal::start();
    court.accept("alice", "pw-alice");
    let h = start(&court, &python_solver(dir.path()), RETRY, "").await;
    h.add_account_on("zxfw", "alice", "pw-alice", false);
    let (status, body) = h.acquire(json!({"site_name": "baoquan"})).await;
    assert_eq!(status, 200, "{body}");

    court.revoke_zxfw_tokens();
    let (status, body) = h
        .acquire(json!({"site_name": "baoquan", "force_refresh": true}))
        .await;
    // The OAuth code is refused: not the password's fault, and the zxfw token is dropped.
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errors"]["error_type"], "failed", "{body}");
    let (status, body) = h.acquire(json!({"site_name": "baoquan"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["source"], "login");
    assert_eq!(CourtPortal::count(&court.state.zxfw_logins), 2);
    let (_, accounts) = h
        .api_get("/api/v1/automation/accounts?site_name=zxfw")
        .await;
    let alice = &accounts["data"]["accounts"][0];
    assert_eq!(alice["state"], "active", "not penalised: {accounts}");
}

#[actix_rt::test]
async fn a_solver_that_hangs_is_killed_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let court = CourtPortal::start();
    court.accept("alice", "pw-alice");
    let pid_file = dir.path().join("sleeper.pid");
    // The solver leaves a helper in its process group and never answers.
    let solver = format!(
        "[\"sh\", \"-c\", \"sleep 60 & echo $! > {}; wait\"]",
        pid_file.display()
    );
    let retry = "[retry]\nmax_captcha_retries = 0\nlogin_timeout = 20\n";
    let h = start(&court, &solver, retry, "").await;
    h.add_account_on("zxfw", "alice", "pw-alice", false);
    // Set after start: the harness's sites are checked with the default timeout.
    let started = Instant::now();
    let (status, body) = h.acquire(json!({"site_name": "zxfw"})).await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errors"]["error_type"], "captcha_error", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("process group was killed"),
        "{body}"
    );
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(12),
        "{took:?}"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = support::wait_until(
        "the solver's helper is killed",
        Duration::from_secs(5),
        || async move {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie nobody has reaped yet: no longer running either way.
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            (stat.is_empty() || state == Some("Z")).then_some(())
        },
    )
    .await;
    let () = gone;
    assert!(prometheus(&h)
        .await
        .contains(r#"tokend_captcha_solves_total{site="zxfw",result="timeout"} 1"#));
}

#[actix_rt::test]
async fn a_derived_site_costs_one_parent_login_and_one_exchange() {
    for redis in harness::backends() {
        derived_site_on(redis.as_deref()).await;
    }
}

async fn derived_site_on(redis: Option<&str>) {
    let court = CourtPortal::start();
    let extra = format!(
        "[[sites]]\nname = \"derived\"\ndriver = \"derived\"\nfrom_site = \"court_zxfw\"\n\
         exchange_url = \"{}\"\nexchange_header = \"X-Parent-Token: {{token}}\"\n\
         token_pointer = \"/access_token\"\nexpires_in_pointer = \"/expires_in\"\n",
        court.url("/exchange")
    );
    // The parent is the harness's `http` site `court_zxfw` on the fake portal.
    let h = Harness::builder()
        .redis(redis)
        .retry(RETRY)
        .extra(&extra)
        .start()
        .await;
    h.add_account("alice", "pw-alice", false);

    let mut calls: Vec<_> = (0..5)
        .map(|_| h.acquire(json!({"site_name": "derived"})))
        .collect();
    calls.push(h.acquire(json!({"site_name": "court_zxfw"})));
    let answers = join_all(calls).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(h.portal.state.issued(), 1, "one parent login");
    assert_eq!(
        CourtPortal::count(&court.state.exchanges),
        1,
        "one exchange"
    );
    let derived = &answers[0].1["data"];
    assert!(derived["token"].as_str().unwrap().starts_with("derived-1-"));
    assert_eq!(
        derived["authorization"],
        format!("Bearer {}", derived["token"].as_str().unwrap())
    );
    assert_eq!(
        derived["headers"]["Authorization"],
        derived["authorization"]
    );

    // The accounts of a derived site are its parent's.
    let (status, accounts) = h
        .api_get("/api/v1/automation/accounts?site_name=derived")
        .await;
    assert_eq!(status, 200, "{accounts}");
    assert_eq!(
        accounts["data"]["accounts"][0]["account"], "alice",
        "{accounts}"
    );
    assert_eq!(
        accounts["data"]["accounts_of_site"], "court_zxfw",
        "{accounts}"
    );

    // Invalidating the parent's token invalidates the derived one.
    let (status, _) = h
        .post(
            "invalidate",
            json!({"site_name": "court_zxfw", "account": "alice"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, again) = h.acquire(json!({"site_name": "derived"})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["source"], "login", "{again}");
    assert_eq!(h.portal.state.issued(), 2);
    assert_eq!(CourtPortal::count(&court.state.exchanges), 2);
}

#[test]
fn a_cycle_in_from_site_stops_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[sites]]\nname = \"a\"\ndriver = \"derived\"\nfrom_site = \"b\"\nexchange_url = \"http://127.0.0.1:1/x\"\n\
         [[sites]]\nname = \"b\"\ndriver = \"derived\"\nfrom_site = \"a\"\nexchange_url = \"http://127.0.0.1:1/x\"\n",
    );
    let out = support::tokend(dir.path())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("sites[0].from_site") && stderr.contains("cycle"),
        "{stderr}"
    );
}

/// `captcha_solver = "human"`: the captcha waits for a person (the hand-off of SPEC §13),
/// who reads it from `GET /captchas` and answers over the API; the login then completes.
#[actix_rt::test]
async fn a_person_solves_the_zxfw_captcha_through_the_hand_off() {
    use base64::Engine;
    let court = CourtPortal::start();
    court.accept("alice", "pw-alice");
    let h = start(&court, "\"human\"", RETRY, "").await;
    h.add_account_on("zxfw", "alice", "pw-alice", false);
    let acquire = h.acquire(json!({"site_name": "zxfw"}));
    let person = async {
        let challenge =
            support::wait_until("a pending captcha", Duration::from_secs(10), || async {
                let (_, body) = h.api_get("/api/v1/automation/captchas").await;
                body["data"]["captchas"]
                    .as_array()
                    .and_then(|list| list.first().cloned())
            })
            .await;
        assert_eq!(challenge["account"], "alice", "{challenge}");
        let image = challenge["image"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(image.split(',').nth(1).unwrap())
            .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let answer = text
            .split("answer=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_string();
        let id = challenge["id"].as_str().unwrap();
        let (status, _, body) = h
            .api_call(
                reqwest::Method::POST,
                &format!("/api/v1/automation/captchas/{id}"),
                Some(json!({ "answer": answer })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    };
    let ((status, body), ()) = tokio::join!(acquire, person);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["source"], "login");
    let text = prometheus(&h).await;
    assert!(
        text.contains(r#"tokend_captcha_solves_total{site="zxfw",result="solved"} 1"#),
        "{text}"
    );
}

/// A court account whose own proxy refuses connections is that account's fault (issue 21):
/// it cools down as `proxy_error` and the next account logs in in the same acquisition.
#[actix_rt::test]
async fn a_dead_proxy_of_a_court_account_moves_the_login_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let court = CourtPortal::start();
    court.accept("alice", "pw-alice");
    court.accept("bob", "pw-bob");
    let h = start(&court, &python_solver(dir.path()), RETRY, "").await;
    h.add_account_on("zxfw", "alice", "pw-alice", true);
    h.add_account_on("zxfw", "bob", "pw-bob", false);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state = &h.tokend.state;
    let dead = tokend::vault::secret::Secret::new(format!("http://u:hunter2@127.0.0.1:{port}"));
    tokend::accounts::set_proxy(&state.pool, &state.key, "zxfw", "alice", Some(&dead)).unwrap();
    let (status, body) = h.acquire(json!({"site_name": "zxfw"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["account"], "bob", "{body}");
    let (_, accounts) = h
        .api_get("/api/v1/automation/accounts?site_name=zxfw")
        .await;
    let alice = accounts["data"]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "alice")
        .cloned()
        .unwrap();
    assert_eq!(alice["reason"], "proxy_error", "{alice}");
    assert!(!accounts.to_string().contains("hunter2"));
}

/// A solver script deleted after start (python3: "can't open file") is the site's
/// configuration, not a captcha error of the account: the site pauses as
/// `site_misconfigured` naming the script, and no account is penalised.
#[actix_rt::test]
async fn a_solver_script_that_is_gone_pauses_the_site_not_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let court = CourtPortal::start();
    court.accept("alice", "pw-alice");
    let script = write_solver(dir.path());
    let solver = format!("[\"python3\", \"{script}\"]");
    let h = start(&court, &solver, RETRY, "").await;
    h.add_account_on("zxfw", "alice", "pw-alice", false);
    h.add_account_on("zxfw", "bob", "pw-bob", false);
    std::fs::remove_file(&script).unwrap();
    let (status, body) = h.acquire(json!({"site_name": "zxfw"})).await;
    assert_eq!(status, 503, "{body}");
    let text = body.to_string();
    assert!(text.contains("site_misconfigured"), "{text}");
    assert!(text.contains(&script), "{text}");
    let (_, accounts) = h
        .api_get("/api/v1/automation/accounts?site_name=zxfw")
        .await;
    for account in accounts["data"]["accounts"].as_array().unwrap() {
        assert_eq!(account["state"], "active", "{account}");
    }
    let health = h.health().await;
    assert!(
        health["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["type"] == "site_misconfigured" && a["severity"] == "high"),
        "{health}"
    );
}

/// `driver = "court_zxfw"` runs the built-in recipe with the site's own error patterns, as
/// the native driver did: a portal message the recipe alone calls `failed` is a credential
/// error (not retried) or a rate limit (a network error) when the site says so.
#[actix_rt::test]
async fn a_court_site_keeps_its_own_error_patterns_as_a_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let solver = python_solver(dir.path());
    let retry = "[retry]\nmax_captcha_retries = 0\nmax_network_retries = 0\nlogin_timeout = 20\n";
    let cases = [
        ("", "账户已冻结", "failed"),
        (
            "credential_error_pattern = \"冻结\"\n",
            "账户已冻结",
            "credential_error",
        ),
        (
            "rate_limit_pattern = \"系统维护\"\n",
            "系统维护中，请稍后",
            "network_error",
        ),
    ];
    for (patterns, message, error_type) in cases {
        let court = CourtPortal::start();
        court.accept("alice", "pw-alice");
        *court.state.canned_login.lock().unwrap() = Some(json!({"code": 500, "message": message}));
        let h = start(&court, &solver, retry, patterns).await;
        h.add_account_on("zxfw", "alice", "pw-alice", false);
        let (status, body) = h.acquire(json!({"site_name": "zxfw"})).await;
        assert_eq!(status, 502, "{patterns}: {body}");
        assert_eq!(
            body["errors"]["error_type"], error_type,
            "{patterns}: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{body}"
        );
    }
}
