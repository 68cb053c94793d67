//! A test court portal that speaks SPEC §15 byte for byte, on 127.0.0.1:0:
//! - `/zxfw/api/v1/publicKey`, `/captcha`, `/login` (人民法院在线服务): an SM2 key pair of its
//!   own (the password is decrypted with the private key), captcha ids with known answers
//!   bound to the session cookie, `验证码错误` / `账号或密码错误` answers, a JWT (HS256);
//!   `Referer`, `Origin` and `type = "gryh"` are required as the real portal requires them.
//! - `/zxfw/api/v1/oauth/code` (raw `Authorization: <zxfw token>`) and
//!   `/baoquan/api/account/getauthorization?code=…&type=yzw&state=200` (保全系统, a JWT HS512).
//! - `/zxfw/api/v1/me`, `/baoquan/api/me`: 200 only for a token sent as its consumers send it.
//! - `/exchange` (a generic derived site): `X-Parent-Token: <token>` → `{"access_token"}`.
//!
//! A captcha image is fake JPEG bytes that carry `answer=<text>`: the test solver reads it.
//! With `opaque` set, every token and code is an opaque string (`zxOPAQUE…`, no JWT shape);
//! `issued` keeps every token and code handed out, for tests that look for them in logs.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::{json, Value};
use sm2::pke::DecryptingKey;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Default)]
pub struct CourtState {
    /// account → password.
    pub passwords: Mutex<HashMap<String, String>>,
    /// captcha id → (answer, session cookie).
    captchas: Mutex<HashMap<String, (String, String)>>,
    /// The next this many captcha images carry a wrong answer.
    pub wrong_answers: AtomicU32,
    /// Captcha ids in the order the logins sent them.
    pub login_captcha_ids: Mutex<Vec<String>>,
    pub captchas_issued: AtomicU32,
    pub zxfw_logins: AtomicU32,
    pub oauth_codes: AtomicU32,
    pub baoquan_tokens: AtomicU32,
    pub exchanges: AtomicU32,
    zxfw_tokens: Mutex<HashSet<String>>,
    baoquan_tokens_valid: Mutex<HashSet<String>>,
    codes: Mutex<HashMap<String, String>>,
    /// Passwords as decrypted from the logins (to show the SM2 round trip).
    pub decrypted: Mutex<Vec<String>>,
    /// Token life in seconds (the JWT `exp`).
    pub zxfw_life: Mutex<i64>,
    pub baoquan_life: Mutex<i64>,
    /// Public key as served: 128 hex digits, or with a leading `04`.
    pub key_with_prefix: std::sync::atomic::AtomicBool,
    /// When set: the public key, the captcha image (`jpg`) and the login answer served
    /// instead (a portal that changed, or answers oddly).
    pub canned_key: Mutex<Option<String>>,
    pub canned_jpg: Mutex<Option<String>>,
    pub canned_login: Mutex<Option<Value>>,
    next: AtomicU32,
    /// Tokens and codes are opaque strings rather than JWTs.
    pub opaque: std::sync::atomic::AtomicBool,
    /// Every token and OAuth code handed out.
    pub issued: Mutex<Vec<String>>,
}

impl CourtState {
    /// A new token (a JWT, or an opaque string starting with `prefix`), kept in `issued`.
    fn token(&self, prefix: &str, alg: &str, subject: &str, life: i64, n: u32) -> String {
        let token = if self.opaque.load(Ordering::SeqCst) {
            format!("{prefix}OPAQUE{}{n}", uuid::Uuid::new_v4().simple())
        } else {
            jwt(alg, subject, life, n)
        };
        self.issued.lock().unwrap().push(token.clone());
        token
    }
}

#[derive(Clone)]
pub struct CourtPortal {
    pub addr: SocketAddr,
    pub state: Arc<CourtState>,
}

struct Keys {
    private: DecryptingKey,
    public_hex: String,
}

impl CourtPortal {
    pub fn start() -> CourtPortal {
        let state = Arc::new(CourtState::default());
        *state.zxfw_life.lock().unwrap() = 7200;
        *state.baoquan_life.lock().unwrap() = 3600;
        let private = DecryptingKey::from_slice(&random_scalar()).unwrap();
        let public_hex = hex::encode(&private.encrypting_key().to_sec1_bytes()[1..]);
        let keys = web::Data::new(Keys {
            private,
            public_hex,
        });
        let data = web::Data::from(state.clone());
        let addr = crate::support::serve_on_thread!(2, move || {
            App::new()
                .app_data(data.clone())
                .app_data(keys.clone())
                .route("/zxfw/api/v1/publicKey", web::get().to(public_key))
                .route("/zxfw/api/v1/captcha", web::get().to(captcha))
                .route("/zxfw/api/v1/login", web::post().to(login))
                .route("/zxfw/api/v1/oauth/code", web::post().to(oauth_code))
                .route("/zxfw/api/v1/me", web::get().to(zxfw_me))
                .route(
                    "/baoquan/api/account/getauthorization",
                    web::get().to(get_authorization),
                )
                .route("/baoquan/api/me", web::get().to(baoquan_me))
                .route("/exchange", web::post().to(exchange))
        });
        CourtPortal { addr, state }
    }

