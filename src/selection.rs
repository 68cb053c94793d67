//! Account selection (SPEC §5): which account of a site to log in with.
//!
//! Candidates are the site's active accounts that are not blacklisted and not excluded by the
//! caller. Preferred accounts come first; then the highest score, where score is recency
//! (100 minus hours since the last success, floored at 0; 0 if never) plus min(successes, 50)
//! plus 20 × success rate (10 for an account never tried). Ties go to the lower id, so that
//! concurrent callers pick the same account and share one login.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// What selection needs to know about one account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccountStats {
    pub credential_id: i64,
    pub account: String,
    pub is_preferred: bool,
    pub is_active: bool,
    pub login_success_count: i64,
    pub login_failure_count: i64,
    pub last_login_success_at: Option<NaiveDateTime>,
}

impl AccountStats {
    pub fn score(&self, now: NaiveDateTime) -> f64 {
        let recency = self.last_login_success_at.map_or(0.0, |at| {
            let hours = (now - at).num_seconds() as f64 / 3600.0;
            (100.0 - hours.max(0.0)).max(0.0)
        });
        let volume = self.login_success_count.clamp(0, 50) as f64;
        let tried = self.login_success_count + self.login_failure_count;
        let rate = if tried > 0 {
            20.0 * self.login_success_count as f64 / tried as f64
        } else {
            10.0
        };
        recency + volume + rate
    }
}

/// The candidates in the order they should be tried.
pub fn rank(
    accounts: &[AccountStats],
    is_excluded: impl Fn(&AccountStats) -> bool,
    now: NaiveDateTime,
) -> Vec<&AccountStats> {
    let mut candidates: Vec<(&AccountStats, f64)> = accounts
        .iter()
        .filter(|a| a.is_active && !is_excluded(a))
        .map(|a| (a, a.score(now)))
        .collect();
    candidates.sort_by(|(a, sa), (b, sb)| {
        b.is_preferred
            .cmp(&a.is_preferred)
            .then(sb.total_cmp(sa))
            .then(a.credential_id.cmp(&b.credential_id))
    });
    candidates.into_iter().map(|(a, _)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(
        id: i64,
        ok: i64,
        failed: i64,
        hours_ago: Option<i64>,
        preferred: bool,
    ) -> AccountStats {
        let now = chrono::Utc::now().naive_utc();
        AccountStats {
            credential_id: id,
            account: format!("a{id}"),
            is_preferred: preferred,
            is_active: true,
            login_success_count: ok,
            login_failure_count: failed,
            last_login_success_at: hours_ago.map(|h| now - chrono::Duration::hours(h)),
        }
    }

    #[test]
    fn scores_follow_the_spec() {
        let now = chrono::Utc::now().naive_utc();
        assert_eq!(account(1, 0, 0, None, false).score(now), 10.0);
        let s = account(2, 60, 20, Some(10), false).score(now);
        assert!((s - (90.0 + 50.0 + 15.0)).abs() < 0.01, "{s}");
        assert_eq!(account(3, 1, 0, Some(500), false).score(now), 1.0 + 20.0);
    }

    #[test]
    fn preferred_first_then_score_then_id() {
        let now = chrono::Utc::now().naive_utc();
        let accounts = vec![
            account(1, 0, 0, None, false),
            account(2, 10, 0, Some(1), false),
            account(3, 0, 5, None, true),
            account(4, 0, 0, None, false),
        ];
        let order: Vec<i64> = rank(&accounts, |_| false, now)
            .iter()
            .map(|a| a.credential_id)
            .collect();
        assert_eq!(order, vec![3, 2, 1, 4]);
        let order: Vec<i64> = rank(&accounts, |a| a.credential_id == 3, now)
            .iter()
            .map(|a| a.credential_id)
            .collect();
        assert_eq!(order, vec![2, 1, 4]);
    }
}
