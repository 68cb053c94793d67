//! The `tokend` command line (SPEC §8). `--config PATH` (or `TOKEND_CONFIG`) is accepted
//! before or after the subcommand.
//!
//! Exit status ([`crate::error::exit_code_of`], also for the daemon's answers): 0 success;
//! 1 the account exists / does not exist, the captcha is unknown or answered already;
//! 64 bad arguments; 65 bad input data (an import file); 69 database or daemon unreachable,
//! no token could be had; 70 internal error; 71 the port cannot be taken; 74 I/O error;
//! 75 temporary failure (queue full, timeout, site paused, login budget spent, shutting
//! down: try again); 77 not allowed; 78 bad configuration or secret key.

use std::io::{BufRead, IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::accounts::{self, AccountView, NewAccount};
use crate::config::Config;
use crate::crypto::SecretKey;
use crate::db::Pool;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::terminal::printable;

#[derive(Debug, Parser)]
#[command(
    name = "tokend",
    version,
    about = "Token broker for automated access to web portals"
)]
pub struct Cli {
    /// Configuration file (TOML); environment variables override it.
    #[arg(long, global = true, env = "TOKEND_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: HTTP API, actors, background jobs.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage login accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Get tokens from the running daemon.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Maintenance through the running daemon; steps combine and run in this order.
    Optimize(crate::maintenance::OptimizeArgs),
    /// Captchas a login program handed to a person, through the running daemon.
    #[command(subcommand)]
    Captcha(CaptchaCommand),
    /// Job checkouts (accounts held for one job), through the running daemon.
    #[command(subcommand)]
    Checkout(crate::exec::CheckoutCommand),
    /// Run COMMAND with a token of SITE in its environment (TOKEND_TOKEN, TOKEND_HEADERS, …),
    /// through the running daemon; exits with COMMAND's status.
    Exec(crate::exec::ExecArgs),
    /// Sites, through the running daemon.
    #[command(subcommand)]
    Sites(SitesCommand),
    /// Portal recipes (`driver = "recipe"`): check one against its portal, list, show.
    #[command(subcommand)]
    Recipe(RecipeCommand),
}

