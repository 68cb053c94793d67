//! Queries on `account_credentials`. Each takes a connection; "not found" is `Ok(None)`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::{AccountCredential, NewAccountCredential};
use super::schema::account_credentials::dsl;
use super::{is_unique_violation, DbConnection};
use crate::error::{Error, Result};
use crate::policy::outcome::BlockReason;

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

/// Blocks an account until `until` (a blacklist or a cooldown, SPEC §11). Not an edit of the
/// account: `updated_at` stays, so the change marker does not move.
pub fn block(
    conn: &mut DbConnection,
    id: i64,
    until: NaiveDateTime,
    reason: BlockReason,
) -> Result<()> {
    diesel::update(dsl::account_credentials.find(id))
        .set((
            dsl::blocked_until.eq(Some(until)),
            dsl::block_reason.eq(Some(reason.as_str())),
        ))
        .execute(conn)?;
    Ok(())
}

/// Lifts an account's block, if any; `Ok(None)` when there is no such account, else its id
/// and whether a block was in force.
pub fn unblock(conn: &mut DbConnection, site: &str, account: &str) -> Result<Option<(i64, bool)>> {
    let Some(row) = find(conn, site, account)? else {
        return Ok(None);
    };
    diesel::update(dsl::account_credentials.find(row.id))
        .set((
            dsl::blocked_until.eq(None::<NaiveDateTime>),
            dsl::block_reason.eq(None::<String>),
        ))
        .execute(conn)?;
    let now = chrono::Utc::now().naive_utc();
    Ok(Some((
        row.id,
        row.blocked_until.is_some_and(|until| until > now),
    )))
}

/// Turns an account on or off for logins; `false` when there is no such account.
pub fn set_active(
    conn: &mut DbConnection,
    site: &str,
    account: &str,
    active: bool,
) -> Result<bool> {
    let updated = diesel::update(
        dsl::account_credentials
            .filter(dsl::site_name.eq(site))
            .filter(dsl::account.eq(account)),
    )
    .set((
        dsl::is_active.eq(active),
        dsl::updated_at.eq(chrono::Utc::now().naive_utc()),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

/// Marks an account preferred (chosen before the others of its site) or not; `false` when
/// there is no such account.
pub fn set_preferred(
    conn: &mut DbConnection,
    site: &str,
    account: &str,
    preferred: bool,
) -> Result<bool> {
    let updated = diesel::update(
        dsl::account_credentials
            .filter(dsl::site_name.eq(site))
            .filter(dsl::account.eq(account)),
    )
    .set((
        dsl::is_preferred.eq(preferred),
        dsl::updated_at.eq(chrono::Utc::now().naive_utc()),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

/// Replaces an account's sealed password, keeping its statistics; a blacklist for a refused
/// password is lifted (the new password deserves a try). `false` when there is no account.
pub fn set_password(
    conn: &mut DbConnection,
    site: &str,
    account: &str,
    sealed: &str,
) -> Result<bool> {
    let target = dsl::account_credentials
        .filter(dsl::site_name.eq(site))
        .filter(dsl::account.eq(account));
    let updated = diesel::update(target)
        .set((
            dsl::password_encrypted.eq(sealed),
            dsl::updated_at.eq(chrono::Utc::now().naive_utc()),
        ))
        .execute(conn)?;
    diesel::update(target.filter(dsl::block_reason.eq(BlockReason::CredentialError.as_str())))
        .set((
            dsl::blocked_until.eq(None::<NaiveDateTime>),
            dsl::block_reason.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(updated > 0)
}

/// Sets or clears an account's own proxy (sealed, and its display form); `false` when there
/// is no such account.
pub fn set_proxy(
    conn: &mut DbConnection,
    site: &str,
    account: &str,
    sealed: Option<&str>,
    display: Option<&str>,
) -> Result<bool> {
    let updated = diesel::update(
        dsl::account_credentials
            .filter(dsl::site_name.eq(site))
            .filter(dsl::account.eq(account)),
    )
    .set((
        dsl::proxy_encrypted.eq(sealed),
        dsl::proxy_display.eq(display),
        dsl::updated_at.eq(chrono::Utc::now().naive_utc()),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

/// A cheap marker of the account rows that moves with every add, remove and edit (count,
/// newest edit, highest id): the daemon polls it to see changes made by the CLI.
pub type ChangeMarker = (i64, Option<NaiveDateTime>, Option<i64>);

pub fn change_marker(conn: &mut DbConnection) -> Result<ChangeMarker> {
    use diesel::dsl::{count_star, max};
    Ok(dsl::account_credentials
        .select((count_star(), max(dsl::updated_at), max(dsl::id)))
        .first(conn)?)
}

/// Counts one login attempt of an account: success or failure, and when. Not an edit of the
/// account: `updated_at` stays, so the change marker does not move.
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
            ))
            .execute(conn)?;
    } else {
        diesel::update(target)
            .set((
                dsl::login_failure_count.eq(dsl::login_failure_count + 1),
                dsl::last_login_attempt_at.eq(Some(at)),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Whether the database holds anything sealed with the key (accounts or stored tokens).
pub fn holds_secrets(conn: &mut DbConnection) -> Result<bool> {
    let accounts: i64 = dsl::account_credentials.count().get_result(conn)?;
    let stored: i64 = super::schema::tokens::table.count().get_result(conn)?;
    Ok(accounts + stored > 0)
}

/// The first account's (site, account, sealed password): what the start-up check opens.
pub fn first_sealed_password(conn: &mut DbConnection) -> Result<Option<(String, String, String)>> {
    Ok(dsl::account_credentials
        .select((dsl::site_name, dsl::account, dsl::password_encrypted))
        .order(dsl::id)
        .first(conn)
        .optional()?)
}
