//! Managing login accounts: adding (the password sealed before it reaches the database),
//! importing a CSV file in one transaction, listing without passwords, removing.

use std::io::Read;

use chrono::{DateTime, Utc};
use diesel::Connection;
use serde::Serialize;

use crate::config::validate_site_name;
use crate::db::models::{AccountCredential, NewAccountCredential};
use crate::db::{self, DbConnection, Pool};
use crate::error::{Error, Result};
use crate::policy::outcome::{AccountState, BlockReason};
use crate::vault::crypto::{SealContext, SecretKey};
use crate::vault::secret::Secret;

/// One account as `GET /accounts` and `tokend accounts list` show it (never a password).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: i64,
    pub site_name: String,
    pub account: String,
    pub is_preferred: bool,
    pub is_active: bool,
    /// `active`, `blacklisted`, `cooling_down` or `inactive`.
    pub state: AccountState,
    /// Until when a blacklist or cooldown lasts.
    pub until: Option<DateTime<Utc>>,
    /// The failure that caused it: `credential_error`, `captcha_error` or `failed`.
    pub reason: Option<BlockReason>,
    pub login_success_count: i64,
    pub login_failure_count: i64,
    pub last_login_success_at: Option<DateTime<Utc>>,
    pub last_login_attempt_at: Option<DateTime<Utc>>,
    /// The account's own proxy, with any password masked (`null`: the site's, if any).
    pub proxy: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Logins left in this sliding hour under `login_budget_per_account_per_hour` (the
    /// daemon's view; `null`: unlimited or unknown).
    pub login_budget_left: Option<u32>,
    /// The job checkout holding the account now (the daemon's view; `null`: none).
    pub checkout: Option<crate::lifecycle::checkout::Checkout>,
}

impl AccountView {
    /// The block the database holds for the account, if it is still in force at `now`.
    pub fn stored_block(
        row: &AccountCredential,
        now: DateTime<Utc>,
    ) -> Option<(BlockReason, DateTime<Utc>)> {
        let reason = BlockReason::parse(row.block_reason.as_deref()?)?;
        let until = row.blocked_until?.and_utc();
        (until > now).then_some((reason, until))
    }

    /// The account's state at `now`; `mirrored` is a block known only to the cache.
    pub fn new(
        row: AccountCredential,
        now: DateTime<Utc>,
        mirrored: Option<(BlockReason, DateTime<Utc>)>,
    ) -> AccountView {
        let block = AccountView::stored_block(&row, now).or(mirrored);
        let (state, until, reason) = match (row.is_active, block) {
            (false, _) => (AccountState::Inactive, None, None),
            (true, Some((reason, until))) => (reason.state(), Some(until), Some(reason)),
            (true, None) => (AccountState::Active, None, None),
        };
        AccountView {
            id: row.id,
            site_name: row.site_name,
            account: row.account,
            is_preferred: row.is_preferred,
            is_active: row.is_active,
            state,
            until,
            reason,
            login_success_count: row.login_success_count,
            login_failure_count: row.login_failure_count,
            last_login_success_at: row.last_login_success_at.map(|t| t.and_utc()),
            last_login_attempt_at: row.last_login_attempt_at.map(|t| t.and_utc()),
            proxy: row.proxy_display,
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
            login_budget_left: None,
            checkout: None,
        }
    }
}

/// Longest account name accepted; portals use short user names or phone numbers.
const ACCOUNT_MAX: usize = 128;

/// An account to add, before its password is sealed.
#[derive(Debug)]
pub struct NewAccount {
    pub site_name: String,
    pub account: String,
    pub password: Secret,
    pub preferred: bool,
    /// The account's own proxy (sticky: it always logs in from the same address).
    pub proxy: Option<Secret>,
}

/// An account name as the API and the CLI take it: 1 to 128 characters, none a control
/// character (PostgreSQL refuses a NUL byte in text; a name with one was never stored).
pub fn validate_account_name(field: &str, account: &str) -> Result<()> {
    if account.is_empty() || account.len() > ACCOUNT_MAX || account.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("must be 1 to {ACCOUNT_MAX} printable characters"),
        ));
    }
    Ok(())
}

