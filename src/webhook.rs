//! Webhooks (SPEC §13, `[notify]`): a JSON POST for each alert that fires or resolves and for
//! each new pending captcha, signed with HMAC-SHA256 when `webhook_secret` is set
//! (`X-Tokend-Signature: sha256=<hex>` over the exact body).
//!
//! Senders only put an event in a bounded in-memory queue (the oldest is dropped, and
//! counted, when it is full) and go on: a webhook that is down never slows an acquisition.
//! One task owns the queue and delivers the events in order, each retried with exponential
//! backoff before it is given up. A firing alert is POSTed at most once per
//! `alerts.repeat_interval`; its resolution only if its firing was POSTed.
//! Prometheus: `tokend_webhook_deliveries_total{result}` (`delivered`, `retried`, `failed`,
//! `dropped`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::config::{seconds, Config};
use crate::metrics::Metrics;
use crate::secret::Secret;

/// Events waiting for delivery, at most.
pub const QUEUE_CAPACITY: usize = 256;
/// Deliveries of one event, the first included.
const MAX_ATTEMPTS: u32 = 5;
/// Wait after the first failed delivery; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of one delivery attempt or event, as counted in Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Retried,
    Failed,
    Dropped,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Retried => "retried",
            Delivery::Failed => "failed",
            Delivery::Dropped => "dropped",
        }
    }
}

/// The webhook's sending side. Cheap to clone; does nothing when no URL is configured.
#[derive(Clone, Default)]
pub struct Webhook {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    url: String,
    secret: Secret,
    client: reqwest::Client,
    queue: Mutex<VecDeque<Value>>,
    wake: tokio::sync::Notify,
    metrics: Arc<Metrics>,
    repeat: Duration,
    /// Per alert type: when its firing was last POSTed (and not resolved since).
    firing: Mutex<HashMap<String, Instant>>,
}

impl Webhook {
    /// Starts the delivery task (inside the actix system); a no-op without `webhook_url`.
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> Webhook {
        let notify = &config.notify;
        if notify.webhook_url.is_empty() {
            return Webhook::default();
        }
        let shown_url = crate::secret::redact_url_credentials(&notify.webhook_url);
        // As strict as a login's client: a redirect would send the signed body elsewhere, an
        // environment proxy would see it.
        let client = match reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .connect_timeout(POST_TIMEOUT)
            .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                log::error!(
                    "event=webhook_disabled url={shown_url} error=\"HTTP client: {}\"",
                    e.without_url()
                );
                return Webhook::default();
            }
        };
        let inner = Arc::new(Inner {
            url: notify.webhook_url.clone(),
            secret: notify.webhook_secret.clone(),
            client,
            queue: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            metrics,
            repeat: seconds(config.alerts.repeat_interval),
            firing: Mutex::default(),
        });
        actix_web::rt::spawn(deliver_all(inner.clone()));
        log::info!(
            "event=webhook_enabled url={shown_url} signed={}",
            !notify.webhook_secret.is_empty()
        );
        Webhook { inner: Some(inner) }
    }

    /// An alert of `kind` fires (again): POSTed unless its firing was POSTed within
    /// `repeat_interval`.
    pub fn alert_firing(&self, kind: &str, alert: &impl Serialize) {
        let Some(inner) = &self.inner else { return };
        {
            let mut firing = inner.firing.lock().unwrap_or_else(|p| p.into_inner());
            if firing
                .get(kind)
                .is_some_and(|at| at.elapsed() < inner.repeat)
            {
                return;
            }
            firing.insert(kind.to_string(), Instant::now());
        }
        inner.enqueue(json!({
            "event": "alert_firing",
            "at": Utc::now(),
            "alert": alert,
        }));
    }

    /// An alert stopped: POSTed if its firing was.
    pub fn alert_resolved(&self, kind: &str) {
        let Some(inner) = &self.inner else { return };
        let was_posted = inner
            .firing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(kind)
            .is_some();
        if was_posted {
            inner.enqueue(json!({
                "event": "alert_resolved",
                "at": Utc::now(),
                "alert": {"type": kind},
            }));
        }
    }

    /// A captcha waits for a person.
    pub fn captcha_pending(&self, challenge: &impl Serialize) {
        let Some(inner) = &self.inner else { return };
        inner.enqueue(json!({
            "event": "captcha_pending",
            "at": Utc::now(),
            "captcha": challenge,
        }));
    }
}

