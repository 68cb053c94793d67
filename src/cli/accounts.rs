//! `tokend accounts …`: adding, importing, listing and changing accounts in the database
//! (the daemon need not run), and `unblock` through the running daemon.

use std::io::{BufRead, IsTerminal, Read};

use clap::Subcommand;

use super::{call_daemon, checked_key, ready_pool};
use crate::accounts::{self, AccountView, NewAccount};
use crate::cli::terminal::printable;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::vault::crypto::SecretKey;
use crate::vault::secret::Secret;

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Add an account; the password is read from standard input (one line), or asked for
    /// twice without echo when standard input is a terminal.
    Add {
        site: String,
        account: String,
        /// Read the password from standard input (required: never pass it as an argument).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Choose this account before the others of its site.
        #[arg(long)]
        preferred: bool,
        /// The account's own proxy (http://, https:// or socks5://host:port): it always logs
        /// in from the same address. Stored sealed like the password.
        #[arg(long, value_name = "URL")]
        proxy: Option<String>,
    },
    /// Import accounts from CSV (`site_name,account,password[,preferred[,proxy]]`); `-` is
    /// stdin. `proxy` is the account's own proxy URL (http://, https:// or socks5://), stored
    /// sealed. One transaction: a malformed line imports nothing.
    Import { file: String },
    /// List accounts (never passwords).
    List {
        #[arg(long)]
        site: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an account.
    Remove { site: String, account: String },
    /// Replace an account's password (read from standard input); keeps its statistics and
    /// lifts a blacklist for a refused password.
    SetPassword {
        site: String,
        account: String,
        /// Read the password from standard input (required: never pass it as an argument).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Set an account's own proxy (http://, https:// or socks5://), or remove it with --none.
    SetProxy {
        site: String,
        account: String,
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        url: Option<String>,
        /// Remove the account's proxy (the site's, if any, is used again).
        #[arg(long)]
        none: bool,
    },
    /// Choose an account before the others of its site (`true`), or not (`false`).
    SetPreferred {
        site: String,
        account: String,
        #[arg(value_name = "true|false", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
        preferred: bool,
    },
    /// Stop using an account for logins (it keeps its statistics).
    Disable { site: String, account: String },
    /// Use a disabled account again.
    Enable { site: String, account: String },
    /// Lift an account's blacklist or cooldown at once, through the running daemon.
    Unblock {
        site: String,
        account: String,
        /// The daemon's address (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
        /// Seconds to keep trying while the daemon refuses connections (it may be starting).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
}

fn warn_if_unconfigured(config: &Config, site: &str) {
    if config.site(site).is_none() {
        eprintln!("tokend: warning: site `{}` is not configured in [[sites]]; its accounts are unused until it is", printable(site));
    }
}

pub(super) fn run(config: &Config, command: AccountsCommand) -> Result<()> {
    match command {
        AccountsCommand::Add {
            site,
            account,
            preferred,
            proxy,
            ..
        } => add_account(config, site, account, preferred, proxy),
        AccountsCommand::Import { file } => import_accounts(config, &file),
        AccountsCommand::List { site, json } => list_accounts(config, site, json),
        AccountsCommand::SetPassword { site, account, .. } => {
            let password = read_password(std::io::stdin().lock())?;
            let key = SecretKey::load(&config.security)?;
            let pool = ready_pool(config)?;
            accounts::set_password(&pool, &key, &site, &account, &password)?;
            println!(
                "password of account `{}` of site `{}` replaced in {}",
                printable(&account),
                printable(&site),
                pool.display_url()
            );
            Ok(())
        }
        AccountsCommand::SetProxy {
            site, account, url, ..
        } => set_proxy(config, &site, &account, url.map(Secret::new)),
        AccountsCommand::SetPreferred {
            site,
            account,
            preferred,
        } => {
            let pool = ready_pool(config)?;
            accounts::set_preferred(&pool, &site, &account, preferred)?;
            let state = if preferred {
                "preferred"
            } else {
                "not preferred"
            };
            println!(
                "account `{account}` of site `{site}` is {state} in {}",
                pool.display_url()
            );
            Ok(())
        }
        AccountsCommand::Disable { site, account } => {
            let pool = ready_pool(config)?;
            accounts::set_active(&pool, &site, &account, false)?;
            println!(
                "account `{}` of site `{}` disabled",
                printable(&account),
                printable(&site)
            );
            Ok(())
        }
        AccountsCommand::Enable { site, account } => {
            let pool = ready_pool(config)?;
            accounts::set_active(&pool, &site, &account, true)?;
            println!(
                "account `{}` of site `{}` enabled",
                printable(&account),
                printable(&site)
            );
            Ok(())
        }
        AccountsCommand::Unblock {
            site,
            account,
            url,
            wait,
        } => unblock_account(config, &site, &account, url.as_deref(), wait),
        AccountsCommand::Remove { site, account } => {
            let pool = ready_pool(config)?;
            accounts::remove(&pool, &site, &account)?;
            println!(
                "removed account `{}` of site `{}` from {}",
                printable(&account),
                printable(&site),
                pool.display_url()
            );
            Ok(())
        }
    }
}

/// `tokend accounts add`: the password from the terminal (asked twice) or one stdin line.
fn add_account(
    config: &Config,
    site: String,
    account: String,
    preferred: bool,
    proxy: Option<String>,
) -> Result<()> {
    crate::config::validate_site_name("site", &site)?;
    let password = if std::io::stdin().is_terminal() {
        prompt_password()?
    } else {
        read_password(std::io::stdin().lock())?
    };
    let pool = ready_pool(config)?;
    let key = checked_key(config, &pool)?;
    let added = accounts::add(
        &pool,
        &key,
        &NewAccount {
            site_name: site.clone(),
            account,
            password,
            preferred,
            proxy: proxy.map(Secret::new),
        },
    )?;
    warn_if_unconfigured(config, &site);
    println!(
        "added account `{}` for site `{}` (id {}) in {}",
        printable(&added.account),
        printable(&added.site_name),
        added.id,
        pool.display_url()
    );
    Ok(())
}

/// `tokend accounts import FILE` (`-` is stdin).
fn import_accounts(config: &Config, file: &str) -> Result<()> {
    let input: Box<dyn Read> = if file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).map_err(|e| Error::io(file, e))?)
    };
    let pool = ready_pool(config)?;
    let key = checked_key(config, &pool)?;
    let count = accounts::import(&pool, &key, input)?;
    println!("imported {count} account(s) into {}", pool.display_url());
    Ok(())
}

