//! `[notify]`: where alerts and pending captchas are announced (SPEC §13, webhooks).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::secret::Secret;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Each alert firing or resolved and each new pending captcha is POSTed here as JSON;
    /// empty: no webhook.
    pub webhook_url: String,
    /// When set, the body is signed: `X-Tokend-Signature: sha256=<hex HMAC-SHA256>`.
    pub webhook_secret: Secret,
}

impl NotifyConfig {
    pub(super) fn validate(&self) -> Result<()> {
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
