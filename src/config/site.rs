//! One portal (`[[sites]]`): its name, its login driver and the driver's settings (SPEC §3, §6).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::vault::secret::Secret;

/// The longest site name accepted anywhere (config, API, CLI).
pub const SITE_NAME_MAX: usize = 64;

/// `site_name` everywhere must match `^[A-Za-z0-9_-]{1,64}$`.
pub fn validate_site_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= SITE_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{name}` is not a valid site name: 1 to 64 of A-Z a-z 0-9 _ -"),
        ))
    }
}

/// A proxy URL must be `http://`, `https://`, `socks5://` or `socks5h://` with a host.
pub fn validate_proxy_url(field: &str, url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url).ok();
    let scheme_ok = parsed
        .as_ref()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https" | "socks5" | "socks5h"));
    if scheme_ok && parsed.as_ref().is_some_and(|u| u.host_str().is_some()) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "`{}` is not a proxy URL: http://, https://, socks5:// or socks5h://host:port",
                crate::vault::secret::redact_url(url)
            ),
        ))
    }
}

/// `captcha_solver` (court portals, SPEC §15): a program with its arguments, or `"human"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CaptchaSolverConfig {
    /// `["python3", "/usr/local/lib/tokend/ddddocr_solve.py"]`, run with no shell.
    Program(Vec<String>),
    /// `"human"`: the hand-off of SPEC §13.
    Named(String),
}

impl CaptchaSolverConfig {
    pub fn is_human(&self) -> bool {
        matches!(self, CaptchaSolverConfig::Named(name) if name == "human")
    }
}

/// How tokend logs in to a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// POST the credentials to `login_url` and read the token from the JSON answer.
    Http,
    /// Run an external program (a browser script, say) that prints the token.
    Command,
    /// 人民法院在线服务, spoken natively (SPEC §15): SM2 password, image captcha, JWT.
    #[serde(rename = "court_zxfw")]
    CourtZxfw,
    /// 保全系统 (SPEC §15): a token derived from a `court_zxfw` token through an OAuth code.
    #[serde(rename = "court_baoquan")]
    CourtBaoquan,
    /// A token obtained by exchanging a token of the same account on `from_site` (§13).
    Derived,
    /// A portal's login described by a recipe file (issue 26).
    Recipe,
}

impl DriverKind {
    /// Whether the site's tokens come from another site's token (it has no accounts of its own).
    pub fn is_derived(self) -> bool {
        matches!(self, DriverKind::Derived | DriverKind::CourtBaoquan)
    }
}

