//! The circuit breaker in front of Redis: after a failure, requests leave Redis alone for a
//! pause and go on as on a miss (the in-process fallback), so that none waits on a dead
//! connection.
//!
//! Closed → (a failure) → open for [`FIRST_PAUSE`] → one probe at a time (half-open): its
//! success closes the breaker, its failure opens it again for twice the pause, up to
//! [`MAX_PAUSE`]. With a blackholed Redis a request therefore waits the command timeout at most
//! once per pause, and only the one that probes. The background probe (`CacheActor`) also
//! probes, so that the breaker closes when Redis is back without a request having to find
//! out. Ages are measured on the monotonic clock (`Instant`): a wall-clock step changes
//! nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first pause after a failure.
pub const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between two probes.
pub const MAX_PAUSE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Breaker {
    /// Set while open: the hot path reads only this while Redis answers.
    open: AtomicBool,
    state: Mutex<Option<Open>>,
}

struct Open {
    /// When the last failure was seen.
    since: Instant,
    pause: Duration,
    /// A probe is under way: nobody else tries Redis meanwhile.
    probing: bool,
}

/// Whether a call may go to Redis.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed.
    Pass,
    /// The breaker is half-open and this call is its one probe: report its result.
    Probe,
    /// Open: go on without Redis.
    Refuse,
}

/// What a reported result changed, for the one log line per outage and per recovery.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    Opened,
    Closed,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        // Each change is a single assignment: a poisoned lock holds a whole state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// May a call go to Redis now?
    pub fn admit(&self) -> Admission {
        if !self.is_open() {
            return Admission::Pass;
        }
        let mut state = self.lock();
        match state.as_mut() {
            None => Admission::Pass,
            Some(open) if open.probing || open.since.elapsed() < open.pause => Admission::Refuse,
            Some(open) => {
                open.probing = true;
                Admission::Probe
            }
        }
    }

    /// Takes the probe for the background probe, whatever the pause; `false` when the breaker
    /// is closed or a probe is already under way.
    pub fn admit_background_probe(&self) -> bool {
        if !self.is_open() {
            return false;
        }
        let mut state = self.lock();
        match state.as_mut() {
            Some(open) if !open.probing => {
                open.probing = true;
                true
            }
            _ => false,
        }
    }

    pub fn succeeded(&self) -> Change {
        if !self.is_open() {
            return Change::None;
        }
        let mut state = self.lock();
        self.open.store(false, Ordering::Release);
        match state.take() {
            Some(_) => Change::Closed,
            None => Change::None,
        }
    }

    pub fn failed(&self) -> Change {
        let mut state = self.lock();
        let change = match state.as_mut() {
            Some(open) => {
                if open.probing {
                    open.pause = (open.pause * 2).min(MAX_PAUSE);
                    open.probing = false;
                }
                open.since = Instant::now();
                Change::None
            }
            None => {
                *state = Some(Open {
                    since: Instant::now(),
                    pause: FIRST_PAUSE,
                    probing: false,
                });
                Change::Opened
            }
        };
        self.open.store(true, Ordering::Release);
        change
    }

    /// A probe ended without a result (its caller went away): another may be sent.
    pub fn probe_abandoned(&self) {
        if let Some(open) = self.lock().as_mut() {
            open.probing = false;
        }
    }

    /// The current pause, while open.
    #[cfg(test)]
    fn pause(&self) -> Option<Duration> {
        self.lock().as_ref().map(|open| open.pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_at_a_time_and_the_pause_doubles() {
        let breaker = Breaker::default();
        assert_eq!(breaker.admit(), Admission::Pass);
        assert_eq!(breaker.failed(), Change::Opened);
        assert_eq!(breaker.admit(), Admission::Refuse, "paused after a failure");
        // The pause is over: one probe, the others keep away.
        breaker.lock().as_mut().unwrap().since -= FIRST_PAUSE;
        assert_eq!(breaker.admit(), Admission::Probe);
        assert_eq!(breaker.admit(), Admission::Refuse);
        assert_eq!(breaker.failed(), Change::None);
        assert_eq!(breaker.pause(), Some(FIRST_PAUSE * 2));
        for _ in 0..10 {
            breaker.lock().as_mut().unwrap().since -= MAX_PAUSE;
            assert_eq!(breaker.admit(), Admission::Probe);
            breaker.failed();
        }
        assert_eq!(breaker.pause(), Some(MAX_PAUSE), "capped");
        // A probe whose caller went away frees the probe.
        breaker.lock().as_mut().unwrap().since -= MAX_PAUSE;
        assert_eq!(breaker.admit(), Admission::Probe);
        breaker.probe_abandoned();
        assert!(breaker.admit_background_probe());
        assert!(!breaker.admit_background_probe(), "one probe at a time");
        assert_eq!(breaker.succeeded(), Change::Closed);
        assert_eq!(breaker.admit(), Admission::Pass);
        assert_eq!(breaker.succeeded(), Change::None);
    }
}
