//! The [`Deadline`] of one login (`login_timeout`), which stands still while a person solves
//! a captcha: their time is not the login's. Shared by the retry policy of
//! [`crate::drivers`] and the drivers that hand captchas to a person; a leaf.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When one login must end, as of now. Cheap to clone: clones share the clock.
#[derive(Clone, Debug)]
pub struct Deadline(Arc<Mutex<Clock>>);

#[derive(Debug)]
struct Clock {
    at: Instant,
    paused_since: Option<Instant>,
}

impl Deadline {
    pub fn new(at: Instant) -> Deadline {
        Deadline(Arc::new(Mutex::new(Clock {
            at,
            paused_since: None,
        })))
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, Clock> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the login must end, as of now.
    pub fn at(&self) -> Instant {
        let clock = self.clock();
        clock.at + clock.paused_since.map_or(Duration::ZERO, |p| p.elapsed())
    }

    pub fn remaining(&self) -> Duration {
        self.at().saturating_duration_since(Instant::now())
    }

    /// Stops the clock (a person is solving a captcha).
    pub fn pause(&self) {
        let mut clock = self.clock();
        if clock.paused_since.is_none() {
            clock.paused_since = Some(Instant::now());
        }
    }

    /// Starts it again: the deadline moved by the time it stood still.
    pub fn resume(&self) {
        let mut clock = self.clock();
        if let Some(since) = clock.paused_since.take() {
            clock.at += since.elapsed();
        }
    }

    /// Runs `work` to its end, or `None` once the deadline (plus `grace`) has passed; a
    /// deadline that moved meanwhile is honoured.
    pub async fn run<F: std::future::Future>(&self, grace: Duration, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            let until = self.at() + grace;
            tokio::select! {
                out = &mut work => return Some(out),
                _ = tokio::time::sleep_until(until.into()) => {
                    if self.at() + grace <= Instant::now() {
                        return None;
                    }
                }
            }
        }
    }
}
