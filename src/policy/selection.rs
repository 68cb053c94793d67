//! Account selection (SPEC §5): which account of a site to log in with.
//!
//! Candidates are the site's active accounts that are not blacklisted and not excluded by the
//! caller. Preferred accounts come first; then the highest score, where score is recency
//! (100 minus hours since the last success, floored at 0; 0 if never) plus min(successes, 50)
//! plus 20 × success rate (10 for an account never tried). Ties go to the lower id, so that
//! concurrent callers pick the same account and share one login.
//!
//! Two other strategies spread logins over the usable accounts (SPEC §12): `round_robin` takes
//! them in turn (the turn shared through Redis when configured), `least_recent` takes the one
//! whose last login attempt is oldest.

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
    #[serde(default)]
    pub last_login_attempt_at: Option<NaiveDateTime>,
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

/// How a site chooses among its usable accounts (`selection` of a `[[sites]]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// SPEC §5: preferred first, then the best score.
    #[default]
    Best,
    /// Every usable account in turn.
    RoundRobin,
    /// The account whose last login attempt is oldest (never tried: first).
    LeastRecent,
}

/// Reorders the ranked candidates for a strategy other than `best`; `turn` is the site's
/// rotation counter (round robin).
pub fn spread(mut ranked: Vec<&AccountStats>, strategy: Strategy, turn: u64) -> Vec<&AccountStats> {
    match strategy {
        Strategy::Best => {}
        Strategy::RoundRobin => {
            ranked.sort_by_key(|a| a.credential_id);
            if !ranked.is_empty() {
                let start = (turn % ranked.len() as u64) as usize;
                ranked.rotate_left(start);
            }
        }
        Strategy::LeastRecent => {
            ranked.sort_by_key(|a| (a.last_login_attempt_at, a.credential_id));
        }
    }
    ranked
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
            last_login_attempt_at: hours_ago.map(|h| now - chrono::Duration::hours(h)),
        }
    }

    #[test]
    fn round_robin_and_least_recent_spread() {
        let accounts = vec![
            account(3, 9, 0, Some(1), true),
            account(1, 0, 0, None, false),
            account(2, 5, 0, Some(5), false),
        ];
        let now = chrono::Utc::now().naive_utc();
        let ids = |strategy, turn| -> Vec<i64> {
            spread(rank(&accounts, |_| false, now), strategy, turn)
                .iter()
                .map(|a| a.credential_id)
                .collect()
        };
        assert_eq!(ids(Strategy::RoundRobin, 0), vec![1, 2, 3]);
        assert_eq!(ids(Strategy::RoundRobin, 1), vec![2, 3, 1]);
        assert_eq!(ids(Strategy::RoundRobin, 5), vec![3, 1, 2]);
        assert_eq!(ids(Strategy::LeastRecent, 0), vec![1, 2, 3]);
        assert_eq!(ids(Strategy::Best, 0), vec![3, 2, 1]);
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
