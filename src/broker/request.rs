//! What a caller sends ([`AcquireRequest`]) and gets back ([`AcquiredToken`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cache::CachedToken;
use crate::secret::Secret;

/// What a caller asks for (`POST /tokens/acquire`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    pub site_name: String,
    /// `account_credentials.id` of the account to use; without it tokend chooses.
    #[serde(default)]
    pub credential_id: Option<i64>,
    /// The account by name, as an alternative to `credential_id` (used by `tokend token get`).
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub force_refresh: bool,
}

/// Where an answered token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The cache, on the hot path.
    Cache,
    /// Found after waiting for the account's lock or slot: another acquisition logged in.
    Store,
    /// This acquisition logged in.
    Login,
}

/// The answer to an acquire.
#[derive(Debug, Clone, Serialize)]
pub struct AcquiredToken {
    pub token: Secret,
    pub token_type: String,
    pub account: String,
    pub credential_id: i64,
    pub expires_at: DateTime<Utc>,
    pub source: Source,
    /// The acquisition that logged in for this token.
    pub acquisition_id: String,
    /// The ready `Authorization` header value: `<token>` when the site's `token_type` is
    /// empty (court_zxfw), else `<token_type> <token>` (`Bearer <token>`).
    pub authorization: Secret,
}

/// The `Authorization` header value of `token` under the scheme `token_type` (none if empty).
pub fn authorization(token_type: &str, token: &str) -> Secret {
    match token_type.trim() {
        "" => Secret::new(token),
        scheme => Secret::new(format!("{scheme} {token}")),
    }
}

/// The headers a consumer sends with `token`, and its `Authorization` value (`None` for a
/// cookie session, whose token is the `Cookie` header's value).
pub fn ready_headers(
    token: &AcquiredToken,
) -> (std::collections::BTreeMap<String, String>, Option<String>) {
    let mut headers = std::collections::BTreeMap::new();
    if token.token_type.eq_ignore_ascii_case("cookie") {
        headers.insert("Cookie".to_string(), token.token.expose().to_string());
        return (headers, None);
    }
    let authorization = token.authorization.expose().to_string();
    headers.insert("Authorization".to_string(), authorization.clone());
    (headers, Some(authorization))
}

impl AcquiredToken {
    pub(super) fn from_cache(entry: &CachedToken, token: Secret, source: Source) -> AcquiredToken {
        AcquiredToken {
            authorization: authorization(&entry.token_type, token.expose()),
            token,
            token_type: entry.token_type.clone(),
            account: entry.account.clone(),
            credential_id: entry.credential_id,
            expires_at: entry.expires_at,
            source,
            acquisition_id: entry.acquisition_id.clone(),
        }
    }
}