impl NewAccount {
    /// Checks the fields; `field` prefixes name where they came from (a CLI argument, a line).
    fn validate(&self) -> Result<()> {
        validate_site_name("site", &self.site_name)?;
        validate_account_name("account", self.account.trim())?;
        if self.password.is_empty() {
            return Err(Error::invalid("password", "must not be empty"));
        }
        if let Some(proxy) = &self.proxy {
            crate::config::validate_proxy_url("proxy", proxy.expose())?;
        }
        Ok(())
    }
}

fn insert(conn: &mut DbConnection, key: &SecretKey, new: &NewAccount) -> Result<AccountCredential> {
    new.validate()?;
    let account = new.account.trim();
    let sealed = key.seal(
        new.password.expose(),
        SealContext::Password {
            site: &new.site_name,
            account,
        },
    )?;
    let proxy = match &new.proxy {
        Some(url) => Some(seal_proxy(key, &new.site_name, account, url)?),
        None => None,
    };
    let now = Utc::now().naive_utc();
    db::accounts::insert(
        conn,
        &NewAccountCredential {
            site_name: &new.site_name,
            account,
            password_encrypted: &sealed,
            is_preferred: new.preferred,
            is_active: true,
            login_success_count: 0,
            login_failure_count: 0,
            created_at: now,
            updated_at: now,
            proxy_encrypted: proxy.as_ref().map(|(sealed, _)| sealed.as_str()),
            proxy_display: proxy.as_ref().map(|(_, display)| display.as_str()),
        },
    )
}

/// A proxy URL sealed for (site, account), and its display form with the password masked.
fn seal_proxy(
    key: &SecretKey,
    site: &str,
    account: &str,
    url: &Secret,
) -> Result<(String, String)> {
    crate::config::validate_proxy_url("proxy", url.expose())?;
    let sealed = key.seal(url.expose(), SealContext::Proxy { site, account })?;
    Ok((sealed, crate::vault::secret::redact_url(url.expose())))
}

/// Sets or removes (`None`) an account's own proxy.
pub fn set_proxy(
    pool: &Pool,
    key: &SecretKey,
    site: &str,
    account: &str,
    url: Option<&Secret>,
) -> Result<()> {
    validate_site_name("site", site)?;
    let proxy = match url {
        Some(url) => Some(seal_proxy(key, site, account, url)?),
        None => None,
    };
    let (sealed, display) = match &proxy {
        Some((sealed, display)) => (Some(sealed.as_str()), Some(display.as_str())),
        None => (None, None),
    };
    if db::accounts::set_proxy(&mut *pool.get()?, site, account, sealed, display)? {
        Ok(())
    } else {
        Err(not_found(site, account))
    }
}

/// Adds one account.
pub fn add(pool: &Pool, key: &SecretKey, new: &NewAccount) -> Result<AccountCredential> {
    insert(&mut *pool.get()?, key, new)
}

/// Imports `site_name,account,password[,preferred]` lines (an optional header line is
/// recognised) in one transaction: a malformed line imports nothing and is named.
pub fn import(pool: &Pool, key: &SecretKey, input: impl Read) -> Result<usize> {
    let records = parse_import(input)?;
    let mut conn = pool.get()?;
    conn.transaction(|conn| {
        for (line, record) in &records {
            insert(conn, key, record).map_err(|e| Error::Import {
                line: *line,
                message: e.to_string(),
            })?;
        }
        Ok::<_, Error>(records.len())
    })
}

