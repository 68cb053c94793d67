//! Webhooks (SPEC §13, `[notify]`): a JSON POST for each alert that fires or resolves and for
//! each new pending captcha, signed with HMAC-SHA256 when `webhook_secret` is set
//! (`X-Tokend-Signature: sha256=<hex>` over the exact body).
//!
//! The same events go to the chat robots of `[[notify.robots]]` (WeCom, DingTalk, Feishu),
//! each in its own format ([`crate::lifecycle::robots`]), under the same rules.
//!
//! Senders only put an event in a bounded in-memory queue per destination (the oldest is
//! dropped, and counted, when it is full) and go on: a destination that is down never slows
//! an acquisition, nor another destination. One task per destination owns its queue and
//! delivers the events in order, each retried with exponential backoff before it is given up.
//! Every client is as strict as a login's: no redirects (they would carry the signed body
//! elsewhere), no environment proxy. A URL is logged as its scheme and host only: a robot's
//! key may be in its path (Feishu) or its query (WeCom, DingTalk). A firing alert is POSTed at
//! most once per `alerts.repeat_interval`; its resolution only if its firing was POSTed.
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
use crate::lifecycle::robots::{RobotEvent, RobotKind};
use crate::vault::secret::Secret;
use crate::watch::metrics::Metrics;

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

/// The webhook's sending side. Cheap to clone; does nothing when no destination is configured.
#[derive(Clone, Default)]
pub struct Webhook {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    destinations: Vec<Arc<Destination>>,
    repeat: Duration,
    /// Per alert type: when its firing was last POSTed (and not resolved since).
    firing: Mutex<HashMap<String, Instant>>,
}

/// How a destination wants its events.
enum Format {
    /// The event as JSON, signed with `X-Tokend-Signature` when there is a secret.
    Json { secret: Secret },
    /// A chat robot's own messages, for the events it asked for.
    Robot {
        kind: RobotKind,
        secret: Secret,
        events: Vec<RobotEvent>,
        public_url: String,
    },
}

/// One place events are POSTed to, with its own queue.
struct Destination {
    /// `webhook`, or `robot[N]:KIND` for the `N`th `[[notify.robots]]` table (for logs).
    name: String,
    url: String,
    /// The URL as logged: scheme and host only (its path, query or user info may hold a key).
    shown_url: String,
    format: Format,
    client: reqwest::Client,
    queue: Mutex<VecDeque<Value>>,
    wake: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

/// An HTTP client as strict as a login's.
fn strict_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .connect_timeout(POST_TIMEOUT)
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}

impl Webhook {
    /// Starts one delivery task per destination (inside the actix system); a no-op without
    /// `webhook_url` and robots.
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> Webhook {
        let notify = &config.notify;
        let mut wanted = Vec::new();
        if !notify.webhook_url.is_empty() {
            let secret = notify.webhook_secret.clone();
            wanted.push((
                "webhook".to_string(),
                notify.webhook_url.clone(),
                Format::Json { secret },
            ));
        }
        for (n, robot) in notify.robots.iter().enumerate() {
            let format = Format::Robot {
                kind: robot.kind,
                secret: robot.secret.clone(),
                events: robot.events.clone(),
                public_url: config.server.public_url.clone(),
            };
            wanted.push((
                format!("robot[{n}]:{}", robot.kind.as_str()),
                robot.url.clone(),
                format,
            ));
        }
        let destinations: Vec<Arc<Destination>> = wanted
            .into_iter()
            .filter_map(|(name, url, format)| Destination::start(name, url, format, &metrics))
            .collect();
        if destinations.is_empty() {
            return Webhook::default();
        }
        Webhook {
            inner: Some(Arc::new(Inner {
                destinations,
                repeat: seconds(config.alerts.repeat_interval),
                firing: Mutex::default(),
            })),
        }
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
        for destination in &self.destinations {
            if destination.wants(&event) {
                destination.enqueue(event.clone());
            }
        }
    }
}

impl Destination {
    /// The destination with its delivery task; `None` (logged) when no client can be built.
    fn start(
        name: String,
        url: String,
        format: Format,
        metrics: &Arc<Metrics>,
    ) -> Option<Arc<Destination>> {
        let shown_url = crate::vault::secret::redact_webhook_url(&url);
        let client = match strict_client() {
            Ok(client) => client,
            Err(e) => {
                log::error!(
                    "event=webhook_disabled target={name} url={shown_url} error=\"HTTP client: {}\"",
                    e.without_url()
                );
                return None;
            }
        };
        let signed = match &format {
            Format::Json { secret } | Format::Robot { secret, .. } => !secret.is_empty(),
        };
        log::info!("event=webhook_enabled target={name} url={shown_url} signed={signed}");
        let destination = Arc::new(Destination {
            name,
            url,
            shown_url,
            format,
            client,
            queue: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            metrics: metrics.clone(),
        });
        actix_web::rt::spawn(deliver_all(destination.clone()));
        Some(destination)
    }

