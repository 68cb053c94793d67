//! The `tokend` command line (SPEC §8). `--config PATH` (or `TOKEND_CONFIG`) is accepted
//! before or after the subcommand.
//!
//! Exit status ([`crate::error::exit_code_of`], also for the daemon's answers): 0 success;
//! 1 the account exists / does not exist, the captcha is unknown or answered already;
//! 64 bad arguments; 65 bad input data (an import file); 69 database or daemon unreachable,
//! no token could be had; 70 internal error; 71 the port cannot be taken; 74 I/O error;
//! 75 temporary failure (queue full, timeout, site paused, login budget spent, shutting
//! down: try again); 77 not allowed; 78 bad configuration or secret key.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::cli::terminal::printable;
use crate::config::Config;
use crate::db::Pool;
use crate::error::{Error, Result};
use crate::vault::crypto::SecretKey;

mod accounts;
mod captcha;
pub(crate) mod client;
pub(crate) mod exec;
pub(crate) mod optimize;
mod recipe;
mod sites;
pub(crate) mod terminal;
mod token;

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
    Accounts(accounts::AccountsCommand),
    /// Get tokens from the running daemon.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Maintenance through the running daemon; steps combine and run in this order.
    Optimize(crate::cli::optimize::OptimizeArgs),
    /// Captchas a login program handed to a person, through the running daemon.
    #[command(subcommand)]
    Captcha(captcha::CaptchaCommand),
    /// Job checkouts (accounts held for one job), through the running daemon.
    #[command(subcommand)]
    Checkout(crate::cli::exec::CheckoutCommand),
    /// Run COMMAND with a token of SITE in its environment (TOKEND_TOKEN, TOKEND_HEADERS, …),
    /// through the running daemon; exits with COMMAND's status.
    Exec(crate::cli::exec::ExecArgs),
    /// Sites, through the running daemon.
    #[command(subcommand)]
    Sites(sites::SitesCommand),
    /// Portal recipes (`driver = "recipe"`): check one against its portal, list, show.
    #[command(subcommand)]
    Recipe(recipe::RecipeCommand),
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
    if let Err(e) = crate::daemon::logging::init(matches!(cli.command, Command::Serve)) {
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
        return crate::cli::exec::run_exec(&config, args);
    }
    run_command(&config, cli.command).map(|()| 0)
}

fn run_command(config: &Arc<Config>, command: Command) -> Result<()> {
    let config = config.clone();
    match command {
        Command::Serve => serve(config),
        Command::Migrate => migrate(&config),
        Command::Accounts(command) => accounts::run(&config, command),
        Command::Optimize(args) => {
            let runtime = actix_web::rt::System::new();
            runtime.block_on(crate::cli::optimize::run(&config, &args))
        }
        Command::Token(command) => token::run(&config, command),
        Command::Captcha(command) => captcha::run(&config, command),
        Command::Checkout(command) => crate::cli::exec::run_checkout(&config, command),
        Command::Exec(_) => Err(Error::Internal("exec is run by `run`".into())),
        Command::Recipe(command) => recipe::run(&config, command),
        Command::Sites(sites::SitesCommand::CloseCircuit { site, url, wait }) => {
            sites::close_circuit(
                &config,
                &site,
                crate::cli::client::Endpoint::new(url.as_deref(), wait),
            )
        }
    }
}

/// `tokend serve`, on an actix system of its own.
fn serve(config: Arc<Config>) -> Result<()> {
    crate::daemon::resources::limit_malloc_arenas();
    crate::daemon::resources::forbid_dumps();
    let system = actix_web::rt::System::new();
    let result = system.block_on(crate::daemon::server::serve(config));
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

/// POSTs `body` to the daemon on an actix system of its own; the answer's `data`, read as
/// `T`.
fn call_daemon<T: serde::de::DeserializeOwned>(
    config: &Config,
    endpoint: crate::cli::client::Endpoint,
    path: &str,
    body: &impl serde::Serialize,
) -> Result<T> {
    let runtime = actix_web::rt::System::new();
    runtime.block_on(crate::cli::client::post(config, &endpoint, path, body))
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
    let key = crate::daemon::checks::load_key(config, pool)?;
    crate::daemon::checks::key_opens_stored_secret(&mut *pool.get()?, &key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
}
