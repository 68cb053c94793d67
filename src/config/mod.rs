//! Configuration (SPEC §3): an optional TOML file, then environment variables, which win.
//!
//! Every key has a default, so tokend runs with no file at all. Unknown keys, wrong types and
//! bad values stop start-up with an [`Error::Config`] that names the key (`concurrency.lock_timeout`,
//! `sites[1].driver`, `REDIS_PORT`). The checked [`Config`] is shared as `Arc<Config>`.

pub mod court;
mod notify;
mod sections;
mod site;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use notify::NotifyConfig;
pub use sections::*;
pub use site::TokenFrom;
pub use site::{
    ready_header, validate_proxy_url, validate_site_name, DriverKind, RequestFormat, SiteConfig,
    COOKIE_SESSION, SITE_NAME_MAX,
};

use crate::error::{Error, Result};
use crate::vault::secret::Secret;

/// Every environment variable tokend reads that is a secret or may hold one (a URL with a
/// password), with the parts of a Redis URL: a login program and a captcha solver are started
/// without them (`crate::drivers::process`). A variable added to `apply_env` belongs here
/// (a test checks it).
pub const SECRET_ENV: [&str; 14] = [
    "TOKEND_SECRET_KEY",
    "TOKEND_ADMIN_TOKEN",
    "TOKEND_METRICS_TOKEN",
    "TOKEND_WEBHOOK_SECRET",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_PASSWORD",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_DB",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_CLUSTER",
];

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub security: SecurityConfig,
    pub concurrency: ConcurrencyConfig,
    pub retry: RetryConfig,
    pub cache: CacheConfig,
    pub accounts: AccountsConfig,
    pub circuit: CircuitConfig,
    pub alerts: AlertsConfig,
    pub history: HistoryConfig,
    pub notify: NotifyConfig,
    pub sites: Vec<SiteConfig>,
}

