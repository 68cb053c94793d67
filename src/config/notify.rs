//! `[notify]`: where alerts and pending captchas are announced (SPEC §13, webhooks).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lifecycle::robots::{RobotEvent, RobotKind};
use crate::vault::secret::Secret;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Each alert firing or resolved and each new pending captcha is POSTed here as JSON;
    /// empty: no webhook.
    pub webhook_url: String,
    /// When set, the body is signed: `X-Tokend-Signature: sha256=<hex HMAC-SHA256>`.
    pub webhook_secret: Secret,
    /// Chat robots (`[[notify.robots]]`): WeCom, DingTalk or Feishu group robots told about
    /// captchas waiting for a person and alerts, each in its own format.
    pub robots: Vec<RobotConfig>,
}

/// One `[[notify.robots]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    pub kind: RobotKind,
    /// The robot's webhook address (it holds the robot's key: masked in every log line).
    pub url: String,
    /// DingTalk's and Feishu's signing secret ("加签"); none for WeCom.
    #[serde(default)]
    pub secret: Secret,
    /// What it is told about: `captcha`, `alert` (every alert), `site` (a site's
    /// availability only). Default: captcha and alert.
    #[serde(default = "default_robot_events")]
    pub events: Vec<RobotEvent>,
}

fn default_robot_events() -> Vec<RobotEvent> {
    vec![RobotEvent::Captcha, RobotEvent::Alert]
}

fn http_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

impl NotifyConfig {
    pub(super) fn validate(&self) -> Result<()> {
        for (n, robot) in self.robots.iter().enumerate() {
            let key = |field: &str| format!("notify.robots[{n}].{field}");
            if !http_url(&robot.url) {
                // The URL holds the robot's key: named, never printed.
                return Err(Error::config(
                    key("url"),
                    "must be an http:// or https:// URL",
                ));
            }
            if robot.events.is_empty() {
                return Err(Error::config(
                    key("events"),
                    "names nothing: use some of \"captcha\", \"alert\", \"site\"",
                ));
            }
            if robot.kind == RobotKind::Wecom && !robot.secret.is_empty() {
                return Err(Error::config(
                    key("secret"),
                    "WeCom robots are not signed (their key is in the URL): remove it",
                ));
            }
        }
        if self.webhook_url.is_empty() {
            return Ok(());
        }
        let parsed = reqwest::Url::parse(&self.webhook_url).ok();
        let ok = parsed
            .as_ref()
            .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if ok {
            Ok(())
        } else {
            Err(Error::config(
                "notify.webhook_url",
                "must be an http:// or https:// URL",
            ))
        }
    }
}