/// `tokend accounts list [--site SITE] [--json]`.
fn list_accounts(config: &Config, site: Option<String>, json: bool) -> Result<()> {
    let pool = ready_pool(config)?;
    // A derived site (SPEC §13) has no accounts of its own: it uses its parent's.
    let owner = site
        .as_deref()
        .and_then(|name| config.site(name))
        .map(|s| crate::config::court::account_owner(&config.sites, s))
        .filter(|owner| Some(owner.name.as_str()) != site.as_deref());
    if let (Some(owner), Some(name)) = (owner, site.as_deref()) {
        eprintln!(
            "site `{name}` is derived from `{}` and uses its accounts:",
            owner.name
        );
    }
    let site = owner.map(|o| o.name.clone()).or(site);
    let rows = accounts::views(&pool, site.as_deref())?;
    print_accounts(&rows, json);
    // On stderr, so that the table or the JSON lines stay clean for scripts.
    eprintln!("{} account(s) in {}", rows.len(), pool.display_url());
    Ok(())
}

/// `tokend accounts set-proxy SITE ACCOUNT URL | --none`.
fn set_proxy(config: &Config, site: &str, account: &str, url: Option<Secret>) -> Result<()> {
    let key = SecretKey::load(&config.security)?;
    let pool = ready_pool(config)?;
    accounts::set_proxy(&pool, &key, site, account, url.as_ref())?;
    match &url {
        Some(url) => println!(
            "account `{}` of site `{}` logs in through {} (stored in {})",
            printable(account),
            printable(site),
            crate::vault::secret::redact_url(url.expose()),
            pool.display_url()
        ),
        None => println!(
            "account `{}` of site `{}` has no proxy of its own (stored in {})",
            printable(account),
            printable(site),
            pool.display_url()
        ),
    }
    Ok(())
}

/// The host (and port) of a proxy URL as listings show it, without scheme or credentials.
fn proxy_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or(rest)
}

