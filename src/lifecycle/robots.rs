//! Chat robots for the person on duty (`[[notify.robots]]`): WeCom (企业微信), DingTalk (钉钉)
//! and Feishu (飞书) group robots, each in its own message format, Chinese first.
//!
//! This file only turns a webhook event (`alert_firing`, `alert_resolved`,
//! `captcha_pending`, as [`crate::lifecycle::webhook`] queues them) into the robot's messages, signs
//! them, and reads the robot's answer; the delivery rules (queue, retries with backoff, no
//! redirects, no environment proxy, the URL masked in logs) are the webhook's.
//!
//! | kind | message | signing (`secret`) |
//! |---|---|---|
//! | `wecom` | `markdown`; a captcha also as an `image` (base64 + MD5) | none (the key is in the URL) |
//! | `dingtalk` | `markdown` (`title`, `text`) | `timestamp` (ms) and `sign` = base64(HMAC-SHA256(secret, "timestamp\nsecret")) in the query |
//! | `feishu` | `interactive` card | `timestamp` (s) and `sign` = base64(HMAC-SHA256("timestamp\nsecret", "")) in the body |

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::vault::secret::Secret;

/// Which robot a `[[notify.robots]]` entry speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RobotKind {
    Wecom,
    Dingtalk,
    Feishu,
}

impl RobotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RobotKind::Wecom => "wecom",
            RobotKind::Dingtalk => "dingtalk",
            RobotKind::Feishu => "feishu",
        }
    }
}

/// What a robot is told about (`events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RobotEvent {
    /// A captcha waits for a person.
    Captcha,
    /// Every alert that fires or resolves.
    Alert,
    /// Alerts about a site's availability only (`site_*`, `no_available_account`).
    Site,
}

/// The topic of a webhook event, for a robot's `events` filter.
pub fn wants(events: &[RobotEvent], event: &Value) -> bool {
    let kind = event["event"].as_str().unwrap_or_default();
    let alert = event["alert"]["type"].as_str().unwrap_or_default();
    let site_alert = alert.starts_with("site_") || alert == "no_available_account";
    events.iter().any(|wanted| match wanted {
        RobotEvent::Captcha => kind == "captcha_pending",
        RobotEvent::Alert => kind.starts_with("alert_"),
        RobotEvent::Site => kind.starts_with("alert_") && site_alert,
    })
}

/// One message: its title and Markdown text (the robots' common Markdown subset).
struct Text {
    title: String,
    markdown: String,
    /// Red for a firing high alert or a captcha, green for a resolution.
    urgent: bool,
}

/// A field of an event as one line of text, without Markdown's active characters.
fn field(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string())
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if "*`[]<>#".contains(c) { ' ' } else { c })
        .collect()
}

fn text_of(event: &Value, public_url: &str) -> Option<Text> {
    let alert = &event["alert"];
    match event["event"].as_str()? {
        "captcha_pending" => {
            let c = &event["captcha"];
            let link = if public_url.is_empty() {
                "在控制台的验证码框中输入 Answer it on the dashboard or with `tokend captcha answer`".to_string()
            } else {
                format!(
                    "[打开控制台输入验证码 Open the captcha box]({}/#captchas)",
                    public_url.trim_end_matches('/')
                )
            };
            Some(Text {
                title: format!("【tokend】验证码待输入 Captcha: {}", field(&c["site_name"])),
                markdown: format!(
                    "**验证码待输入 A captcha waits for a person**\n\n> 站点 Site: {}\n> 账号 Account: {}\n> 提示 Prompt: {}\n> 截止 Expires: {}\n\n{link}",
                    field(&c["site_name"]),
                    field(&c["account"]),
                    field(&c["prompt"]),
                    field(&c["expires_at"]),
                ),
                urgent: true,
            })
        }
        "alert_firing" => Some(Text {
            title: format!("【tokend】告警 Alert: {}", field(&alert["type"])),
            markdown: format!(
                "**告警 Alert: {}** ({})\n\n> {}",
                field(&alert["type"]),
                field(&alert["severity"]),
                field(&alert["message"]),
            ),
            urgent: alert["severity"] == "high",
        }),
        "alert_resolved" => Some(Text {
            title: format!("【tokend】已恢复 Resolved: {}", field(&alert["type"])),
            markdown: format!("**已恢复 Resolved: {}**", field(&alert["type"])),
            urgent: false,
        }),
        _ => None,
    }
}

/// The bodies to POST for `event` (in order), or none when the robot has nothing to say.
pub fn messages(kind: RobotKind, event: &Value, public_url: &str) -> Vec<Value> {
    let Some(text) = text_of(event, public_url) else {
        return Vec::new();
    };
    match kind {
        RobotKind::Wecom => {
            let mut out = vec![json!({
                "msgtype": "markdown",
                "markdown": {"content": text.markdown},
            })];
            if let Some(image) = wecom_image(&event["captcha"]["image"]) {
                out.push(image);
            }
            out
        }
        RobotKind::Dingtalk => vec![json!({
            "msgtype": "markdown",
            "markdown": {"title": text.title, "text": text.markdown},
        })],
        RobotKind::Feishu => vec![json!({
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": true},
                "header": {
                    "title": {"tag": "plain_text", "content": text.title},
                    "template": if text.urgent { "red" } else { "green" },
                },
                "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": text.markdown}}],
            },
        })],
    }
}

