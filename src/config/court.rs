//! The keys of the court portal drivers and of derived sites (SPEC §13 "Derived tokens",
//! §15): the captcha solver, and the checks that tie a derived site to its parent — the
//! parent exists, and following `from_site` never comes back to where it started.

pub use super::site::CaptchaSolverConfig;
use super::site::{DriverKind, SiteConfig};
use crate::error::{Error, Result};

/// The checks of one site's court and derived keys; `index` names the key.
pub(super) fn validate_site(site: &SiteConfig, index: usize) -> Result<()> {
    let key = |field: &str| format!("sites[{index}].{field}");
    validate_captcha(site, &key)?;
    validate_derived(site, &key)?;
    if !site.command.is_empty() && site.driver != DriverKind::Command {
        return only_for(key("command"), "\"command\"");
    }
    if !site.login_url.is_empty() && !matches!(site.driver, DriverKind::Http | DriverKind::Command)
    {
        return only_for(key("login_url"), "\"http\"");
    }
    Ok(())
}

/// A key set on a site whose driver does not read it.
fn only_for(key: String, what: &str) -> Result<()> {
    Err(Error::config(key, format!("is only for driver {what}")))
}

/// The portal and captcha keys of the court drivers.
fn validate_captcha(site: &SiteConfig, key: &impl Fn(&str) -> String) -> Result<()> {
    let court = matches!(
        site.driver,
        DriverKind::CourtZxfw | DriverKind::CourtBaoquan | DriverKind::Recipe
    );
    if !site.base_url.is_empty() {
        if !court {
            return only_for(
                key("base_url"),
                "\"court_zxfw\", \"court_baoquan\" or \"recipe\"",
            );
        }
        check_url(&key("base_url"), &site.base_url)?;
    }
    if !site.recipe.is_empty() && site.driver != DriverKind::Recipe {
        return only_for(key("recipe"), "\"recipe\"");
    }
    if !matches!(site.driver, DriverKind::CourtZxfw | DriverKind::Recipe) {
        if site.captcha_solver.is_some() {
            return only_for(key("captcha_solver"), "\"court_zxfw\" or \"recipe\"");
        }
        if !site.captcha_fallback.is_empty() {
            return only_for(key("captcha_fallback"), "\"court_zxfw\" or \"recipe\"");
        }
    }
    match &site.captcha_solver {
        Some(CaptchaSolverConfig::Program(argv))
            if argv.first().is_none_or(|p| p.trim().is_empty()) =>
        {
            return Err(Error::config(
                key("captcha_solver"),
                "needs a program: captcha_solver = [\"python3\", \"/path/to/solve.py\"] or \"human\"",
            ));
        }
        Some(CaptchaSolverConfig::Named(name)) if name != "human" => {
            return Err(Error::config(
                key("captcha_solver"),
                format!(
                    "`{name}` is neither \"human\" nor a program list [\"program\", \"arg\", …]"
                ),
            ));
        }
        _ => {}
    }
    if !matches!(site.captcha_fallback.as_str(), "" | "human") {
        return Err(Error::config(
            key("captcha_fallback"),
            format!(
                "`{}`: the only fallback is \"human\"",
                site.captcha_fallback
            ),
        ));
    }
    if !(site.captcha_solver_timeout.is_finite()
        && site.captcha_solver_timeout > 0.0
        && site.captcha_solver_timeout <= 3600.0)
    {
        return Err(Error::config(
            key("captcha_solver_timeout"),
            "must be more than 0 and at most 3600 seconds",
        ));
    }
    Ok(())
}

/// `from_site` of the sites that exchange a parent's token, and the exchange keys of
/// driver `derived`.
fn validate_derived(site: &SiteConfig, key: &impl Fn(&str) -> String) -> Result<()> {
    if site.is_derived() {
        if site.from_site.is_empty() {
            return Err(Error::config(
                key("from_site"),
                "a derived site needs from_site: the site whose token it exchanges",
            ));
        }
    } else if !site.from_site.is_empty() {
        return only_for(
            key("from_site"),
            "\"derived\", \"court_baoquan\" or \"recipe\"",
        );
    }
    if site.driver != DriverKind::Derived {
        if !site.exchange_url.is_empty() {
            return only_for(key("exchange_url"), "\"derived\"");
        }
        return Ok(());
    }
    check_url(&key("exchange_url"), &site.exchange_url)?;
    if !matches!(site.exchange_method.as_str(), "GET" | "POST") {
        return Err(Error::config(
            key("exchange_method"),
            format!("`{}`: GET or POST", site.exchange_method),
        ));
    }
    let header_ok = site
        .exchange_header
        .split_once(':')
        .is_some_and(|(name, value)| !name.trim().is_empty() && value.contains("{token}"));
    if !header_ok {
        return Err(Error::config(
            key("exchange_header"),
            "must look like `Authorization: Bearer {token}` ({token} stands for the parent's token)",
        ));
    }
    if site.token_pointer.is_empty() {
        return Err(Error::config(key("token_pointer"), "must not be empty"));
    }
    Ok(())
}

