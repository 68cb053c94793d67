//! `token_acquisition_daily`: the history's daily totals by site, account and status, added to
//! in the same transaction as the rows they count, and read by `/statistics`.

use std::collections::BTreeMap;

use diesel::sql_types::{BigInt, Double, Text};
use diesel::RunQueryDsl;

use super::models::NewHistory;
use super::DbConnection;
use crate::error::Result;

#[derive(Default)]
struct Totals {
    acquisitions: i64,
    duration_sum: f64,
    duration_max: f64,
    login_sum: f64,
    logins: i64,
    attempts: i64,
    captcha: i64,
    retries: i64,
}

fn upsert_sql(conn: &DbConnection) -> &'static str {
    match conn {
        DbConnection::Sqlite(_) => {
            "INSERT INTO token_acquisition_daily VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (day, site_name, account, status) DO UPDATE SET \
             acquisitions = token_acquisition_daily.acquisitions + excluded.acquisitions, \
             duration_sum = token_acquisition_daily.duration_sum + excluded.duration_sum, \
             duration_max = MAX(token_acquisition_daily.duration_max, excluded.duration_max), \
             login_duration_sum = token_acquisition_daily.login_duration_sum + excluded.login_duration_sum, \
             logins = token_acquisition_daily.logins + excluded.logins, \
             attempts = token_acquisition_daily.attempts + excluded.attempts, \
             captcha_attempts = token_acquisition_daily.captcha_attempts + excluded.captcha_attempts, \
             network_retries = token_acquisition_daily.network_retries + excluded.network_retries"
        }
        DbConnection::Postgres(_) => {
            "INSERT INTO token_acquisition_daily VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (day, site_name, account, status) DO UPDATE SET \
             acquisitions = token_acquisition_daily.acquisitions + EXCLUDED.acquisitions, \
             duration_sum = token_acquisition_daily.duration_sum + EXCLUDED.duration_sum, \
             duration_max = GREATEST(token_acquisition_daily.duration_max, EXCLUDED.duration_max), \
             login_duration_sum = token_acquisition_daily.login_duration_sum + EXCLUDED.login_duration_sum, \
             logins = token_acquisition_daily.logins + EXCLUDED.logins, \
             attempts = token_acquisition_daily.attempts + EXCLUDED.attempts, \
             captcha_attempts = token_acquisition_daily.captcha_attempts + EXCLUDED.captcha_attempts, \
             network_retries = token_acquisition_daily.network_retries + EXCLUDED.network_retries"
        }
    }
}

/// Adds newly written history rows to their days' totals.
pub fn add(conn: &mut DbConnection, rows: &[&NewHistory]) -> Result<()> {
    let mut groups: BTreeMap<(String, &str, &str, &str), Totals> = BTreeMap::new();
    for row in rows {
        let day = row.created_at.format("%Y-%m-%d").to_string();
        let key = (day, row.site_name.as_str(), row.account.as_deref().unwrap_or(""), row.status.as_str());
        let t = groups.entry(key).or_default();
        t.acquisitions += 1;
        t.duration_sum += row.total_duration;
        t.duration_max = t.duration_max.max(row.total_duration);
        if let Some(login) = row.login_duration {
            t.login_sum += login;
            t.logins += 1;
        }
        t.attempts += i64::from(row.attempt_count);
        t.captcha += i64::from(row.captcha_attempts);
        t.retries += i64::from(row.network_retries);
    }
    let sql = upsert_sql(conn);
    for ((day, site, account, status), t) in groups {
        diesel::sql_query(sql)
            .bind::<Text, _>(day)
            .bind::<Text, _>(site)
            .bind::<Text, _>(account)
            .bind::<Text, _>(status)
            .bind::<BigInt, _>(t.acquisitions)
            .bind::<Double, _>(t.duration_sum)
            .bind::<Double, _>(t.duration_max)
            .bind::<Double, _>(t.login_sum)
            .bind::<BigInt, _>(t.logins)
            .bind::<BigInt, _>(t.attempts)
            .bind::<BigInt, _>(t.captcha)
            .bind::<BigInt, _>(t.retries)
            .execute(conn)?;
    }
    Ok(())
}

/// Drops the totals of days before `day` ('YYYY-MM-DD').
pub fn delete_before(conn: &mut DbConnection, day: &str) -> Result<usize> {
    let sql = match conn {
        DbConnection::Sqlite(_) => "DELETE FROM token_acquisition_daily WHERE day < ?",
        DbConnection::Postgres(_) => "DELETE FROM token_acquisition_daily WHERE day < $1",
    };
    Ok(diesel::sql_query(sql).bind::<Text, _>(day).execute(conn)?)
}