#[derive(Debug, Subcommand)]
pub enum RecipeCommand {
    /// Run SITE's login once against its portal, printing each step (secrets masked);
    /// stores nothing. The daemon need not run.
    Check {
        site: String,
        /// The account to log in with (default: the site's first active account).
        #[arg(long)]
        account: Option<String>,
    },
    /// The built-in recipes.
    List,
    /// Print a built-in recipe, to copy and edit.
    Show { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Close SITE's circuit: logins are tried again at once (after the portal is back).
    CloseCircuit {
        site: String,
        /// The daemon's address (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
        /// Seconds to keep trying while the daemon refuses connections (it may be starting).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaptchaCommand {
    /// List the captchas waiting for an answer (id, site, account, prompt, expiry).
    List {
        /// The daemon's address (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
        /// Print the whole answer (images included, as data URLs) as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to keep trying while the daemon refuses connections (it may be starting).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
    /// Save the image of captcha ID to FILE (a link to it at a terminal that shows links).
    Show {
        id: String,
        /// Where to write the image (PNG, JPEG or GIF, as the login program gave it).
        #[arg(long, value_name = "FILE", required = true)]
        save: PathBuf,
        /// The daemon's address (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
        /// Seconds to keep trying while the daemon refuses connections (it may be starting).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
    /// Answer captcha ID; without ANSWER, the first line of stdin is the answer.
    Answer {
        id: String,
        answer: Option<String>,
        /// The daemon's address (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
        /// Seconds to keep trying while the daemon refuses connections (it may be starting).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a valid token for SITE (from the daemon's cache, or after a login) on stdout.
    Get {
        site: String,
        /// Use this account instead of letting tokend choose.
        #[arg(long)]
        account: Option<String>,
        /// Reject the cached token and log in again.
        #[arg(long)]
        force_refresh: bool,
        /// The daemon's address (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
        /// Print the whole answer (token, account, expiry, source) as JSON.
        #[arg(long)]
        json: bool,
        /// Print the ready header line(s) to send instead of the bare token:
        /// `Authorization: Bearer <token>` (`<token>` raw for court_zxfw), or
        /// `Cookie: SESSION=…` for a cookie session.
        #[arg(long, conflicts_with = "json")]
        header: bool,
        /// Seconds to keep trying while the daemon refuses connections (it may be starting).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
    /// Drop the token of ACCOUNT on SITE (a consumer found it rejected), so that the next
    /// acquisition logs in again.
    Invalidate {
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
    /// Import accounts from CSV (site_name,account,password[,preferred[,proxy]]); `-` is
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

/// Parses the arguments, runs the command and returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 64,
            };
        }
    };
    if let Err(e) = crate::logging::init(matches!(cli.command, Command::Serve)) {
        eprintln!("tokend: {e}");
        return e.exit_code();
    }
    match run(cli) {
        Ok(status) => status,
        Err(e) => {
            // An error may quote a portal or the daemon: no escape sequence reaches the terminal.
            eprintln!("tokend: {}", printable(&e.to_string()));
            e.exit_code()
        }
    }
}

/// Runs the command; the exit status on success (0, or `tokend exec`'s COMMAND's).
pub fn run(cli: Cli) -> Result<i32> {
    let config = Arc::new(Config::load(cli.config.as_deref())?);
    if let Command::Exec(args) = cli.command {
        return crate::exec::run_exec(&config, args);
    }
    run_command(&config, cli.command).map(|()| 0)
}

fn run_command(config: &Arc<Config>, command: Command) -> Result<()> {
    let config = config.clone();
    match command {
        Command::Serve => serve(config),
        Command::Migrate => migrate(&config),
        Command::Accounts(command) => run_accounts(&config, command),
        Command::Optimize(args) => {
            let runtime = actix_web::rt::System::new();
            runtime.block_on(crate::maintenance::run(&config, &args))
        }
        Command::Token(command) => run_token(&config, command),
        Command::Captcha(command) => run_captcha(&config, command),
        Command::Checkout(command) => crate::exec::run_checkout(&config, command),
        Command::Exec(_) => Err(Error::Internal("exec is run by `run`".into())),
        Command::Recipe(command) => run_recipe(&config, command),
        Command::Sites(SitesCommand::CloseCircuit { site, url, wait }) => close_circuit(
            &config,
            &site,
            crate::client::Endpoint::new(url.as_deref(), wait),
        ),
    }
}

/// `tokend serve`, on an actix system of its own.
fn serve(config: Arc<Config>) -> Result<()> {
    crate::process::limit_malloc_arenas();
    crate::process::forbid_dumps();
    let system = actix_web::rt::System::new();
    let result = system.block_on(crate::server::serve(config));
    // Dropping the runtime would wait for every blocking task, also a database call stuck
    // on a dead connection; the history is flushed or spooled (or its failure logged) by now.
    std::mem::forget(system);
    result
}

/// `tokend migrate`.
fn migrate(config: &Config) -> Result<()> {
    let pool = open_pool(config)?;
    let applied = pool.migrate()?;
    if applied.is_empty() {
        println!("database {} is up to date", pool.display_url());
    } else {
        println!(
            "applied {} migration(s) to {}: {}",
            applied.len(),
            pool.display_url(),
            applied.join(", ")
        );
    }
    Ok(())
}

/// `tokend token get | invalidate`, through the daemon.
fn run_token(config: &Config, command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Get {
            site,
            account,
            force_refresh,
            url,
            json,
            header,
            wait,
        } => {
            crate::config::validate_site_name("site", &site)?;
            let body = serde_json::json!({"site_name": site, "account": account, "force_refresh": force_refresh});
            let data = call_daemon(
                config,
                crate::client::Endpoint::new(url.as_deref(), wait),
                "/api/v1/automation/tokens/acquire",
                &body,
            )?;
            print_token(&data, json, header);
            Ok(())
        }
        TokenCommand::Invalidate {
            site,
            account,
            url,
            wait,
        } => {
            crate::config::validate_site_name("site", &site)?;
            let body = serde_json::json!({"site_name": site, "account": account});
            let data = call_daemon(
                config,
                crate::client::Endpoint::new(url.as_deref(), wait),
                "/api/v1/automation/tokens/invalidate",
                &body,
            )?;
            println!(
                "invalidated the token of `{}` on site `{site}` (stored token removed: {})",
                printable(&account),
                data["stored_token_removed"]
            );
            Ok(())
        }
    }
}

/// `Name: value` for each of the answer's ready `headers`; from `authorization` when the
/// daemon is older and answers without them.
fn header_lines(data: &serde_json::Value) -> Vec<String> {
    match data["headers"].as_object() {
        Some(headers) if !headers.is_empty() => headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.as_str().unwrap_or_default()))
            .collect(),
        _ => vec![format!(
            "Authorization: {}",
            data["authorization"].as_str().unwrap_or_default()
        )],
    }
}

/// POSTs `body` to the daemon on an actix system of its own; the answer's `data`.
fn call_daemon(
    config: &Config,
    endpoint: crate::client::Endpoint,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value> {
    let runtime = actix_web::rt::System::new();
    runtime.block_on(crate::client::post(config, &endpoint, path, body))
}

/// The token on stdout (or the whole answer, or the header lines to send); its facts on
/// stderr, so that `$(tokend token get …)` holds the token alone.
fn print_token(data: &serde_json::Value, json: bool, header: bool) {
    if json {
        println!("{data}");
    } else if header {
        for line in header_lines(data) {
            println!("{}", printable(&line));
        }
    } else {
        println!("{}", printable(data["token"].as_str().unwrap_or_default()));
        let field = |name: &str| printable(data[name].as_str().unwrap_or("?"));
        eprintln!(
            "account={} expires_at={} source={}",
            field("account"),
            field("expires_at"),
            field("source")
        );
    }
}

/// `tokend captcha list | answer ID [ANSWER]`, through the daemon.
fn run_captcha(config: &Config, command: CaptchaCommand) -> Result<()> {
    let runtime = actix_web::rt::System::new();
    match command {
        CaptchaCommand::List { url, json, wait } => {
            let data = runtime.block_on(crate::client::get(
                config,
                &crate::client::Endpoint::new(url.as_deref(), wait),
                "/api/v1/automation/captchas",
            ))?;
            if json {
                println!("{data}");
                return Ok(());
            }
            let list = data["captchas"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                eprintln!("no captcha is waiting for an answer");
            }
            for c in list {
                // The prompt is the portal's, the account an operator's: neither is trusted.
                let field = |name: &str| printable(c[name].as_str().unwrap_or("?"));
                println!(
                    "{}\t{}\t{}\texpires_at={}\t{}",
                    field("id"),
                    field("site_name"),
                    field("account"),
                    field("expires_at"),
                    printable(c["prompt"].as_str().unwrap_or(""))
                );
            }
            Ok(())
        }
        CaptchaCommand::Show {
            id,
            save,
            url,
            wait,
        } => {
            let data = runtime.block_on(crate::client::get(
                config,
                &crate::client::Endpoint::new(url.as_deref(), wait),
                "/api/v1/automation/captchas",
            ))?;
            save_captcha_image(&data, &id, &save)
        }
        CaptchaCommand::Answer {
            id,
            answer,
            url,
            wait,
        } => {
            let answer = match answer {
                Some(answer) => answer,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| Error::io("stdin", e))?;
                    line
                }
            };
            let answer = answer.trim();
            if answer.is_empty() {
                return Err(Error::invalid("answer", "is empty"));
            }
            let path = format!(
                "/api/v1/automation/captchas/{}",
                percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
            );
            runtime.block_on(crate::client::post(
                config,
                &crate::client::Endpoint::new(url.as_deref(), wait),
                &path,
                &serde_json::json!({ "answer": answer }),
            ))?;
            println!("answered captcha {}", printable(&id));
            Ok(())
        }
    }
}

