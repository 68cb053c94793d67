//! What a caller sends ([`AcquireRequest`]) and gets back ([`AcquiredToken`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cache::near::OpenedToken;
use crate::cache::{CachedToken, ReadyHeaders};
use crate::vault::secret::Secret;

/// What a caller asks for (`POST /tokens/acquire`; the CLI sends it too).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = TokenSource)]
pub enum Source {
    /// The cache, on the hot path.
    Cache,
    /// Found after waiting for the account's lock or slot: another acquisition logged in.
    Store,
    /// This acquisition logged in.
    Login,
}

/// The answer to an acquire.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AcquiredToken {
    #[schema(value_type = String)]
    pub token: Secret,
    pub token_type: String,
    pub account: String,
    pub credential_id: i64,
    pub expires_at: DateTime<Utc>,
    pub source: Source,
    /// The acquisition that logged in for this token.
    pub acquisition_id: String,
    /// `authorization` (the ready `Authorization` value: `<token>` when the site's
    /// `token_type` is empty (court_zxfw), else `<token_type> <token>`; `null` for a cookie
    /// session) and `headers`, the ready headers to send (issue 21).
    #[serde(flatten)]
    pub ready: ReadyHeaders,
}

/// The headers a consumer sends with `token`, and its `Authorization` value (`None` for a
/// cookie session, whose token is the `Cookie` header's value).
pub fn ready_headers(
    token: &AcquiredToken,
) -> (std::collections::BTreeMap<String, String>, Option<String>) {
    let headers = token
        .ready
        .headers()
        .map(|(name, value)| (name.to_string(), value.expose().to_string()))
        .collect();
    let authorization = token.ready.authorization().map(|a| a.expose().to_string());
    (headers, authorization)
}

impl AcquiredToken {
    /// The answer with a token just obtained or read from the store.
    pub(super) fn from_cache(entry: &CachedToken, token: Secret, source: Source) -> AcquiredToken {
        let ready = entry.ready_headers(&token);
        AcquiredToken::answer(entry, token, ready, source)
    }

    /// The answer with a cached token, whose headers were made when it was opened.
    pub fn from_hit(hit: &OpenedToken, source: Source) -> AcquiredToken {
        AcquiredToken::answer(&hit.entry, hit.token.clone(), hit.ready.clone(), source)
    }

    fn answer(
        entry: &CachedToken,
        token: Secret,
        ready: ReadyHeaders,
        source: Source,
    ) -> AcquiredToken {
        AcquiredToken {
            token,
            token_type: entry.token_type.clone(),
            account: entry.account.clone(),
            credential_id: entry.credential_id,
            expires_at: entry.expires_at,
            source,
            acquisition_id: entry.acquisition_id.clone(),
            ready,
        }
    }
}
