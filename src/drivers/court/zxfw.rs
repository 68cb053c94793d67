//! `driver = "court_zxfw"` (人民法院在线服务, SPEC §15): one attempt is
//! public key → SM2-encrypted password → captcha → solver → login, on one cookie-keeping
//! client. A captcha error ends the attempt; the retry of [`crate::drivers`] runs a fresh
//! attempt, which fetches a fresh captcha. The token is a JWT whose `exp` is its life
//! (else 3600 s); consumers send it raw (`token_type` is empty).

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use super::solver::CaptchaSolver;
use super::{base, login_client, Patterns, Step};
use crate::config::SiteConfig;
use crate::drivers::{Credentials, Deadline, FailureKind, LoginFailure, LoginToken};
use crate::error::Result;
use crate::metrics::{Metrics, SolveResult};

/// The portal's API root unless `base_url` says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://zxfw.court.gov.cn/yzw/yzw-zxfw-yhfw";
pub struct ZxfwDriver {
    site: String,
    base: String,
    patterns: Patterns,
    solver: CaptchaSolver,
}

impl ZxfwDriver {
    pub fn new(site: &SiteConfig, metrics: Option<Arc<Metrics>>) -> Result<ZxfwDriver> {
        Ok(ZxfwDriver {
            site: site.name.clone(),
            base: base(&site.base_url, DEFAULT_BASE_URL),
            patterns: Patterns::of(site)?,
            solver: CaptchaSolver::new(site, metrics),
        })
    }

    /// Lets a person read the captchas (`captcha_solver = "human"` or the fallback).
    pub fn with_captchas(mut self, captchas: crate::captcha::Captchas) -> ZxfwDriver {
        self.solver = self.solver.with_captchas(captchas);
        self
    }

    pub async fn login(
        &self,
        creds: &Credentials<'_>,
        deadline: &Deadline,
    ) -> Result<LoginToken, LoginFailure> {
        let left = || deadline.remaining();
        let client = login_client(creds.proxy)?;
        let secrets = [creds.password.expose()];
        let step = |name| Step {
            site: &self.site,
            account: creds.account,
            name,
            secrets: &secrets,
        };

        // 1. The public key, and the password under it.
        let key_step = step("publicKey");
        let answer = key_step
            .send(
                client
                    .get(format!("{}/api/v1/publicKey", self.base))
                    .timeout(left()),
            )
            .await?;
        let key = match (&answer.data, answer.ok()) {
            (Value::String(key), true) => key.clone(),
            _ => return Err(key_step.failure(FailureKind::Failed, "no public key in `data`")),
        };
        let pass = super::sm2::encrypt_password(&key, creds.password.expose())
            .map_err(|why| key_step.failure(FailureKind::Failed, &why))?;
        log::info!(
            "event=court_password_encrypted site={} account={} key_digits={} cipher_digits={}",
            self.site,
            creds.account,
            key.len(),
            pass.len()
        );

        // 2. A captcha, and its text.
        let captcha_step = step("captcha");
        let answer = captcha_step
            .send(
                client
                    .get(format!("{}/api/v1/captcha", self.base))
                    .timeout(left()),
            )
            .await?;
        if !answer.ok() {
            return Err(captcha_step.refused(&answer, &self.patterns));
        }
        let (id, image) = captcha_of(&answer.data)
            .map_err(|why| captcha_step.failure(FailureKind::Captcha, &why))?;
        let text = self
            .solver
            .solve(creds.account, &image, deadline, &secrets)
            .await?;
        log::info!(
            "event=captcha_solved site={} account={} captcha_id={id} image_bytes={} answer_chars={}",
            self.site,
            creds.account,
            image.len(),
            text.chars().count()
        );

        // 3. The login.
        let login_step = step("login");
        let body = json!({
            "login": creds.account,
            "pass": pass,
            "yzm": text,
            "id": id,
            "type": "gryh",
        });
        let answer = login_step
            .send(
                client
                    .post(format!("{}/api/v1/login", self.base))
                    .json(&body)
                    .timeout(left()),
            )
            .await?;
        if !answer.ok() {
            let failure = login_step.refused(&answer, &self.patterns);
            if failure.kind == FailureKind::Captcha {
                self.solver.count(SolveResult::Rejected);
            }
            return Err(failure);
        }
        login_step.token(&answer)
    }
}

/// The captcha id and image bytes of `{"id", "jpg"}`; `jpg` is base64, maybe a data URL.
pub fn captcha_of(data: &Value) -> std::result::Result<(String, Vec<u8>), String> {
    let id = match data.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("no captcha `id` in `data`".into()),
    };
    let jpg = data
        .get("jpg")
        .and_then(Value::as_str)
        .ok_or("no captcha image (`jpg`) in `data`")?;
    let encoded = match jpg.split_once("base64,") {
        Some((head, rest)) if head.starts_with("data:") => rest,
        _ => jpg,
    };
    let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
    let image = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("the captcha image is not base64: {e}"))?;
    if image.is_empty() {
        return Err("the captcha image is empty".into());
    }
    Ok((id, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captcha_images_plain_or_data_url() {
        let (id, image) = captcha_of(&json!({"id": "c1", "jpg": "aGVsbG8="})).unwrap();
        assert_eq!((id.as_str(), image.as_slice()), ("c1", b"hello".as_slice()));
        let (_, image) =
            captcha_of(&json!({"id": 7, "jpg": "data:image/jpeg;base64,aGVs\nbG8="})).unwrap();
        assert_eq!(image, b"hello");
        assert!(captcha_of(&json!({"id": "c", "jpg": "not base64!"}))
            .unwrap_err()
            .contains("not base64"));
        assert!(captcha_of(&json!({"jpg": "aGVsbG8="})).is_err());
    }
}
