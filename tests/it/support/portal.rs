//! A fake court portal for the tests: a real HTTP login endpoint on 127.0.0.1:0 with
//! configurable latency, passwords, captcha failures and server errors, that counts logins
//! and the most it saw at once. `GET /probe` says whether a token (bearer or `SESSION`
//! cookie) is still good; a cookie mode answers logins with `Set-Cookie`; `GET /captcha`
//! serves a captcha whose text the login must then carry.
// The benches include this file too (`#[path]`) and use only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

#[derive(Default, Clone)]
pub struct AccountBehaviour {
    pub password: String,
    /// The next this many logins answer "验证码错误" (captcha wrong).
    pub captcha_failures: u32,
    /// The next this many logins answer 503.
    pub server_errors: u32,
}

#[derive(Default)]
pub struct PortalState {
    pub latency: Mutex<Duration>,
    pub expires_in: Mutex<f64>,
    /// The length of the tokens issued, padded like a JWT's signature (0: short test tokens).
    pub token_len: std::sync::atomic::AtomicUsize,
    pub accounts: Mutex<HashMap<String, AccountBehaviour>>,
    /// Login requests per account (every attempt, failed or not).
    pub attempts: Mutex<HashMap<String, u32>>,
    /// Tokens issued.
    pub issued: AtomicU32,
    pub in_flight: AtomicU32,
    pub max_in_flight: AtomicU32,
    pub max_in_flight_per_account: Mutex<HashMap<String, u32>>,
    in_flight_per_account: Mutex<HashMap<String, u32>>,
    /// The next this many logins answer 200 with "操作频繁" (too frequent).
    pub rate_limited: AtomicU32,
    /// While set, every login answers 503 (a portal outage), with this `Retry-After` if any.
    pub outage: std::sync::atomic::AtomicBool,
    pub outage_retry_after: Mutex<Option<String>>,
    /// By the `site` extra field of the login request, when the site config sends one.
    pub max_in_flight_per_site: Mutex<HashMap<String, u32>>,
    in_flight_per_site: Mutex<HashMap<String, u32>>,
    /// When set, every login is answered with this status, headers and body instead (a
    /// redirect, an odd answer), after being counted.
    pub canned: Mutex<Option<Canned>>,
    /// Tokens issued and not revoked: what `/probe` accepts.
    pub valid_tokens: Mutex<std::collections::HashSet<String>>,
    /// When set, `/probe` answers this status whatever the token.
    pub probe_status: Mutex<Option<u16>>,
    /// Requests to `/probe`.
    pub probes: AtomicU32,
    /// How long `/probe` takes to answer (default: at once).
    pub probe_latency: Mutex<Duration>,
    /// Probes being answered now, and the most at once: in total and per token.
    pub probes_in_flight: AtomicU32,
    pub max_probes_in_flight: AtomicU32,
    probes_per_token: Mutex<HashMap<String, u32>>,
    pub max_probes_per_token: AtomicU32,
    /// When set, a login sets the session as cookies (`SESSION` with this Max-Age, `uid`
    /// with ten minutes more) instead of putting the token in the JSON answer.
    pub cookie_max_age: Mutex<Option<u64>>,
    /// When set, a login must carry this text as `captcha` (served by `/captcha`).
    pub captcha_text: Mutex<Option<String>>,
    /// When set, a login beyond this many at once is answered 429 `{"msg": "操作频繁"}`.
    pub capacity: Mutex<Option<u32>>,
    /// Logins answered 429 because they were beyond `capacity`.
    pub over_capacity: AtomicU32,
    /// When set, a login with a wrong password answers 401 with the request echoed in
    /// every way a careless portal does: raw, inside a JSON string (escaped once and
    /// twice), HTML-escaped, URL-encoded, base64, and with a control character in it.
    pub echo_failures: std::sync::atomic::AtomicBool,
}

/// A fixed answer of the portal.
#[derive(Clone, Default)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Canned {
    /// A redirect to `location` with `status` (301, 302, 303, 307, 308).
    pub fn redirect(status: u16, location: &str) -> Canned {
        Canned {
            status,
            headers: vec![("Location".into(), location.into())],
            body: String::new(),
        }
    }
}

impl PortalState {
    pub fn attempts_of(&self, account: &str) -> u32 {
        self.attempts
            .lock()
            .unwrap()
            .get(account)
            .copied()
            .unwrap_or(0)
    }

    pub fn issued(&self) -> u32 {
        self.issued.load(Ordering::SeqCst)
    }

    /// The portal accepts `account` with `password`, without captcha or server errors.
    pub fn accept(&self, account: &str, password: &str) {
        self.set_account(
            account,
            AccountBehaviour {
                password: password.to_string(),
                ..Default::default()
            },
        );
    }

    /// Every login answers 503 from now on (or again normally, with `false`).
    pub fn set_outage(&self, down: bool, retry_after: Option<&str>) {
        *self.outage_retry_after.lock().unwrap() = retry_after.map(str::to_string);
        self.outage.store(down, Ordering::SeqCst);
    }