impl Config {
    /// Loads the file at `path` (if any), applies the process environment and checks the result.
    ///
    /// Relative paths (the SQLite file, the key file, the spool) from the file or its defaults
    /// are resolved against the file's folder, so that every command run with the same
    /// `--config` uses the same data wherever it is run from; those from the environment (and
    /// all of them when there is no file) against the current folder.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        let (text, folder) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::config("--config", format!("{}: {e}", path.display())))?;
                // Canonical, so that the paths named in messages read plainly (no `../`).
                let file = std::fs::canonicalize(path).unwrap_or_else(|_| cwd.join(path));
                let folder = file.parent().map(Path::to_path_buf);
                (Some(text), folder.unwrap_or_else(|| cwd.clone()))
            }
            None => (None, cwd.clone()),
        };
        let mut config = match text {
            Some(text) => Config::parse(&text)?,
            None => Config::default(),
        };
        config.resolve_paths(&folder);
        config.apply_env(&|name| std::env::var(name).ok())?;
        config.resolve_paths(&cwd);
        config.validate()?;
        Ok(config)
    }

    /// Makes the relative paths of the database URL, the key file and the spool absolute,
    /// against `base`; absolute ones are left alone.
    pub fn resolve_paths(&mut self, base: &Path) {
        let url = self.database.url.expose();
        if let Some(file) = url.strip_prefix("sqlite://") {
            let special = file.is_empty() || file.starts_with(':') || file.starts_with("file:");
            if !special && Path::new(file).is_relative() {
                let absolute = base.join(file);
                self.database.url = Secret::new(format!("sqlite://{}", absolute.display()));
            }
        }
        if self.security.key_file.is_relative() {
            self.security.key_file = base.join(&self.security.key_file);
        }
        if self.history.spool_file.is_relative() {
            self.history.spool_file = base.join(&self.history.spool_file);
        }
        // A recipe file (issue 26), unless it names a built-in recipe.
        let built_in = |name: &str| {
            crate::drivers::recipe::format::BUILT_IN
                .iter()
                .any(|(n, _)| *n == name)
        };
        for site in &mut self.sites {
            let file = Path::new(&site.recipe);
            if !site.recipe.is_empty() && !built_in(&site.recipe) && file.is_relative() {
                site.recipe = base.join(file).display().to_string();
            }
        }
    }

    /// Builds a checked config from the file text and an environment lookup (injected, so that
    /// tests need not touch the process environment).
    pub fn from_sources(
        text: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let mut config = match text {
            Some(text) => Config::parse(text)?,
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML; an error names the dotted key where it happened.
    pub fn parse(text: &str) -> Result<Config> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| syntax_error(text, &e))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().message().trim_end().to_string();
            if key == "." {
                return Error::config("config file", message);
            }
            // A type error quotes the value (`invalid type: string "…"`): not a secret's.
            let message = if is_secret_key(&key) {
                without_quoted_values(&message)
            } else {
                message
            };
            Error::config(key, message)
        })
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(url) = get("DATABASE_URL") {
            self.database.url = Secret::new(url);
        }
        if let Some(token) = get("TOKEND_ADMIN_TOKEN") {
            self.server.admin_token = Secret::new(token);
        }
        if let Some(token) = get("TOKEND_METRICS_TOKEN") {
            self.server.metrics_tokens.push(Secret::new(token));
        }
        if let Some(key) = get("TOKEND_SECRET_KEY") {
            self.security.secret_key = Some(Secret::new(key));
        }
        if let Some(secret) = get("TOKEND_WEBHOOK_SECRET") {
            self.notify.webhook_secret = Secret::new(secret);
        }
        if let Some(url) = get("REDIS_URL") {
            self.redis.url = Secret::new(url);
        } else if let Some(host) = get("REDIS_HOST") {
            let port = match get("REDIS_PORT") {
                Some(p) => p.parse::<u16>().map_err(|_| {
                    Error::config("REDIS_PORT", format!("`{p}` is not a port number"))
                })?,
                None => 6379,
            };
            let db = match get("REDIS_DB") {
                Some(d) => d.parse::<u32>().map_err(|_| {
                    Error::config("REDIS_DB", format!("`{d}` is not a database number"))
                })?,
                None => 0,
            };
            // Percent-encoded: a password is any string (`openssl rand -base64` gives `/`,
            // `+` and `=`), and the URL must still parse; the redis crate decodes it.
            let auth = get("REDIS_PASSWORD")
                .map(|p| format!(":{}@", url_component(&p)))
                .unwrap_or_default();
            self.redis.url = Secret::new(format!("redis://{auth}{host}:{port}/{db}"));
        }
        let list = |text: String| -> Vec<String> {
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        if let Some(sentinels) = get("REDIS_SENTINELS") {
            self.redis.sentinels = list(sentinels);
        }
        if let Some(master) = get("REDIS_SENTINEL_MASTER") {
            self.redis.sentinel_master = master;
        }
        if let Some(password) = get("REDIS_SENTINEL_PASSWORD") {
            self.redis.sentinel_password = Secret::new(password);
        }
        if let Some(nodes) = get("REDIS_CLUSTER") {
            self.redis.cluster = list(nodes);
        }
        Ok(())
    }

    /// Checks values that the types alone cannot (ranges, patterns, cross-key rules).
    pub fn validate(&self) -> Result<()> {
        self.server.validate()?;
        self.database.validate()?;
        self.redis.validate()?;
        self.concurrency.validate()?;
        self.retry.validate()?;
        self.cache.validate()?;
        self.accounts.validate()?;
        self.circuit.validate()?;
        self.alerts.validate()?;
        self.history.validate()?;
        self.notify.validate()?;
        let mut seen = std::collections::HashSet::new();
        for (index, site) in self.sites.iter().enumerate() {
            // In this order, so that the first of several mistakes is the one reported.
            site.validate_keys(index)?;
            court::validate_site(site, index)?;
            site.validate_driver(index)?;
            if !seen.insert(site.name.as_str()) {
                return Err(Error::config(
                    format!("sites[{index}].name"),
                    format!("site `{}` is configured twice", site.name),
                ));
            }
        }
        court::validate_parents(&self.sites)?;
        Ok(())
    }

    /// The circuit threshold and pause of a site: its own override, else `[circuit]`.
    pub fn circuit_of(&self, site: &SiteConfig) -> (u32, f64) {
        (
            site.circuit_failure_threshold
                .unwrap_or(self.circuit.failure_threshold),
            site.circuit_open_seconds
                .unwrap_or(self.circuit.open_seconds),
        )
    }

    /// How many different accounts' `failed` answers in a row pause a site (0: never).
    pub fn site_changed_threshold(&self, site: &SiteConfig) -> u32 {
        site.site_changed_threshold
            .unwrap_or(self.circuit.site_changed_threshold)
    }

    /// The configuration of `name`, if that site is configured.
    pub fn site(&self, name: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.name == name)
    }
}

