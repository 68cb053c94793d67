//! Queries on `tokens`: one row per (site, account), the token sealed.

use diesel::prelude::*;

use super::models::{NewToken, StoredToken};
use super::schema::tokens::dsl;
use super::DbConnection;
use crate::error::Result;

pub fn find(conn: &mut DbConnection, site: &str, account: &str) -> Result<Option<StoredToken>> {
    Ok(dsl::tokens
        .filter(dsl::site_name.eq(site))
        .filter(dsl::account.eq(account))
        .select(StoredToken::as_select())
        .first(conn)
        .optional()?)
}

/// The highest fencing number stored (0 when none): the floor of a new fencing epoch after
/// Redis lost its counter.
pub fn max_fence(conn: &mut DbConnection) -> Result<i64> {
    let max: Option<i64> = dsl::tokens
        .select(diesel::dsl::max(dsl::fence))
        .first(conn)?;
    Ok(max.unwrap_or(0))
}

/// Inserts or replaces the token of (site, account), unless the stored one was written under
/// a newer fencing number (a holder whose lease expired must not overwrite a newer token).
/// Returns whether it was written. A fence of 0 (in-process slots) is not compared, and an
/// expired stored token may always be replaced: whatever happened to the fencing numbers
/// (a Redis that lost its counter), the table never freezes on a dead token.
pub fn upsert(conn: &mut DbConnection, token: &NewToken<'_>) -> Result<bool> {
    conn.transaction(|conn| {
        let target = dsl::tokens
            .filter(dsl::site_name.eq(token.site_name))
            .filter(dsl::account.eq(token.account));
        let changes = (
            dsl::token.eq(token.token),
            dsl::token_type.eq(token.token_type),
            dsl::expires_at.eq(token.expires_at),
            dsl::updated_at.eq(token.updated_at),
            dsl::fence.eq(token.fence),
        );
        let updated = if token.fence == 0 {
            diesel::update(target).set(changes).execute(conn)?
        } else {
            let now = chrono::Utc::now().naive_utc();
            diesel::update(target.filter(dsl::fence.le(token.fence).or(dsl::expires_at.le(now))))
                .set(changes)
                .execute(conn)?
        };
        if updated > 0 {
            return Ok(true);
        }
        let exists: i64 = target.count().get_result(conn)?;
        if exists > 0 {
            return Ok(false);
        }
        diesel::insert_into(dsl::tokens)
            .values(token)
            .execute(conn)?;
        Ok(true)
    })
}

/// Deletes the token of (site, account) and answers it (`None` when there was none).
/// One statement (`DELETE … RETURNING`): on SQLite a read followed by a write in one
/// transaction could not wait for another writer.
pub fn take(conn: &mut DbConnection, site: &str, account: &str) -> Result<Option<StoredToken>> {
    let target = dsl::tokens
        .filter(dsl::site_name.eq(site))
        .filter(dsl::account.eq(account));
    // RETURNING is backend-specific for diesel's multi-connection: asked of each backend.
    let taken = match conn {
        DbConnection::Sqlite(c) => diesel::delete(target)
            .returning(StoredToken::as_returning())
            .get_result(c),
        DbConnection::Postgres(c) => diesel::delete(target)
            .returning(StoredToken::as_returning())
            .get_result(c),
    };
    Ok(taken.optional()?)
}

/// When each stored token of a site expires and was written: `(account, expires_at,
/// updated_at)`. Never the token.
pub fn expiries(
    conn: &mut DbConnection,
    site: &str,
) -> Result<Vec<(String, chrono::NaiveDateTime, chrono::NaiveDateTime)>> {
    Ok(dsl::tokens
        .filter(dsl::site_name.eq(site))
        .select((dsl::account, dsl::expires_at, dsl::updated_at))
        .load(conn)?)
}