    /// Login requests of every account together.
    pub fn total_attempts(&self) -> u32 {
        self.attempts.lock().unwrap().values().sum()
    }

    /// The portal no longer accepts `token` (logged out elsewhere, revoked).
    pub fn revoke(&self, token: &str) {
        self.valid_tokens.lock().unwrap().remove(token);
    }

    pub fn set_account(&self, account: &str, behaviour: AccountBehaviour) {
        self.accounts
            .lock()
            .unwrap()
            .insert(account.to_string(), behaviour);
    }
}

#[derive(Clone)]
pub struct Portal {
    pub addr: SocketAddr,
    pub state: Arc<PortalState>,
    _server: Arc<StopOnDrop>,
}

/// Stops the portal's server (its thread and sockets go) once the last clone of the portal is
/// dropped: the tests share one process, which must not keep every test's portal alive.
struct StopOnDrop(actix_web::dev::ServerHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // The stop is sent at once; its future only reports when it is done.
        drop(self.0.stop(false));
    }
}

impl Portal {
    /// Starts the portal on a thread of its own (with its own actix system), so that it
    /// serves even while the test thread blocks on a child process.
    pub fn start() -> Portal {
        let state = Arc::new(PortalState::default());
        *state.latency.lock().unwrap() = Duration::from_millis(50);
        *state.expires_in.lock().unwrap() = 3600.0;
        let data = web::Data::from(state.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/login", web::post().to(login))
                        .route("/probe", web::get().to(probe))
                        .route("/captcha", web::get().to(captcha))
                })
                .workers(2)
                .disable_signals()
                .bind("127.0.0.1:0")
                .unwrap();
                let server_addr = server.addrs()[0];
                let server = server.run();
                tx.send((server_addr, server.handle())).unwrap();
                let _ = server.await;
            });
        });
        let (addr, handle) = rx.recv().unwrap();
        Portal {
            addr,
            state,
            _server: Arc::new(StopOnDrop(handle)),
        }
    }

    /// `http://ADDR{path}`, e.g. `/probe`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn login_url(&self) -> String {
        format!("http://{}/login", self.addr)
    }
}

async fn login(state: web::Data<PortalState>, body: web::Json<Value>) -> HttpResponse {
    let account = body["username"].as_str().unwrap_or_default().to_string();
    let site = body["site"].as_str().unwrap_or_default().to_string();
    let password = body["password"].as_str().unwrap_or_default().to_string();
    *state
        .attempts
        .lock()
        .unwrap()
        .entry(account.clone())
        .or_default() += 1;
    let in_flight = InFlight::enter(&state, &account, &site);
    let now = in_flight.now;
    let over = state.capacity.lock().unwrap().is_some_and(|c| now > c);
    let latency = *state.latency.lock().unwrap();
    actix_web::rt::time::sleep(latency).await;
    let expected = state.captcha_text.lock().unwrap().clone();
    let response = match expected {
        _ if over => {
            state.over_capacity.fetch_add(1, Ordering::SeqCst);
            HttpResponse::TooManyRequests().json(json!({"code": 429, "msg": "操作频繁"}))
        }
        Some(text) if body["captcha"].as_str() != Some(text.as_str()) => {
            HttpResponse::Ok().json(json!({"code": 1001, "msg": "验证码错误"}))
        }
        _ if state.echo_failures.load(Ordering::SeqCst)
            && state
                .accounts
                .lock()
                .unwrap()
                .get(&account)
                .map(|a| &a.password)
                != Some(&password) =>
        {
            echo(&body, &password)
        }
        _ => answer(&state, &account, &password),
    };
    drop(in_flight);
    response
}

/// A login being answered, counted in the in-flight figures (in total, per account, per site)
/// until dropped: also when tokend gives the login up and actix drops the handler with it.
struct InFlight<'a> {
    state: &'a PortalState,
    account: String,
    site: String,
    /// Logins in flight with this one.
    now: u32,
}

