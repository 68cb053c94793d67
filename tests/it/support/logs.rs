//! The log of the tokend that runs inside this test process (the [`Harness`]'s), kept so a
//! test can check a line tokend must write. [`capture`] installs it (once per process); it
//! keeps tokend's own lines at `info` and above, the last [`KEPT`] of them. Tests run in
//! parallel and share it: look a line up by something only your test has (a checkout id).
//!
//! [`Harness`]: super::harness::Harness

use std::collections::VecDeque;
use std::sync::{Mutex, Once};

/// Lines kept, at most (the oldest go first).
const KEPT: usize = 50_000;

struct Capture {
    lines: Mutex<VecDeque<String>>,
}

static CAPTURE: Capture = Capture {
    lines: Mutex::new(VecDeque::new()),
};

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info && metadata.target().starts_with("tokend")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() >= KEPT {
            lines.pop_front();
        }
        lines.push_back(format!("{} {}", record.level(), record.args()));
    }

    fn flush(&self) {}
}

/// Starts keeping the in-process log (a no-op after the first call).
pub fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in the test process");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// The lines kept so far that hold `needle`.
pub fn lines_with(needle: &str) -> Vec<String> {
    let lines = CAPTURE.lines.lock().unwrap_or_else(|p| p.into_inner());
    lines
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}