/// How the `http` driver encodes the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RequestFormat {
    #[default]
    Json,
    Form,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub name: String,
    pub driver: DriverKind,
    /// `http`: where the credentials are POSTed.
    #[serde(default)]
    pub login_url: String,
    #[serde(default)]
    pub request_format: RequestFormat,
    #[serde(default = "default_username_field")]
    pub username_field: String,
    #[serde(default = "default_password_field")]
    pub password_field: String,
    /// Sent with every login request, next to the credentials.
    #[serde(default)]
    pub extra_fields: BTreeMap<String, serde_json::Value>,
    /// JSON pointer (RFC 6901) to the token in the login answer.
    #[serde(default = "default_token_pointer")]
    pub token_pointer: String,
    /// JSON pointer to the token's life in seconds; when absent from the answer, the JWT
    /// `exp` claim is used, then `cache.default_token_ttl`.
    #[serde(default = "default_expires_in_pointer")]
    pub expires_in_pointer: String,
    #[serde(default = "default_captcha_error_pattern")]
    pub captcha_error_pattern: String,
    #[serde(default = "default_credential_error_pattern")]
    pub credential_error_pattern: String,
    /// `command`: the program and its arguments, run with no shell.
    #[serde(default)]
    pub command: Vec<String>,
    /// How the site chooses among its usable accounts: `best`, `round_robin`, `least_recent`.
    #[serde(default, skip_serializing_if = "is_best")]
    pub selection: crate::policy::selection::Strategy,
    /// The proxy the site's logins go through (`http://`, `https://`, `socks5://`), unless
    /// an account has its own.
    #[serde(
        default,
        skip_serializing_if = "crate::vault::secret::Secret::is_empty"
    )]
    pub proxy: crate::vault::secret::Secret,
    /// Whether the site's slot limit adapts to the portal's load (AIMD, SPEC §12).
    #[serde(default, skip_serializing_if = "is_false")]
    pub adaptive_concurrency: bool,
    /// Successful logins in a row after which an adaptive limit rises by one.
    #[serde(default = "default_increase_after")]
    pub adaptive_increase_after: u32,
    /// A regex over login answers that means "too many requests" (e.g. `操作频繁|too many`):
    /// such an answer is a network error and a congestion signal, like a 429.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rate_limit_pattern: String,
    /// Logins one account may make in any sliding hour (0: unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub login_budget_per_account_per_hour: u32,
    /// Logins the whole site may make in any sliding hour (0: unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub login_budget_per_site_per_hour: u32,
    /// Overrides `circuit.failure_threshold` for this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_failure_threshold: Option<u32>,
    /// Overrides `circuit.open_seconds` for this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_open_seconds: Option<f64>,
    /// Overrides `circuit.site_changed_threshold` for this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_changed_threshold: Option<u32>,
    /// Where tokens in use are checked in the background (SPEC §13); empty: never.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub probe_url: String,
    /// The header a probe sends, `Name: value` with `{token}`. Empty: `Authorization: Bearer
    /// {token}`, or `Cookie: {token}` for a cookie session.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub probe_header: String,
    /// Seconds within which every token in use is probed once (0: no probes).
    #[serde(default, skip_serializing_if = "is_zero_seconds")]
    pub probe_interval: f64,
    /// A regex over the probe's answer that means "this token is no longer valid", next to
    /// 401 and 403.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub probe_invalid_pattern: String,
    /// `http`: where the token is in the login answer: `json` (at `token_pointer`),
    /// `cookie:NAME` or `cookies` (the whole `Cookie` header value).
    #[serde(default, skip_serializing_if = "TokenFrom::is_json")]
    pub token_from: TokenFrom,
    /// The scheme consumers put before the token in `Authorization` (default `Bearer`;
    /// `court_zxfw`: none, the token is sent raw). Empty: no scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// `recipe`: the recipe's path, or the name of a built-in recipe (`tokend recipe list`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recipe: String,
    /// `court_zxfw`, `court_baoquan`, `recipe`: the portal's API root (each driver or recipe
    /// has its default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_url: String,
    /// `court_zxfw`: who reads the captcha: a program (`["python3", "solve.py"]`, image bytes
    /// on stdin, the text on stdout) or `"human"` (the hand-off of SPEC §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captcha_solver: Option<CaptchaSolverConfig>,
    /// `"human"`: a captcha the program could not read goes to a person. Default: none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub captcha_fallback: String,
    /// Seconds a captcha program may run before its process group is killed.
    #[serde(default = "default_solver_timeout")]
    pub captcha_solver_timeout: f64,
    /// `derived`, `court_baoquan`: the site whose token (of the same account) is exchanged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from_site: String,
    /// `derived`: where the parent's token is exchanged for this site's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exchange_url: String,
    /// `derived`: `GET` or `POST` (default).
    #[serde(default = "default_exchange_method")]
    pub exchange_method: String,
    /// `derived`: the header that carries the parent's token, `{token}` standing for it.
    #[serde(default = "default_exchange_header")]
    pub exchange_header: String,
}

/// Where the `http` driver takes the token from (`token_from`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum TokenFrom {
    /// The JSON answer, at `token_pointer`.
    #[default]
    Json,
    /// The value of one cookie the login answer set.
    Cookie(String),
    /// Every cookie the login answer set, as one `Cookie` header value.
    Cookies,
}