fn open_pool(config: &Config) -> Result<Pool> {
    Pool::connect(config.database.url.expose(), config.database.pool_size)
}

/// Opens the pool and brings the schema up to date, so account commands work on a new file.
fn ready_pool(config: &Config) -> Result<Pool> {
    let pool = open_pool(config)?;
    pool.migrate()?;
    Ok(pool)
}

/// The secret key, checked against the database: never a new key file beside stored
/// secrets, never a key that cannot open them.
fn checked_key(config: &Config, pool: &Pool) -> Result<SecretKey> {
    let key = crate::checks::load_key(config, pool)?;
    crate::checks::key_opens_stored_secret(&mut *pool.get()?, &key)?;
    Ok(key)
}

/// `tokend recipe …`; `check` opens the account's password like the accounts commands.
fn run_recipe(config: &Config, command: RecipeCommand) -> Result<()> {
    use crate::drivers::recipe::check;
    let (site_name, account) = match command {
        RecipeCommand::List => return check::list(),
        RecipeCommand::Show { name } => return check::show(&name),
        RecipeCommand::Check { site, account } => (site, account),
    };
    let site = config
        .site(&site_name)
        .ok_or_else(|| Error::UnknownSite(site_name.clone()))?;
    let pool = ready_pool(config)?;
    let key = checked_key(config, &pool)?;
    let credentials = accounts::list(&pool, Some(&site_name))?;
    let credential = match &account {
        Some(name) => credentials.iter().find(|c| &c.account == name),
        None => credentials.iter().find(|c| c.is_active),
    }
    .ok_or_else(|| Error::AccountNotFound {
        site: site_name.clone(),
        account: account.clone().unwrap_or_else(|| "(any active)".into()),
    })?;
    let password = accounts::password(&key, credential)?;
    let proxy = match &credential.proxy_encrypted {
        Some(sealed) => Some(key.open(
            sealed,
            crate::crypto::SealContext::Proxy {
                site: &site_name,
                account: &credential.account,
            },
        )?),
        None => None,
    };
    let own = proxy.is_some();
    let proxy = proxy.or_else(|| (!site.proxy.is_empty()).then(|| site.proxy.clone()));
    check::check(
        site,
        config.retry.login_timeout,
        &credential.account,
        &password,
        proxy.as_ref().map(|p| (p, own)),
    )
}

