//! `tokend recipe check|list|show` (issue 26): what a developer runs when a portal changed.
//! `check` runs one login of a `recipe` site against its portal in this process, printing
//! each step as it goes (secrets masked), and stores nothing: no token, no history, no
//! account state.

use super::format::{Recipe, BUILT_IN};
use super::RecipeDriver;
use crate::config::{seconds, DriverKind, SiteConfig};
use crate::drivers::deadline::Deadline;
use crate::drivers::login::Credentials;
use crate::error::{Error, Result};
use crate::vault::secret::Secret;

/// `tokend recipe list`: the built-in recipes, with their descriptions.
pub fn list() -> Result<()> {
    for (name, _) in BUILT_IN {
        let recipe = Recipe::load(name).map_err(Error::Internal)?;
        println!("{name}\t{}", recipe.description);
    }
    Ok(())
}

/// `tokend recipe show NAME`: a built-in recipe's text, to copy and edit.
pub fn show(name: &str) -> Result<()> {
    match BUILT_IN.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => {
            print!("{text}");
            Ok(())
        }
        None => Err(Error::invalid(
            "name",
            format!(
                "`{name}` is not a built-in recipe (built-in: {})",
                BUILT_IN.map(|(n, _)| n).join(", ")
            ),
        )),
    }
}

/// One login of `site` as `account`, traced on stdout; `Err` when it failed.
pub fn check(
    site: &SiteConfig,
    login_timeout: f64,
    account: &str,
    password: &Secret,
    proxy: Option<(&Secret, bool)>,
) -> Result<()> {
    if site.driver != DriverKind::Recipe {
        return Err(Error::invalid(
            "site",
            format!("site `{}` does not use driver \"recipe\"", site.name),
        ));
    }
    if site.is_derived() {
        return Err(Error::invalid(
            "site",
            format!(
                "site `{}` exchanges the token of `{}`: try it through the daemon (tokend token get {})",
                site.name, site.from_site, site.name
            ),
        ));
    }
    let driver = RecipeDriver::new(site, None, None)?;
    let creds = Credentials {
        site: &site.name,
        account,
        password,
        proxy: proxy.map(|(p, _)| p),
        own_proxy: proxy.is_some_and(|(_, own)| own),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("runtime: {e}")))?;
    let outcome = runtime.block_on(async {
        let deadline = Deadline::new(std::time::Instant::now() + seconds(login_timeout));
        driver.check(&creds, &deadline).await
    });
    match outcome {
        Ok(_) => {
            println!("OK: the recipe logged in (nothing was stored)");
            Ok(())
        }
        Err(failure) => {
            println!("FAILED ({}): {}", failure.error_type(), failure.message);
            Err(Error::Refused {
                code: failure.error_type().to_uppercase(),
                message: format!("the login of site `{}` failed", site.name),
            })
        }
    }
}