/// WeCom shows a captcha's picture as an `image` message: the base64 of the PNG or JPEG and
/// the MD5 of its bytes (at most 2 MB).
fn wecom_image(image: &Value) -> Option<Value> {
    use md5::Digest;
    let data_url = image.as_str()?;
    let encoded = data_url.split_once("base64,").map_or(data_url, |(_, b)| b);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    if bytes.is_empty() || bytes.len() > 2 * 1024 * 1024 {
        return None;
    }
    let md5 = hex::encode(md5::Md5::digest(&bytes));
    Some(json!({"msgtype": "image", "image": {"base64": encoded.trim(), "md5": md5}}))
}

fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(message);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The URL and body to POST, signed for the robot when it has a `secret` (`now_ms`: the
/// clock, in milliseconds since the epoch).
pub fn signed(
    kind: RobotKind,
    url: &str,
    secret: &Secret,
    mut body: Value,
    now_ms: i64,
) -> (String, Value) {
    if secret.is_empty() {
        return (url.to_string(), body);
    }
    match kind {
        RobotKind::Wecom => (url.to_string(), body),
        RobotKind::Dingtalk => {
            let sign = hmac_base64(
                secret.expose().as_bytes(),
                format!("{now_ms}\n{}", secret.expose()).as_bytes(),
            );
            let sign =
                percent_encoding::utf8_percent_encode(&sign, percent_encoding::NON_ALPHANUMERIC);
            let joiner = if url.contains('?') { '&' } else { '?' };
            (format!("{url}{joiner}timestamp={now_ms}&sign={sign}"), body)
        }
        RobotKind::Feishu => {
            let seconds = now_ms / 1000;
            let key = format!("{seconds}\n{}", secret.expose());
            body["timestamp"] = json!(seconds.to_string());
            body["sign"] = json!(hmac_base64(key.as_bytes(), b""));
            (url.to_string(), body)
        }
    }
}

/// Whether the robot took the message: it answers HTTP 200 with `errcode` (WeCom,
/// DingTalk) or `code` (Feishu) 0; anything else is said as an error.
pub fn accepted(answer: &Value) -> Result<(), String> {
    let code = answer
        .get("errcode")
        .or_else(|| answer.get("code"))
        .or_else(|| answer.get("StatusCode"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if code == 0 {
        return Ok(());
    }
    let said = answer
        .get("errmsg")
        .or_else(|| answer.get("msg"))
        .and_then(Value::as_str)
        .unwrap_or("no message");
    Err(format!(
        "the robot refused the message: code {code}: {}",
        field(&json!(said))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captcha() -> Value {
        // A 1×1 PNG.
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";
        json!({"event": "captcha_pending", "captcha": {
            "id": "c1", "site_name": "court_zxfw", "account": "alice", "prompt": "请输入*验证码*",
            "image": format!("data:image/png;base64,{png}"), "expires_at": "2026-12-06T03:00:00Z"}})
    }

    #[test]
    fn each_robot_speaks_its_own_format() {
        let wecom = messages(RobotKind::Wecom, &captcha(), "https://tokend.example");
        assert_eq!(wecom[0]["msgtype"], "markdown");
        let content = wecom[0]["markdown"]["content"].as_str().unwrap();
        assert!(content.contains("验证码待输入") && content.contains("alice"));
        assert!(content.contains("https://tokend.example/#captchas"));
        assert!(
            !content.contains("*验证码*"),
            "the portal's text cannot format: {content}"
        );
        assert_eq!(wecom[1]["msgtype"], "image");
        assert_eq!(wecom[1]["image"]["md5"].as_str().unwrap().len(), 32);

        let alert = json!({"event": "alert_firing", "alert": {"type": "site_unavailable", "severity": "high", "message": "circuit open"}});
        let ding = messages(RobotKind::Dingtalk, &alert, "");
        assert_eq!(ding[0]["msgtype"], "markdown");
        assert!(ding[0]["markdown"]["title"]
            .as_str()
            .unwrap()
            .starts_with("【tokend】告警"));
        let feishu = messages(RobotKind::Feishu, &alert, "");
        assert_eq!(feishu[0]["msg_type"], "interactive");
        assert_eq!(feishu[0]["card"]["header"]["template"], "red");
    }

    #[test]
    fn events_are_filtered_by_topic() {
        let site = json!({"event": "alert_firing", "alert": {"type": "site_unavailable"}});
        let rate = json!({"event": "alert_firing", "alert": {"type": "low_success_rate"}});
        assert!(wants(&[RobotEvent::Site], &site));
        assert!(!wants(&[RobotEvent::Site], &rate));
        assert!(wants(&[RobotEvent::Alert], &rate));
        assert!(!wants(&[RobotEvent::Alert], &captcha()));
        assert!(wants(&[RobotEvent::Captcha], &captcha()));
    }

    #[test]
    fn signatures_follow_each_robots_documentation() {
        let secret = Secret::new("SEC000");
        let (url, _) = signed(
            RobotKind::Dingtalk,
            "https://oapi.example/robot/send?access_token=t",
            &secret,
            json!({}),
            1_700_000_000_000,
        );
        let expected = hmac_base64(b"SEC000", b"1700000000000\nSEC000");
        let encoded: String =
            percent_encoding::utf8_percent_encode(&expected, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        assert_eq!(url, format!("https://oapi.example/robot/send?access_token=t&timestamp=1700000000000&sign={encoded}"));
        let (_, body) = signed(
            RobotKind::Feishu,
            "https://open.example/hook",
            &secret,
            json!({"msg_type": "text"}),
            1_700_000_000_999,
        );
        assert_eq!(body["timestamp"], "1700000000");
        assert_eq!(body["sign"], hmac_base64(b"1700000000\nSEC000", b""));
        assert!(accepted(&json!({"errcode": 0, "errmsg": "ok"})).is_ok());
        assert!(accepted(&json!({"code": 19021, "msg": "sign match fail"}))
            .unwrap_err()
            .contains("19021"));
    }
}
