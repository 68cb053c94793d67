//! The one error type of tokend, and the two places it is turned into something outside the
//! process sees: an HTTP status with a JSON body (SPEC §7), and a process exit code (sysexits).

use std::path::PathBuf;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// The `Retry-After` of a `CACHE_UNAVAILABLE` answer.
const CACHE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything that can go wrong in tokend. Messages never carry a password or a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration key has a bad value; `key` is its dotted path or environment variable.
    #[error("configuration error: {key}: {message}")]
    Config { key: String, message: String },
    /// Bad input from a caller (HTTP body or query, CLI argument); `field` names it.
    #[error("invalid {field}: {message}")]
    InvalidInput { field: String, message: String },
    #[error("unknown site `{0}`: it is not configured in [[sites]]")]
    UnknownSite(String),
    #[error("account `{account}` already exists for site `{site}`")]
    AccountExists { site: String, account: String },
    #[error("no account `{account}` for site `{site}`")]
    AccountNotFound { site: String, account: String },
    /// A line of an import file is malformed; nothing was imported.
    #[error("line {line}: {message} (nothing was imported)")]
    Import { line: usize, message: String },
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// No connection to the database could be had (down, wrong URL, pool exhausted).
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    /// The cache backend (Redis) did not answer in time or refused.
    #[error("cache backend unavailable: {0}")]
    CacheUnavailable(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    /// Encryption or decryption failed: wrong key, corrupt ciphertext, bad key file.
    #[error("secret key or ciphertext error: {0}")]
    Crypto(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The HTTP port could not be taken (in use, not allowed): an OS condition, not a config
    /// mistake.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// tokend stopped before the acquisition finished (the grace period ran out).
    #[error(
        "tokend is shutting down: the acquisition did not finish within server.shutdown_grace"
    )]
    ShuttingDown,
    /// The wait queue for login slots is full.
    #[error("too many acquisitions waiting (max_queue_len {0}); try again later")]
    QueueFull(usize),
    /// A wait or the whole acquisition took longer than allowed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The site's or every usable account's login budget is spent for this hour (SPEC §12).
    #[error("login budget spent for site `{site}` (this hour), retry in {} s", whole_seconds(*retry_after))]
    LoginBudgetExhausted {
        site: String,
        retry_after: std::time::Duration,
    },
    /// No login slot was granted within `queue_timeout`.
    #[error("timed out: {0}")]
    QueueTimeout(String),
    /// The site's circuit is open (SPEC §11): the portal is down, logins wait until
    /// `retry_after` has passed. Cached tokens are still served.
    #[error("site `{site}` is unavailable: {reason}; retry in {}s", retry_after.as_secs())]
    SiteUnavailable {
        site: String,
        reason: String,
        retry_after: std::time::Duration,
    },
    /// No account of the site can be used now (none configured, all inactive or blacklisted).
    #[error("no available account for site `{site}`: {reason}")]
    NoAvailableAccount { site: String, reason: String },
    /// Every usable account is held by a job checkout; the first lease ends at `until`.
    #[error("no available account for site `{site}`: every usable account is checked out by a job; the first lease ends at {}", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    AllCheckedOut {
        site: String,
        until: chrono::DateTime<chrono::Utc>,
    },
    /// The account named is held by a job checkout until `until`.
    #[error("account `{account}` of site `{site}` is checked out by a job until {}", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    CheckedOut {
        site: String,
        account: String,
        until: chrono::DateTime<chrono::Utc>,
    },
    /// No live checkout has this id (never one, released, or its lease ended).
    #[error("no checkout `{0}`: unknown, released or its lease ended")]
    CheckoutNotFound(String),
    /// Every login tried failed; `status` is the last failure's.
    #[error("token acquisition for site `{site}` failed ({}): {message}", status.as_str())]
    AcquisitionFailed {
        site: String,
        status: crate::policy::outcome::AcquisitionStatus,
        message: String,
    },
    /// The daemon could not be reached or answered with an error (CLI commands that call it).
    #[error("daemon: {0}")]
    Daemon(String),
    /// Maintenance steps that failed (`tokend optimize`); each was printed.
    #[error("{0} maintenance step(s) failed")]
    StepsFailed(usize),
    #[error("authentication required: {0}")]
    Unauthorized(String),
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// The `Host` of a request is not one this daemon answers for (a DNS-rebinding page).
    #[error("misdirected request: {0}")]
    MisdirectedRequest(String),
    /// A state-changing request whose body is not JSON (what an HTML form sends).
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// No pending captcha challenge has this id (never one, or it expired or ended).
    #[error("no pending captcha `{0}`: unknown, expired or its login ended")]
    CaptchaNotFound(String),
    /// The captcha challenge was answered already.
    #[error("captcha `{0}` is already answered")]
    CaptchaAnswered(String),
    /// A bug or a broken invariant; never caused by input.
    #[error("internal error: {0}")]
    Internal(String),
    /// The daemon refused a CLI command's call: its `code` and `message` as it gave them. The
    /// exit status is the one tokend gives that code itself ([`exit_code_of`]).
    #[error("{message} ({code})")]
    Refused { code: String, message: String },
}

