//! Rows of tokend's tables as Rust structs (SPEC §4). Times are naive UTC.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::schema::account_credentials;

/// One login account of one site. The password is only ever held sealed here
/// (see [`crate::vault::crypto`]); `Serialize` leaves it out.
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
    #[serde(serialize_with = "utc::option")]
    pub last_login_success_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "utc::option")]
    pub last_login_attempt_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "utc::time")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "utc::time")]
    pub updated_at: NaiveDateTime,
    /// Until when the account is blacklisted or cooling down (SPEC §11); `None`: not blocked.
    pub blocked_until: Option<NaiveDateTime>,
    /// Why: the [`crate::policy::outcome::BlockReason`] that set the block.
    pub block_reason: Option<String>,
    /// The account's own proxy URL, sealed (it may carry credentials).
    #[serde(skip)]
    pub proxy_encrypted: Option<String>,
    /// The same URL with any password masked, for listings.
    pub proxy_display: Option<String>,
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
    pub proxy_encrypted: Option<&'a str>,
    pub proxy_display: Option<&'a str>,
}

/// A token as stored in the `tokens` table (the token itself sealed).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = super::schema::tokens)]
pub struct StoredToken {
    pub id: i64,
    pub site_name: String,
    pub account: String,
    pub token: String,
    pub token_type: String,
    pub expires_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub fence: i64,
}

#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = super::schema::tokens)]
pub struct NewToken<'a> {
    pub site_name: &'a str,
    pub account: &'a str,
    pub token: &'a str,
    pub token_type: &'a str,
    pub expires_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// The fencing number of the slot it was obtained under; 0 when unfenced.
    pub fence: i64,
}

/// One acquisition that reached a login (`token_acquisition_history`). No token material
/// but its fingerprint and redacted form.
#[derive(Debug, Clone, Insertable, Serialize, serde::Deserialize)]
#[diesel(table_name = super::schema::token_acquisition_history)]
// `None` is written as NULL (not DEFAULT), which lets SQLite take a whole batch in one statement.
#[diesel(treat_none_as_default_value = false)]
pub struct NewHistory {
    pub acquisition_id: String,
    pub site_name: String,
    pub account: Option<String>,
    pub credential_id: Option<i64>,
    pub status: String,
    pub trigger_reason: String,
    pub attempt_count: i32,
    pub total_duration: f64,
    pub login_duration: Option<f64>,
    pub captcha_attempts: i32,
    pub network_retries: i32,
    pub token_fingerprint: Option<String>,
    pub token_redacted: Option<String>,
    pub error_message: Option<String>,
    pub error_details: Option<String>,
    pub created_at: NaiveDateTime,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

impl NewHistory {
    /// One login of `account` (`credential_id`) on `site` that succeeded at `at`, in one
    /// attempt of a second: the row tests and benchmarks start from, changing what they need.
    pub fn login(
        acquisition_id: &str,
        site: &str,
        (account, credential_id): (&str, i64),
        at: NaiveDateTime,
    ) -> NewHistory {
        NewHistory {
            acquisition_id: acquisition_id.into(),
            site_name: site.into(),
            account: Some(account.into()),
            credential_id: Some(credential_id),
            status: "success".into(),
            trigger_reason: "token_needed".into(),
            attempt_count: 1,
            total_duration: 1.0,
            login_duration: Some(1.0),
            captcha_attempts: 0,
            network_retries: 0,
            token_fingerprint: None,
            token_redacted: None,
            error_message: None,
            error_details: None,
            created_at: at,
            started_at: at,
            finished_at: Some(at),
        }
    }
}

/// A history row as read back.
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = super::schema::token_acquisition_history)]
pub struct HistoryRow {
    pub id: i64,
    pub acquisition_id: String,
    pub site_name: String,
    pub account: Option<String>,
    pub credential_id: Option<i64>,
    pub status: String,
    pub trigger_reason: String,
    pub attempt_count: i32,
    pub total_duration: f64,
    pub login_duration: Option<f64>,
    pub captcha_attempts: i32,
    pub network_retries: i32,
    pub token_fingerprint: Option<String>,
    pub token_redacted: Option<String>,
    pub error_message: Option<String>,
    pub error_details: Option<String>,
    #[serde(serialize_with = "utc::time")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "utc::time")]
    pub started_at: NaiveDateTime,
    #[serde(serialize_with = "utc::option")]
    pub finished_at: Option<NaiveDateTime>,
}

/// The database keeps naive UTC times; answers give them as RFC 3339 with `Z`
/// (`2026-11-26T17:05:34.781615Z`), so that no client has to guess the zone.
pub mod utc {
    use chrono::NaiveDateTime;
    use serde::{Serialize, Serializer};

    pub fn time<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        t.and_utc().serialize(s)
    }

    pub fn option<S: Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
        t.map(|t| t.and_utc()).serialize(s)
    }
}