    pub fn zxfw_base(&self) -> String {
        format!("http://{}/zxfw", self.addr)
    }

    pub fn baoquan_base(&self) -> String {
        format!("http://{}/baoquan", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn accept(&self, account: &str, password: &str) {
        self.state
            .passwords
            .lock()
            .unwrap()
            .insert(account.into(), password.into());
    }

    /// Every zxfw token issued so far is refused from now on (revoked before its `exp`).
    pub fn revoke_zxfw_tokens(&self) {
        self.state.zxfw_tokens.lock().unwrap().clear();
    }

    pub fn count(counter: &AtomicU32) -> u32 {
        counter.load(Ordering::SeqCst)
    }
}

fn random_scalar() -> Vec<u8> {
    // A valid SM2 private key: below the group order (leading byte kept small).
    let mut bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
    bytes.extend(uuid::Uuid::new_v4().as_bytes());
    bytes[0] = 0x1f;
    bytes
}

fn jwt(alg: &str, subject: &str, life: i64, n: u32) -> String {
    let exp = chrono::Utc::now().timestamp() + life;
    let header = B64URL.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
    let payload = B64URL.encode(json!({"sub": subject, "exp": exp, "n": n}).to_string());
    let signature = B64URL.encode(format!("signature-{n}-{}", uuid::Uuid::new_v4()));
    format!("{header}.{payload}.{signature}")
}

fn fail(message: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"code": 500, "message": message, "data": null}))
}

/// The real portal answers 403 without its own `Referer` and `Origin`.
fn headers_ok(request: &HttpRequest) -> bool {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    header("referer") == "https://zxfw.court.gov.cn/zxfw/"
        && header("origin") == "https://zxfw.court.gov.cn"
}

fn session_of(request: &HttpRequest) -> Option<String> {
    let cookies = request.headers().get("cookie")?.to_str().ok()?;
    cookies
        .split(';')
        .find_map(|pair| pair.trim().strip_prefix("SESSION="))
        .map(str::to_string)
}

async fn public_key(
    request: HttpRequest,
    keys: web::Data<Keys>,
    state: web::Data<CourtState>,
) -> HttpResponse {
    if !headers_ok(&request) {
        return HttpResponse::Forbidden().body("forbidden");
    }
    let key = if let Some(key) = state.canned_key.lock().unwrap().clone() {
        key
    } else if state.key_with_prefix.load(Ordering::SeqCst) {
        format!("04{}", keys.public_hex)
    } else {
        keys.public_hex.clone()
    };
    let session = format!("s{}", state.next.fetch_add(1, Ordering::SeqCst));
    HttpResponse::Ok()
        .insert_header(("Set-Cookie", format!("SESSION={session}; Path=/; HttpOnly")))
        .json(json!({"code": 200, "data": key, "message": "成功"}))
}

async fn captcha(request: HttpRequest, state: web::Data<CourtState>) -> HttpResponse {
    if !headers_ok(&request) {
        return HttpResponse::Forbidden().body("forbidden");
    }
    let Some(session) = session_of(&request) else {
        return fail("会话不存在");
    };
    let n = state.captchas_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("cap-{n}-{}", uuid::Uuid::new_v4().simple());
    let answer = format!("a{n}x");
    let shown = if state
        .wrong_answers
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| w.checked_sub(1))
        .is_ok()
    {
        "wrong".to_string()
    } else {
        answer.clone()
    };
    state
        .captchas
        .lock()
        .unwrap()
        .insert(id.clone(), (answer, session));
    let mut image = vec![0xff, 0xd8, 0xff, 0xe0];
    image.extend(format!("fake jpeg answer={shown} end").as_bytes());
    image.extend([0xff, 0xd9]);
    let jpg = state.canned_jpg.lock().unwrap().clone().unwrap_or_else(|| {
        format!(
            "data:image/jpeg;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&image)
        )
    });
    HttpResponse::Ok().json(json!({"code": 200, "data": {"id": id, "jpg": jpg}, "message": "成功"}))
}