/// A TOML syntax error as the line, the column, the key being written there and the
/// problem, never the text of the line: it may be `admin_token = "…` or a DSN with its
/// password.
fn syntax_error(text: &str, error: &toml::de::Error) -> Error {
    let problem = error.message().trim_end().replace('\n', "; ");
    let Some(at) = error.span().map(|span| span.start.min(text.len())) else {
        return Error::config("config file", problem);
    };
    let before = text.get(..at).unwrap_or_default();
    let start = before.rfind('\n').map_or(0, |n| n + 1);
    let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
    let line = before.matches('\n').count() + 1;
    let column = before[start..].chars().count() + 1;
    // The key of the line; else of the nearest line above that has one (a long array).
    let place = match key_of(&text[start..end]) {
        Some(key) => Some(("key", key)),
        None => text[..start]
            .lines()
            .rev()
            .find_map(key_of)
            .map(|k| ("after key", k)),
    };
    let problem = if place.as_ref().is_some_and(|(_, key)| is_secret_key(key)) {
        without_quoted_values(&problem)
    } else {
        problem
    };
    let message = match place {
        Some((what, key)) => format!("line {line}, column {column} ({what} `{key}`): {problem}"),
        None => format!("line {line}, column {column}: {problem}"),
    };
    Error::config("config file", message)
}

/// The key a TOML line sets (`a.b = …`, quotes dropped), if it is one.
fn key_of(line: &str) -> Option<String> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || "_-.\"' ".contains(c));
    plain.then(|| key.replace(['"', '\''], ""))
}

/// Whether a dotted config key holds, or may hold, a credential (its value is never echoed).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "token",
        "password",
        "secret",
        "key",
        "url",
        "proxy",
        "dsn",
        "auth",
        "cookie",
        "extra_fields",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `message` with every quoted part (`"…"`, `` `…` ``, `'…'`) replaced by `…`.