fn parse_import(mut input: impl Read) -> Result<Vec<(usize, NewAccount)>> {
    // Read whole (import files are small), so that lines are counted from the bytes: the CSV
    // reader's own count leaves out blank and comment lines.
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|e| Error::Import {
        line: 0,
        message: format!("cannot read the input: {e}"),
    })?;
    let physical_line = |position: Option<&csv::Position>| {
        position.map_or(0, |p| {
            let end = usize::try_from(p.byte())
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let start = bytes[..end].iter().filter(|&&b| b == b'\n').count();
            // The record starts after any blank or comment lines: skip to its first field.
            let skipped = bytes[end..]
                .split(|&b| b == b'\n')
                .take_while(|l| {
                    let l = l.trim_ascii();
                    l.is_empty() || l.starts_with(b"#")
                })
                .count();
            start + skipped + 1
        })
    };
    // Not trimmed by the reader: a quoted field is taken as is (a password may start or end
    // with a space); unquoted fields are trimmed below.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(&bytes[..]);
    let mut rows = Vec::new();
    for result in reader.records() {
        let record = result.map_err(|e| Error::Import {
            line: physical_line(e.position()),
            message: format!("not valid CSV: {e}"),
        })?;
        let start = record.position().map_or(0, |p| p.byte() as usize);
        rows.push((physical_line(record.position()), start, record));
    }
    let mut records = Vec::new();
    for (i, (line, start, record)) in rows.iter().enumerate() {
        let end = rows.get(i + 1).map_or(bytes.len(), |(_, next, _)| *next);
        let raw = String::from_utf8_lossy(&bytes[(*start).min(end)..end]);
        let fields: Vec<String> = record.iter().map(|f| unquoted_trimmed(f, &raw)).collect();
        if records.is_empty() && fields.first().map(String::as_str) == Some("site_name") {
            continue; // header
        }
        let new = import_record(&fields).map_err(|message| Error::Import {
            line: *line,
            message,
        })?;
        records.push((*line, new));
    }
    if records.is_empty() {
        return Err(Error::Import {
            line: 0,
            message: "no accounts in the input".into(),
        });
    }
    Ok(records)
}

/// A field of an import line: as is when it was quoted in `raw` (the record's text), else
/// trimmed.
fn unquoted_trimmed(field: &str, raw: &str) -> String {
    if field.trim() == field || raw.contains(&format!("\"{}\"", field.replace('"', "\"\""))) {
        field.to_string()
    } else {
        field.trim().to_string()
    }
}

/// The account of one import line. The messages never quote a field: with an unquoted comma
/// in a password, any field after the account may hold a piece of it.
fn import_record(fields: &[String]) -> std::result::Result<NewAccount, String> {
    const QUOTE_HINT: &str = "(a password with a comma must be quoted: \"pass,word\")";
    if !(3..=5).contains(&fields.len()) {
        return Err(format!(
            "expected site_name,account,password[,preferred[,proxy]], found {} fields {QUOTE_HINT}",
            fields.len()
        ));
    }
    let preferred = match fields
        .get(3)
        .map_or("", String::as_str)
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "false" | "0" | "no" => false,
        "true" | "1" | "yes" => true,
        _ => {
            return Err(format!(
                "preferred (field 4) must be true/false, yes/no or 1/0 (any case) {QUOTE_HINT}"
            ))
        }
    };
    let new = NewAccount {
        site_name: fields[0].clone(),
        account: fields[1].clone(),
        password: Secret::new(&fields[2]),
        preferred,
        proxy: fields.get(4).filter(|p| !p.is_empty()).map(Secret::new),
    };
    new.validate().map_err(|e| match e {
        Error::InvalidInput { field, .. } if field == "proxy" => format!(
            "proxy (field 5) is not a proxy URL: http://, https://, socks5:// or \
             socks5h://host:port {QUOTE_HINT}"
        ),
        e => e.to_string(),
    })?;
    Ok(new)
}

pub fn list(pool: &Pool, site: Option<&str>) -> Result<Vec<AccountCredential>> {
    if let Some(site) = site {
        validate_site_name("site", site)?;
    }
    db::accounts::list(&mut *pool.get()?, site)
}

/// Removes an account; [`Error::AccountNotFound`] when there is none.
pub fn remove(pool: &Pool, site: &str, account: &str) -> Result<()> {
    validate_site_name("site", site)?;
    if db::accounts::delete(&mut *pool.get()?, site, account)? {
        Ok(())
    } else {
        Err(not_found(site, account))
    }
}

/// The accounts with their state as the database has it (blocks set while the database was
/// unreachable live only in the daemon's cache: `GET /accounts` shows those too).
pub fn views(pool: &Pool, site: Option<&str>) -> Result<Vec<AccountView>> {
    let now = Utc::now();
    Ok(list(pool, site)?
        .into_iter()
        .map(|row| AccountView::new(row, now, None))
        .collect())
}

fn not_found(site: &str, account: &str) -> Error {
    Error::AccountNotFound {
        site: site.into(),
        account: account.into(),
    }
}

