//! `tokend token get | invalidate`, through the running daemon.

use clap::Subcommand;

use super::call_daemon;
use crate::api::tokens::{InvalidateAnswer, InvalidateRequest};
use crate::broker::{AcquireRequest, AcquiredToken};
use crate::cli::client::{read, wire_text};
use crate::cli::terminal::printable;
use crate::config::Config;
use crate::error::Result;

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

/// `tokend token get | invalidate`, through the daemon.
pub(super) fn run(config: &Config, command: TokenCommand) -> Result<()> {
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
            let body = AcquireRequest {
                site_name: site,
                credential_id: None,
                account,
                force_refresh,
            };
            let path = "/api/v1/automation/tokens/acquire";
            let data: serde_json::Value = call_daemon(
                config,
                crate::cli::client::Endpoint::new(url.as_deref(), wait),
                path,
                &body,
            )?;
            let token: AcquiredToken = read(&format!("POST {path}"), &data)?;
            print_token(&token, &data, json, header);
            Ok(())
        }
        TokenCommand::Invalidate {
            site,
            account,
            url,
            wait,
        } => {
            crate::config::validate_site_name("site", &site)?;
            let body = InvalidateRequest {
                site_name: site.clone(),
                account: account.clone(),
            };
            let done: InvalidateAnswer = call_daemon(
                config,
                crate::cli::client::Endpoint::new(url.as_deref(), wait),
                "/api/v1/automation/tokens/invalidate",
                &body,
            )?;
            println!(
                "invalidated the token of `{}` on site `{site}` (stored token removed: {})",
                printable(&account),
                done.stored_token_removed
            );
            Ok(())
        }
    }
}

/// `Name: value` for each of the answer's ready `headers` (from `authorization` when the
/// daemon is older and answers without them: [`crate::cache::ReadyHeaders`] reads either).
fn header_lines(token: &AcquiredToken) -> Vec<String> {
    token
        .ready
        .headers()
        .map(|(name, value)| format!("{name}: {}", value.expose()))
        .collect()
}

/// The token on stdout (or the whole answer as the daemon wrote it, or the header lines to
/// send); its facts on stderr, so that `$(tokend token get …)` holds the token alone.
fn print_token(token: &AcquiredToken, data: &serde_json::Value, json: bool, header: bool) {
    if json {
        println!("{data}");
    } else if header {
        for line in header_lines(token) {
            println!("{}", printable(&line));
        }
    } else {
        println!("{}", printable(token.token.expose()));
        eprintln!(
            "account={} expires_at={} source={}",
            printable(&token.account),
            wire_text(&token.expires_at),
            wire_text(&token.source)
        );
    }
}