/// An actor that does not answer (stopped, or its mailbox closed) is a bug of tokend's own.
impl From<actix::MailboxError> for Error {
    fn from(e: actix::MailboxError) -> Self {
        Error::Internal(format!("actor unavailable: {e}"))
    }
}

/// A wait in whole seconds, rounded up: a caller that waits this long finds it over.
fn whole_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The exit status of a CLI command that failed with the error of this code (sysexits.h);
/// the one table for tokend's own errors and the daemon's answers. An unknown code (a newer
/// daemon) is the daemon's trouble: 69.
pub fn exit_code_of(code: &str) -> i32 {
    match code {
        "ACCOUNT_EXISTS"
        | "ACCOUNT_NOT_FOUND"
        | "STEPS_FAILED"
        | "CAPTCHA_NOT_FOUND"
        | "CAPTCHA_ALREADY_ANSWERED"
        | "CHECKOUT_NOT_FOUND" => 1,
        "INVALID_INPUT" | "UNKNOWN_SITE" => 64, // EX_USAGE
        "INTERNAL_ERROR" => 70,                 // EX_SOFTWARE
        "CANNOT_LISTEN" => 71,                  // EX_OSERR
        "IO_ERROR" => 74,                       // EX_IOERR
        // EX_TEMPFAIL: the same call may succeed later.
        "QUEUE_FULL"
        | "TIMEOUT"
        | "SHUTTING_DOWN"
        | "LOGIN_BUDGET_EXHAUSTED"
        | "SITE_UNAVAILABLE"
        | "CHECKED_OUT" => 75,
        "UNAUTHORIZED" | "FORBIDDEN" | "MISDIRECTED_REQUEST" | "UNSUPPORTED_MEDIA_TYPE" => 77, // EX_NOPERM
        "CONFIGURATION_ERROR" | "SECRET_KEY_ERROR" => 78, // EX_CONFIG
        _ => 69, // EX_UNAVAILABLE: database, cache, daemon, no account, failed acquisition
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The stable machine-readable code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config { .. } => "CONFIGURATION_ERROR",
            Error::InvalidInput { .. } | Error::Import { .. } => "INVALID_INPUT",
            Error::UnknownSite(_) => "UNKNOWN_SITE",
            Error::AccountExists { .. } => "ACCOUNT_EXISTS",
            Error::AccountNotFound { .. } => "ACCOUNT_NOT_FOUND",
            Error::Database(_) => "DATABASE_ERROR",
            Error::DatabaseUnavailable(_) | Error::Migration(_) => "DATABASE_UNAVAILABLE",
            Error::CacheUnavailable(_) => "CACHE_UNAVAILABLE",
            Error::Crypto(_) => "SECRET_KEY_ERROR",
            Error::Io { .. } => "IO_ERROR",
            Error::Listen { .. } => "CANNOT_LISTEN",
            Error::ShuttingDown => "SHUTTING_DOWN",
            Error::QueueFull(_) => "QUEUE_FULL",
            Error::Timeout(_) | Error::QueueTimeout(_) => "TIMEOUT",
            Error::SiteUnavailable { .. } => "SITE_UNAVAILABLE",
            Error::LoginBudgetExhausted { .. } => "LOGIN_BUDGET_EXHAUSTED",
            Error::NoAvailableAccount { .. } | Error::AllCheckedOut { .. } => {
                "NO_AVAILABLE_ACCOUNT"
            }
            Error::CheckedOut { .. } => "CHECKED_OUT",
            Error::CheckoutNotFound(_) => "CHECKOUT_NOT_FOUND",
            Error::AcquisitionFailed { .. } => "TOKEN_ACQUISITION_FAILED",
            Error::Daemon(_) => "DAEMON_UNREACHABLE",
            Error::StepsFailed(_) => "STEPS_FAILED",
            Error::Unauthorized(_) => "UNAUTHORIZED",
            Error::Forbidden(_) => "FORBIDDEN",
            Error::MisdirectedRequest(_) => "MISDIRECTED_REQUEST",
            Error::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Error::Internal(_) => "INTERNAL_ERROR",
            Error::CaptchaNotFound(_) => "CAPTCHA_NOT_FOUND",
            Error::CaptchaAnswered(_) => "CAPTCHA_ALREADY_ANSWERED",
            Error::Refused { .. } => "DAEMON_REFUSED",
        }
    }

    /// The field or key the error is about, for the `errors` object of the JSON body.
    fn subject(&self) -> Option<(&str, String)> {
        match self {
            Error::Config { key, message } => Some((key, message.clone())),
            Error::InvalidInput { field, message } => Some((field, message.clone())),
            Error::Import { line, message } => Some(("line", format!("{line}: {message}"))),
            Error::AcquisitionFailed { status, .. } => {
                Some(("error_type", status.as_str().to_string()))
            }
            _ => None,
        }
    }

    /// How long a caller should wait before asking again, for the `Retry-After` header.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::SiteUnavailable { retry_after, .. }
            | Error::LoginBudgetExhausted { retry_after, .. } => Some(*retry_after),
            // Redis answers again within moments of most faults (and health says when).
            Error::CacheUnavailable(_) => Some(CACHE_RETRY_AFTER),
            Error::AllCheckedOut { until, .. } | Error::CheckedOut { until, .. } => Some(
                (*until - chrono::Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .max(std::time::Duration::from_secs(1)),
            ),
            _ => None,
        }
    }

    /// The reason a request was refused before any login ran, if it was (SPEC §11).
    pub fn rejection(&self) -> Option<crate::policy::outcome::RejectionReason> {
        use crate::policy::outcome::RejectionReason;
        match self {
            Error::NoAvailableAccount { .. } | Error::AllCheckedOut { .. } => {
                Some(RejectionReason::NoAvailableAccount)
            }
            Error::SiteUnavailable { .. } => Some(RejectionReason::SiteUnavailable),
            Error::QueueFull(_) => Some(RejectionReason::QueueFull),
            Error::QueueTimeout(_) => Some(RejectionReason::QueueTimeout),
            Error::LoginBudgetExhausted { .. } => Some(RejectionReason::LoginBudgetExhausted),
            Error::CacheUnavailable(_) => Some(RejectionReason::CacheUnavailable),
            _ => None,
        }
    }

    /// The exit status of a CLI command that failed with this error (sysexits.h).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Import { .. } => 65, // EX_DATAERR
            Error::Refused { code, .. } => exit_code_of(code),
            _ => exit_code_of(self.code()),
        }
    }
}

