//! `/statistics` in SQL (SPEC §7), from the daily totals kept beside the history
//! ([`super::daily`]): the period's rows of `token_acquisition_daily` (one per day, site,
//! account and status), folded into the report's breakdowns — a few thousand rows to read
//! even when the history holds millions.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use diesel::sql_types::{BigInt, Double, Text};
use diesel::{QueryableByName, RunQueryDsl};
use serde::Serialize;

use super::DbConnection;
use crate::error::Result;

#[derive(QueryableByName)]
struct Group {
    #[diesel(sql_type = Text)]
    site_name: String,
    #[diesel(sql_type = Text)]
    account: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    day: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Double)]
    total_sum: f64,
    #[diesel(sql_type = Double)]
    total_max: f64,
    #[diesel(sql_type = Double)]
    login_sum: f64,
    #[diesel(sql_type = BigInt)]
    login_n: i64,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = BigInt)]
    captcha: i64,
    #[diesel(sql_type = BigInt)]
    retries: i64,
}

/// The `/statistics` report (SPEC §7): serialized, it is the `data` of the answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatisticsReport {
    pub period: Period,
    pub summary: Summary,
    /// Acquisitions per status.
    pub status_breakdown: BTreeMap<String, i64>,
    pub site_breakdown: Vec<SiteTotals>,
    /// The 100 accounts with the most acquisitions, most first.
    pub account_breakdown: Vec<AccountTotals>,
    /// One entry per day of the period, oldest first (days without acquisitions included).
    pub daily_trend: Vec<DayTotals>,
}

/// The period the report covers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Period {
    pub days: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub site_name: Option<String>,
}

/// Totals of one slice (a site, an account, a day, or everything).
#[derive(Debug, Default, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub total: i64,
    pub successful: i64,
    pub failed: i64,
    /// Percent, two decimals.
    pub success_rate: f64,
    /// Seconds per acquisition.
    pub avg_duration: f64,
}

