//! Chat robots (`[[notify.robots]]`) against a local receiver that speaks like WeCom,
//! DingTalk and Feishu: each gets its own message format, signed as its documentation says,
//! only the events it asked for, and a refusal in the robot's own answer is retried.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Digest;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support;
use crate::support::harness::Harness;
use crate::support::portal::Portal;

/// What the receiver got: (robot, query string, body).
type Posts = Arc<Mutex<Vec<(String, String, Value)>>>;

/// One receiver for the three robots: `/wecom`, `/dingtalk`, `/feishu`. Feishu refuses
/// the first message it gets (`code` 19021), as it does when a signature is late.
struct Receiver {
    base: String,
    posts: Posts,
}

impl Receiver {
    fn start() -> Receiver {
        use actix_web::{web, App, HttpRequest, HttpResponse};
        let posts: Posts = Arc::default();
        let data = web::Data::new(posts.clone());
        let addr = crate::support::serve_on_thread!(1, move || {
            App::new().app_data(data.clone()).route(
                        "/{robot}",
                        web::post().to(
                            |posts: web::Data<Posts>,
                             request: HttpRequest,
                             robot: web::Path<String>,
                             body: web::Json<Value>| async move {
                                let mut posts = posts.lock().unwrap();
                                let first_feishu =
                                    robot.as_str() == "feishu" && !posts.iter().any(|p| p.0 == "feishu");
                                posts.push((
                                    robot.into_inner(),
                                    request.query_string().to_string(),
                                    body.into_inner(),
                                ));
                                if first_feishu {
                                    return HttpResponse::Ok()
                                        .json(json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}));
                                }
                                HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok", "code": 0}))
                            },
                        ),
                    )
        });
        Receiver {
            base: format!("http://{}", addr),
            posts,
        }
    }

    fn of(&self, robot: &str) -> Vec<(String, Value)> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.0 == robot)
            .map(|p| (p.1.clone(), p.2.clone()))
            .collect()
    }
}

fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn query(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .to_string()
        })
    })
}