impl<'a> InFlight<'a> {
    fn enter(state: &'a PortalState, account: &str, site: &str) -> InFlight<'a> {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        for (per, max, key) in [
            (
                &state.in_flight_per_account,
                &state.max_in_flight_per_account,
                account,
            ),
            (
                &state.in_flight_per_site,
                &state.max_in_flight_per_site,
                site,
            ),
        ] {
            let mut per = per.lock().unwrap();
            let n = per.entry(key.to_string()).or_default();
            *n += 1;
            let mut max = max.lock().unwrap();
            let m = max.entry(key.to_string()).or_default();
            *m = (*m).max(*n);
        }
        InFlight {
            state,
            account: account.to_string(),
            site: site.to_string(),
            now,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let state = self.state;
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        for (per, key) in [
            (&state.in_flight_per_account, &self.account),
            (&state.in_flight_per_site, &self.site),
        ] {
            *per.lock().unwrap().get_mut(key).unwrap() -= 1;
        }
    }
}

/// Whether the token in `Authorization: Bearer …` or the `SESSION` cookie is still good.
async fn probe(state: web::Data<PortalState>, request: actix_web::HttpRequest) -> HttpResponse {
    state.probes.fetch_add(1, Ordering::SeqCst);
    if let Some(status) = *state.probe_status.lock().unwrap() {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .body("probe answer set by the test");
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let bearer = header("authorization")
        .strip_prefix("Bearer ")
        .map(str::to_string);
    let cookie = header("cookie")
        .split(';')
        .find_map(|c| c.trim().strip_prefix("SESSION=").map(str::to_string));
    let token = bearer.or(cookie);
    let key = token.clone().unwrap_or_default();
    let now = state.probes_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_probes_in_flight.fetch_max(now, Ordering::SeqCst);
    let mine = {
        let mut per = state.probes_per_token.lock().unwrap();
        let n = per.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    state.max_probes_per_token.fetch_max(mine, Ordering::SeqCst);
    let latency = *state.probe_latency.lock().unwrap();
    actix_web::rt::time::sleep(latency).await;
    *state
        .probes_per_token
        .lock()
        .unwrap()
        .get_mut(&key)
        .unwrap() -= 1;
    state.probes_in_flight.fetch_sub(1, Ordering::SeqCst);
    let valid = state.valid_tokens.lock().unwrap();
    match token {
        Some(token) if valid.contains(&token) => HttpResponse::Ok().json(json!({"code": 0})),
        _ => HttpResponse::Unauthorized().json(json!({"code": 401, "msg": "未登录"})),
    }
}

/// A captcha: a 1×1 PNG, base64 (the text to type is in `captcha_text`).
async fn captcha() -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"code": 0, "data": {"id": "c-1", "image": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}}))
}

/// A 401 that echoes the request (see `PortalState::echo_failures`).
fn echo(body: &Value, password: &str) -> HttpResponse {
    use base64::Engine;
    let raw = body.to_string();
    let once = Value::String(raw.clone()).to_string();
    let twice = Value::String(once.clone()).to_string();
    let html = raw
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;");
    let url: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    let base64 = base64::engine::general_purpose::STANDARD.encode(password);
    let mut split = password.to_string();
    split.insert(
        password.char_indices().nth(2).map_or(0, |(i, _)| i),
        '\u{7}',
    );
    HttpResponse::Unauthorized().body(format!(
        "bad login {raw}\njson {once}\ntwice {twice}\nhtml <pre>{html}</pre>\n\
         url pw={url} form pw={}\nbasic {base64}\nsplit {split}\n",
        url.replace("%20", "+")
    ))
}

fn answer(state: &PortalState, account: &str, password: &str) -> HttpResponse {
    if let Some(canned) = state.canned.lock().unwrap().clone() {
        let mut response =
            HttpResponse::build(actix_web::http::StatusCode::from_u16(canned.status).unwrap());
        for (name, value) in canned.headers {
            response.insert_header((name, value));
        }
        return response.body(canned.body);
    }
    let mut accounts = state.accounts.lock().unwrap();
    if state
        .rate_limited
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return HttpResponse::Ok().json(json!({"code": 429, "msg": "操作频繁，请稍后再试"}));
    }
    if state.outage.load(Ordering::SeqCst) {
        let mut answer = HttpResponse::ServiceUnavailable();
        if let Some(wait) = state.outage_retry_after.lock().unwrap().clone() {
            answer.insert_header(("Retry-After", wait));
        }
        return answer.body("portal down for maintenance");
    }
    let Some(behaviour) = accounts.get_mut(account) else {
        return HttpResponse::Unauthorized().json(json!({"code": 401, "msg": "账号不存在"}));
    };
    if behaviour.server_errors > 0 {
        behaviour.server_errors -= 1;
        return HttpResponse::ServiceUnavailable().body("upstream busy");
    }
    if behaviour.captcha_failures > 0 {
        behaviour.captcha_failures -= 1;
        return HttpResponse::Ok().json(json!({"code": 1001, "msg": "验证码错误"}));
    }
    if behaviour.password != password {
        return HttpResponse::Ok().json(json!({"code": 1002, "msg": "用户名或密码错误"}));
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let expires_in = *state.expires_in.lock().unwrap();
    let mut token = format!("tok-{account}-{n}-0123456789abcdef");
    let len = state.token_len.load(Ordering::SeqCst);
    token.extend(
        "eyJhbGciOiJIUzI1NiJ9_0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
            .chars()
            .cycle()
            .take(len.saturating_sub(token.len())),
    );
    state.valid_tokens.lock().unwrap().insert(token.clone());
    if let Some(max_age) = *state.cookie_max_age.lock().unwrap() {
        return HttpResponse::Ok()
            .append_header((
                "Set-Cookie",
                format!("SESSION={token}; Path=/; Max-Age={max_age}; HttpOnly"),
            ))
            .append_header((
                "Set-Cookie",
                format!("uid={account}; Path=/; Max-Age={}", max_age + 600),
            ))
            .json(json!({"code": 0, "data": {"expires_in": expires_in}}));
    }
    HttpResponse::Ok().json(json!({
        "code": 0,
        "data": {"token": token, "expires_in": expires_in}
    }))
}
