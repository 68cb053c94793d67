//! `driver = "court_zxfw"` (人民法院在线服务, SPEC §15): one attempt is
//! public key → SM2-encrypted password → captcha → solver → login, on one cookie-keeping
//! client. A captcha error ends the attempt; the retry of [`crate::drivers`] runs a fresh
//! attempt, which fetches a fresh captcha. The token is a JWT whose `exp` is its life
//! (else 3600 s); consumers send it raw (`token_type` is empty).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::portal::{base, login_client, Patterns, Step, ZXFW_BASE_URL};
use super::solver::CaptchaSolver;
use crate::config::SiteConfig;
use crate::drivers::deadline::Deadline;
use crate::drivers::login::{Credentials, FailureKind, LoginFailure, LoginToken};
use crate::error::Result;
use crate::watch::metrics::{Metrics, SolveResult};

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
            base: base(&site.base_url, ZXFW_BASE_URL),
            patterns: Patterns::of(site)?,
            solver: CaptchaSolver::new(site, metrics),
        })
    }

    /// Lets a person read the captchas (`captcha_solver = "human"` or the fallback).
    pub fn with_captchas(mut self, captchas: crate::lifecycle::captcha::Captchas) -> ZxfwDriver {
        self.solver = self.solver.with_captchas(captchas);
        self
    }

    /// One attempt: public key → encrypted password → captcha → its text → login.
    pub async fn login(
        &self,
        creds: &Credentials<'_>,
        deadline: &Deadline,
    ) -> Result<LoginToken, LoginFailure> {
        let attempt = Attempt {
            driver: self,
            creds,
            deadline,
            client: login_client(creds.proxy)?,
            secrets: [creds.password.expose()],
        };
        let pass = attempt.encrypted_password().await?;
        let captcha = attempt.solved_captcha().await?;
        attempt.sign_in(&pass, &captcha).await
    }
}

/// One login attempt: what every step of it needs.
struct Attempt<'a> {
    driver: &'a ZxfwDriver,
    creds: &'a Credentials<'a>,
    deadline: &'a Deadline,
    /// Keeps the portal's cookies from one step to the next.
    client: reqwest::Client,
    /// Masked wherever an answer or an error is logged or returned.
    secrets: [&'a str; 1],
}

/// A captcha the portal showed, and its text.
struct SolvedCaptcha {
    id: String,
    text: String,
}

impl Attempt<'_> {
    fn step(&self, name: &'static str) -> Step<'_> {
        Step {
            site: &self.driver.site,
            account: self.creds.account,
            name,
            secrets: &self.secrets,
            proxy: self.creds.proxy.map(|p| (p, self.creds.own_proxy)),
        }
    }

    fn left(&self) -> Duration {
        self.deadline.remaining()
    }

    /// 1. The portal's public key, and the password under it.
    async fn encrypted_password(&self) -> Result<String, LoginFailure> {
        let key_step = self.step("publicKey");
        let url = format!("{}/api/v1/publicKey", self.driver.base);
        let answer = key_step
            .send(self.client.get(url).timeout(self.left()))
            .await?;
        let key = match (&answer.data, answer.ok()) {
            (Value::String(key), true) => key.clone(),
            _ => return Err(key_step.failure(FailureKind::Failed, "no public key in `data`")),
        };
        let pass = super::sm2::encrypt_password(&key, self.creds.password.expose())
            .map_err(|why| key_step.failure(FailureKind::Failed, &why))?;
        log::info!(
            "event=court_password_encrypted site={} account={} key_digits={} cipher_digits={}",
            self.driver.site,
            self.creds.account,
            key.len(),
            pass.len()
        );
        Ok(pass)
    }

    /// 2. A captcha, and its text from the solver.
    async fn solved_captcha(&self) -> Result<SolvedCaptcha, LoginFailure> {
        let captcha_step = self.step("captcha");
        let url = format!("{}/api/v1/captcha", self.driver.base);
        let answer = captcha_step
            .send(self.client.get(url).timeout(self.left()))
            .await?;
        if !answer.ok() {
            return Err(captcha_step.refused(&answer, &self.driver.patterns));
        }
        let (id, image) = captcha_of(&answer.data)
            .map_err(|why| captcha_step.failure(FailureKind::Captcha, &why))?;
        let text = self
            .driver
            .solver
            .solve(self.creds.account, &image, self.deadline, &self.secrets)
            .await?;
        log::info!(
            "event=captcha_solved site={} account={} captcha_id={id} image_bytes={} answer_chars={}",
            self.driver.site,
            self.creds.account,
            image.len(),
            text.chars().count()
        );
        Ok(SolvedCaptcha { id, text })
    }

    /// 3. The login; a captcha the portal rejects is counted against the solver.
    async fn sign_in(
        &self,
        pass: &str,
        captcha: &SolvedCaptcha,
    ) -> Result<LoginToken, LoginFailure> {
        let login_step = self.step("login");
        let body = json!({
            "login": self.creds.account,
            "pass": pass,
            "yzm": captcha.text,
            "id": captcha.id,
            "type": "gryh",
        });
        let url = format!("{}/api/v1/login", self.driver.base);
        let answer = login_step
            .send(self.client.post(url).json(&body).timeout(self.left()))
            .await?;
        if !answer.ok() {
            let failure = login_step.refused(&answer, &self.driver.patterns);
            if failure.kind == FailureKind::Captcha {
                self.driver.solver.count(SolveResult::Rejected);
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