#[actix_rt::test]
async fn each_robot_gets_its_own_signed_format_and_only_its_events() {
    let hooks = Receiver::start();
    // The captcha site has a portal of its own: court_zxfw's logins need no captcha.
    let portal = Portal::start();
    *portal.state.captcha_text.lock().unwrap() = Some("x7k2".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/captcha_handoff_login.py"
    );
    let extra = format!(
        "server.public_url = \"https://tokend.firm.example\"\n\
         [alerts]\nevaluate_interval = 0.1\n[circuit]\nfailure_threshold = 1\nopen_seconds = 60\n\
         [[notify.robots]]\nkind = \"wecom\"\nurl = \"{base}/wecom?key=WECOM-KEY\"\nevents = [\"captcha\"]\n\
         [[notify.robots]]\nkind = \"dingtalk\"\nurl = \"{base}/dingtalk?access_token=DING-TOKEN\"\n\
         secret = \"SECdingding\"\nevents = [\"site\"]\n\
         [[notify.robots]]\nkind = \"feishu\"\nurl = \"{base}/feishu\"\nsecret = \"feishu-secret\"\n\
         events = [\"captcha\", \"alert\"]\n\
         [[sites]]\nname = \"court_captcha\"\ndriver = \"command\"\n\
         command = [\"{script}\", \"--captcha-url\", \"{captcha}\", \"--login-url\", \"{login}\"]\n",
        base = hooks.base,
        captcha = portal.url("/captcha"),
        login = portal.login_url(),
    );
    let retry =
        "[retry]\nlogin_timeout = 5\ncaptcha_retry_delay = 0.05\ncaptcha_answer_timeout = 30\n";
    let prefix = format!("tokend-test-{}", support::unique());
    let h = Harness::builder()
        .prefix(&prefix)
        .retry(retry)
        .extra(&extra)
        .start()
        .await;
    portal.state.accept("alice", "pw-a");
    h.add_account_on("court_captcha", "alice", "pw-a", false);
    h.add_account("bob", "pw-b", false);

    // A captcha waits for a person: WeCom (markdown, then the picture) and Feishu hear of it.
    let url = format!("http://{}/api/v1/automation/tokens/acquire", h.tokend.addr);
    let client = h.client.clone();
    let login = actix_web::rt::spawn(async move {
        client
            .post(url)
            .json(&json!({"site_name": "court_captcha"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    let wecom = support::wait_until("WeCom's two messages", Duration::from_secs(15), || async {
        let got = hooks.of("wecom");
        (got.len() >= 2).then_some(got)
    })
    .await;
    let (query_string, markdown) = &wecom[0];
    assert_eq!(query(query_string, "key").as_deref(), Some("WECOM-KEY"));
    assert_eq!(markdown["msgtype"], "markdown");
    let content = markdown["markdown"]["content"].as_str().unwrap();
    assert!(
        content.contains("验证码待输入") && content.contains("alice"),
        "{content}"
    );
    assert!(
        content.contains("https://tokend.firm.example/#captchas"),
        "{content}"
    );
    let image = &wecom[1].1;
    assert_eq!(image["msgtype"], "image");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(image["image"]["base64"].as_str().unwrap())
        .unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
    assert_eq!(image["image"]["md5"], hex::encode(md5::Md5::digest(&bytes)));

    // The person answers; the login completes.
    let (_, body) = h.api_get("/api/v1/automation/captchas").await;
    let id = body["data"]["captchas"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/automation/captchas/{id}");
    let (status, _, _) = h
        .api_call(Method::POST, &path, Some(json!({"answer": "x7k2"})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(login.await.unwrap().as_u16(), 200);

    // A site goes down: DingTalk (site events) and Feishu (alerts) hear of it, WeCom not.
    h.portal.state.set_outage(true, None);
    let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 502);
    let ding = support::wait_until("DingTalk's site alert", Duration::from_secs(15), || async {
        let got = hooks.of("dingtalk");
        let down = got.iter().any(|(_, m)| {
            m["markdown"]["title"]
                .as_str()
                .unwrap_or("")
                .contains("site_unavailable")
        });
        down.then_some(got)
    })
    .await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (query_string, message) in &ding {
        assert_eq!(
            query(query_string, "access_token").as_deref(),
            Some("DING-TOKEN")
        );
        let timestamp = query(query_string, "timestamp").unwrap();
        let sign = query(query_string, "sign").unwrap();
        let expected = hmac_base64(
            b"SECdingding",
            format!("{timestamp}\nSECdingding").as_bytes(),
        );
        assert_eq!(sign, expected);
        assert!((now_ms - timestamp.parse::<i64>().unwrap()).abs() < 60_000);
        assert_eq!(message["msgtype"], "markdown");
        // Site events only: availability alerts, never a captcha.
        let title = message["markdown"]["title"].as_str().unwrap();
        assert!(
            title.contains("site_") || title.contains("no_available_account"),
            "{title}"
        );
    }

    // Feishu: its cards, signed in the body; the first was refused in the answer and retried.
    let feishu = support::wait_until(
        "Feishu's captcha and alert cards",
        Duration::from_secs(20),
        || async {
            let got = hooks.of("feishu");
            let alert = got.iter().any(|(_, b)| {
                b["card"]["header"]["title"]["content"]
                    .as_str()
                    .unwrap_or("")
                    .contains("site_unavailable")
            });
            (alert && got.len() >= 3).then_some(got)
        },
    )
    .await;
    for (_, card) in &feishu {
        assert_eq!(card["msg_type"], "interactive");
        let timestamp = card["timestamp"].as_str().unwrap();
        let key = format!("{timestamp}\nfeishu-secret");
        assert_eq!(card["sign"], hmac_base64(key.as_bytes(), b""));
    }
    assert!(feishu[0].1["card"]["header"]["title"]["content"]
        .as_str()
        .unwrap()
        .contains("验证码"));
    assert_eq!(
        feishu[1].1.clone().tap_sign(&feishu[0].1),
        feishu[0].1,
        "the refused card is sent again"
    );
    assert!(
        hooks.of("wecom").len() == 2,
        "WeCom asked for captchas only"
    );
    let text = h.prometheus_text().await;
    assert!(
        text.contains(r#"tokend_webhook_deliveries_total{result="retried"} 1"#),
        "{text}"
    );
}

/// The same card, signed again (a retry may carry a newer timestamp and signature).
trait TapSign {
    fn tap_sign(self, like: &Value) -> Value;
}

impl TapSign for Value {
    fn tap_sign(mut self, like: &Value) -> Value {
        self["timestamp"] = like["timestamp"].clone();
        self["sign"] = like["sign"].clone();
        self
    }
}

/// What the refusing receiver got: (path, query) of each POST.
type Refused = Arc<Mutex<Vec<(String, String)>>>;

/// A receiver where every robot refuses every message in its own answer (as a robot whose
/// key was revoked does).
fn refusing_receiver() -> (String, Refused) {
    use actix_web::{web, App, HttpRequest, HttpResponse};
    let posts: Refused = Arc::default();
    let data = web::Data::new(posts.clone());
    let addr = crate::support::serve_on_thread!(1, move || {
        App::new().app_data(data.clone()).default_service(web::to(
            |posts: web::Data<Refused>, request: HttpRequest| async move {
                posts.lock().unwrap().push((
                    request.path().to_string(),
                    request.query_string().to_string(),
                ));
                // Feishu says `code`, WeCom and DingTalk `errcode`.
                HttpResponse::Ok().json(
                    json!({"code": 19001, "errcode": 310000, "msg": "keywords not in content"}),
                )
            },
        ))
    });
    (format!("http://{addr}"), posts)
}

/// Feishu keeps the robot's key in the URL's path, DingTalk and WeCom in its query: a robot
/// that refuses every message is retried and given up, and no log line (at debug) holds any
/// key or signing secret; the lines name the robot by its host and its table.
#[test]
fn robot_keys_never_reach_the_log() {
    const FEISHU_KEY: &str = "2f6c1a9e-77b4-4e0b-9a43-5d1c0b8e7f21";
    const DING_TOKEN: &str = "9c1e0d8b7a6f5e4d3c2b1a0f9e8d7c6b";
    const WECOM_KEY: &str = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa";
    const FEISHU_SECRET: &str = "feishu-signing-secret-0123";
    const DING_SECRET: &str = "SECd1ngd1ngsigningsecret0123";
    let (base, posts) = refusing_receiver();
    let portal = Portal::start();
    portal.state.accept("alice", "pw-alice");
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [alerts]\nevaluate_interval = 0.1\n[circuit]\nfailure_threshold = 1\nopen_seconds = 60\n\
             [retry]\nnetwork_retry_delay_base = 0.05\n\
             [[notify.robots]]\nkind = \"feishu\"\n\
             url = \"{base}/open-apis/bot/v2/hook/{FEISHU_KEY}\"\nsecret = \"{FEISHU_SECRET}\"\n\
             events = [\"alert\"]\n\
             [[notify.robots]]\nkind = \"dingtalk\"\n\
             url = \"{base}/robot/send?access_token={DING_TOKEN}\"\nsecret = \"{DING_SECRET}\"\n\
             events = [\"site\"]\n\
             [[notify.robots]]\nkind = \"wecom\"\n\
             url = \"{base}/cgi-bin/webhook/send?key={WECOM_KEY}\"\nevents = [\"alert\"]\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    );
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let mut daemon = support::Daemon::start_with_log(dir.path(), &config, "debug");

    // The portal goes down: an alert for every robot, which each refuses five times.
    portal.state.set_outage(true, None);
    let (status, _) = support::acquire(daemon.addr, json!({"site_name": "court_zxfw"}));
    assert_eq!(status, 502);
    let mut log = Vec::new();
    for target in ["robot[0]:feishu", "robot[1]:dingtalk", "robot[2]:wecom"] {
        daemon.wait_for_log(
            &format!("event=webhook_failed target={target}"),
            Duration::from_secs(40),
            &mut log,
        );
    }
    // The keys were in use: each robot was POSTed at its own URL, retried.
    let posts = posts.lock().unwrap().clone();
    let feishu_path = format!("/open-apis/bot/v2/hook/{FEISHU_KEY}");
    assert!(
        posts.iter().filter(|p| p.0 == feishu_path).count() >= 5,
        "{posts:?}"
    );
    assert!(posts.iter().any(|p| p.1.contains(DING_TOKEN)), "{posts:?}");
    assert!(posts.iter().any(|p| p.1.contains(WECOM_KEY)), "{posts:?}");

    for line in &log {
        for secret in [
            FEISHU_KEY,
            DING_TOKEN,
            WECOM_KEY,
            FEISHU_SECRET,
            DING_SECRET,
        ] {
            assert!(!line.contains(secret), "{secret} is logged: {line}");
        }
        // Nor a piece of a key long enough to find it by.
        for piece in ["2f6c1a9e", "77b4-4e0b", "9c1e0d8b7a6f", "693a91f6"] {
            assert!(!line.contains(piece), "{piece} is logged: {line}");
        }
    }
    let shown = format!("url={base}/***");
    let failed = |target: &str| {
        log.iter()
            .find(|l| l.contains(&format!("event=webhook_failed target={target}")))
            .unwrap()
            .clone()
    };
    assert!(
        failed("robot[0]:feishu").contains(&shown),
        "{}",
        failed("robot[0]:feishu")
    );
    assert!(
        failed("robot[1]:dingtalk").contains(&format!("{shown}?***")),
        "{}",
        failed("robot[1]:dingtalk")
    );
    assert!(log
        .iter()
        .any(|l| l.contains("event=webhook_retry target=robot[0]:feishu")));
    assert!(log
        .iter()
        .any(|l| l.contains("event=webhook_enabled target=robot[0]:feishu")));
    drop(daemon);
}
