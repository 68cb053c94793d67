//! `tokend sites close-circuit SITE`, through the running daemon.

use clap::Subcommand;

use super::call_daemon;
use crate::api::accounts::CircuitAnswer;
use crate::cli::client::wire_text;
use crate::config::Config;
use crate::error::Result;

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

/// `tokend sites close-circuit SITE`, through the daemon.
pub(super) fn close_circuit(
    config: &Config,
    site: &str,
    endpoint: crate::cli::client::Endpoint,
) -> Result<()> {
    crate::config::validate_site_name("site", site)?;
    let closed: CircuitAnswer = call_daemon(
        config,
        endpoint,
        &format!("/api/v1/automation/sites/{site}/circuit/close"),
        &serde_json::json!({}),
    )?;
    println!(
        "circuit of site `{site}` is {}: logins are tried again",
        wire_text(&closed.circuit.state)
    );
    Ok(())
}
