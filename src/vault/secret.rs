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
/// an `@`, more is masked than needed: hiding too much is the safe mistake. A URL may list
/// several hosts (`postgres://u:pw@h1:5432,h2:5433/db`, libpq's failover syntax): they are
/// all shown. libpq also takes the password as a query parameter (`?password=…`): its value
/// is masked too.
pub fn redact_url(url: &str) -> String {
    hide_query_password(&redact_userinfo(url))
}

/// [`redact_url`]'s masking of the user information.
fn redact_userinfo(url: &str) -> String {
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

/// `url` with the value of its `password` query parameter masked. The query starts at the
/// first `?` after the user information (which may hold a `?` of its own).
fn hide_query_password(url: &str) -> String {
    let after_userinfo = url.rfind('@').map_or(0, |at| at + 1);
    let Some(mark) = url[after_userinfo..].find('?').map(|i| after_userinfo + i) else {
        return url.to_string();
    };
    let (base, query) = (&url[..mark], &url[mark + 1..]);
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some(("password", _)) => "password=***".to_string(),
            _ => param.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// The value of a URL's `password` query parameter, if it has one.
fn query_password(url: &str) -> Option<&str> {
    let after_userinfo = url.rfind('@').map_or(0, |at| at + 1);
    let (_, query) = url[after_userinfo..].split_once('?')?;
    query
        .split('&')
        .find_map(|param| param.strip_prefix("password="))
        .filter(|password| !password.is_empty())
}

/// A URL as logged where all of it but the place may be a credential (a webhook's URL): the
/// user information and the query and fragment are masked (`https://***@host/path?***`).
pub fn redact_url_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    // As in `redact_url`, the user information ends at the last `@` (a password may hold `/`).
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => rest.to_string(),
    };
    let place = match rest.find(['?', '#']) {
        Some(at) => format!("{}?***", &rest[..at]),
        None => rest,
    };
    if scheme.is_empty() {
        place
    } else {
        format!("{scheme}://{place}")
    }
}

/// A webhook's or chat robot's URL as logged: its scheme, host and port, and only *whether*
/// a path, query or user information follows (`https://open.feishu.cn/***`,
/// `https://oapi.dingtalk.com/***?***`). Robots carry their key in the path (Feishu's
/// `/open-apis/bot/v2/hook/<key>`, Slack's, Discord's) or the query (WeCom's `key`,
/// DingTalk's `access_token`), and no rule tells a key's segment from a plain one: the host
/// says where events go, the log line's target which table of the config sent them. A URL
/// that does not parse is shown as `***`.
pub fn redact_webhook_url(url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return "***".into();
    };
    let Some(host) = parsed.host_str() else {
        return "***".into();
    };
    let mut shown = format!("{}://", parsed.scheme());
    if !parsed.username().is_empty() || parsed.password().is_some() {
        shown.push_str("***@");
    }
    shown.push_str(host);
    if let Some(port) = parsed.port() {
        shown.push_str(&format!(":{port}"));
    }
    if !matches!(parsed.path(), "" | "/") {
        shown.push_str("/***");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        shown.push_str("?***");
    }
    shown
}

/// The pieces of a URL's password that a driver may echo in an error message (libpq quotes
/// the part of a URL it could not parse, which starts or ends inside a password holding `?`,
/// `#` or `@`): the password (of the user information or the `password` query parameter),
/// and every part of it that starts or ends at a URL delimiter,
/// longest first. Pieces under three characters are left out.
pub fn url_password_pieces(url: &str) -> Vec<String> {
    let userinfo_password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password);
    let mut pieces: Vec<String> = userinfo_password
        .into_iter()
        .chain(query_password(url))
        .flat_map(password_pieces)
        .collect();
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    pieces.dedup();
    pieces
}

/// A password and every part of it that starts or ends at a URL delimiter, of three
/// characters or more.
fn password_pieces(password: &str) -> Vec<String> {
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
    pieces
}

/// `text` (a portal's message, an answer that is not JSON) with every run of 20 or more
/// token characters that holds a digit, and every run of 32 or more, replaced by its length
/// (`<24 chars>`): whatever shape a token has, it is not logged in full.
pub fn hide_tokens(text: &str) -> String {
    static RUN: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let Some(run) = RUN.get_or_init(|| regex::Regex::new(r"[A-Za-z0-9._~+/=%-]{20,}").ok()) else {
        return format!("<{} chars>", text.chars().count());
    };
    run.replace_all(text, |found: &regex::Captures<'_>| {
        let word = &found[0];
        if word.len() >= 32 || word.chars().any(|c| c.is_ascii_digit()) {
            format!("<{} chars>", word.len())
        } else {
            word.to_string()
        }
    })
    .into_owned()
}

/// Every form in which a portal, a proxy or a script may echo `secret`: as is; JSON-escaped
/// once, twice and three times (also with non-ASCII as `\uXXXX`, as Python writes it); each
/// of those HTML-escaped; URL-encoded as a form, as RFC 3986 and as `encodeURIComponent` do
/// (`+` or `%20` for a space, either case of hex); base64 (standard and URL-safe, with and
/// without padding). Longest first, so that a longer form is masked whole.
pub fn echoed_forms(secret: &str) -> Vec<String> {
    use base64::Engine;
    let json = |s: &str| {
        serde_json::to_string(s)
            .map(|j| j[1..j.len() - 1].to_string())
            .unwrap_or_default()
    };
    let mut forms = vec![secret.to_string()];
    // Escaped up to three times: a request body (once) echoed in a JSON message (twice) that
    // is itself quoted in a JSON log or answer (three times).
    let (mut escaped, mut ascii) = (json(secret), ascii_json(&json(secret)));
    for _ in 0..3 {
        forms.push(escaped.clone());
        forms.push(ascii.clone());
        (escaped, ascii) = (json(&escaped), json(&ascii));
    }
    // Any of these in an HTML page (`'` as `&#39;` or `&#x27;`).
    let html: Vec<String> = forms
        .iter()
        .flat_map(|text| {
            let escaped = html_escape(text);
            [escaped.replace("&#39;", "&#x27;"), escaped]
        })
        .collect();
    forms.extend(html);
    // What each encoder leaves as it is, besides letters and digits.
    for keep in ["-_.*", "-_.~", "-_.!~*'()"] {
        let encoded = percent_encode(secret, keep);
        let plus = encoded.replace("%20", "+");
        forms.extend([lower_hex(&encoded), lower_hex(&plus), encoded, plus]);
    }
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        let encoded = engine.encode(secret);
        forms.push(encoded.trim_end_matches('=').to_string());
        forms.push(encoded);
    }
    forms.retain(|f| f.chars().count() >= 4);
    longest_first(&mut forms);
    forms
}

