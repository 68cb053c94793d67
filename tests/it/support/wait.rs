//! Waiting on a condition with a deadline, the one way the tests wait (never a fixed sleep):
//! [`wait_until`] in async tests, [`wait_until_blocking`] in tests without a runtime.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` every 20 ms until it gives `Some`, failing the test after `within`.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for a test without a runtime: polls `check` every 20 ms until it gives
/// `Some`, failing the test after `within`.
pub fn wait_until_blocking<T>(what: &str, within: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_until_blocking_with(what, within, check, String::new)
}

/// [`wait_until_blocking`], with `detail()` (a log, the last answer) in the failure message.
pub fn wait_until_blocking_with<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
    detail: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}\n{}",
            detail()
        );
        std::thread::sleep(POLL);
    }
}
