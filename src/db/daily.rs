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

/// Groups per upsert statement (12 parameters each, well under both backends' limits).
const GROUPS_PER_STATEMENT: usize = 500;

fn upsert_sql(conn: &DbConnection, groups: usize) -> String {
    let postgres = matches!(conn, DbConnection::Postgres(_));
    let mut values = Vec::with_capacity(groups);
    for g in 0..groups {
        let params: Vec<String> = (1..=12)
            .map(|p| {
                if postgres {
                    format!("${}", g * 12 + p)
                } else {
                    "?".to_string()
                }
            })
            .collect();
        values.push(format!("({})", params.join(", ")));
    }
    let (max, excluded) = if postgres {
        ("GREATEST", "EXCLUDED")
    } else {
        ("MAX", "excluded")
    };
    let sum =
        |column: &str| format!("{column} = token_acquisition_daily.{column} + {excluded}.{column}");
    format!(
        "INSERT INTO token_acquisition_daily VALUES {} ON CONFLICT (day, site_name, account, status) DO UPDATE SET \
         {}, {}, duration_max = {max}(token_acquisition_daily.duration_max, {excluded}.duration_max), {}, {}, {}, {}, {}",
        values.join(", "),
        sum("acquisitions"),
        sum("duration_sum"),
        sum("login_duration_sum"),
        sum("logins"),
        sum("attempts"),
        sum("captcha_attempts"),
        sum("network_retries"),
    )
}

/// Adds newly written history rows to their days' totals.
pub fn add(conn: &mut DbConnection, rows: &[&NewHistory]) -> Result<()> {
    let mut groups: BTreeMap<(String, &str, &str, &str), Totals> = BTreeMap::new();
    for row in rows {
        let day = row.created_at.format("%Y-%m-%d").to_string();
        let key = (
            day,
            row.site_name.as_str(),
            row.account.as_deref().unwrap_or(""),
            row.status.as_str(),
        );
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
    let groups: Vec<_> = groups.into_iter().collect();
    for chunk in groups.chunks(GROUPS_PER_STATEMENT) {
        let mut query = diesel::sql_query(upsert_sql(conn, chunk.len())).into_boxed();
        for ((day, site, account, status), t) in chunk {
            query = query
                .bind::<Text, _>(day.clone())
                .bind::<Text, _>(site.to_string())
                .bind::<Text, _>(account.to_string())
                .bind::<Text, _>(status.to_string())
                .bind::<BigInt, _>(t.acquisitions)
                .bind::<Double, _>(t.duration_sum)
                .bind::<Double, _>(t.duration_max)
                .bind::<Double, _>(t.login_sum)
                .bind::<BigInt, _>(t.logins)
                .bind::<BigInt, _>(t.attempts)
                .bind::<BigInt, _>(t.captcha)
                .bind::<BigInt, _>(t.retries);
        }
        query.execute(conn)?;
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