    fn wants(&self, event: &Value) -> bool {
        match &self.format {
            Format::Json { .. } => true,
            Format::Robot { events, .. } => crate::lifecycle::robots::wants(events, event),
        }
    }

    fn enqueue(&self, event: Value) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= QUEUE_CAPACITY {
            queue.pop_front();
            self.metrics.webhook(Delivery::Dropped.as_str());
            log::warn!(
                "event=webhook_event_dropped target={} reason=queue_full capacity={QUEUE_CAPACITY}",
                self.name
            );
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

    /// The POSTs one event makes here: (URL, body, signature header).
    fn requests(&self, event: &Value) -> Vec<(String, Vec<u8>, Option<String>)> {
        match &self.format {
            Format::Json { secret } => {
                let body = event.to_string().into_bytes();
                let signature = (!secret.is_empty()).then(|| signature(secret, &body));
                vec![(self.url.clone(), body, signature)]
            }
            Format::Robot {
                kind,
                secret,
                public_url,
                ..
            } => crate::lifecycle::robots::messages(*kind, event, public_url)
                .into_iter()
                .map(|message| {
                    let now = Utc::now().timestamp_millis();
                    let (url, body) =
                        crate::lifecycle::robots::signed(*kind, &self.url, secret, message, now);
                    (url, body.to_string().into_bytes(), None)
                })
                .collect(),
        }
    }

    /// One POST; the error says why it did not land (never with the URL: its path, query or
    /// user information may hold a credential).
    async fn post(&self, url: &str, body: &[u8], signature: Option<&str>) -> Result<(), String> {
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("X-Tokend-Signature", signature);
        }
        let answer = match request.send().await {
            // A redirect is not followed: it is a failed delivery like any other answer.
            Ok(answer) if !answer.status().is_success() => {
                return Err(format!("HTTP {}", answer.status()))
            }
            Ok(answer) => answer,
            Err(e) => return Err(e.without_url().to_string()),
        };
        if matches!(self.format, Format::Json { .. }) {
            return Ok(());
        }
        // A robot answers 200 with its own verdict in the body.
        let verdict: Value = answer.json().await.unwrap_or(Value::Null);
        crate::lifecycle::robots::accepted(&verdict)
    }

    /// Delivers one event (each of its POSTs), retrying with backoff; gives up after
    /// [`MAX_ATTEMPTS`].
    async fn deliver(&self, event: Value) {
        let kind = event["event"].as_str().unwrap_or("?").to_string();
        for (url, body, signature) in self.requests(&event) {
            self.deliver_one(&kind, &url, &body, signature.as_deref())
                .await;
        }
    }

    async fn deliver_one(&self, kind: &str, url: &str, body: &[u8], signature: Option<&str>) {
        let mut wait = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            match self.post(url, body, signature).await {
                Ok(()) => {
                    self.metrics.webhook(Delivery::Delivered.as_str());
                    return;
                }
                Err(e) if attempt < MAX_ATTEMPTS => {
                    self.metrics.webhook(Delivery::Retried.as_str());
                    log::info!(
                        "event=webhook_retry target={} url={} kind={kind} attempt={attempt} wait={:.1}s error=\"{e}\"",
                        self.name,
                        self.shown_url,
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    self.metrics.webhook(Delivery::Failed.as_str());
                    log::warn!(
                        "event=webhook_failed target={} url={} kind={kind} attempts={attempt} error=\"{e}\"",
                        self.name,
                        self.shown_url
                    );
                }
            }
        }
    }
}

/// A destination's delivery task: one event after the other, for as long as tokend runs.
async fn deliver_all(destination: Arc<Destination>) {
    loop {
        match destination.next() {
            Some(event) => destination.deliver(event).await,
            None => destination.wake.notified().await,
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
        let destination = Arc::new(Destination {
            name: "webhook".into(),
            url: "http://127.0.0.1:9/hook".into(),
            shown_url: "http://127.0.0.1:9/hook".into(),
            format: Format::Json {
                secret: Secret::default(),
            },
            client: reqwest::Client::new(),
            queue: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            metrics: metrics.clone(),
        });
        let inner = Arc::new(Inner {
            destinations: vec![destination],
            repeat: Duration::from_secs(3600),
            firing: Mutex::default(),
        });
        (Webhook { inner: Some(inner) }, metrics)
    }

    fn queued(webhook: &Webhook) -> Vec<Value> {
        let destination = &webhook.inner.as_ref().unwrap().destinations[0];
        destination.queue.lock().unwrap().iter().cloned().collect()
    }

    #[test]
    fn one_post_per_alert_per_repeat_interval_and_its_resolution_once() {
        let (webhook, _) = idle_webhook();
        let alert = Alert {
            kind: "site_unavailable".into(),
            message: "circuit open".into(),
            severity: crate::actors::alert::Severity::High,
            value: 1.0,
            threshold: 0.0,
        };
        webhook.alert_firing(&alert.kind, &alert);
        webhook.alert_firing(&alert.kind, &alert);
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
