//! `/statistics` in SQL (SPEC §7), from the daily totals kept beside the history
//! ([`super::daily`]): the period's rows of `token_acquisition_daily` (one per day, site,
//! account and status), folded into the report's breakdowns — a few thousand rows to read
//! even when the history holds millions.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate, NaiveDateTime, Utc};
use diesel::sql_types::{BigInt, Double, Text};
use diesel::{QueryableByName, RunQueryDsl};
use serde::Serialize;
use serde_json::{json, Value};

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

/// Totals of one slice (a site, an account, a day, or everything).
#[derive(Debug, Default, Clone, Serialize)]
struct Tally {
    total: i64,
    successful: i64,
    #[serde(skip)]
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

    fn report(&self) -> Value {
        json!({
            "total": self.total,
            "successful": self.successful,
            "failed": self.total - self.successful,
            "success_rate": rate(self.successful, self.total),
            "avg_duration": if self.total > 0 { self.duration_sum / self.total as f64 } else { 0.0 },
        })
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
pub fn report(conn: &mut DbConnection, days: u32, site: Option<&str>) -> Result<Value> {
    let end = Utc::now().naive_utc();
    let start_day = (end - Duration::days(i64::from(days) - 1)).date();
    let since: NaiveDateTime = start_day.and_hms_opt(0, 0, 0).unwrap_or(end);
    let sql = daily_sql(conn, site.is_some());
    let query = diesel::sql_query(sql).bind::<Text, _>(start_day.format("%Y-%m-%d").to_string());
    let groups: Vec<Group> = match site {
        Some(site) => query.bind::<Text, _>(site).load(conn)?,
        None => query.load(conn)?,
    };

    let mut all = Tally::default();
    let mut statuses: BTreeMap<String, i64> = BTreeMap::new();
    let mut sites: BTreeMap<String, Tally> = BTreeMap::new();
    let mut accounts: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut daily: BTreeMap<String, Tally> = BTreeMap::new();
    let (mut max_duration, mut login_sum, mut login_n) = (0.0f64, 0.0, 0i64);
    let (mut attempts, mut captcha, mut retries) = (0i64, 0i64, 0i64);
    for g in &groups {
        all.add(g);
        *statuses.entry(g.status.clone()).or_default() += g.n;
        sites.entry(g.site_name.clone()).or_default().add(g);
        accounts
            .entry((g.site_name.clone(), g.account.clone()))
            .or_default()
            .add(g);
        daily.entry(g.day.clone()).or_default().add(g);
        max_duration = max_duration.max(g.total_max);
        login_sum += g.login_sum;
        login_n += g.login_n;
        attempts += g.attempts;
        captcha += g.captcha;
        retries += g.retries;
    }

    let mut summary = all.report();
    summary["max_duration"] = json!(max_duration);
    summary["avg_login_duration"] = json!(if login_n > 0 {
        login_sum / login_n as f64
    } else {
        0.0
    });
    summary["total_attempts"] = json!(attempts);
    summary["captcha_attempts"] = json!(captcha);
    summary["network_retries"] = json!(retries);

    let mut account_rows: Vec<Value> = accounts
        .iter()
        .map(|((site, account), t)| {
            let mut row = t.report();
            row["site_name"] = json!(site);
            row["account"] = json!(account);
            row
        })
        .collect();
    account_rows.sort_by_key(|row| std::cmp::Reverse(row["total"].as_i64().unwrap_or(0)));
    account_rows.truncate(100);

    let trend: Vec<Value> = (0..days)
        .filter_map(|i| start_day.checked_add_signed(Duration::days(i64::from(i))))
        .map(|day: NaiveDate| {
            let key = day.format("%Y-%m-%d").to_string();
            let mut row = daily.get(&key).cloned().unwrap_or_default().report();
            row["date"] = json!(key);
            row
        })
        .collect();

    Ok(json!({
        "period": {"days": days, "start": since.and_utc(), "end": end.and_utc(), "site_name": site},
        "summary": summary,
        "status_breakdown": statuses,
        "site_breakdown": sites.iter().map(|(site, t)| {
            let mut row = t.report();
            row["site_name"] = json!(site);
            row
        }).collect::<Vec<_>>(),
        "account_breakdown": account_rows,
        "daily_trend": trend,
    }))
}
