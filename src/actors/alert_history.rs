//! The alert transitions of the last day, kept by `AlertActor` for the dashboard
//! (`GET /api/v1/automation/performance/alerts/history`): each time an alert starts firing
//! or is resolved, as the `ALERT firing` / `ALERT resolved` log lines say it.
//!
//! Each transition is stored (`alert_transitions`, beside the history, deleted by the same
//! retention job), so that the list survives a restart; the in-memory log, of fixed size (at
//! most [`MAX_TRANSITIONS`], none older than [`KEEP`]), answers while the database cannot.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::alert_rules::{Alert, Severity};
use crate::db::alerts::AlertTransitionRow;

/// Transitions kept at most (an alert that flaps all day cannot grow the log).
pub const MAX_TRANSITIONS: usize = 200;
/// Transitions older than this are dropped.
pub const KEEP: chrono::Duration = chrono::Duration::hours(24);

/// Whether an alert started or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Firing,
    Resolved,
}

impl Transition {
    fn as_str(self) -> &'static str {
        match self {
            Transition::Firing => "firing",
            Transition::Resolved => "resolved",
        }
    }
}

/// One line of the alert history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertTransition {
    pub at: DateTime<Utc>,
    #[serde(rename = "type")]
    pub kind: String,
    pub transition: Transition,
    /// The firing alert's severity and message; `None` for a resolution.
    pub severity: Option<Severity>,
    pub message: Option<String>,
}

impl AlertTransition {
    /// The row that stores it.
    pub(crate) fn to_row(&self) -> AlertTransitionRow {
        AlertTransitionRow {
            id: 0,
            occurred_at: self.at.naive_utc(),
            alert_type: self.kind.clone(),
            state: self.transition.as_str().to_string(),
            severity: self.severity.map(|s| s.as_str().to_string()),
            message: self.message.clone(),
        }
    }

    /// A stored transition; an unknown state or severity (a newer tokend wrote it) is read
    /// as resolved, or as no severity, rather than hiding the row.
    pub(crate) fn from_row(row: AlertTransitionRow) -> AlertTransition {
        AlertTransition {
            at: row.occurred_at.and_utc(),
            kind: row.alert_type,
            transition: if row.state == Transition::Firing.as_str() {
                Transition::Firing
            } else {
                Transition::Resolved
            },
            severity: row.severity.as_deref().and_then(Severity::parse),
            message: row.message,
        }
    }
}

/// The bounded log.
#[derive(Debug, Default)]
pub struct AlertHistoryLog {
    entries: VecDeque<AlertTransition>,
}

impl AlertHistoryLog {
    /// Logs that `alert` started firing; returns the entry, to be stored.
    pub(crate) fn firing(&mut self, alert: &Alert) -> AlertTransition {
        self.push(AlertTransition {
            at: Utc::now(),
            kind: alert.kind.to_string(),
            transition: Transition::Firing,
            severity: Some(alert.severity),
            message: Some(alert.message.clone()),
        })
    }

    /// Logs that the alert `kind` was resolved; returns the entry, to be stored.
    pub(crate) fn resolved(&mut self, kind: &str) -> AlertTransition {
        self.push(AlertTransition {
            at: Utc::now(),
            kind: kind.to_string(),
            transition: Transition::Resolved,
            severity: None,
            message: None,
        })
    }

    fn push(&mut self, entry: AlertTransition) -> AlertTransition {
        if self.entries.len() == MAX_TRANSITIONS {
            self.entries.pop_front();
        }
        self.entries.push_back(entry.clone());
        entry
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
            kind: kind.into(),
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

    #[test]
    fn a_stored_transition_reads_back_the_same() {
        let mut log = AlertHistoryLog::default();
        for entry in [log.firing(&alert("site_unavailable")), log.resolved("x")] {
            let back = AlertTransition::from_row(entry.to_row());
            assert_eq!(back.kind, entry.kind);
            assert_eq!(back.transition, entry.transition);
            assert_eq!(back.severity, entry.severity);
            assert_eq!(back.message, entry.message);
            assert_eq!(back.at.timestamp_micros(), entry.at.timestamp_micros());
        }
    }
}