/// Replaces an account's password, keeping its statistics and lifting a blacklist for a
/// refused password.
pub fn set_password(
    pool: &Pool,
    key: &SecretKey,
    site: &str,
    account: &str,
    password: &Secret,
) -> Result<()> {
    validate_site_name("site", site)?;
    if password.is_empty() {
        return Err(Error::invalid("password", "must not be empty"));
    }
    let sealed = key.seal(password.expose(), SealContext::Password { site, account })?;
    if db::accounts::set_password(&mut *pool.get()?, site, account, &sealed)? {
        Ok(())
    } else {
        Err(not_found(site, account))
    }
}

/// Turns an account on or off for logins.
pub fn set_active(pool: &Pool, site: &str, account: &str, active: bool) -> Result<()> {
    validate_site_name("site", site)?;
    if db::accounts::set_active(&mut *pool.get()?, site, account, active)? {
        Ok(())
    } else {
        Err(not_found(site, account))
    }
}

/// Marks an account preferred or not (`tokend accounts set-preferred`).
pub fn set_preferred(pool: &Pool, site: &str, account: &str, preferred: bool) -> Result<()> {
    validate_site_name("site", site)?;
    if db::accounts::set_preferred(&mut *pool.get()?, site, account, preferred)? {
        Ok(())
    } else {
        Err(not_found(site, account))
    }
}

/// The password of an account, decrypted for a login.
pub fn password(key: &SecretKey, credential: &AccountCredential) -> Result<Secret> {
    key.open(
        &credential.password_encrypted,
        SealContext::Password {
            site: &credential.site_name,
            account: &credential.account,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(text: &str) -> usize {
        match parse_import(text.as_bytes()) {
            Err(Error::Import { line, .. }) => line,
            other => panic!("expected an import error, got {other:?}"),
        }
    }

    #[test]
    fn import_parsing() {
        let ok = "site_name,account,password,preferred\ncourt_zxfw,alice,\"pw,with,commas\",true\ncourt_zxfw,bob,pw2\n";
        let records = parse_import(ok.as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].1.password.expose(), "pw,with,commas");
        assert!(records[0].1.preferred);
        assert_eq!(records[1].0, 3);

        assert_eq!(line_of("court_zxfw,alice,pw\nbad site,bob,pw\n"), 2);
        assert_eq!(line_of("court_zxfw,alice,pw\ncourt_zxfw,bob\n"), 2);
        assert_eq!(line_of("court_zxfw,alice,pw,maybe\n"), 1);
        assert_eq!(line_of("court_zxfw,alice,\n"), 1);
        assert_eq!(line_of(""), 0);
        // Blank and comment lines count: the line named is the line in the file.
        assert_eq!(
            line_of("\n# accounts\n\ncourt_zxfw,alice,pw\nbad site,bob,pw\n"),
            5
        );
        assert_eq!(line_of("# c\n\n# d\n\nbad site,bob,pw\n"), 5);
        let cases = "court_zxfw,a,pw,TRUE\ncourt_zxfw,b,pw,Yes\ncourt_zxfw,c,pw,NO\ncourt_zxfw,d,pw,False\n";
        let preferred: Vec<bool> = parse_import(cases.as_bytes())
            .unwrap()
            .iter()
            .map(|(_, r)| r.preferred)
            .collect();
        assert_eq!(preferred, [true, true, false, false]);
    }

    #[test]
    fn import_keeps_quoted_fields_and_never_quotes_a_password() {
        let text = "court_zxfw , alice ,\" pw with spaces \",true\n";
        let records = parse_import(text.as_bytes()).unwrap();
        assert_eq!(records[0].1.account, "alice");
        assert_eq!(records[0].1.password.expose(), " pw with spaces ");
        for line in [
            "court_zxfw,alice,Sup3r,S3cretPart,true\n",
            "court_zxfw,alice,Sup3r,true,S3cretPart\n",
            "court_zxfw,alice,Sup3r,S3cretPart,x,y\n",
        ] {
            let message = match parse_import(line.as_bytes()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{line} was imported"),
            };
            assert!(!message.contains("S3cretPart"), "{message}");
        }
    }
}
