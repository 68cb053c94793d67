//! The circuit of a site (SPEC §11): a portal that is down pauses the site, not its accounts.
//!
//! After `failure_threshold` consecutive network errors or timeouts of logins on a site, its
//! circuit opens for `open_seconds` (a longer `Retry-After` from the portal wins). While it
//! is open, acquisitions that need a login are refused at once with `SITE_UNAVAILABLE`; when
//! the pause is over, exactly one caller — across every instance sharing the Redis — is
//! admitted as the probe (half-open). Any answer from the portal (a token, a refused password,
//! a captcha) closes the circuit; a probe that fails again doubles the pause, up to 600 s.
//!
//! A site can also be paused for a reason other than network errors (issue 21): its portal
//! answered `failed` to `site_changed_threshold` different accounts in a row
//! (`site_protocol_changed`), or its login or solver program cannot run
//! (`site_misconfigured`). Such a pause carries its reason and message, is shown and
//! alerted on, and ends like any other: an operator closes it, or a probe login gets an
//! answer tokend recognises.
//!
//! With Redis the state is one hash per site, `{P}:circuit:SITE`, changed only by Lua scripts
//! (`src/redis/scripts/circuit_*.lua`) on Redis's clock; without it, or while the Redis
//! link's breaker is open, the same state machine runs in process (the link logs the outage
//! once; a call never waits on a Redis the link knows is down).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{seconds, MAX_CIRCUIT_OPEN_SECONDS};
use crate::error::Error;
use crate::redis::scripts::{CIRCUIT_ADMIT, CIRCUIT_FAILURE, CIRCUIT_PAUSE, CIRCUIT_VIEW};
use crate::redis::{Admit, RedisLink};

/// How the circuits name themselves in errors and logs.
const WHAT: &str = "redis circuits";

/// Longest `Retry-After` given to a caller refused while a probe runs elsewhere.
const PROBE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The circuit rules of one site.
#[derive(Debug, Clone, Copy)]
pub struct CircuitPolicy {
    pub failure_threshold: u32,
    pub open: Duration,
    /// How long a probe login may take before another caller may probe.
    pub probe_lease: Duration,
}