impl Inner {
    fn enqueue(&self, event: Value) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= QUEUE_CAPACITY {
            queue.pop_front();
            self.metrics.webhook(Delivery::Dropped.as_str());
            log::warn!("event=webhook_event_dropped reason=queue_full capacity={QUEUE_CAPACITY}");
        }
        queue.push_back(event);
        drop(queue);
        self.wake.notify_one();
    }

    fn next(&self) -> Option<Value> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// One POST; the error says why it did not land.
    async fn post(&self, body: &[u8]) -> Result<(), String> {
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if !self.secret.is_empty() {
            request = request.header("X-Tokend-Signature", signature(&self.secret, body));
        }
        match request.send().await {
            Ok(answer) if answer.status().is_success() => Ok(()),
            // A redirect is not followed: it is a failed delivery like any other answer.
            Ok(answer) => Err(format!("HTTP {}", answer.status())),
            // Without the URL: its query or user information may hold a credential.
            Err(e) => Err(e.without_url().to_string()),
        }
    }

    /// Delivers one event, retrying with backoff; gives up after [`MAX_ATTEMPTS`].
    async fn deliver(&self, event: Value) {
        let body = event.to_string().into_bytes();
        let kind = event["event"].as_str().unwrap_or("?").to_string();
        let mut wait = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            match self.post(&body).await {
                Ok(()) => {
                    self.metrics.webhook(Delivery::Delivered.as_str());
                    return;
                }
                Err(e) if attempt < MAX_ATTEMPTS => {
                    self.metrics.webhook(Delivery::Retried.as_str());
                    log::info!(
                        "event=webhook_retry kind={kind} attempt={attempt} wait={:.1}s error=\"{e}\"",
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    self.metrics.webhook(Delivery::Failed.as_str());
                    log::warn!("event=webhook_failed kind={kind} attempts={attempt} error=\"{e}\"");
                }
            }
        }
    }
}

/// The delivery task: one event after the other, for as long as tokend runs.
async fn deliver_all(inner: Arc<Inner>) {
    loop {
        match inner.next() {
            Some(event) => inner.deliver(event).await,
            None => inner.wake.notified().await,
        }
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::alert::Alert;

    /// A webhook whose delivery task never runs: what is sent stays in the queue.
    fn idle_webhook() -> (Webhook, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(Arc::default()));
        let inner = Arc::new(Inner {
            url: "http://127.0.0.1:9/hook".into(),
            secret: Secret::default(),
            client: reqwest::Client::new(),
            queue: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            metrics: metrics.clone(),
            repeat: Duration::from_secs(3600),
            firing: Mutex::default(),
        });
        (Webhook { inner: Some(inner) }, metrics)
    }

    fn queued(webhook: &Webhook) -> Vec<Value> {
        let inner = webhook.inner.as_ref().unwrap();
        inner.queue.lock().unwrap().iter().cloned().collect()
    }

    #[test]
    fn one_post_per_alert_per_repeat_interval_and_its_resolution_once() {
        let (webhook, _) = idle_webhook();
        let alert = Alert {
            kind: "site_unavailable",
            message: "circuit open".into(),
            severity: crate::actors::alert::Severity::High,
            value: 1.0,
            threshold: 0.0,
        };
        webhook.alert_firing(alert.kind, &alert);
        webhook.alert_firing(alert.kind, &alert);
        webhook.alert_resolved("site_unavailable");
        webhook.alert_resolved("site_unavailable");
        webhook.alert_resolved("never_fired");
        let events: Vec<String> = queued(&webhook)
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(events, ["alert_firing", "alert_resolved"]);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let (webhook, metrics) = idle_webhook();
        let inner = webhook.inner.as_ref().unwrap();
        for n in 0..QUEUE_CAPACITY + 3 {
            inner.enqueue(json!({ "n": n }));
        }
        let queue = queued(&webhook);
        assert_eq!(queue.len(), QUEUE_CAPACITY);
        assert_eq!(queue[0]["n"], 3);
        assert!(metrics
            .encode()
            .contains(r#"tokend_webhook_deliveries_total{result="dropped"} 3"#));
    }

    #[test]
    fn signature_is_the_rfc_4231_hmac() {
        // RFC 4231 test case 2.
        let got = signature(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(
            got,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
