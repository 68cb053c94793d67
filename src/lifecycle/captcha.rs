//! Captchas only a person can solve (SPEC §13): the pending challenges, each waiting for one
//! answer.
//!
//! A login driver [`Captchas::open`]s a challenge and waits on its [`Ticket`]; the API lists
//! the pending ones (`GET /api/v1/automation/captchas`) and [`Captchas::answer`]s them
//! (`POST /api/v1/automation/captchas/{id}`). A challenge is pending from its opening until
//! it is answered or `retry.captcha_answer_timeout` passes; it is forgotten when its login
//! stops waiting (the ticket is dropped). Each new challenge is announced to the webhook.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::lifecycle::webhook::Webhook;

/// A pending challenge as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Challenge {
    pub id: String,
    pub site_name: String,
    pub account: String,
    pub prompt: String,
    /// The image as a data URL (`data:image/png;base64,…`).
    pub image: String,
    pub created_at: DateTime<Utc>,
    /// When an unanswered challenge fails the login (`captcha_error`).
    pub expires_at: DateTime<Utc>,
}

struct Entry {
    challenge: Challenge,
    /// Taken by the answer; `None` once answered.
    answer: Option<oneshot::Sender<String>>,
}

/// The registry of pending challenges. Cheap to clone.
#[derive(Clone)]
pub struct Captchas {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    answer_timeout: Duration,
    /// Where new challenges are announced, once the webhook is set up.
    /// Where each new challenge is announced (a no-op without `[notify]`).
    announce: Webhook,
}

/// A login's wait for the answer to its challenge; dropping it withdraws the challenge.
pub struct Ticket {
    id: String,
    answer: oneshot::Receiver<String>,
    timeout: Duration,
    captchas: Captchas,
}

impl Captchas {
    /// Challenges answered within `answer_timeout`, each announced through `announce`.
    pub fn new(answer_timeout: Duration, announce: Webhook) -> Captchas {
        Captchas {
            entries: Arc::default(),
            answer_timeout,
            announce,
        }
    }

    pub fn answer_timeout(&self) -> Duration {
        self.answer_timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a challenge for a person to solve.
    pub fn open(&self, site: &str, account: &str, prompt: &str, image_base64: &str) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let now = Utc::now();
        let timeout = chrono::Duration::from_std(self.answer_timeout)
            .unwrap_or_else(|_| chrono::Duration::seconds(300));
        let challenge = Challenge {
            id: uuid::Uuid::new_v4().to_string(),
            site_name: site.to_string(),
            account: account.to_string(),
            prompt: prompt.to_string(),
            image: data_url(image_base64),
            created_at: now,
            expires_at: now + timeout,
        };
        log::info!(
            "event=captcha_pending id={} site={site} account={account} expires_at={}",
            challenge.id,
            challenge
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        self.announce.captcha_pending(&challenge);
        let id = challenge.id.clone();
        let mut entries = self.lock();
        // Answered challenges are kept until they expire; then they go.
        entries.retain(|_, e| e.challenge.expires_at > now);
        entries.insert(
            id.clone(),
            Entry {
                challenge,
                answer: Some(tx),
            },
        );
        Ticket {
            id,
            answer: rx,
            timeout: self.answer_timeout,
            captchas: self.clone(),
        }
    }

    /// The challenges waiting for an answer, oldest first.
    pub fn pending(&self) -> Vec<Challenge> {
        let now = Utc::now();
        let mut list: Vec<Challenge> = self
            .lock()
            .values()
            .filter(|e| e.answer.is_some() && e.challenge.expires_at > now)
            .map(|e| e.challenge.clone())
            .collect();
        list.sort_by_key(|c| c.created_at);
        list
    }

    /// Hands `answer` to the login waiting for it.
    pub fn answer(&self, id: &str, answer: &str) -> Result<()> {
        let mut entries = self.lock();
        let entry = entries
            .get_mut(id)
            .filter(|e| e.challenge.expires_at > Utc::now())
            .ok_or_else(|| Error::CaptchaNotFound(id.to_string()))?;
        let sender = entry
            .answer
            .take()
            .ok_or_else(|| Error::CaptchaAnswered(id.to_string()))?;
        let (site, account) = (
            entry.challenge.site_name.clone(),
            entry.challenge.account.clone(),
        );
        drop(entries);
        // The login stopped waiting just now: the challenge is as good as expired.
        sender
            .send(answer.to_string())
            .map_err(|_| Error::CaptchaNotFound(id.to_string()))?;
        log::info!("event=captcha_answered id={id} site={site} account={account}");
        Ok(())
    }
}

impl Ticket {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The answer, or `None` when none came within `captcha_answer_timeout`.
    pub async fn wait(&mut self) -> Option<String> {
        match tokio::time::timeout(self.timeout, &mut self.answer).await {
            Ok(Ok(answer)) => Some(answer),
            _ => {
                log::warn!("event=captcha_unanswered id={}", self.id);
                None
            }
        }
    }
}

impl Drop for Ticket {
    /// An unanswered challenge goes; an answered one is kept until it would have expired, so
    /// that a second answer is told it came too late (409), not that there was none (404).
    fn drop(&mut self) {
        let mut entries = self.captchas.lock();
        if entries.get(&self.id).is_some_and(|e| e.answer.is_some()) {
            entries.remove(&self.id);
        }
    }
}

/// The image as a data URL: kept if it is one, else typed by its first bytes.
fn data_url(image_base64: &str) -> String {
    use base64::Engine;
    let image = image_base64.trim();
    if image.starts_with("data:") {
        return image.to_string();
    }
    let head = &image[..image.len().min(16) / 4 * 4];
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(head)
        .unwrap_or_default();
    let kind = match bytes.as_slice() {
        [0x89, b'P', b'N', b'G', ..] => "png",
        [b'G', b'I', b'F', ..] => "gif",
        [b'R', b'I', b'F', b'F', ..] => "webp",
        [b'B', b'M', ..] => "bmp",
        _ => "jpeg",
    };
    format!("data:image/{kind};base64,{image}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn answered_once_then_conflict_then_gone() {
        let captchas = Captchas::new(Duration::from_secs(5), Webhook::default());
        let mut ticket = captchas.open("s", "a", "type the letters", "iVBORw0KGgoAAAA");
        let listed = captchas.pending();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].image.starts_with("data:image/png;base64,"));
        captchas.answer(ticket.id(), "x7k2").unwrap();
        assert!(matches!(
            captchas.answer(ticket.id(), "again"),
            Err(Error::CaptchaAnswered(_))
        ));
        assert!(captchas.pending().is_empty());
        assert_eq!(ticket.wait().await.as_deref(), Some("x7k2"));
        let id = ticket.id().to_string();
        drop(ticket);
        assert!(matches!(
            captchas.answer(&id, "late"),
            Err(Error::CaptchaAnswered(_))
        ));
        let unanswered = captchas.open("s", "a", "", "");
        let id = unanswered.id().to_string();
        drop(unanswered);
        assert!(matches!(
            captchas.answer(&id, "late"),
            Err(Error::CaptchaNotFound(_))
        ));
    }

    #[actix_rt::test]
    async fn unanswered_ends_after_the_timeout() {
        let captchas = Captchas::new(Duration::from_millis(50), Webhook::default());
        let mut ticket = captchas.open("s", "a", "", "/9j/4AAQ");
        assert!(captchas.pending()[0].image.starts_with("data:image/jpeg"));
        assert_eq!(ticket.wait().await, None);
    }
}
