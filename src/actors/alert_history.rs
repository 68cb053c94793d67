//! The alert transitions of the last day, kept by `AlertActor` for the dashboard
//! (`GET /api/v1/automation/performance/alerts/history`): each time an alert starts firing
//! or is resolved, as the `ALERT firing` / `ALERT resolved` log lines say it.
//!
//! Fixed memory: at most [`MAX_TRANSITIONS`], and none older than [`KEEP`].

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::alert_rules::{Alert, Severity};

/// Transitions kept at most (an alert that flaps all day cannot grow the log).
pub const MAX_TRANSITIONS: usize = 200;
/// Transitions older than this are dropped.
const KEEP: chrono::Duration = chrono::Duration::hours(24);

/// Whether an alert started or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Firing,
    Resolved,
}

/// One line of the alert history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertTransition {
    pub at: DateTime<Utc>,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub transition: Transition,
    /// The firing alert's severity and message; `None` for a resolution.
    pub severity: Option<Severity>,
    pub message: Option<String>,
}

/// The bounded log.
#[derive(Debug, Default)]
pub struct AlertHistoryLog {
    entries: VecDeque<AlertTransition>,
}

impl AlertHistoryLog {
    pub(crate) fn firing(&mut self, alert: &Alert) {
        self.push(AlertTransition {
            at: Utc::now(),
            kind: alert.kind,
            transition: Transition::Firing,
            severity: Some(alert.severity),
            message: Some(alert.message.clone()),
        });
    }

    pub(crate) fn resolved(&mut self, kind: &'static str) {
        self.push(AlertTransition {
            at: Utc::now(),
            kind,
            transition: Transition::Resolved,
            severity: None,
            message: None,
        });
    }

    fn push(&mut self, entry: AlertTransition) {
        if self.entries.len() == MAX_TRANSITIONS {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// The transitions of the last day, newest first.
    pub fn recent(&mut self, now: DateTime<Utc>) -> Vec<AlertTransition> {
        while self.entries.front().is_some_and(|e| now - e.at > KEEP) {
            self.entries.pop_front();
        }
        self.entries.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: &'static str) -> Alert {
        Alert {
            kind,
            message: format!("{kind} fires"),
            severity: Severity::High,
            value: 1.0,
            threshold: 0.0,
        }
    }

    #[test]
    fn keeps_a_bounded_newest_first_log() {
        let mut log = AlertHistoryLog::default();
        log.firing(&alert("site_unavailable"));
        log.resolved("site_unavailable");
        let recent = log.recent(Utc::now());
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].transition, Transition::Resolved);
        assert_eq!(recent[1].severity, Some(Severity::High));

        for _ in 0..MAX_TRANSITIONS + 10 {
            log.firing(&alert("low_success_rate"));
        }
        assert_eq!(log.recent(Utc::now()).len(), MAX_TRANSITIONS);
        let tomorrow = Utc::now() + chrono::Duration::hours(25);
        assert!(log.recent(tomorrow).is_empty(), "a day later all are gone");
    }
}