async fn login(
    request: HttpRequest,
    body: web::Json<Value>,
    keys: web::Data<Keys>,
    state: web::Data<CourtState>,
) -> HttpResponse {
    if !headers_ok(&request) {
        return HttpResponse::Forbidden().body("forbidden");
    }
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_string();
    if field("type") != "gryh" {
        return fail("用户类型错误");
    }
    if let Some(answer) = state.canned_login.lock().unwrap().clone() {
        return HttpResponse::Ok().json(answer);
    }
    let (account, id) = (field("login"), field("id"));
    state.login_captcha_ids.lock().unwrap().push(id.clone());
    // A captcha is good once, for the session that fetched it.
    let expected = state.captchas.lock().unwrap().remove(&id);
    match (expected, session_of(&request)) {
        (Some((answer, session)), Some(cookie)) if session == cookie && answer == field("yzm") => {}
        _ => return fail("验证码错误"),
    }
    let cipher = hex::decode(field("pass")).unwrap_or_default();
    let password = DecryptingKey::decrypt(&keys.private, &[&[0x04][..], &cipher].concat())
        .ok()
        .and_then(|p| String::from_utf8(p).ok());
    let Some(password) = password else {
        return fail("密码解密失败");
    };
    state.decrypted.lock().unwrap().push(password.clone());
    if state.passwords.lock().unwrap().get(&account) != Some(&password) {
        return fail("账号或密码错误");
    }
    let n = state.zxfw_logins.fetch_add(1, Ordering::SeqCst) + 1;
    let token = state.token("zx", "HS256", &account, *state.zxfw_life.lock().unwrap(), n);
    state.zxfw_tokens.lock().unwrap().insert(token.clone());
    HttpResponse::Ok().json(json!({
        "code": 200,
        "data": {"token": token, "userId": format!("u-{account}"), "username": account},
        "message": "成功"
    }))
}

fn authorization(request: &HttpRequest) -> String {
    request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn zxfw_me(request: HttpRequest, state: web::Data<CourtState>) -> HttpResponse {
    // zxfw consumers send the token raw, no scheme.
    if state
        .zxfw_tokens
        .lock()
        .unwrap()
        .contains(&authorization(&request))
    {
        HttpResponse::Ok().json(json!({"code": 200, "data": "ok"}))
    } else {
        HttpResponse::Unauthorized().json(json!({"code": 401, "message": "未登录"}))
    }
}

async fn oauth_code(request: HttpRequest, state: web::Data<CourtState>) -> HttpResponse {
    let token = authorization(&request);
    if !state.zxfw_tokens.lock().unwrap().contains(&token) {
        return HttpResponse::Unauthorized().json(json!({"code": 401, "message": "未登录"}));
    }
    let n = state.oauth_codes.fetch_add(1, Ordering::SeqCst) + 1;
    let code = format!("code-{n}-{}", uuid::Uuid::new_v4().simple());
    state.issued.lock().unwrap().push(code.clone());
    state.codes.lock().unwrap().insert(code.clone(), token);
    HttpResponse::Ok().json(json!({"code": 200, "data": code, "message": "成功"}))
}

async fn get_authorization(
    query: web::Query<HashMap<String, String>>,
    state: web::Data<CourtState>,
) -> HttpResponse {
    let get = |k: &str| query.get(k).cloned().unwrap_or_default();
    if get("type") != "yzw" || get("state") != "200" {
        return fail("参数错误");
    }
    if state.codes.lock().unwrap().remove(&get("code")).is_none() {
        return fail("授权码无效");
    }
    let n = state.baoquan_tokens.fetch_add(1, Ordering::SeqCst) + 1;
    let token = state.token(
        "bq",
        "HS512",
        "baoquan",
        *state.baoquan_life.lock().unwrap(),
        n,
    );
    state
        .baoquan_tokens_valid
        .lock()
        .unwrap()
        .insert(token.clone());
    HttpResponse::Ok().json(json!({"code": 200, "data": {"token": token}, "message": "成功"}))
}

async fn baoquan_me(request: HttpRequest, state: web::Data<CourtState>) -> HttpResponse {
    let header = authorization(&request);
    let valid = header
        .strip_prefix("Bearer ")
        .is_some_and(|t| state.baoquan_tokens_valid.lock().unwrap().contains(t));
    if valid {
        HttpResponse::Ok().json(json!({"code": 200, "data": "ok"}))
    } else {
        HttpResponse::Unauthorized().json(json!({"code": 401, "message": "未登录"}))
    }
}

async fn exchange(request: HttpRequest, state: web::Data<CourtState>) -> HttpResponse {
    let parent = request
        .headers()
        .get("x-parent-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if parent.is_empty() {
        return HttpResponse::Unauthorized().json(json!({"message": "no parent token"}));
    }
    let n = state.exchanges.fetch_add(1, Ordering::SeqCst) + 1;
    let token = if state.opaque.load(Ordering::SeqCst) {
        state.token("dx", "", "", 0, n)
    } else {
        format!("derived-{n}-from-{}", parent.len())
    };
    HttpResponse::Ok().json(json!({"access_token": token, "expires_in": 1800}))
}
