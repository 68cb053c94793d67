//! Rows of tokend's tables as Rust structs (SPEC §4). Times are naive UTC.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::schema::account_credentials;

/// One login account of one site. The password is only ever held sealed here
/// (see [`crate::crypto`]); `Serialize` leaves it out.
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = account_credentials)]
pub struct AccountCredential {
    pub id: i64,
    pub site_name: String,
    pub account: String,
    #[serde(skip)]
    pub password_encrypted: String,
    pub is_preferred: bool,
    pub is_active: bool,
    pub login_success_count: i64,
    pub login_failure_count: i64,
    pub last_login_success_at: Option<NaiveDateTime>,
    pub last_login_attempt_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = account_credentials)]
pub struct NewAccountCredential<'a> {
    pub site_name: &'a str,
    pub account: &'a str,
    pub password_encrypted: &'a str,
    pub is_preferred: bool,
    pub is_active: bool,
    pub login_success_count: i64,
    pub login_failure_count: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}
