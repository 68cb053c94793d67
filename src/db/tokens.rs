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

/// Inserts or replaces the token of (site, account).
pub fn upsert(conn: &mut DbConnection, token: &NewToken<'_>) -> Result<()> {
    conn.transaction(|conn| {
        let updated = diesel::update(
            dsl::tokens
                .filter(dsl::site_name.eq(token.site_name))
                .filter(dsl::account.eq(token.account)),
        )
        .set((
            dsl::token.eq(token.token),
            dsl::token_type.eq(token.token_type),
            dsl::expires_at.eq(token.expires_at),
            dsl::updated_at.eq(token.updated_at),
        ))
        .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(dsl::tokens)
                .values(token)
                .execute(conn)?;
        }
        Ok(())
    })
}

/// Deletes the token of (site, account); `false` when there was none.
pub fn delete(conn: &mut DbConnection, site: &str, account: &str) -> Result<bool> {
    let n = diesel::delete(
        dsl::tokens
            .filter(dsl::site_name.eq(site))
            .filter(dsl::account.eq(account)),
    )
    .execute(conn)?;
    Ok(n > 0)
}