/// The HTTP answer of an [`Error`]: `{"success": false, "code": "UPPER_SNAKE", "message": "…",
/// "errors": {…}}`; the CLI reads a daemon's refusal back into it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// What went wrong, in UPPER_SNAKE (`INVALID_INPUT`, `UNKNOWN_SITE`, …); the CLI's exit
    /// status follows it.
    pub code: String,
    /// The same, for a person.
    pub message: String,
    /// The field or key at fault and what is wrong with it (`{"site_name": "…"}`); empty when
    /// the error is about no one field.
    pub errors: std::collections::BTreeMap<String, String>,
}

impl ErrorBody {
    /// The body of an error with `code` and `message`, about no one field.
    pub fn new(code: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            success: false,
            code: code.to_string(),
            message: message.into(),
            errors: std::collections::BTreeMap::new(),
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidInput { .. } | Error::Import { .. } | Error::Config { .. } => {
                StatusCode::BAD_REQUEST
            }
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::UnknownSite(_) | Error::AccountNotFound { .. } => StatusCode::NOT_FOUND,
            Error::AccountExists { .. } => StatusCode::CONFLICT,
            Error::CaptchaNotFound(_) => StatusCode::NOT_FOUND,
            Error::CaptchaAnswered(_) | Error::CheckedOut { .. } => StatusCode::CONFLICT,
            Error::CheckoutNotFound(_) => StatusCode::NOT_FOUND,
            Error::AllCheckedOut { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(_)
            | Error::DatabaseUnavailable(_)
            | Error::Migration(_)
            | Error::CacheUnavailable(_)
            | Error::Crypto(_)
            | Error::Io { .. }
            | Error::Listen { .. }
            | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Timeout(_) | Error::QueueTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::SiteUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::LoginBudgetExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NoAvailableAccount { .. } | Error::Daemon(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::AcquisitionFailed { .. } | Error::Refused { .. } => StatusCode::BAD_GATEWAY,
            Error::Internal(_) | Error::StepsFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = ErrorBody::new(self.code(), self.to_string());
        if let Some((key, message)) = self.subject() {
            body.errors.insert(key.to_string(), message);
        }
        let mut response = HttpResponse::build(self.status_code());
        if let Some(wait) = self.retry_after() {
            response.insert_header((actix_web::http::header::RETRY_AFTER, whole_seconds(wait)));
        }
        response.json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_body_names_code_and_field() {
        let err = Error::invalid("site_name", "must match ^[A-Za-z0-9_-]{1,64}$");
        assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(err.code(), "INVALID_INPUT");
        assert_eq!(
            err.subject().map(|(k, _)| k.to_string()).as_deref(),
            Some("site_name")
        );
    }

    #[test]
    fn storage_failures_are_not_500() {
        let err = Error::DatabaseUnavailable("connection refused".into());
        assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.exit_code(), 69);
    }

    #[test]
    fn exit_codes_follow_the_readme_table() {
        let wait = std::time::Duration::from_millis(1500);
        let temporary = [
            Error::SiteUnavailable {
                site: "s".into(),
                reason: "down".into(),
                retry_after: wait,
            },
            Error::LoginBudgetExhausted {
                site: "s".into(),
                retry_after: wait,
            },
            Error::QueueFull(1),
            Error::Timeout("x".into()),
            Error::ShuttingDown,
        ];
        for err in &temporary {
            assert_eq!(err.exit_code(), 75, "{err}");
        }
        assert_eq!(
            temporary[1].to_string(),
            "login budget spent for site `s` (this hour), retry in 2 s"
        );
        for err in [
            Error::CaptchaNotFound("c".into()),
            Error::CaptchaAnswered("c".into()),
            Error::AccountNotFound {
                site: "s".into(),
                account: "a".into(),
            },
        ] {
            assert_eq!(err.exit_code(), 1, "{err}");
        }
        assert_eq!(Error::invalid("f", "m").exit_code(), 64);
        assert_eq!(
            Error::Import {
                line: 1,
                message: "m".into()
            }
            .exit_code(),
            65
        );
        assert_eq!(Error::config("k", "m").exit_code(), 78);
        assert_eq!(Error::Daemon("x".into()).exit_code(), 69);
        let refused = |code: &str| Error::Refused {
            code: code.into(),
            message: "m".into(),
        };
        assert_eq!(refused("SITE_UNAVAILABLE").exit_code(), 75);
        assert_eq!(refused("CAPTCHA_ALREADY_ANSWERED").exit_code(), 1);
        assert_eq!(refused("SOMETHING_NEW").exit_code(), 69);
    }
}
