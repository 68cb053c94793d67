//! `tokend token get | invalidate`, through the running daemon.

use clap::Subcommand;

use super::call_daemon;
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
            let body = serde_json::json!({"site_name": site, "account": account, "force_refresh": force_refresh});
            let data = call_daemon(
                config,
                crate::cli::client::Endpoint::new(url.as_deref(), wait),
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
                crate::cli::client::Endpoint::new(url.as_deref(), wait),
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