fn warn_if_unconfigured(config: &Config, site: &str) {
    if config.site(site).is_none() {
        eprintln!("tokend: warning: site `{}` is not configured in [[sites]]; its accounts are unused until it is", printable(site));
    }
}

fn run_accounts(config: &Config, command: AccountsCommand) -> Result<()> {
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
            crate::secret::redact_url(url.expose()),
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

/// `tokend sites close-circuit SITE`, through the daemon.
fn close_circuit(config: &Config, site: &str, endpoint: crate::client::Endpoint) -> Result<()> {
    crate::config::validate_site_name("site", site)?;
    let data = call_daemon(
        config,
        endpoint,
        &format!("/api/v1/automation/sites/{site}/circuit/close"),
        &serde_json::json!({}),
    )?;
    println!(
        "circuit of site `{site}` is {}: logins are tried again",
        data["circuit"]["state"].as_str().unwrap_or("closed")
    );
    Ok(())
}

/// `tokend captcha show ID --save FILE`: the pending challenge's image, decoded from its
/// data URL, written to FILE; at a terminal the path is a link (OSC 8) to the file.
fn save_captcha_image(data: &serde_json::Value, id: &str, file: &std::path::Path) -> Result<()> {
    use base64::Engine;
    let challenge = data["captchas"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["id"] == id))
        .ok_or_else(|| Error::CaptchaNotFound(id.to_string()))?;
    let image = challenge["image"].as_str().unwrap_or_default();
    let encoded = image
        .split_once(";base64,")
        .map(|(_, encoded)| encoded)
        .ok_or_else(|| Error::Daemon(format!("captcha `{id}` has no base64 image")))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| Error::Daemon(format!("captcha `{id}`: the image is not base64: {e}")))?;
    std::fs::write(file, &bytes).map_err(|e| Error::io(file, e))?;
    let shown = if std::io::stdout().is_terminal() {
        terminal_link(file)
    } else {
        file.display().to_string()
    };
    println!(
        "saved the image of captcha {id} ({} / {}: {}) to {shown}",
        challenge["site_name"].as_str().unwrap_or("?"),
        challenge["account"].as_str().unwrap_or("?"),
        challenge["prompt"].as_str().unwrap_or("")
    );
    Ok(())
}

/// `file` as an OSC 8 hyperlink to `file://HOST/ABSOLUTE-PATH`: a terminal that knows the
/// sequence shows the path as a link, one that does not shows the path alone.
fn terminal_link(file: &std::path::Path) -> String {
    const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let target = format!(
        "file://{}{}",
        host.trim(),
        percent_encoding::utf8_percent_encode(&absolute.to_string_lossy(), PATH_SET)
    );
    format!("\x1b]8;;{target}\x1b\\{}\x1b]8;;\x1b\\", file.display())
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
    let body = serde_json::json!({"site_name": site, "account": account});
    let data = call_daemon(
        config,
        crate::client::Endpoint::new(url, wait),
        "/api/v1/automation/accounts/unblock",
        &body,
    )?;
    if data["was_blocked"] == serde_json::Value::Bool(true) {
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
        crate::terminal::read_hidden(prompt)
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
    use clap::CommandFactory;

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
    fn a_terminal_link_points_at_the_absolute_file() {
        let link = terminal_link(std::path::Path::new("/tmp/a b.png"));
        assert!(link.starts_with("\x1b]8;;file://"), "{link:?}");
        assert!(
            link.contains("/tmp/a%20b.png\x1b\\/tmp/a b.png\x1b]8;;\x1b\\"),
            "{link:?}"
        );
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_flag_before_or_after_subcommand() {
        for args in [
            vec!["tokend", "--config", "x.toml", "migrate"],
            vec!["tokend", "migrate", "--config", "x.toml"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("x.toml")));
        }
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
