//! Queries on `account_credentials`. Each takes a connection; "not found" is `Ok(None)`.

use diesel::prelude::*;

use super::models::{AccountCredential, NewAccountCredential};
use super::schema::account_credentials::dsl;
use super::{is_unique_violation, DbConnection};
use crate::error::{Error, Result};

/// Inserts an account; an existing (site, account) is [`Error::AccountExists`].
pub fn insert(
    conn: &mut DbConnection,
    new: &NewAccountCredential<'_>,
) -> Result<AccountCredential> {
    diesel::insert_into(dsl::account_credentials)
        .values(new)
        .execute(conn)
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::AccountExists {
                    site: new.site_name.to_string(),
                    account: new.account.to_string(),
                }
            } else {
                Error::Database(e)
            }
        })?;
    find(conn, new.site_name, new.account)?
        .ok_or_else(|| Error::Internal("inserted account not found".into()))
}

pub fn find(
    conn: &mut DbConnection,
    site: &str,
    account: &str,
) -> Result<Option<AccountCredential>> {
    Ok(dsl::account_credentials
        .filter(dsl::site_name.eq(site))
        .filter(dsl::account.eq(account))
        .select(AccountCredential::as_select())
        .first(conn)
        .optional()?)
}

pub fn find_by_id(conn: &mut DbConnection, id: i64) -> Result<Option<AccountCredential>> {
    Ok(dsl::account_credentials
        .find(id)
        .select(AccountCredential::as_select())
        .first(conn)
        .optional()?)
}

/// All accounts, or one site's, ordered by site then account.
pub fn list(conn: &mut DbConnection, site: Option<&str>) -> Result<Vec<AccountCredential>> {
    let mut query = dsl::account_credentials
        .select(AccountCredential::as_select())
        .order((dsl::site_name.asc(), dsl::account.asc()))
        .into_boxed();
    if let Some(site) = site {
        query = query.filter(dsl::site_name.eq(site));
    }
    Ok(query.load(conn)?)
}

/// The accounts of a site that may be used for logins.
pub fn list_active(conn: &mut DbConnection, site: &str) -> Result<Vec<AccountCredential>> {
    Ok(dsl::account_credentials
        .filter(dsl::site_name.eq(site))
        .filter(dsl::is_active.eq(true))
        .select(AccountCredential::as_select())
        .order(dsl::id.asc())
        .load(conn)?)
}

/// Deletes an account; `false` when there was none.
pub fn delete(conn: &mut DbConnection, site: &str, account: &str) -> Result<bool> {
    let deleted = diesel::delete(
        dsl::account_credentials
            .filter(dsl::site_name.eq(site))
            .filter(dsl::account.eq(account)),
    )
    .execute(conn)?;
    Ok(deleted > 0)
}

/// Counts one login attempt of an account: success or failure, and when.
pub fn record_attempt(
    conn: &mut DbConnection,
    id: i64,
    success: bool,
    at: chrono::NaiveDateTime,
) -> Result<()> {
    let target = dsl::account_credentials.find(id);
    if success {
        diesel::update(target)
            .set((
                dsl::login_success_count.eq(dsl::login_success_count + 1),
                dsl::last_login_success_at.eq(Some(at)),
                dsl::last_login_attempt_at.eq(Some(at)),
                dsl::updated_at.eq(at),
            ))
            .execute(conn)?;
    } else {
        diesel::update(target)
            .set((
                dsl::login_failure_count.eq(dsl::login_failure_count + 1),
                dsl::last_login_attempt_at.eq(Some(at)),
                dsl::updated_at.eq(at),
            ))
            .execute(conn)?;
    }
    Ok(())
}
