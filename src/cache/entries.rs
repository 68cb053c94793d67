//! What the pipeline keeps in the cache: token and credential entries, and the encoding of a
//! mirrored block.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::policy::outcome::BlockReason;
use crate::vault::secret::Secret;

/// A cached token: enough to answer an acquire without the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedToken {
    pub credential_id: i64,
    pub account: String,
    /// Sealed with the secret key (Redis is shared; the key must be too).
    pub token: String,
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
    /// When a background refresh becomes due (two thirds of the life, with jitter).
    pub refresh_at: DateTime<Utc>,
    pub acquisition_id: String,
    /// The fencing number of the slot the login ran under (0: unfenced).
    #[serde(default)]
    pub fence: u64,
}

impl CachedToken {
    pub fn seconds_left(&self, now: DateTime<Utc>) -> f64 {
        (self.expires_at - now).num_milliseconds() as f64 / 1000.0
    }

    /// Whether the token may still be handed out: more than its margin of life left.
    pub fn is_fresh(&self, now: DateTime<Utc>, refresh_ahead: f64) -> bool {
        self.seconds_left(now) > margin(self.issued_at, self.expires_at, refresh_ahead)
    }
}

impl CachedToken {
    /// The headers to send with this entry's token, once opened.
    pub fn ready_headers(&self, token: &Secret) -> ReadyHeaders {
        ReadyHeaders::new(&self.token_type, token)
    }
}

/// What a consumer sends with a token (issue 21): made once when a token is opened or obtained
/// and shared by every answer that hands it out. Serialized into an acquire answer as
/// `authorization` (the `Authorization` value; `null` for a cookie session) and `headers`
/// (`{"Authorization": "Bearer …"}` or `{"Cookie": "SESSION=…"}`).
#[derive(Debug, Clone)]
pub struct ReadyHeaders(Arc<(String, Secret)>);

impl ReadyHeaders {
    pub fn new(token_type: &str, token: &Secret) -> ReadyHeaders {
        ReadyHeaders(Arc::new(crate::config::ready_header(
            token_type,
            token.expose(),
        )))
    }

    /// The ready `Authorization` value; `None` when the token goes in another header.
    pub fn authorization(&self) -> Option<&Secret> {
        let (name, value) = &*self.0;
        name.eq_ignore_ascii_case("authorization").then_some(value)
    }

    /// Every header to send, by name.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &Secret)> {
        std::iter::once((self.0 .0.as_str(), &self.0 .1))
    }
}

impl Serialize for ReadyHeaders {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// `{"Name": "value", …}`.
        struct Headers<'a>(&'a ReadyHeaders);
        impl Serialize for Headers<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.headers())
            }
        }
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("authorization", &self.authorization())?;
        map.serialize_entry("headers", &Headers(self))?;
        map.end()
    }
}

/// The same shape read back (the CLI reads the acquire answer): the one header of `headers`,
/// or the `Authorization` value alone from an older daemon that sends no `headers`.
impl<'de> Deserialize<'de> for ReadyHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        struct Given {
            authorization: Option<String>,
            #[serde(default)]
            headers: std::collections::BTreeMap<String, String>,
        }
        let given = Given::deserialize(deserializer)?;
        let mut headers = given.headers.into_iter();
        let (name, value) = match (headers.next(), headers.next(), given.authorization) {
            (Some(header), None, _) => header,
            (None, _, Some(authorization)) => ("Authorization".to_string(), authorization),
            (None, _, None) => {
                return Err(D::Error::custom(
                    "neither `headers` nor `authorization`: no header to send the token in",
                ))
            }
            (Some(_), Some(_), _) => {
                return Err(D::Error::custom(
                    "more than one header in `headers`: a token goes in one",
                ))
            }
        };
        Ok(ReadyHeaders(Arc::new((name, Secret::new(value)))))
    }
}

/// The shape its `Serialize` writes (flattened into the acquire answer): `authorization`, a
/// string or `null`, and `headers`, a map of header names to strings.
impl utoipa::PartialSchema for ReadyHeaders {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let authorization = ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .description(Some(
                "The ready `Authorization` value: `<token>` (an empty `token_type`) or \
                 `<token_type> <token>`; `null` for a cookie session, whose token goes in \
                 `Cookie`.",
            ));
        let headers = ObjectBuilder::new()
            .additional_properties(Some(string()))
            .description(Some(
                "The ready headers to send, by name: `{\"Authorization\": \"Bearer …\"}` or \
                 `{\"Cookie\": \"SESSION=…\"}`.",
            ));
        ObjectBuilder::new()
            .property("authorization", authorization)
            .required("authorization")
            .property("headers", headers)
            .required("headers")
            .into()
    }
}

impl utoipa::ToSchema for ReadyHeaders {}

#[cfg(test)]
impl CachedToken {
    /// An entry of account `a` (id 1) issued and expiring `now`, for tests to change.
    pub(crate) fn sample(now: DateTime<Utc>) -> CachedToken {
        CachedToken {
            credential_id: 1,
            account: "a".into(),
            token: "sealed".into(),
            token_type: "Bearer".into(),
            issued_at: now,
            expires_at: now,
            refresh_at: now,
            acquisition_id: "x".into(),
            fence: 0,
        }
    }
}

