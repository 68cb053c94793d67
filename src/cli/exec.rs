//! `tokend exec SITE [--account A] [--checkout] -- COMMAND …`: runs COMMAND with a token of
//! SITE in its environment (never its argv), through the running daemon, and exits with its
//! status; and `tokend checkout list | release ID`.
//!
//! COMMAND sees `TOKEND_TOKEN`, `TOKEND_AUTHORIZATION` (absent for a cookie session),
//! `TOKEND_HEADERS` (the ready headers as a JSON object), `TOKEND_SITE`, `TOKEND_ACCOUNT` and
//! `TOKEND_EXPIRES_AT`; tokend's own secrets are removed from its environment. With
//! `--checkout` the account is held for the command's lifetime: the lease is renewed while
//! it runs and released with `ok` when it exits 0, `failed` otherwise.

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::Duration;

use crate::api::checkouts::{CheckoutAnswer, CheckoutList};
use crate::broker::{
    AcquireRequest, AcquiredToken, CheckoutOutcome, CheckoutRequest, ReleaseRequest, RenewRequest,
};
use crate::cli::client::{read, wire_text, Endpoint};
use crate::cli::terminal::printable;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lifecycle::checkout::Checkout;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub site: String,
    /// Use this account instead of letting tokend choose.
    #[arg(long)]
    pub account: Option<String>,
    /// Hold the account for the command's lifetime (a job checkout).
    #[arg(long)]
    pub checkout: bool,
    /// With --checkout: the lease, renewed while the command runs.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    pub lease: f64,
    /// With --checkout: what the job is, shown beside the hold (default: the command).
    #[arg(long)]
    pub job: Option<String>,
    /// The daemon's address (default: http://<server.listen>).
    #[arg(long)]
    pub url: Option<String>,
    /// Seconds to keep trying while the daemon refuses connections (it may be starting).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub wait: f64,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum CheckoutCommand {
    /// The checkouts in force (every instance's, with Redis).
    List {
        #[arg(long)]
        url: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
    /// End checkout ID (a job that died without releasing it).
    Release {
        id: String,
        /// How the job went: ok, token_rejected (the token is invalidated) or failed (the
        /// account cools down).
        #[arg(long, default_value = "ok", value_parser = ["ok", "token_rejected", "failed"])]
        outcome: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
}

/// `tokend checkout list | release`.
pub fn run_checkout(config: &Config, command: CheckoutCommand) -> Result<()> {
    let runtime = actix_web::rt::System::new();
    match command {
        CheckoutCommand::List { url, json, wait } => {
            let endpoint = Endpoint::new(url.as_deref(), wait);
            let path = "/api/v1/automation/tokens/checkouts";
            let data = runtime.block_on(crate::cli::client::get_json(config, &endpoint, path))?;
            let list: CheckoutList = read(&format!("GET {path}"), &data)?;
            if json {
                println!("{data}");
                return Ok(());
            }
            if list.checkouts.is_empty() {
                eprintln!("no account is checked out");
            }
            for c in list.checkouts {
                println!(
                    "{}\t{}\t{}\tsince={}\tlease_until={}\t{}",
                    text(&c.checkout_id),
                    text(&c.site_name),
                    text(&c.account),
                    wire_text(&c.since),
                    wire_text(&c.lease_until),
                    text(c.job.as_deref().unwrap_or(""))
                );
            }
            Ok(())
        }
        CheckoutCommand::Release {
            id,
            outcome,
            url,
            wait,
        } => {
            let endpoint = Endpoint::new(url.as_deref(), wait);
            let how: CheckoutOutcome = serde_json::from_value(serde_json::json!(outcome))
                .map_err(|e| Error::invalid("--outcome", e.to_string()))?;
            runtime.block_on(release(config, &endpoint, &id, how))?;
            println!("released checkout {id} ({outcome})");
            Ok(())
        }
    }
}

/// A field as one line of plain text (portal and operator text: no control characters).
fn text(value: &str) -> String {
    crate::cli::terminal::printable(value)
}

fn path_of(id: &str, what: &str) -> String {
    format!(
        "/api/v1/automation/tokens/checkout/{}/{what}",
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
    )
}

async fn release(
    config: &Config,
    endpoint: &Endpoint,
    id: &str,
    outcome: CheckoutOutcome,
) -> Result<Checkout> {
    let path = path_of(id, "release");
    crate::cli::client::post(config, endpoint, &path, &ReleaseRequest { outcome }).await
}

/// `tokend exec`: the exit status is COMMAND's (128 + the signal that ended it).
pub fn run_exec(config: &Config, args: ExecArgs) -> Result<i32> {
    crate::config::validate_site_name("site", &args.site)?;
    let runtime = actix_web::rt::System::new();
    runtime.block_on(exec(config, args))
}

async fn exec(config: &Config, args: ExecArgs) -> Result<i32> {
    let endpoint = Endpoint::new(args.url.as_deref(), args.wait);
    if !args.checkout {
        let body = AcquireRequest {
            site_name: args.site.clone(),
            credential_id: None,
            account: args.account.clone(),
            force_refresh: false,
        };
        let token: AcquiredToken = crate::cli::client::post(
            config,
            &endpoint,
            "/api/v1/automation/tokens/acquire",
            &body,
        )
        .await?;
        let status = spawn(&args, &ForCommand::from(token))?.wait().await;
        return exit_code(status.map_err(|e| Error::io(&args.command[0], e))?);
    }
    let job = args.job.clone().unwrap_or_else(|| {
        let line = format!("tokend exec {}", args.command.join(" "));
        line.chars().filter(|c| !c.is_control()).take(200).collect()
    });
    let body = CheckoutRequest {
        site_name: args.site.clone(),
        account: args.account.clone(),
        credential_id: None,
        lease_seconds: Some(args.lease),
        job: Some(job),
    };
    let held: CheckoutAnswer = crate::cli::client::post(
        config,
        &endpoint,
        "/api/v1/automation/tokens/checkout",
        &body,
    )
    .await?;
    let id = held.checkout.checkout_id.clone();
    let mut child = match spawn(&args, &ForCommand::from(held)) {
        Ok(child) => child,
        Err(e) => {
            release(config, &endpoint, &id, CheckoutOutcome::Ok).await?;
            return Err(e);
        }
    };
    let every = Duration::from_secs_f64((args.lease / 3.0).max(0.5));
    let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| Error::io(&args.command[0], e)),
            _ = renewals.tick() => renew(config, &endpoint, &id, args.lease).await,
        }
    };
    let outcome = match &status {
        Ok(status) if status.success() => CheckoutOutcome::Ok,
        _ => CheckoutOutcome::Failed,
    };
    if let Err(e) = release(config, &endpoint, &id, outcome).await {
        eprintln!(
            "tokend: could not release checkout {id}: {} (its lease ends by itself)",
            printable(&e.to_string())
        );
    }
    exit_code(status?)
}

