//! Cookie sessions (SPEC §13): the cookies a login answer sets (`Set-Cookie`), with their
//! life (`Max-Age` wins over `Expires`, RFC 6265 §5.3), for `token_from = "cookie:NAME"`
//! and `"cookies"`.

use chrono::{DateTime, NaiveDateTime, Utc};

/// One cookie a login answer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// When it expires, if the portal said; `None`: a session cookie.
    pub expires_at: Option<DateTime<Utc>>,
}

impl SetCookie {
    /// Parses one `Set-Cookie` value; `None` when it has no `name=`.
    pub fn parse(header: &str, now: DateTime<Utc>) -> Option<SetCookie> {
        let mut parts = header.split(';');
        let (name, value) = parts.next()?.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let (mut max_age, mut expires) = (None, None);
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            match key.trim().to_ascii_lowercase().as_str() {
                "max-age" => {
                    max_age = val
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .map(|secs| now + chrono::Duration::seconds(secs.min(10 * 365 * 86400)))
                }
                "expires" => expires = http_date(val.trim()),
                _ => {}
            }
        }
        Some(SetCookie {
            name: name.to_string(),
            value: value.trim().trim_matches('"').to_string(),
            expires_at: max_age.or(expires),
        })
    }

    /// Whether the portal is deleting it (expired at once, or empty).
    pub fn is_removal(&self, now: DateTime<Utc>) -> bool {
        self.value.is_empty() || self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The cookies set by an answer, without those it deletes; a later cookie of the same name
/// replaces an earlier one.
pub fn set_cookies(headers: &reqwest::header::HeaderMap) -> Vec<SetCookie> {
    let now = Utc::now();
    let mut cookies: Vec<SetCookie> = Vec::new();
    for value in headers.get_all(reqwest::header::SET_COOKIE) {
        let Some(cookie) = value.to_str().ok().and_then(|v| SetCookie::parse(v, now)) else {
            continue;
        };
        cookies.retain(|c| c.name != cookie.name);
        if !cookie.is_removal(now) {
            cookies.push(cookie);
        }
    }
    cookies
}

/// The `Cookie` header value that sends every one of `cookies` back.
pub fn header_value(cookies: &[SetCookie]) -> String {
    cookies
        .iter()
        .map(|c| format!("{}={}", c.name, c.value))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The shortest life among `cookies`, if any says.
pub fn shortest_life(cookies: &[SetCookie]) -> Option<DateTime<Utc>> {
    cookies.iter().filter_map(|c| c.expires_at).min()
}

/// An HTTP date as cookies carry it: RFC 1123 (`Wed, 21 Oct 2015 07:28:00 GMT`) or the
/// Netscape form with dashes (`Wed, 21-Oct-2015 07:28:00 GMT`).
fn http_date(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc2822(text) {
        return Some(at.with_timezone(&Utc));
    }
    let text = text.trim_end_matches(" GMT").trim_end_matches(" UTC");
    [
        "%a, %d-%b-%Y %H:%M:%S",
        "%a, %d-%b-%y %H:%M:%S",
        "%A, %d-%b-%y %H:%M:%S",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    .map(|at| at.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_wins_over_expires_and_dates_parse() {
        let now = Utc::now();
        let c = SetCookie::parse(
            "SESSION=abc; Path=/; Max-Age=600; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly",
            now,
        )
        .unwrap();
        assert_eq!((c.name.as_str(), c.value.as_str()), ("SESSION", "abc"));
        assert_eq!(c.expires_at, Some(now + chrono::Duration::seconds(600)));
        let c = SetCookie::parse("uid=7; expires=Wed, 21-Oct-2037 07:28:00 GMT", now).unwrap();
        assert_eq!(c.expires_at.unwrap().timestamp(), 2139722880);
        let c = SetCookie::parse("plain=1", now).unwrap();
        assert_eq!(c.expires_at, None);
        assert!(SetCookie::parse("gone=; Max-Age=0", now)
            .unwrap()
            .is_removal(now));
        assert!(SetCookie::parse("novalue", now).is_none());
    }

    #[test]
    fn header_value_and_shortest_life() {
        let now = Utc::now();
        let cookies: Vec<SetCookie> = ["a=1; Max-Age=100", "b=2; Max-Age=50", "c=3"]
            .iter()
            .filter_map(|h| SetCookie::parse(h, now))
            .collect();
        assert_eq!(header_value(&cookies), "a=1; b=2; c=3");
        assert_eq!(
            shortest_life(&cookies),
            Some(now + chrono::Duration::seconds(50))
        );
    }
}