/// Seconds of life under which a token is not handed out (SPEC §1): `refresh_ahead`, but at
/// most a quarter of the lifetime the token was issued with, so that a portal's short-lived
/// tokens are still served for most of their life instead of causing a login per caller.
pub fn margin(issued_at: DateTime<Utc>, expires_at: DateTime<Utc>, refresh_ahead: f64) -> f64 {
    let life = (expires_at - issued_at).num_milliseconds() as f64 / 1000.0;
    refresh_ahead.min(life.max(0.0) / 4.0)
}

/// One account of a site as cached for selection and login (password sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialEntry {
    pub id: i64,
    pub account: String,
    pub password_encrypted: String,
    pub is_preferred: bool,
    pub is_active: bool,
    /// A blacklist or cooldown kept in the database (SPEC §11).
    #[serde(default)]
    pub blocked_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub block_reason: Option<BlockReason>,
    /// The account's own proxy URL, sealed.
    #[serde(default)]
    pub proxy_encrypted: Option<String>,
}

impl CredentialEntry {
    /// The block in force at `now`, as the database had it when the list was loaded.
    pub fn stored_block(&self, now: DateTime<Utc>) -> Option<(BlockReason, DateTime<Utc>)> {
        match (self.block_reason, self.blocked_until) {
            (Some(reason), Some(until)) if until > now => Some((reason, until)),
            _ => None,
        }
    }
}

/// A mirrored block as stored: `REASON\nUNTIL_MS`.
pub fn encode_block(reason: BlockReason, until: DateTime<Utc>) -> String {
    format!("{}\n{}", reason.as_str(), until.timestamp_millis())
}

/// The block [`encode_block`] wrote; `None` for anything else.
pub fn decode_block(text: &str) -> Option<(BlockReason, DateTime<Utc>)> {
    let (reason, until) = text.split_once('\n')?;
    Some((
        BlockReason::parse(reason)?,
        DateTime::from_timestamp_millis(until.parse().ok()?)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn the_margin_is_refresh_ahead_but_at_most_a_quarter_of_the_life() {
        let issued = Utc::now();
        // A day-long token: the configured 300 s apply.
        assert_eq!(margin(issued, issued + Duration::hours(24), 300.0), 300.0);
        // A 60 s token: 15 s, so that it is served for most of its life.
        assert_eq!(margin(issued, issued + Duration::seconds(60), 300.0), 15.0);
        // A token issued already expired: no margin below zero.
        assert_eq!(margin(issued, issued - Duration::seconds(5), 300.0), 0.0);
    }

    #[test]
    fn a_token_is_fresh_only_above_its_margin() {
        let now = Utc::now();
        let token = CachedToken {
            issued_at: now - Duration::seconds(40),
            expires_at: now + Duration::seconds(20),
            ..CachedToken::sample(now)
        };
        // Life 60 s → margin 15 s; 20 s left is fresh, 10 s left is not.
        assert!(token.is_fresh(now, 300.0));
        assert!(!token.is_fresh(now + Duration::seconds(10), 300.0));
    }

    /// The Redis script that refuses stale writes reads `entry.fence` from the stored JSON
    /// (`src/redis/scripts/token_set.lua`): renaming the field would silently turn fencing off.
    #[test]
    fn the_fence_is_stored_where_the_redis_script_reads_it() {
        let now = Utc::now();
        let token = CachedToken {
            fence: 42,
            ..CachedToken::sample(now)
        };
        let stored = serde_json::to_value(&token).unwrap();
        assert_eq!(stored["fence"], 42);
        assert!(include_str!("../redis/scripts/token_set.lua").contains("entry.fence"));
    }

    /// Issue 21: a cookie session is handed out as a `Cookie` header with no `authorization`;
    /// header tokens as `Authorization`, raw when the scheme is empty (court_zxfw).
    #[test]
    fn ready_headers_follow_the_token_type() {
        let answer = |token_type: &str, token: &str| {
            serde_json::to_value(ReadyHeaders::new(token_type, &Secret::new(token))).unwrap()
        };
        assert_eq!(
            answer("Cookie", "SESSION=s1; ROUTE=r9"),
            serde_json::json!({"authorization": null, "headers": {"Cookie": "SESSION=s1; ROUTE=r9"}})
        );
        assert_eq!(
            answer("Bearer", "t1"),
            serde_json::json!({"authorization": "Bearer t1", "headers": {"Authorization": "Bearer t1"}})
        );
        assert_eq!(
            answer("", "raw"),
            serde_json::json!({"authorization": "raw", "headers": {"Authorization": "raw"}})
        );
        // Issue 26: a recipe's header template.
        assert_eq!(
            answer("X-Access-Token: {token}", "at1"),
            serde_json::json!({"authorization": null, "headers": {"X-Access-Token": "at1"}})
        );
        assert_eq!(
            answer("Cookie: SID={token}", "s2")["headers"],
            serde_json::json!({"Cookie": "SID=s2"})
        );
        let debug = format!("{:?}", ReadyHeaders::new("Bearer", &Secret::new("t1")));
        assert!(!debug.contains("t1"), "{debug}");
    }

    #[test]
    fn a_block_survives_its_encoding_and_garbage_is_no_block() {
        let until = DateTime::from_timestamp_millis(1_900_000_000_123).unwrap();
        let text = encode_block(BlockReason::CaptchaError, until);
        assert_eq!(
            decode_block(&text),
            Some((BlockReason::CaptchaError, until))
        );
        assert_eq!(decode_block("captcha"), None);
        assert_eq!(decode_block("nonsense\n12"), None);
        assert_eq!(decode_block("captcha\nsoon"), None);
    }
}