/// `tokend accounts unblock SITE ACCOUNT`, through the daemon.
fn unblock_account(
    config: &Config,
    site: &str,
    account: &str,
    url: Option<&str>,
    wait: f64,
) -> Result<()> {
    crate::config::validate_site_name("site", site)?;
    let body = crate::api::accounts::UnblockRequest {
        site_name: site.to_string(),
        account: account.to_string(),
    };
    let unblocked: crate::api::accounts::UnblockAnswer = call_daemon(
        config,
        crate::cli::client::Endpoint::new(url, wait),
        "/api/v1/automation/accounts/unblock",
        &body,
    )?;
    if unblocked.was_blocked {
        println!(
            "account `{}` of site `{}` unblocked",
            printable(account),
            printable(site)
        );
    } else {
        println!(
            "account `{}` of site `{}` was not blocked",
            printable(account),
            printable(site)
        );
    }
    Ok(())
}

/// One line from standard input, without its line ending.
fn read_password(mut input: impl BufRead) -> Result<Secret> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| Error::invalid("password", format!("cannot read standard input: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(Error::invalid(
            "password",
            "standard input gave an empty password",
        ));
    }
    Ok(Secret::new(password))
}

/// At a terminal: asks twice without echo, so that a typo is not stored.
fn prompt_password() -> Result<Secret> {
    let ask = |prompt: &str| {
        crate::cli::terminal::read_hidden(prompt)
            .map_err(|e| Error::invalid("password", format!("cannot read the terminal: {e}")))
    };
    let first = Secret::new(ask("Password: ")?);
    if first.is_empty() {
        return Err(Error::invalid("password", "the password is empty"));
    }
    let second = Secret::new(ask("Password (again): ")?);
    if first != second {
        return Err(Error::invalid("password", "the two passwords differ"));
    }
    Ok(first)
}

fn print_accounts(rows: &[AccountView], json: bool) {
    if json {
        for row in rows {
            println!("{}", serde_json::to_string(row).unwrap_or_default());
        }
        return;
    }
    println!(
        "{:<6} {:<20} {:<24} {:<9} {:<30} {:<21} {:>7} {:>7}  {:<19}  PROXY",
        "ID", "SITE", "ACCOUNT", "PREFERRED", "STATE", "UNTIL", "OK", "FAILED", "LAST SUCCESS"
    );
    for r in rows {
        let last = r.last_login_success_at.map_or("-".to_string(), |t| {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        });
        let until = r.until.map_or("-".to_string(), |t| {
            t.format("%Y-%m-%d %H:%M:%SZ").to_string()
        });
        let state = match r.reason {
            Some(reason) => format!("{} ({})", r.state.as_str(), reason.as_str()),
            None => r.state.as_str().to_string(),
        };
        println!(
            "{:<6} {:<20} {} {:<9} {:<30} {:<21} {:>7} {:>7}  {last:<19}  {}",
            r.id,
            printable(&r.site_name),
            pad(&printable(&r.account), 24),
            r.is_preferred,
            state,
            until,
            r.login_success_count,
            r.login_failure_count,
            r.proxy.as_deref().map_or("-", proxy_host)
        );
    }
}

/// `text` padded with spaces to `width` terminal columns: a Chinese character takes two, so
/// `{:<24}` (which counts characters) would push the next columns out of line.
fn pad(text: &str, width: usize) -> String {
    let used = unicode_width::UnicodeWidthStr::width(text);
    format!("{text}{}", " ".repeat(width.saturating_sub(used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_counts_columns() {
        assert_eq!(pad("bob", 6), "bob   ");
        assert_eq!(pad("张三", 6), "张三  ");
        assert_eq!(pad("much-too-long", 4), "much-too-long");
    }

    #[test]
    fn proxy_host_drops_scheme_and_credentials() {
        assert_eq!(proxy_host("http://u:***@p.local:3128"), "p.local:3128");
        assert_eq!(proxy_host("socks5://10.0.0.1:1080/"), "10.0.0.1:1080");
        assert_eq!(proxy_host("p.local:8080"), "p.local:8080");
    }

    #[test]
    fn password_line() {
        assert_eq!(
            read_password(&b"p@ss word\r\n"[..]).unwrap().expose(),
            "p@ss word"
        );
        assert!(read_password(&b"\n"[..]).is_err());
    }
}