/// What the circuit says to a caller that needs a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: log in.
    Closed,
    /// Half-open, and this caller is the one probe: log in, and report the outcome.
    Probe,
    /// Open: do not log in; ask again after this long.
    Open(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// A circuit as reported (`/health`, `/resource-usage`, Prometheus).
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CircuitView {
    pub state: CircuitState,
    /// Consecutive network errors and timeouts of logins.
    pub failures: u32,
    /// When the next probe may run (while open or half-open).
    pub retry_at: Option<DateTime<Utc>>,
    /// Why the site is paused when it is not network errors: `site_protocol_changed` or
    /// `site_misconfigured`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the operator is told about such a pause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a finished login says about the site.
#[derive(Debug, Clone, Copy)]
pub enum SiteOutcome {
    /// The portal answered (a token, or a refusal that is the account's business).
    Answered,
    /// A network error or timeout; the portal's `Retry-After`, if it gave one.
    Down(Option<Duration>),
}

/// One site's circuit kept in process.
#[derive(Debug, Default, Clone)]
struct LocalCircuit {
    failures: u32,
    retry_at: Option<DateTime<Utc>>,
    pause: Duration,
    probe_until: Option<DateTime<Utc>>,
    /// The reason and message of a pause that is not a count of network errors.
    reason: Option<(String, String)>,
}

/// The circuits of every site. Cheap to clone.
#[derive(Clone)]
pub struct Circuits {
    redis: Option<RedisLink>,
    local: Arc<Mutex<HashMap<String, LocalCircuit>>>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn at_ms(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0)
        .then(|| DateTime::from_timestamp_millis(ms))
        .flatten()
}

impl Circuits {
    pub fn new(redis: Option<RedisLink>) -> Circuits {
        Circuits {
            redis,
            local: Arc::default(),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, LocalCircuit>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a caller of `site` may log in now.
    pub async fn admit(&self, site: &str, policy: &CircuitPolicy) -> Admission {
        if let Some(redis) = &self.redis {
            let mut script = CIRCUIT_ADMIT.key(redis.keys().circuit(site));
            script.arg(ms(policy.probe_lease));
            let answer: crate::Result<(i64, i64)> =
                redis.invoke(WHAT, Admit::WhenUp, &script).await;
            match answer {
                Ok((0, _)) => return Admission::Closed,
                Ok((1, _)) => return Admission::Probe,
                Ok((2, wait)) => return Admission::Open(millis(wait)),
                Ok((_, wait)) => return Admission::Open(millis(wait).min(PROBE_RETRY_AFTER)),
                Err(_) => {}
            }
        }
        let now = Utc::now();
        let mut circuits = self.local();
        let circuit = circuits.entry(site.to_string()).or_default();
        let Some(retry_at) = circuit.retry_at else {
            return Admission::Closed;
        };
        if now < retry_at {
            return Admission::Open(until(now, retry_at));
        }
        if let Some(probe_until) = circuit.probe_until.filter(|p| *p > now) {
            return Admission::Open(until(now, probe_until).min(PROBE_RETRY_AFTER));
        }
        circuit.probe_until = Some(now + chrono_duration(policy.probe_lease));
        Admission::Probe
    }

    /// Counts a finished login. Returns the time until the next probe when this outcome
    /// opened the circuit (or kept it open after a failed probe).
    pub async fn record(
        &self,
        site: &str,
        policy: &CircuitPolicy,
        outcome: SiteOutcome,
        was_probe: bool,
    ) -> Option<DateTime<Utc>> {
        let retry_after = match outcome {
            SiteOutcome::Answered => {
                self.close(site).await;
                return None;
            }
            SiteOutcome::Down(retry_after) => retry_after.unwrap_or_default(),
        };
        let max = seconds(MAX_CIRCUIT_OPEN_SECONDS);
        if let Some(redis) = &self.redis {
            let mut script = CIRCUIT_FAILURE.key(redis.keys().circuit(site));
            script
                .arg(policy.failure_threshold)
                .arg(ms(policy.open))
                .arg(ms(max))
                .arg(ms(retry_after))
                .arg(u8::from(was_probe));
            let answer: crate::Result<(i64, i64, i64)> =
                redis.invoke(WHAT, Admit::WhenUp, &script).await;
            if let Ok((_, retry_at, opened)) = answer {
                return (opened == 1).then(|| at_ms(retry_at)).flatten();
            }
        }
        let now = Utc::now();
        let mut circuits = self.local();
        let circuit = circuits.entry(site.to_string()).or_default();
        circuit.failures += 1;
        let probing = circuit.probe_until.is_some();
        let pause = if was_probe && probing {
            (circuit.pause.max(policy.open) * 2).min(max)
        } else if circuit.retry_at.is_none() && circuit.failures >= policy.failure_threshold {
            policy.open
        } else {
            return None;
        };
        let retry_at = now + chrono_duration(pause.max(retry_after));
        circuit.pause = pause;
        circuit.retry_at = Some(retry_at);
        circuit.probe_until = None;
        Some(retry_at)
    }

    /// The probe admitted for `site` did not run (the login budget refused it): another
    /// caller may probe at once instead of after the probe's lease.
    pub async fn probe_not_run(&self, site: &str) {
        if let Some(redis) = &self.redis {
            let cmd = ::redis::cmd("HDEL")
                .arg(redis.keys().circuit(site))
                .arg("probe_until")
                .clone();
            let freed: crate::Result<u64> = redis.query(WHAT, Admit::WhenUp, &cmd).await;
            if freed.is_ok() {
                return;
            }
        }
        if let Some(circuit) = self.local().get_mut(site) {
            circuit.probe_until = None;
        }
    }

    /// Pauses `site` at once for `reason` (`site_protocol_changed`, `site_misconfigured`),
    /// for the site's first pause; the next probe decides, as for an open circuit.
    pub async fn pause(
        &self,
        site: &str,
        policy: &CircuitPolicy,
        reason: &str,
        message: &str,
    ) -> Option<DateTime<Utc>> {
        if let Some(redis) = &self.redis {
            let mut script = CIRCUIT_PAUSE.key(redis.keys().circuit(site));
            script.arg(ms(policy.open)).arg(reason).arg(message);
            let answer: crate::Result<i64> = redis.invoke(WHAT, Admit::WhenUp, &script).await;
            if let Ok(retry_at) = answer {
                return at_ms(retry_at);
            }
        }
        let mut circuits = self.local();
        let circuit = circuits.entry(site.to_string()).or_default();
        let retry_at = Utc::now() + chrono_duration(policy.open);
        circuit.retry_at = Some(retry_at);
        circuit.pause = policy.open;
        circuit.probe_until = None;
        circuit.reason = Some((reason.to_string(), message.to_string()));
        Some(retry_at)
    }

    /// Closes the circuit of `site` (a login got an answer, or an operator said so).
    pub async fn close(&self, site: &str) {
        if let Some(redis) = &self.redis {
            let cmd = ::redis::cmd("DEL").arg(redis.keys().circuit(site)).clone();
            let _: crate::Result<u64> = redis.query(WHAT, Admit::WhenUp, &cmd).await;
        }
        self.local().remove(site);
    }

    /// The state of `site`'s circuit.
    pub async fn view(&self, site: &str) -> CircuitView {
        if let Some(redis) = &self.redis {
            type Answer = (i64, i64, i64, i64, String, String);
            let script = CIRCUIT_VIEW.key(redis.keys().circuit(site));
            let answer: crate::Result<Answer> = redis.invoke(WHAT, Admit::WhenUp, &script).await;
            if let Ok((failures, retry_at, probe_until, now, reason, message)) = answer {
                let mut view =
                    describe(failures, at_ms(retry_at), probe_until > now, retry_at > now);
                if !reason.is_empty() && view.retry_at.is_some() {
                    view.reason = Some(reason);
                    view.message = Some(message);
                }
                return view;
            }
        }
        let now = Utc::now();
        let circuits = self.local();
        let Some(c) = circuits.get(site) else {
            return describe(0, None, false, false);
        };
        let probing = c.probe_until.is_some_and(|p| p > now);
        let mut view = describe(
            i64::from(c.failures),
            c.retry_at,
            probing,
            c.retry_at.is_some_and(|r| r > now),
        );
        if let (Some((reason, message)), Some(_)) = (&c.reason, c.retry_at) {
            view.reason = Some(reason.clone());
            view.message = Some(message.clone());
        }
        view
    }
}

fn describe(
    failures: i64,
    retry_at: Option<DateTime<Utc>>,
    probing: bool,
    pausing: bool,
) -> CircuitView {
    let state = match retry_at {
        None => CircuitState::Closed,
        Some(_) if pausing => CircuitState::Open,
        Some(_) if probing => CircuitState::HalfOpen,
        // The pause is over and no probe runs yet: the next caller probes.
        Some(_) => CircuitState::HalfOpen,
    };
    CircuitView {
        state,
        failures: failures.clamp(0, i64::from(u32::MAX)) as u32,
        retry_at,
        reason: None,
        message: None,
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(1) as u64)
}

fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::from_millis(1))
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Admission {
    /// The refusal of an open circuit as an error, for a caller that needs a login.
    pub fn refusal(self, site: &str) -> Option<Error> {
        self.refusal_because(site, None)
    }

    /// The same, saying why the site is paused when it is not network errors (the
    /// circuit's `message`).
    pub fn refusal_because(self, site: &str, why: Option<&str>) -> Option<Error> {
        match self {
            Admission::Open(retry_after) => Some(Error::SiteUnavailable {
                site: site.to_string(),
                reason: why.map_or_else(
                    || {
                        "the portal failed repeatedly (network errors or timeouts); logins are paused"
                            .to_string()
                    },
                    str::to_string,
                ),
                retry_after,
            }),
            _ => None,
        }
    }
}

/// `failed` answers of a site's portal from different accounts in a row (issue 21): when
/// `threshold` different accounts met one, the portal, not the accounts, is the likely
/// cause. Kept per instance.
#[derive(Clone, Default)]
pub struct ProtocolWatch {
    streaks: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

/// Where a `failed` answer leaves a site's streak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Streak {
    /// The first account of the streak: the failure policy applies as written.
    First,
    /// Another account, short of the threshold: not penalised (the portal is suspect).
    Suspect,
    /// The threshold is reached: the accounts of the streak, in order.
    Reached(Vec<String>),
}

impl ProtocolWatch {
    /// Counts a `failed` answer to `account`.
    pub fn failed(&self, site: &str, account: &str, threshold: u32) -> Streak {
        let mut streaks = self.streaks.lock().unwrap_or_else(|p| p.into_inner());
        let streak = streaks.entry(site.to_string()).or_default();
        if !streak.iter().any(|a| a == account) {
            streak.push(account.to_string());
        }
        if threshold > 0 && streak.len() >= threshold as usize {
            return Streak::Reached(std::mem::take(streak));
        }
        match streak.len() {
            1 => Streak::First,
            _ => Streak::Suspect,
        }
    }

    /// Any other answer of the portal ends the streak.
    pub fn answered(&self, site: &str) {
        self.streaks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(site);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CircuitPolicy {
        CircuitPolicy {
            failure_threshold: 3,
            open: Duration::from_millis(200),
            probe_lease: Duration::from_secs(60),
        }
    }

    #[actix_rt::test]
    async fn opens_after_threshold_then_one_probe_doubles_or_closes() {
        let circuits = Circuits::new(None);
        let p = policy();
        let down = SiteOutcome::Down(None);
        assert_eq!(circuits.admit("s", &p).await, Admission::Closed);
        assert!(circuits.record("s", &p, down, false).await.is_none());
        assert!(circuits.record("s", &p, down, false).await.is_none());
        assert!(circuits.record("s", &p, down, false).await.is_some());
        assert!(matches!(circuits.admit("s", &p).await, Admission::Open(_)));
        assert_eq!(circuits.view("s").await.state, CircuitState::Open);
        // Once the pause is over, one probe; the others are still refused.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while circuits.admit("s", &p).await != Admission::Probe {
            assert!(std::time::Instant::now() < deadline, "no probe admitted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(circuits.admit("s", &p).await, Admission::Open(_)));
        // The probe fails: the pause doubles.
        let retry_at = circuits.record("s", &p, down, true).await.unwrap();
        let pause = (retry_at - Utc::now()).num_milliseconds();
        assert!((300..=400).contains(&pause), "{pause}");
        // An answer closes it.
        circuits.record("s", &p, SiteOutcome::Answered, false).await;
        assert_eq!(circuits.admit("s", &p).await, Admission::Closed);
        assert_eq!(circuits.view("s").await.failures, 0);
    }

    #[actix_rt::test]
    async fn a_longer_retry_after_wins() {
        let circuits = Circuits::new(None);
        let p = CircuitPolicy {
            failure_threshold: 1,
            ..policy()
        };
        let retry_at = circuits
            .record(
                "s",
                &p,
                SiteOutcome::Down(Some(Duration::from_secs(60))),
                false,
            )
            .await
            .unwrap();
        let pause = (retry_at - Utc::now()).num_seconds();
        assert!((58..=60).contains(&pause), "{pause}");
    }

    /// `failed` answers: the first account is blamed, the next are suspect, the threshold's
    /// account pauses; one account failing again does not count twice; an answer resets.
    #[test]
    fn a_streak_of_failed_answers_counts_different_accounts() {
        let watch = ProtocolWatch::default();
        assert_eq!(watch.failed("s", "a", 3), Streak::First);
        // The same account again is still that account's streak alone.
        assert_eq!(watch.failed("s", "a", 3), Streak::First);
        assert_eq!(watch.failed("s", "b", 3), Streak::Suspect);
        assert_eq!(watch.failed("other", "a", 3), Streak::First);
        let reached = watch.failed("s", "c", 3);
        assert_eq!(
            reached,
            Streak::Reached(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(watch.failed("s", "d", 3), Streak::First, "a new streak");
        watch.answered("s");
        assert_eq!(watch.failed("s", "e", 3), Streak::First);
    }

    /// A pause for a reason shows its reason and message until the circuit is closed.
    #[actix_rt::test]
    async fn a_pause_for_a_reason_is_shown_until_closed() {
        let circuits = Circuits::new(None);
        let p = policy();
        circuits
            .pause("s", &p, "site_misconfigured", "cannot run x")
            .await;
        let view = circuits.view("s").await;
        assert_eq!(view.state, CircuitState::Open);
        assert_eq!(view.reason.as_deref(), Some("site_misconfigured"));
        assert_eq!(view.message.as_deref(), Some("cannot run x"));
        circuits.close("s").await;
        let view = circuits.view("s").await;
        assert_eq!((view.state, view.reason), (CircuitState::Closed, None));
    }

    /// A probe admitted but never run (the login budget refused it) does not hold the
    /// half-open state for the probe's whole lease.
    #[actix_rt::test]
    async fn a_probe_that_did_not_run_frees_the_way_for_another() {
        let circuits = Circuits::new(None);
        let p = CircuitPolicy {
            failure_threshold: 1,
            ..policy()
        };
        circuits
            .record("s", &p, SiteOutcome::Down(None), false)
            .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while circuits.admit("s", &p).await != Admission::Probe {
            assert!(std::time::Instant::now() < deadline, "no probe admitted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(circuits.admit("s", &p).await, Admission::Open(_)));
        circuits.probe_not_run("s").await;
        assert_eq!(circuits.admit("s", &p).await, Admission::Probe);
    }
}