fn check_url(key: &str, url: &str) -> Result<()> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("`{url}` is not an http:// or https:// URL"),
        ))
    }
}

/// Every `from_site` names a configured site (a `court_zxfw` one for `court_baoquan`), and
/// no chain of `from_site` comes back to a site it passed.
pub(super) fn validate_parents(sites: &[SiteConfig]) -> Result<()> {
    let find = |name: &str| sites.iter().position(|s| s.name == name);
    for (index, site) in sites.iter().enumerate() {
        if !site.is_derived() {
            continue;
        }
        let key = format!("sites[{index}].from_site");
        let Some(parent) = find(&site.from_site) else {
            return Err(Error::config(
                key,
                format!("`{}` is not a configured site", site.from_site),
            ));
        };
        if site.driver == DriverKind::CourtBaoquan && sites[parent].driver != DriverKind::CourtZxfw
        {
            return Err(Error::config(
                key,
                format!(
                    "`{}` is not a court_zxfw site: court_baoquan exchanges a court_zxfw token",
                    site.from_site
                ),
            ));
        }
        let mut path = vec![site.name.as_str()];
        let mut at = parent;
        while sites[at].is_derived() {
            if path.contains(&sites[at].name.as_str()) {
                path.push(&sites[at].name);
                return Err(Error::config(
                    key,
                    format!("from_site forms a cycle: {}", path.join(" → ")),
                ));
            }
            path.push(&sites[at].name);
            match find(&sites[at].from_site) {
                Some(next) => at = next,
                // Reported when the loop reaches that site.
                None => break,
            }
        }
    }
    Ok(())
}

/// The site that owns the accounts of `site`: itself, or for a derived site the root of its
/// `from_site` chain (checked acyclic at start).
pub fn account_owner<'a>(sites: &'a [SiteConfig], site: &'a SiteConfig) -> &'a SiteConfig {
    let mut at = site;
    for _ in 0..sites.len() {
        if !at.is_derived() {
            break;
        }
        match sites.iter().find(|s| s.name == at.from_site) {
            Some(parent) => at = parent,
            None => break,
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::error::Error;

    fn key_of(text: &str) -> String {
        match Config::from_sources(Some(text), &|_| None) {
            Err(Error::Config { key, message }) => format!("{key}: {message}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    const ZXFW: &str = "[[sites]]\nname = \"z\"\ndriver = \"court_zxfw\"\n";

    #[test]
    fn a_cycle_or_an_unknown_parent_names_the_key() {
        let cycle = "[[sites]]\nname = \"a\"\ndriver = \"derived\"\nfrom_site = \"b\"\nexchange_url = \"http://x/e\"\n\
                     [[sites]]\nname = \"b\"\ndriver = \"derived\"\nfrom_site = \"a\"\nexchange_url = \"http://x/e\"\n";
        let got = key_of(cycle);
        assert!(
            got.starts_with("sites[0].from_site") && got.contains("cycle"),
            "{got}"
        );
        let unknown = "[[sites]]\nname = \"a\"\ndriver = \"derived\"\nfrom_site = \"nope\"\nexchange_url = \"http://x/e\"\n";
        assert!(key_of(unknown).starts_with("sites[0].from_site"));
        let wrong_parent = format!("{ZXFW}[[sites]]\nname = \"h\"\ndriver = \"command\"\ncommand = [\"x\"]\n[[sites]]\nname = \"b\"\ndriver = \"court_baoquan\"\nfrom_site = \"h\"\n");
        assert!(key_of(&wrong_parent).starts_with("sites[2].from_site"));
    }

    #[test]
    fn solver_keys_are_checked() {
        let bad = format!("{ZXFW}captcha_solver = \"robot\"\n");
        assert!(key_of(&bad).starts_with("sites[0].captcha_solver"));
        let empty = format!("{ZXFW}captcha_solver = []\n");
        assert!(key_of(&empty).starts_with("sites[0].captcha_solver"));
        let fallback = format!("{ZXFW}captcha_fallback = \"robot\"\n");
        assert!(key_of(&fallback).starts_with("sites[0].captcha_fallback"));
        let good = format!("{ZXFW}captcha_solver = [\"python3\", \"s.py\"]\ncaptcha_fallback = \"human\"\n[[sites]]\nname = \"b\"\ndriver = \"court_baoquan\"\nfrom_site = \"z\"\n");
        let config = Config::from_sources(Some(&good), &|_| None).unwrap();
        assert_eq!(config.sites[0].token_type(), "");
        assert_eq!(config.sites[1].token_type(), "Bearer");
        let owner = super::account_owner(&config.sites, &config.sites[1]);
        assert_eq!(owner.name, "z");
    }
}