fn without_quoted_values(message: &str) -> String {
    static QUOTED: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let quoted =
        QUOTED.get_or_init(|| regex::Regex::new(r#""(?:[^"\\]|\\.)*"|`[^`]*`|'[^']*'"#).ok());
    match quoted {
        Some(quoted) => quoted.replace_all(message, "…").into_owned(),
        None => "the value is not valid here".to_string(),
    }
}

/// `value` percent-encoded for the user information of a URL: every byte but the unreserved
/// characters of RFC 3986.
fn url_component(value: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn key_of(result: Result<Config>) -> String {
        match result {
            Err(Error::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn every_variable_read_is_hidden_from_login_programs() {
        let asked = std::sync::Mutex::new(Vec::new());
        let env = |name: &str| {
            asked.lock().unwrap().push(name.to_string());
            // Set, so that every branch (REDIS_HOST and its parts) is read.
            (!name.ends_with("_URL")).then(|| "1".to_string())
        };
        Config::default().apply_env(&env).unwrap();
        let asked = asked.into_inner().unwrap();
        assert!(asked.len() >= SECRET_ENV.len(), "{asked:?}");
        for name in asked {
            assert!(
                SECRET_ENV.contains(&name.as_str()),
                "{name} is not in SECRET_ENV"
            );
        }
    }

    #[test]
    fn syntax_errors_name_the_key_never_the_line() {
        let message = |text: &str| match Config::parse(text) {
            Err(Error::Config { message, .. }) => message,
            other => panic!("expected a config error, got {other:?}"),
        };
        let said = message("[server]\nclient_tokens = [\n \"SECRETabc\",\n \"SECRETdef\" x ]\n");
        assert!(
            said.contains("line 4") && said.contains("after key `client_tokens`"),
            "{said}"
        );
        assert!(!said.contains("SECRET"), "{said}");
        let said = message("[redis]\nurl = \"redis://:SECRETpw@h\n");
        assert!(
            said.contains("(key `url`)") && !said.contains("SECRET"),
            "{said}"
        );
    }

    #[test]
    fn embedded_defaults() {
        let config = Config::from_sources(None, &no_env).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8000");
        assert_eq!(config.database.url.expose(), "sqlite://tokend.db");
        assert!(config.redis.url.is_empty());
        assert_eq!(config.concurrency.max_concurrent_acquisitions, 3);
        assert_eq!(config.cache.refresh_ahead, 300.0);
        assert!(config.sites.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[concurrency]\nmax_queue_lenn = 3\n", "concurrency.max_queue_lenn"),
            ("[concurrency]\nlock_timeout = \"soon\"\n", "concurrency.lock_timeout"),
            ("[concurrency]\nlock_timeout = -1\n", "concurrency.lock_timeout"),
            ("bogus = 1\n", "bogus"),
            ("[[sites]]\nname = \"bad name\"\ndriver = \"http\"\nlogin_url = \"http://x\"\n", "sites[0].name"),
            ("[[sites]]\nname = \"a\"\ndriver = \"ftp\"\n", "sites[0].driver"),
            ("[[sites]]\nname = \"a\"\ndriver = \"command\"\n", "sites[0].command"),
            ("[[sites]]\nname = \"a\"\ndriver = \"http\"\nlogin_url = \"http://x\"\ncaptcha_error_pattern = \"(\"\n", "sites[0].captcha_error_pattern"),
            ("[server]\nlisten = \"0.0.0.0:8000\"\n", "server.admin_token"),
            ("[database]\nurl = \"mysql://x\"\n", "database.url"),
            ("[cache]\nrefresh_ahead = 4000\n", "cache.default_token_ttl"),
            ("[concurrency]\nqueue_timeout = 1e19\n", "concurrency.queue_timeout"),
            ("[circuit]\nopen_seconds = 601\n", "circuit.open_seconds"),
            ("[circuit]\nfailure_threshold = 0\n", "circuit.failure_threshold"),
            ("[accounts]\ncaptcha_cooldown = -1\n", "accounts.captcha_cooldown"),
            ("[accounts]\nfailure_cooldown = 1e12\n", "accounts.failure_cooldown"),
            ("[alerts]\nmax_rejection_rate = 120\n", "alerts.max_rejection_rate"),
            ("[retry]\ncaptcha_answer_timeout = 0\n", "retry.captcha_answer_timeout"),
            ("[notify]\nwebhook_url = \"ftp://x\"\n", "notify.webhook_url"),
            ("[[sites]]\nname = \"a\"\ndriver = \"http\"\nlogin_url = \"http://x\"\ntoken_from = \"header\"\n", "sites[0].token_from"),
            ("[[sites]]\nname = \"a\"\ndriver = \"http\"\nlogin_url = \"http://x\"\nprobe_interval = 60\n", "sites[0].probe_url"),
            ("[[sites]]\nname = \"a\"\ndriver = \"http\"\nlogin_url = \"http://x\"\nprobe_url = \"http://x/p\"\nprobe_interval = 60\nprobe_header = \"nocolon\"\n", "sites[0].probe_header"),
            ("[[sites]]\nname = \"a\"\ndriver = \"http\"\nlogin_url = \"http://x\"\ncircuit_failure_threshold = 0\n", "sites[0].circuit_failure_threshold"),
            ("[[sites]]\nname = \"a\"\ndriver = \"http\"\nlogin_url = \"http://x\"\ncircuit_open_seconds = 0\n", "sites[0].circuit_open_seconds"),
            ("[[sites]]\nname = \"a\"\ndriver = \"http\"\nlogin_url = \"http://x\"\nsite_changed_threshold = 5000\n", "sites[0].site_changed_threshold"),
            ("[circuit]\nsite_changed_threshold = 1001\n", "circuit.site_changed_threshold"),
            ("[accounts]\nproxy_cooldown = -1\n", "accounts.proxy_cooldown"),
        ];
        for (text, key) in cases {
            let got = key_of(Config::from_sources(Some(text), &no_env));
            assert!(
                got.starts_with(key),
                "{text:?}: key {got:?}, expected {key:?}"
            );
        }
    }

    #[test]
    fn example_config_parses_with_every_key() {
        let text = include_str!("../../tokend.example.toml");
        let config = Config::from_sources(Some(text), &no_env).unwrap();
        assert_eq!(config.sites.len(), 2);
        assert_eq!(config.sites[0].driver, DriverKind::CourtZxfw);
        assert_eq!(config.sites[1].driver, DriverKind::CourtBaoquan);
        assert_eq!(config.sites[0].token_type(), "");
        assert_eq!(config.sites[1].token_type(), "Bearer");
        // The commented examples of the other drivers parse too, once uncommented.
        let others: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# Other portals."))
            .filter_map(|l| l.strip_prefix("# ").or_else(|| (l == "#").then_some("")))
            .filter(|l| l.starts_with("[[sites]]") || l.contains(" = "))
            .collect::<Vec<_>>()
            .join("\n");
        let all = Config::from_sources(Some(&format!("{text}\n{others}\n")), &no_env).unwrap();
        assert_eq!(all.sites.len(), 6);
        assert_eq!(all.sites[5].driver, DriverKind::Recipe);
        // The example documents the defaults: apart from its sites it equals the embedded ones.
        let defaults = toml::to_string(&Config::default()).unwrap();
        let example = toml::to_string(&Config {
            sites: Vec::new(),
            ..config
        })
        .unwrap();
        assert_eq!(example, defaults);
    }

    #[test]
    fn unknown_key_message_names_it() {
        let err = Config::from_sources(Some("[concurrency]\nmax_queue_lenn = 3\n"), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_queue_lenn"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_base_folder() {
        let mut config = Config::parse(
            "[database]\nurl = \"sqlite://data/t.db\"\n[security]\nkey_file = \"/abs/k\"\n",
        )
        .unwrap();
        config.resolve_paths(Path::new("/etc/tokend"));
        assert_eq!(
            config.database.url.expose(),
            "sqlite:///etc/tokend/data/t.db"
        );
        assert_eq!(config.security.key_file, Path::new("/abs/k"));
        assert_eq!(
            config.history.spool_file,
            Path::new("/etc/tokend/tokend-history.spool")
        );
        let mut recipes = Config::parse(
            "[[sites]]\nname = \"a\"\ndriver = \"recipe\"\nrecipe = \"recipes/a.toml\"\n\
             [[sites]]\nname = \"b\"\ndriver = \"recipe\"\nrecipe = \"edelivery\"\n",
        )
        .unwrap();
        recipes.resolve_paths(Path::new("/etc/tokend"));
        assert_eq!(recipes.sites[0].recipe, "/etc/tokend/recipes/a.toml");
        assert_eq!(recipes.sites[1].recipe, "edelivery", "a built-in's name");
        let mut memory = Config::parse("[database]\nurl = \"postgres://u@h/db\"\n").unwrap();
        memory.resolve_paths(Path::new("/x"));
        assert_eq!(memory.database.url.expose(), "postgres://u@h/db");
    }

    #[test]
    fn a_database_url_may_list_several_hosts() {
        let url = "postgres://u:pw-7f3q@h1:5432,h2:5433/db?target_session_attrs=read-write";
        let text = format!("[database]\nurl = \"{url}\"\n");
        let mut config = Config::from_sources(Some(&text), &no_env).unwrap();
        config.resolve_paths(Path::new("/etc/tokend"));
        assert_eq!(config.database.url.expose(), url, "left as libpq reads it");
        let env = |name: &str| (name == "DATABASE_URL").then(|| url.to_string());
        let config = Config::from_sources(None, &env).unwrap();
        assert_eq!(config.database.url.expose(), url);
        assert!(!format!("{config:?}").contains("pw-7f3q"));
    }

    #[test]
    fn environment_wins() {
        let env = |name: &str| match name {
            "DATABASE_URL" => Some("postgres://u:pw@db/tokend".to_string()),
            "REDIS_HOST" => Some("cache.local".to_string()),
            "REDIS_PORT" => Some("6380".to_string()),
            "REDIS_DB" => Some("2".to_string()),
            "REDIS_PASSWORD" => Some("pw".to_string()),
            "TOKEND_WEBHOOK_SECRET" => Some("signing-secret".to_string()),
            _ => None,
        };
        let text =
            "[database]\nurl = \"sqlite://other.db\"\n[notify]\nwebhook_secret = \"in-file\"\n";
        let config = Config::from_sources(Some(text), &env).unwrap();
        assert_eq!(config.database.url.expose(), "postgres://u:pw@db/tokend");
        assert_eq!(config.notify.webhook_secret.expose(), "signing-secret");
        assert_eq!(config.redis.url.expose(), "redis://:pw@cache.local:6380/2");
        assert!(
            !format!("{config:?}").contains("pw@"),
            "secrets leak through Debug"
        );

        let bad_port = |name: &str| match name {
            "REDIS_HOST" => Some("h".to_string()),
            "REDIS_PORT" => Some("http".to_string()),
            _ => None,
        };
        assert_eq!(key_of(Config::from_sources(None, &bad_port)), "REDIS_PORT");
    }

    #[test]
    fn a_redis_password_with_url_characters_reaches_redis_intact() {
        use redis::IntoConnectionInfo;
        let password = "aB/c+d=e@f:g?h#i";
        let env = |name: &str| match name {
            "REDIS_HOST" => Some("cache.local".to_string()),
            "REDIS_PASSWORD" => Some(password.to_string()),
            _ => None,
        };
        let config = Config::from_sources(None, &env).unwrap();
        let info = config.redis.url.expose().into_connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some(password));
        assert!(
            matches!(info.addr(), redis::ConnectionAddr::Tcp(host, 6379) if host == "cache.local"),
            "{:?}",
            info.addr()
        );
    }

    #[test]
    fn sentinels_and_cluster_come_from_the_environment_as_lists() {
        let env = |name: &str| match name {
            "REDIS_SENTINELS" => Some(" 10.0.0.1:26379, 10.0.0.2:26379 ,".to_string()),
            "REDIS_SENTINEL_MASTER" => Some("tokend".to_string()),
            "REDIS_SENTINEL_PASSWORD" => Some("s3cret".to_string()),
            _ => None,
        };
        let config = Config::from_sources(None, &env).unwrap();
        assert_eq!(config.redis.sentinels, ["10.0.0.1:26379", "10.0.0.2:26379"]);
        assert_eq!(config.redis.sentinel_master, "tokend");
        assert!(config.redis.enabled(), "sentinels alone enable Redis");
        let env = |name: &str| (name == "REDIS_CLUSTER").then(|| "h1:7000,h2:7001".to_string());
        let config = Config::from_sources(None, &env).unwrap();
        assert_eq!(config.redis.cluster, ["h1:7000", "h2:7001"]);
        assert!(config.redis.enabled());
    }

    #[test]
    fn a_sentinel_or_cluster_setup_that_cannot_work_is_named() {
        let cases = [
            // Sentinels without the master's name.
            (
                "[redis]\nsentinels = [\"127.0.0.1:26379\"]\n",
                "redis.sentinel_master",
            ),
            // Both topologies at once.
            (
                "[redis]\nsentinels = [\"a:1\"]\nsentinel_master = \"m\"\ncluster = [\"b:2\"]\n",
                "redis.sentinels",
            ),
            // Not host:port.
            ("[redis]\ncluster = [\"127.0.0.1\"]\n", "redis.cluster"),
            ("[redis]\ncluster = [\"h:0\"]\n", "redis.cluster"),
            (
                "[redis]\nsentinels = [\"h:port\"]\nsentinel_master = \"m\"\n",
                "redis.sentinels",
            ),
            // A master's name without sentinels.
            (
                "[redis]\nsentinel_master = \"m\"\n",
                "redis.sentinel_master",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(
                key_of(Config::from_sources(Some(text), &no_env)),
                key,
                "{text}"
            );
        }
    }
}