/// The totals of the whole period, and what only they carry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Summary {
    #[serde(flatten)]
    pub totals: Totals,
    pub max_duration: f64,
    pub avg_login_duration: f64,
    pub total_attempts: i64,
    pub captcha_attempts: i64,
    pub network_retries: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SiteTotals {
    pub site_name: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountTotals {
    pub site_name: String,
    pub account: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DayTotals {
    /// `YYYY-MM-DD`.
    pub date: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Sums of one slice while the groups are folded.
#[derive(Debug, Default, Clone)]
struct Tally {
    total: i64,
    successful: i64,
    duration_sum: f64,
}

impl Tally {
    fn add(&mut self, g: &Group) {
        self.total += g.n;
        if g.status == "success" {
            self.successful += g.n;
        }
        self.duration_sum += g.total_sum;
    }

    fn totals(&self) -> Totals {
        Totals {
            total: self.total,
            successful: self.successful,
            failed: self.total - self.successful,
            success_rate: rate(self.successful, self.total),
            avg_duration: if self.total > 0 {
                self.duration_sum / self.total as f64
            } else {
                0.0
            },
        }
    }
}

fn rate(part: i64, whole: i64) -> f64 {
    if whole > 0 {
        (part as f64 * 10000.0 / whole as f64).round() / 100.0
    } else {
        0.0
    }
}

fn daily_sql(conn: &DbConnection, site: bool) -> String {
    let (p1, p2) = match conn {
        DbConnection::Sqlite(_) => ("?", "?"),
        DbConnection::Postgres(_) => ("$1", "$2"),
    };
    let site_filter = if site {
        format!(" AND site_name = {p2}")
    } else {
        String::new()
    };
    format!(
        "SELECT site_name, account, status, day, acquisitions AS n, duration_sum AS total_sum, \
         duration_max AS total_max, login_duration_sum AS login_sum, logins AS login_n, attempts, \
         captcha_attempts AS captcha, network_retries AS retries \
         FROM token_acquisition_daily WHERE day >= {p1}{site_filter}"
    )
}

/// The report of the last `days` days, for all sites or one.
pub fn report(conn: &mut DbConnection, days: u32, site: Option<&str>) -> Result<StatisticsReport> {
    let end = Utc::now().naive_utc();
    let start_day = (end - Duration::days(i64::from(days) - 1)).date();
    let since: NaiveDateTime = start_day.and_hms_opt(0, 0, 0).unwrap_or(end);
    let folded = Folded::of(&load_groups(conn, start_day, site)?);
    Ok(StatisticsReport {
        period: Period {
            days,
            start: since.and_utc(),
            end: end.and_utc(),
            site_name: site.map(str::to_string),
        },
        summary: folded.summary(),
        site_breakdown: folded.sites(),
        account_breakdown: folded.top_accounts(),
        daily_trend: folded.trend(start_day, days),
        status_breakdown: folded.statuses,
    })
}

/// The daily rows of the period from `start_day` on, of one site or all.
fn load_groups(
    conn: &mut DbConnection,
    start_day: NaiveDate,
    site: Option<&str>,
) -> Result<Vec<Group>> {
    let sql = daily_sql(conn, site.is_some());
    let query = diesel::sql_query(sql).bind::<Text, _>(start_day.format("%Y-%m-%d").to_string());
    Ok(match site {
        Some(site) => query.bind::<Text, _>(site).load(conn)?,
        None => query.load(conn)?,
    })
}

/// The daily rows folded into the report's slices.
#[derive(Default)]
struct Folded {
    all: Tally,
    statuses: BTreeMap<String, i64>,
    sites: BTreeMap<String, Tally>,
    accounts: BTreeMap<(String, String), Tally>,
    daily: BTreeMap<String, Tally>,
    max_duration: f64,
    login_sum: f64,
    login_n: i64,
    attempts: i64,
    captcha: i64,
    retries: i64,
}

impl Folded {
    fn of(groups: &[Group]) -> Folded {
        let mut f = Folded::default();
        for g in groups {
            f.all.add(g);
            *f.statuses.entry(g.status.clone()).or_default() += g.n;
            f.sites.entry(g.site_name.clone()).or_default().add(g);
            f.accounts
                .entry((g.site_name.clone(), g.account.clone()))
                .or_default()
                .add(g);
            f.daily.entry(g.day.clone()).or_default().add(g);
            f.max_duration = f.max_duration.max(g.total_max);
            f.login_sum += g.login_sum;
            f.login_n += g.login_n;
            f.attempts += g.attempts;
            f.captcha += g.captcha;
            f.retries += g.retries;
        }
        f
    }

    fn summary(&self) -> Summary {
        Summary {
            totals: self.all.totals(),
            max_duration: self.max_duration,
            avg_login_duration: if self.login_n > 0 {
                self.login_sum / self.login_n as f64
            } else {
                0.0
            },
            total_attempts: self.attempts,
            captcha_attempts: self.captcha,
            network_retries: self.retries,
        }
    }

    fn sites(&self) -> Vec<SiteTotals> {
        self.sites
            .iter()
            .map(|(site, t)| SiteTotals {
                site_name: site.clone(),
                totals: t.totals(),
            })
            .collect()
    }

    /// The 100 accounts with the most acquisitions, most first.
    fn top_accounts(&self) -> Vec<AccountTotals> {
        let mut rows: Vec<AccountTotals> = self
            .accounts
            .iter()
            .map(|((site, account), t)| AccountTotals {
                site_name: site.clone(),
                account: account.clone(),
                totals: t.totals(),
            })
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.totals.total));
        rows.truncate(100);
        rows
    }

    fn trend(&self, start_day: NaiveDate, days: u32) -> Vec<DayTotals> {
        (0..days)
            .filter_map(|i| start_day.checked_add_signed(Duration::days(i64::from(i))))
            .map(|day| {
                let date = day.format("%Y-%m-%d").to_string();
                let totals = self.daily.get(&date).map(Tally::totals).unwrap_or_default();
                DayTotals { date, totals }
            })
            .collect()
    }
}