impl TokenFrom {
    fn is_json(&self) -> bool {
        *self == TokenFrom::Json
    }
}

impl TryFrom<String> for TokenFrom {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        match text.as_str() {
            "json" => Ok(TokenFrom::Json),
            "cookies" => Ok(TokenFrom::Cookies),
            other => match other.strip_prefix("cookie:") {
                Some(name) if !name.trim().is_empty() => {
                    Ok(TokenFrom::Cookie(name.trim().to_string()))
                }
                _ => Err(format!(
                    "`{other}` is not one of \"json\", \"cookie:NAME\", \"cookies\""
                )),
            },
        }
    }
}

impl From<TokenFrom> for String {
    fn from(from: TokenFrom) -> String {
        match from {
            TokenFrom::Json => "json".into(),
            TokenFrom::Cookie(name) => format!("cookie:{name}"),
            TokenFrom::Cookies => "cookies".into(),
        }
    }
}

fn is_zero_seconds(value: &f64) -> bool {
    *value == 0.0
}

fn default_solver_timeout() -> f64 {
    30.0
}

fn default_exchange_method() -> String {
    "POST".into()
}

fn default_exchange_header() -> String {
    "Authorization: Bearer {token}".into()
}

fn is_best(strategy: &crate::policy::selection::Strategy) -> bool {
    *strategy == crate::policy::selection::Strategy::Best
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn default_increase_after() -> u32 {
    5
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn default_username_field() -> String {
    "username".into()
}
fn default_password_field() -> String {
    "password".into()
}
fn default_token_pointer() -> String {
    "/data/token".into()
}
fn default_expires_in_pointer() -> String {
    "/data/expires_in".into()
}
fn default_captcha_error_pattern() -> String {
    "captcha|验证码".into()
}
fn default_credential_error_pattern() -> String {
    "password|密码|账号".into()
}

impl SiteConfig {
    /// Whether the site's tokens come from another site's token (it has no accounts of its
    /// own): a `derived` or `court_baoquan` site, or a recipe site with `from_site` (its
    /// recipe reads the parent's token as `parent_token`, issue 26).
    pub fn is_derived(&self) -> bool {
        self.driver.is_derived()
            || (self.driver == DriverKind::Recipe && !self.from_site.is_empty())
    }

    /// The scheme of the site's tokens: `Cookie` for a cookie session (`token_from =
    /// "cookies"`), else the site's `token_type`, else `Bearer` (none for `court_zxfw`, whose
    /// consumers send the token raw). [`ready_header`] turns it into the header to send.
    pub fn token_type(&self) -> &str {
        match (&self.token_type, self.driver, &self.token_from) {
            (_, _, TokenFrom::Cookies) => COOKIE_SESSION,
            (Some(kind), _, _) => kind.trim(),
            (None, DriverKind::CourtZxfw, _) => "",
            (None, _, _) => "Bearer",
        }
    }

    /// Checks the keys every driver reads; `index` is the site's position in `[[sites]]`,
    /// used to name the key. The court keys ([`super::court`]) and then
    /// [`SiteConfig::validate_driver`] come next.
    pub fn validate_keys(&self, index: usize) -> Result<()> {
        let key = |field: &str| format!("sites[{index}].{field}");
        validate_site_name(&key("name"), &self.name)
            .map_err(|e| Error::config(key("name"), e.to_string()))?;
        if !self.proxy.is_empty() {
            validate_proxy_url(&key("proxy"), self.proxy.expose())
                .map_err(|e| Error::config(key("proxy"), e.to_string()))?;
        }
        if !(1..=1000).contains(&self.adaptive_increase_after) {
            return Err(Error::config(
                key("adaptive_increase_after"),
                format!(
                    "must be from 1 to 1000, not {}",
                    self.adaptive_increase_after
                ),
            ));
        }
        for (field, pattern) in [
            ("captcha_error_pattern", &self.captcha_error_pattern),
            ("credential_error_pattern", &self.credential_error_pattern),
            ("rate_limit_pattern", &self.rate_limit_pattern),
            ("probe_invalid_pattern", &self.probe_invalid_pattern),
        ] {
            regex::Regex::new(pattern)
                .map_err(|e| Error::config(key(field), format!("not a valid regex: {e}")))?;
        }
        for (field, pointer) in [
            ("token_pointer", &self.token_pointer),
            ("expires_in_pointer", &self.expires_in_pointer),
        ] {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(Error::config(
                    key(field),
                    format!("`{pointer}` is not a JSON pointer: it must start with `/`"),
                ));
            }
        }
        if self.circuit_failure_threshold.is_some() || self.circuit_open_seconds.is_some() {
            super::sections::validate_circuit(
                &key("circuit_"),
                self.circuit_failure_threshold.unwrap_or(1),
                self.circuit_open_seconds.unwrap_or(1.0),
            )?;
        }
        if let Some(threshold) = self.site_changed_threshold {
            super::sections::validate_site_changed(&key("site_changed_threshold"), threshold)?;
        }
        self.validate_probe(index)
    }

    /// Checks the keys of the `http` and `command` drivers.
    pub fn validate_driver(&self, index: usize) -> Result<()> {
        let key = |field: &str| format!("sites[{index}].{field}");
        match self.driver {
            DriverKind::CourtZxfw | DriverKind::CourtBaoquan | DriverKind::Derived => {}
            DriverKind::Recipe => {
                crate::drivers::recipe::recipe_of(self)
                    .map_err(|e| Error::config(key("recipe"), e))?;
            }
            DriverKind::Http => {
                if !(self.login_url.starts_with("http://")
                    || self.login_url.starts_with("https://"))
                {
                    return Err(Error::config(
                        key("login_url"),
                        "driver \"http\" needs an http:// or https:// login_url",
                    ));
                }
                if self.token_pointer.is_empty() {
                    return Err(Error::config(key("token_pointer"), "must not be empty"));
                }
                if !self.command.is_empty() {
                    return Err(Error::config(
                        key("command"),
                        "is only for driver \"command\"",
                    ));
                }
            }
            DriverKind::Command => {
                if self.token_from != TokenFrom::Json {
                    return Err(Error::config(
                        key("token_from"),
                        "is only for driver \"http\"",
                    ));
                }
                if self.command.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err(Error::config(
                        key("command"),
                        "driver \"command\" needs a program: command = [\"/path/to/program\", ...]",
                    ));
                }
                if !self.login_url.is_empty() {
                    return Err(Error::config(
                        key("login_url"),
                        "is only for driver \"http\"",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl SiteConfig {
    /// The probe keys (SPEC §13): an interval needs a URL and a header with a name.
    fn validate_probe(&self, index: usize) -> Result<()> {
        let key = |field: &str| format!("sites[{index}].{field}");
        let interval = self.probe_interval;
        if !(interval.is_finite() && (0.0..=86_400.0).contains(&interval)) {
            return Err(Error::config(
                key("probe_interval"),
                format!("must be from 0 (off) to 86400 seconds, not {interval}"),
            ));
        }
        if interval > 0.0
            && !(self.probe_url.starts_with("http://") || self.probe_url.starts_with("https://"))
        {
            return Err(Error::config(
                key("probe_url"),
                "probe_interval needs an http:// or https:// probe_url",
            ));
        }
        if !self.probe_header.is_empty() {
            let name = self.probe_header.split_once(':').map(|(n, _)| n.trim());
            let valid = name.is_some_and(|n| {
                !n.is_empty() && reqwest::header::HeaderName::from_bytes(n.as_bytes()).is_ok()
            });
            if !valid {
                return Err(Error::config(
                    key("probe_header"),
                    "must be `Name: value`, e.g. \"Authorization: Bearer {token}\"",
                ));
            }
        }
        Ok(())
    }

    /// The header a probe sends, before `{token}` is filled in.
    pub fn probe_header_template(&self) -> std::borrow::Cow<'_, str> {
        if !self.probe_header.is_empty() {
            return self.probe_header.as_str().into();
        }
        // A recipe says itself which header its consumers send (checked at start).
        if self.driver == DriverKind::Recipe {
            if let Ok(recipe) = crate::drivers::recipe::format::Recipe::load(&self.recipe) {
                return recipe.header.into();
            }
        }
        // The header callers are handed (`Cookie: {token}` for a cookie session,
        // `Authorization: Bearer {token}`, the token raw for court_zxfw).
        let (name, value) = ready_header(self.token_type(), "{token}");
        format!("{name}: {}", value.expose()).into()
    }
}

/// The `token_type` of a cookie session: its token is a `Cookie` header value.
pub const COOKIE_SESSION: &str = "Cookie";

/// The header a consumer sends with `token` of scheme `token_type` (issue 21): `Cookie:
/// <token>` for a cookie session, `Authorization: <token>` when the scheme is empty
/// (court_zxfw), else `Authorization: <token_type> <token>`. Acquire answers (`headers`,
/// `authorization`), `tokend token get --header` and the default probe header all come from
/// here. A `token_type` that is itself a header template, `Name: value` with `{token}` (a
/// recipe's `token.header`, issue 26: `X-Access-Token: {token}`), is that header.
pub fn ready_header(token_type: &str, token: &str) -> (String, Secret) {
    if let Some((name, value)) = header_template(token_type) {
        return (
            name.to_string(),
            Secret::new(value.replace("{token}", token)),
        );
    }
    match token_type.trim() {
        scheme if scheme.eq_ignore_ascii_case(COOKIE_SESSION) => {
            ("Cookie".into(), Secret::new(token))
        }
        "" => ("Authorization".into(), Secret::new(token)),
        scheme => (
            "Authorization".into(),
            Secret::new(format!("{scheme} {token}")),
        ),
    }
}

/// `Name: value {token}` as its name and value template; `None` for a plain scheme.
fn header_template(token_type: &str) -> Option<(&str, &str)> {
    let (name, value) = token_type.split_once(':')?;
    let name = name.trim();
    let valid = value.contains("{token}")
        && reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok();
    valid.then_some((name, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names() {
        for good in ["court_zxfw", "court-baoquan", "A1", &"x".repeat(64)] {
            assert!(validate_site_name("site_name", good).is_ok(), "{good}");
        }
        for bad in ["", "court zxfw", "法院", "a/b", "a.b", &"x".repeat(65)] {
            assert!(validate_site_name("site_name", bad).is_err(), "{bad}");
        }
    }

    /// A probe sends what callers send: the ready `Authorization` value of the site.
    #[test]
    fn the_default_probe_header_is_the_ready_authorization_value() {
        let site = |extra: &str| -> SiteConfig {
            toml::from_str(&format!("name = \"s\"\n{extra}")).unwrap()
        };
        let http = site("driver = \"http\"\nlogin_url = \"http://x/login\"");
        assert_eq!(
            http.probe_header_template(),
            "Authorization: Bearer {token}"
        );
        let zxfw = site("driver = \"court_zxfw\"");
        assert_eq!(zxfw.probe_header_template(), "Authorization: {token}");
        let typed = site("driver = \"http\"\ntoken_type = \"Token\"");
        assert_eq!(
            typed.probe_header_template(),
            "Authorization: Token {token}"
        );
        let cookies = site("driver = \"http\"\ntoken_from = \"cookies\"");
        assert_eq!(cookies.probe_header_template(), "Cookie: {token}");
        let recipe = site("driver = \"recipe\"\nrecipe = \"edelivery\"");
        assert_eq!(recipe.probe_header_template(), "X-Access-Token: {token}");
        let own = site("driver = \"http\"\nprobe_header = \"X-Token: {token}\"");
        assert_eq!(own.probe_header_template(), "X-Token: {token}");
    }
}
