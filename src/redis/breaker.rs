//! The one breaker in front of Redis: one state for every user of the link (token cache,
//! slots, locks, circuits, budgets, adaptive limits, checkouts, round-robin turns).
//!
//! Up → (a command unanswered within the command timeout: a silent Redis; a refused
//! connection; or errors, such as resets, that go on for [`ERROR_GRACE`] with no answer
//! between) → degraded for
//! [`FIRST_PAUSE`]: every call is refused at once, so every policy takes its in-process
//! fallback together, and no caller waits on Redis. A passing error (one reset, a reconnect)
//! is not an outage: it fails that call alone, and the next one reconnects. When the pause
//! is over, one probe (the link's own background task, never a caller) asks Redis: an answer
//! makes it up again; silence or an error doubles the pause, up to [`MAX_PAUSE`]. A silent
//! Redis therefore costs one command timeout to the caller that finds it out, and nothing to
//! the callers after it. Ages are measured on the monotonic clock (`Instant`): a wall-clock
//! step changes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first pause after a failure.
pub const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between two probes: how long a Redis that is back may go unnoticed.
pub const MAX_PAUSE: Duration = Duration::from_secs(10);
/// How long errors that come at once (a reset, a refused connection) may go on, with no
/// answer between, before Redis is taken for down.
pub const ERROR_GRACE: Duration = Duration::from_secs(2);

/// How a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the command timeout (Redis is silent, and every call would wait),
    /// or nobody listens (every call would fail).
    Silent,
    /// An error that came at once on a connection that worked (a reset, a Redis that is
    /// loading): passing, unless it goes on.
    Error,
}

/// The state of the link, as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Calls go to Redis.
    Up,
    /// Calls are refused until the pause is over and a probe found Redis back.
    Degraded { pause: Duration },
    /// The pause is over and the probe is under way (calls are still refused).
    Probing,
}

#[derive(Default)]
pub struct Breaker {
    /// Set while degraded or probing: the hot path reads only this while Redis answers.
    down: AtomicBool,
    state: Mutex<Option<Down>>,
    /// Set while up with errors and no answer since: when the first of them came.
    erring: AtomicBool,
    first_error: Mutex<Option<Instant>>,
}

struct Down {
    /// When the outage was found, or the last probe failed.
    since: Instant,
    pause: Duration,
    probing: bool,
}

/// What a reported result changed, for the one log line per outage and per recovery.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    Opened,
    Closed,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Down>> {
        // Each change is a single assignment: a poisoned lock holds a whole state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether calls may go to Redis.
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    pub fn state(&self) -> LinkState {
        if self.is_up() {
            return LinkState::Up;
        }
        match self.lock().as_ref() {
            None => LinkState::Up,
            Some(down) if down.probing => LinkState::Probing,
            Some(down) => LinkState::Degraded { pause: down.pause },
        }
    }

    /// Redis answered: up again (or still).
    pub fn succeeded(&self) -> Change {
        if self.erring.load(Ordering::Acquire) && self.erring.swap(false, Ordering::AcqRel) {
            *self.first_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        if self.is_up() {
            return Change::None;
        }
        let mut state = self.lock();
        self.down.store(false, Ordering::Release);
        match state.take() {
            Some(_) => Change::Closed,
            None => Change::None,
        }
    }

    /// A call failed: silence opens the breaker at once, errors once they have gone on for
    /// [`ERROR_GRACE`] with no answer between.
    pub fn failed(&self, how: Failure) -> Change {
        if how == Failure::Error && self.is_up() {
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            self.erring.store(true, Ordering::Release);
            let since = *first.get_or_insert_with(Instant::now);
            if since.elapsed() < ERROR_GRACE {
                return Change::None;
            }
        }
        let mut state = self.lock();
        // While down, a failure of a call sent anyway changes nothing: the probe keeps its
        // schedule.
        let change = match state.as_ref() {
            Some(_) => Change::None,
            None => {
                *state = Some(Down {
                    since: Instant::now(),
                    pause: FIRST_PAUSE,
                    probing: false,
                });
                Change::Opened
            }
        };
        self.down.store(true, Ordering::Release);
        change
    }

    /// How long until the next probe may run; `None` while up.
    pub fn pause_left(&self) -> Option<Duration> {
        if self.is_up() {
            return None;
        }
        let state = self.lock();
        let down = state.as_ref()?;
        Some(down.pause.saturating_sub(down.since.elapsed()))
    }

    /// Takes the probe when the pause is over: `false` while up, paused, or probing.
    pub fn begin_probe(&self) -> bool {
        if self.is_up() {
            return false;
        }
        let mut state = self.lock();
        match state.as_mut() {
            Some(down) if !down.probing && down.since.elapsed() >= down.pause => {
                down.probing = true;
                true
            }
            _ => false,
        }
    }

    /// The probe got no answer: the pause doubles, up to [`MAX_PAUSE`].
    pub fn probe_failed(&self) {
        if let Some(down) = self.lock().as_mut() {
            down.pause = (down.pause * 2).min(MAX_PAUSE);
            down.probing = false;
            down.since = Instant::now();
        }
    }

    #[cfg(test)]
    fn age(&self, by: Duration) {
        if let Some(down) = self.lock().as_mut() {
            down.since -= by;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_at_a_time_and_the_pause_doubles() {
        let breaker = Breaker::default();
        assert_eq!(breaker.state(), LinkState::Up);
        assert_eq!(breaker.failed(Failure::Silent), Change::Opened);
        assert!(!breaker.is_up());
        assert_eq!(
            breaker.failed(Failure::Silent),
            Change::None,
            "one outage, one change"
        );
        assert!(!breaker.begin_probe(), "paused after a failure");
        breaker.age(FIRST_PAUSE);
        assert!(breaker.begin_probe());
        assert_eq!(breaker.state(), LinkState::Probing);
        assert!(!breaker.begin_probe(), "one probe at a time");
        breaker.probe_failed();
        assert_eq!(
            breaker.state(),
            LinkState::Degraded {
                pause: FIRST_PAUSE * 2
            }
        );
        for _ in 0..10 {
            breaker.age(MAX_PAUSE);
            assert!(breaker.begin_probe());
            breaker.probe_failed();
        }
        assert_eq!(
            breaker.state(),
            LinkState::Degraded { pause: MAX_PAUSE },
            "capped"
        );
        assert_eq!(breaker.succeeded(), Change::Closed);
        assert_eq!(breaker.state(), LinkState::Up);
        assert_eq!(breaker.pause_left(), None);
        assert_eq!(breaker.succeeded(), Change::None);
    }

    #[test]
    fn passing_errors_are_not_an_outage_unless_they_go_on() {
        let breaker = Breaker::default();
        assert_eq!(breaker.failed(Failure::Error), Change::None);
        assert_eq!(breaker.failed(Failure::Error), Change::None);
        assert!(breaker.is_up(), "a reset is retried, not a fallback");
        // An answer between starts the count again.
        *breaker.first_error.lock().unwrap() = Some(Instant::now() - ERROR_GRACE * 2);
        breaker.succeeded();
        assert_eq!(breaker.failed(Failure::Error), Change::None);
        assert!(breaker.is_up());
        // Errors for the grace with no answer: down.
        *breaker.first_error.lock().unwrap() = Some(Instant::now() - ERROR_GRACE);
        assert_eq!(breaker.failed(Failure::Error), Change::Opened);
        assert!(!breaker.is_up());
    }
}
