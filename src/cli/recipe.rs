//! `tokend recipe check | list | show`: portal recipes (`driver = "recipe"`).

use clap::Subcommand;

use super::{checked_key, ready_pool};
use crate::accounts;
use crate::config::Config;
use crate::error::{Error, Result};

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

/// `tokend recipe …`; `check` opens the account's password like the accounts commands.
pub(super) fn run(config: &Config, command: RecipeCommand) -> Result<()> {
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
            crate::vault::crypto::SealContext::Proxy {
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
