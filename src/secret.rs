//! Secret values (passwords, tokens, URLs with passwords) and the only forms in which a token
//! may appear in logs, history or API metadata: a SHA-256 fingerprint and a redacted preview.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A string that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it (a login, a comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// SHA-256 of the token, lowercase hex: lets operators match a token without seeing it.
pub fn fingerprint(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The first four and last three characters of a long token (`eyJh…x9Q`); short tokens are
/// fully masked, since a preview of them would give away too much.
pub fn redact(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < 16 {
        return "…".to_string();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}…{tail}")
}

/// Replaces every occurrence of each secret in `text` by `***` (driver stderr, portal error
/// bodies). Secrets shorter than four characters are left alone: masking them would mangle
/// ordinary words without protecting anything.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.chars().count() >= 4) {
        out = out.replace(secret, "***");
    }
    out
}

/// Hides the password of a URL (`redis://:pw@host`, `postgres://u:pw@host/db`) for logs.
///
/// A password may hold `/`, `?`, `#` and `@` unencoded (a value pasted into `REDIS_URL` or
/// `DATABASE_URL`), so the user information is taken to end at the *last* `@` of the URL,
/// and everything after the first `:` before it is masked. Where a later part of the URL holds
/// an `@`, more is masked than needed: hiding too much is the safe mistake.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    // A user name holds none of these; where one appears, it is part of a password.
    let plain = |user: &str| !user.contains(['/', '?', '#', '@']);
    match userinfo.split_once(':') {
        Some((user, _password)) if plain(user) => format!("{scheme}://{user}:***@{host}"),
        None if plain(userinfo) => format!("{scheme}://{userinfo}@{host}"),
        _ => format!("{scheme}://***@{host}"),
    }
}

/// The pieces of a URL's password that a driver may echo in an error message (libpq quotes
/// the part of a URL it could not parse, which starts or ends inside a password holding `?`,
/// `#` or `@`): the password, and every part of it that starts or ends at a URL delimiter,
/// longest first. Pieces under three characters are left out.
pub fn url_password_pieces(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let Some((userinfo, _)) = rest.rsplit_once('@') else {
        return Vec::new();
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return Vec::new();
    };
    let cuts: Vec<usize> = password
        .char_indices()
        .filter(|(_, c)| "/?#@:&=+".contains(*c))
        .map(|(i, _)| i)
        .collect();
    let mut pieces = vec![password.to_string()];
    for &cut in &cuts {
        pieces.push(password[..cut].to_string());
        pieces.push(password[cut + 1..].to_string());
    }
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().flat_map(|&c| [c, c + 1]));
    bounds.push(password.len());
    for pair in bounds.chunks(2) {
        if let [start, end] = pair {
            pieces.push(password[*start..*end].to_string());
        }
    }
    pieces.retain(|p| p.chars().count() >= 3);
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    pieces.dedup();
    pieces
}

/// `text` with every piece of `pieces` replaced by `***`.
pub fn mask_pieces(text: &str, pieces: &[String]) -> String {
    let mut out = text.to_string();
    for piece in pieces {
        out = out.replace(piece.as_str(), "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_shows() {
        let s = Secret::new("hunter22");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter22");
    }

    #[test]
    fn redacted_token_keeps_only_ends() {
        let token = "eyJhbGciOiJIUzI1NiJ9.payload.signature-x9Q";
        assert_eq!(redact(token), "eyJh…x9Q");
        assert_eq!(redact("short"), "…");
        assert_eq!(fingerprint("abc").len(), 64);
    }

    #[test]
    fn scrub_and_url() {
        assert_eq!(
            scrub("bad password s3cret!", &["s3cret!"]),
            "bad password ***"
        );
        assert_eq!(
            redact_url("postgres://app:pw@db.local:5432/tokend"),
            "postgres://app:***@db.local:5432/tokend"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("sqlite://tokend.db"), "sqlite://tokend.db");
    }

    #[test]
    fn url_passwords_with_url_characters_are_masked() {
        let password = "aB/c+d=e@f:g?h#i";
        for url in [
            format!("redis://:{password}@cache.local:6379/0"),
            format!("postgres://app:{password}@db.local:5432/tokend?sslmode=require"),
            format!("redis://{password}@cache.local"),
        ] {
            let shown = redact_url(&url);
            for part in ["aB", "c+d=e", "g?h", "#i"] {
                assert!(!shown.contains(part), "{shown} shows part of the password");
            }
            assert!(
                shown.ends_with("cache.local:6379/0")
                    || shown.contains("db.local")
                    || shown.ends_with("cache.local"),
                "{shown}"
            );
        }
        assert_eq!(
            redact_url("postgres://app:p/w@db.local/tokend"),
            "postgres://app:***@db.local/tokend"
        );
        // What libpq says about such a URL quotes a piece of the password.
        let url = "postgres://app:aB/c+d=e@f:g?h#i@db.local/tokend";
        let libpq =
            "missing key/value separator \"=\" in URI query parameter: \"h#i@db.local/tokend\"";
        let masked = mask_pieces(libpq, &url_password_pieces(url));
        assert!(!masked.contains("h#i"), "{masked}");
        assert!(masked.contains("db.local/tokend"), "{masked}");
    }
}
