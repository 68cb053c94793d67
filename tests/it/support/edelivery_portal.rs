//! A fake of the provincial e-delivery portal of issue 26, on 127.0.0.1:0:
//! - `GET /auth/nonce` → `{"code":0,"data":{"nonce":"<hex>"}}` and a fresh `SID` cookie that
//!   binds the nonce and the captcha;
//! - `GET /auth/captcha` → raw `image/png` bytes that carry `answer=<text>` (the test solver
//!   reads it), bound to the SID;
//! - `POST /auth/login` (form: `account`, `pwd`, `code`) → `{"code":0,"data":{"accessToken",
//!   "expiresIn":1800}}`, `1001` (wrong account or password), `1002` (wrong captcha), `1003`
//!   (no session), always HTTP 200; `pwd` must be base64(md5hex(md5hex(password) + nonce));
//! - `GET /api/me` → 200 only with `X-Access-Token: <token>`.
//!
//! `canned_nonce` replaces the nonce answer (a portal that changed its answer's shape).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse};
use base64::Engine;
use md5::Digest;
use serde_json::{json, Value};

#[derive(Default)]
pub struct EdeliveryState {
    /// account → password.
    pub passwords: Mutex<HashMap<String, String>>,
    /// SID → (nonce, captcha answer).
    sessions: Mutex<HashMap<String, (String, Option<String>)>>,
    /// The next this many captcha images carry a wrong answer.
    pub wrong_answers: AtomicU32,
    pub nonces_issued: AtomicU32,
    pub captchas_issued: AtomicU32,
    pub logins: AtomicU32,
    /// (nonce, pwd) of every login, as received.
    pub received: Mutex<Vec<(String, String)>>,
    /// Nonces the logins were checked against, in order.
    pub login_nonces: Mutex<Vec<String>>,
    tokens: Mutex<HashSet<String>>,
    /// Every token handed out.
    pub issued: Mutex<Vec<String>>,
    /// When set: the nonce answer served instead.
    pub canned_nonce: Mutex<Option<Value>>,
}

#[derive(Clone)]
pub struct EdeliveryPortal {
    pub addr: SocketAddr,
    pub state: Arc<EdeliveryState>,
}

/// base64(md5hex(md5hex(password) + nonce)): what the portal's JavaScript sends.
pub fn expected_pwd(password: &str, nonce: &str) -> String {
    let inner = hex::encode(md5::Md5::digest(password.as_bytes()));
    let outer = hex::encode(md5::Md5::digest(format!("{inner}{nonce}").as_bytes()));
    base64::engine::general_purpose::STANDARD.encode(outer)
}

impl EdeliveryPortal {
    pub fn start() -> EdeliveryPortal {
        let state = Arc::new(EdeliveryState::default());
        let data = web::Data::from(state.clone());
        let addr = crate::support::serve_on_thread!(2, move || {
            App::new()
                .app_data(data.clone())
                .route("/auth/nonce", web::get().to(nonce))
                .route("/auth/captcha", web::get().to(captcha))
                .route("/auth/login", web::post().to(login))
                .route("/api/me", web::get().to(me))
        });
        EdeliveryPortal { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn accept(&self, account: &str, password: &str) {
        let mut passwords = self.state.passwords.lock().unwrap();
        passwords.insert(account.into(), password.into());
    }

    pub fn count(counter: &AtomicU32) -> u32 {
        counter.load(Ordering::SeqCst)
    }
}

fn sid(req: &HttpRequest) -> Option<String> {
    let header = req.headers().get("Cookie")?.to_str().ok()?;
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "SID")
        .map(|(_, value)| value.to_string())
}

async fn nonce(state: web::Data<EdeliveryState>) -> HttpResponse {
    if let Some(canned) = state.canned_nonce.lock().unwrap().clone() {
        return HttpResponse::Ok().json(canned);
    }
    let n = state.nonces_issued.fetch_add(1, Ordering::SeqCst);
    let nonce = format!("{:x}{n}", uuid::Uuid::new_v4().as_u128());
    let sid = uuid::Uuid::new_v4().simple().to_string();
    let mut sessions = state.sessions.lock().unwrap();
    sessions.insert(sid.clone(), (nonce.clone(), None));
    HttpResponse::Ok()
        .insert_header(("Set-Cookie", format!("SID={sid}; Path=/; HttpOnly")))
        .json(json!({"code": 0, "data": {"nonce": nonce}}))
}

async fn captcha(req: HttpRequest, state: web::Data<EdeliveryState>) -> HttpResponse {
    let n = state.captchas_issued.fetch_add(1, Ordering::SeqCst);
    let answer = format!("c{n}x");
    let wrong = state
        .wrong_answers
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| w.checked_sub(1))
        .is_ok();
    let shown = if wrong {
        "wrong".to_string()
    } else {
        answer.clone()
    };
    let mut sessions = state.sessions.lock().unwrap();
    if let Some(session) = sid(&req).and_then(|s| sessions.get_mut(&s)) {
        session.1 = Some(answer);
    }
    let mut image = b"\x89PNG\r\n\x1a\n fake image answer=".to_vec();
    image.extend_from_slice(shown.as_bytes());
    HttpResponse::Ok().content_type("image/png").body(image)
}

async fn login(
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
    state: web::Data<EdeliveryState>,
) -> HttpResponse {
    state.logins.fetch_add(1, Ordering::SeqCst);
    // A session serves one login, whatever its outcome.
    let session = sid(&req).and_then(|s| state.sessions.lock().unwrap().remove(&s));
    let Some((nonce, Some(answer))) = session else {
        return HttpResponse::Ok().json(json!({"code": 1003, "msg": "会话已过期"}));
    };
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let pwd = field("pwd");
    state
        .received
        .lock()
        .unwrap()
        .push((nonce.clone(), pwd.clone()));
    state.login_nonces.lock().unwrap().push(nonce.clone());
    if field("code") != answer {
        return HttpResponse::Ok().json(json!({"code": 1002, "msg": "验证码错误"}));
    }
    let password = state
        .passwords
        .lock()
        .unwrap()
        .get(&field("account"))
        .cloned();
    if password.is_none_or(|p| expected_pwd(&p, &nonce) != pwd) {
        return HttpResponse::Ok().json(json!({"code": 1001, "msg": "账号或密码错误"}));
    }
    let token = format!("edAT{}", uuid::Uuid::new_v4().simple());
    state.tokens.lock().unwrap().insert(token.clone());
    state.issued.lock().unwrap().push(token.clone());
    HttpResponse::Ok().json(json!({"code": 0, "data": {"accessToken": token, "expiresIn": 1800}}))
}

async fn me(req: HttpRequest, state: web::Data<EdeliveryState>) -> HttpResponse {
    let token = req
        .headers()
        .get("X-Access-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if state.tokens.lock().unwrap().contains(token) {
        HttpResponse::Ok().json(json!({"code": 0}))
    } else {
        HttpResponse::Unauthorized().finish()
    }
}