fn longest_first(forms: &mut Vec<String>) {
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
}

/// Replaces every [`echoed_forms`] of each secret in `text` by `***`; secrets shorter than
/// four characters are left alone (see [`scrub`]).
pub fn mask_echoes(text: &str, secrets: &[&str]) -> String {
    let mut forms: Vec<String> = secrets
        .iter()
        .filter(|s| s.chars().count() >= 4)
        .flat_map(|s| echoed_forms(s))
        .collect();
    longest_first(&mut forms);
    mask_pieces(text, &forms)
}

/// A JSON-escaped string with every non-ASCII character as `\uXXXX` (UTF-16, lowercase).
fn ascii_json(escaped: &str) -> String {
    let mut out = String::new();
    for c in escaped.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// `text` percent-encoded (upper-case hex, a space as `%20`), but for ASCII letters, digits
/// and the characters of `keep`.
fn percent_encode(text: &str, keep: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || keep.as_bytes().contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The HTML-escaped form of a string (`&<>"'`).
fn html_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Lower-case hex in `%XX` escapes (`%2F` → `%2f`).
fn lower_hex(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
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
    fn webhook_urls_hide_userinfo_and_query() {
        assert_eq!(
            redact_url_credentials("https://u:p@hooks.local/h?key=SECRET#x"),
            "https://***@hooks.local/h?***"
        );
        assert_eq!(
            redact_url_credentials("http://127.0.0.1:9/hook"),
            "http://127.0.0.1:9/hook"
        );
    }

    #[test]
    fn multi_host_urls_show_every_host_and_no_password() {
        let url = "postgres://u:secret@h1:5432,h2:5433/db?target_session_attrs=read-write";
        assert_eq!(
            redact_url(url),
            "postgres://u:***@h1:5432,h2:5433/db?target_session_attrs=read-write"
        );
        assert_eq!(url_password_pieces(url), ["secret"]);
        // libpq's other place for a password: a query parameter.
        let url = "postgresql://h1,h2:5433/db?sslmode=require&password=s3cr?t&connect_timeout=2";
        let shown = redact_url(url);
        assert_eq!(
            shown,
            "postgresql://h1,h2:5433/db?sslmode=require&password=***&connect_timeout=2"
        );
        assert!(url_password_pieces(url).contains(&"s3cr?t".to_string()));
        // Both at once, and a `?` inside the user information's password.
        let url = "postgres://u:a?b/c@h1,h2/db?password=other-pw";
        let shown = redact_url(url);
        assert_eq!(shown, "postgres://u:***@h1,h2/db?password=***");
        let pieces = url_password_pieces(url);
        assert!(pieces.contains(&"a?b/c".to_string()), "{pieces:?}");
        assert!(pieces.contains(&"other-pw".to_string()), "{pieces:?}");
        assert_eq!(
            redact_url("postgres://h1,h2/db?passwords=x"),
            "postgres://h1,h2/db?passwords=x",
            "only `password` itself is a password"
        );
    }

    #[test]
    fn robot_urls_show_only_their_host() {
        let feishu =
            "https://open.feishu.cn/open-apis/bot/v2/hook/2f6c1a9e-77b4-4e0b-9a43-5d1c0b8e7f21";
        assert_eq!(redact_webhook_url(feishu), "https://open.feishu.cn/***");
        assert_eq!(
            redact_webhook_url("https://oapi.dingtalk.com/robot/send?access_token=abc123&x=1"),
            "https://oapi.dingtalk.com/***?***"
        );
        assert_eq!(
            redact_webhook_url("http://u:p@127.0.0.1:9001/hook#frag"),
            "http://***@127.0.0.1:9001/***?***"
        );
        assert_eq!(
            redact_webhook_url("http://127.0.0.1:9/"),
            "http://127.0.0.1:9"
        );
        assert_eq!(redact_webhook_url("not a url/with-KEY"), "***");
    }

    #[test]
    fn every_echoed_form_is_masked() {
        let password = "p \"w<>&é'x";
        let echoes = [
            "p \\\"w<>&é'x".to_string(),
            "p \\\\\\\"w<>&é'x".to_string(),
            "p \\\"w<>&\\u00e9'x".to_string(),
            "p+%22w%3C%3E%26%C3%A9%27x".to_string(),
            "p%20%22w%3c%3e%26%c3%a9%27x".to_string(),
            "p%20%22w%3C%3E%26%C3%A9'x".to_string(),
            "p &quot;w&lt;&gt;&amp;é&#39;x".to_string(),
            "p &quot;w&lt;&gt;&amp;é&#x27;x".to_string(),
            {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(password)
            },
        ];
        for echo in echoes {
            let masked = mask_echoes(&format!("got [{echo}]"), &[password]);
            assert_eq!(masked, "got [***]", "{echo}");
        }
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