/// Renews the lease; a renewal that fails is said (the lease ends by itself if none lands).
async fn renew(config: &Config, endpoint: &Endpoint, id: &str, lease: f64) {
    let path = path_of(id, "renew");
    let request = RenewRequest {
        lease_seconds: Some(lease),
    };
    let renewed: Result<CheckoutAnswer> =
        crate::cli::client::post(config, endpoint, &path, &request).await;
    match renewed {
        Ok(held) if held.token_renewed => eprintln!(
            "tokend: the token of checkout {id} was renewed; the command still has the old one"
        ),
        Ok(_) => {}
        Err(e) => eprintln!(
            "tokend: renewing checkout {id} failed: {}",
            printable(&e.to_string())
        ),
    }
}

/// What COMMAND is given of an acquired or checked-out token.
struct ForCommand {
    token: String,
    headers: BTreeMap<String, String>,
    authorization: Option<String>,
    account: String,
    expires_at: String,
}

impl From<AcquiredToken> for ForCommand {
    fn from(token: AcquiredToken) -> ForCommand {
        let (headers, authorization) = crate::broker::ready_headers(&token);
        ForCommand {
            token: token.token.expose().to_string(),
            headers,
            authorization,
            account: token.account,
            expires_at: wire_text(&token.expires_at),
        }
    }
}

impl From<CheckoutAnswer> for ForCommand {
    fn from(held: CheckoutAnswer) -> ForCommand {
        ForCommand {
            token: held.token,
            headers: held.headers,
            authorization: held.authorization,
            account: held.checkout.account,
            expires_at: wire_text(&held.expires_at),
        }
    }
}

/// COMMAND, with the token in its environment and tokend's secrets out of it.
fn spawn(args: &ExecArgs, token: &ForCommand) -> Result<tokio::process::Child> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| Error::invalid("COMMAND", "is missing (after `--`)"))?;
    let mut command = tokio::process::Command::new(program);
    command.args(rest);
    for name in crate::config::SECRET_ENV {
        command.env_remove(name);
    }
    command
        .env("TOKEND_TOKEN", &token.token)
        .env("TOKEND_HEADERS", wire_text(&token.headers))
        .env("TOKEND_SITE", &args.site)
        .env("TOKEND_ACCOUNT", &token.account)
        .env("TOKEND_EXPIRES_AT", &token.expires_at);
    match token.authorization.as_deref() {
        Some(authorization) => command.env("TOKEND_AUTHORIZATION", authorization),
        None => command.env_remove("TOKEND_AUTHORIZATION"),
    };
    command
        .spawn()
        .map_err(|e| Error::invalid("COMMAND", format!("cannot run `{program}`: {e}")))
}

fn exit_code(status: ExitStatus) -> Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}
