//! The recipe driver of a site: its recipe, checked once, the hosts it may reach and its
//! captcha solver; one login attempt runs the recipe's steps ([`super::attempt`]) and logs the
//! trace of an answer the recipe does not recognise.

use std::sync::Arc;

use super::answer::host_of;
use super::attempt::{Attempt, Stop, Trace};
use super::expr::{Text, Vars};
use super::format::Recipe;
use crate::config::SiteConfig;
use crate::drivers::court::portal::client_with;
use crate::drivers::court::solver::CaptchaSolver;
use crate::drivers::deadline::Deadline;
use crate::drivers::login::{Credentials, LoginFailure, LoginToken};
use crate::error::{Error, Result};
use crate::watch::metrics::Metrics;

pub struct RecipeDriver {
    pub(super) site: String,
    pub(super) recipe: Arc<Recipe>,
    /// The site's `base_url`, else the recipe's; no trailing slash.
    pub(super) base: String,
    /// The hosts requests may go to: `base`'s and the recipe's `hosts`.
    pub(super) hosts: Vec<String>,
    pub(super) solver: CaptchaSolver,
    /// The API root of `from_site` (`parent_base_url`).
    pub(super) parent_base: Option<String>,
    /// The site exchanges the token of `from_site` (handed in as the password).
    pub(super) derived: bool,
    /// The event each step's answer is logged under: `recipe_step`, or `court_step` for a
    /// `court_zxfw`/`court_baoquan` site, whose operators grep for it.
    pub(super) step_event: &'static str,
}

/// The recipe of `site`, checked; the error names the file, the step and the key.
pub fn recipe_of(site: &SiteConfig) -> std::result::Result<Recipe, String> {
    if site.recipe.trim().is_empty() {
        return Err(
            "driver \"recipe\" needs recipe = \"/path/to/portal.toml\" (or a built-in's name)"
                .into(),
        );
    }
    let recipe = Recipe::load(&site.recipe)?;
    match (recipe.uses_parent, site.from_site.is_empty()) {
        (true, true) => {
            return Err(format!(
            "{}: the recipe reads `parent_token`: set from_site, the site whose token it exchanges",
            site.recipe
        ))
        }
        (false, false) => {
            return Err(format!(
                "{}: a site with from_site needs a recipe that sends `{{parent_token}}`",
                site.recipe
            ))
        }
        _ => {}
    }
    if site.base_url.is_empty() && recipe.base_url.is_empty() {
        return Err(format!(
            "{}: no base_url: set it in the recipe or in the site",
            site.recipe
        ));
    }
    Ok(recipe)
}

/// A site's API root: its `base_url`, else its driver's or recipe's default.
fn base_of(site: &SiteConfig) -> Option<String> {
    let url = if !site.base_url.is_empty() {
        site.base_url.clone()
    } else if site.driver == crate::config::DriverKind::CourtZxfw {
        crate::drivers::court::portal::ZXFW_BASE_URL.to_string()
    } else if site.driver == crate::config::DriverKind::Recipe {
        Recipe::load(&site.recipe).ok()?.base_url
    } else {
        return None;
    };
    Some(url.trim_end_matches('/').to_string())
}

impl RecipeDriver {
    /// `parent`: the `from_site` configuration, if any: its API root is `parent_base_url`.
    pub fn new(
        site: &SiteConfig,
        parent: Option<&SiteConfig>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<RecipeDriver> {
        let recipe =
            recipe_of(site).map_err(|e| Error::config(format!("sites.{}.recipe", site.name), e))?;
        Ok(RecipeDriver::with_recipe(site, recipe, parent, metrics))
    }

    /// A `court_zxfw` or `court_baoquan` site: the built-in recipe of that name, with the
    /// site's own error patterns where it set them (as the native drivers honoured them).
    pub fn builtin(
        site: &SiteConfig,
        parent: Option<&SiteConfig>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<RecipeDriver> {
        let as_recipe = builtin_site(site);
        let mut recipe = recipe_of(&as_recipe)
            .map_err(|e| Error::config(format!("sites.{}.driver", site.name), e))?;
        use_site_patterns(&mut recipe, site)?;
        let mut driver = RecipeDriver::with_recipe(&as_recipe, recipe, parent, metrics);
        driver.step_event = "court_step";
        Ok(driver)
    }

    fn with_recipe(
        site: &SiteConfig,
        recipe: Recipe,
        parent: Option<&SiteConfig>,
        metrics: Option<Arc<Metrics>>,
    ) -> RecipeDriver {
        let base = if site.base_url.is_empty() {
            &recipe.base_url
        } else {
            &site.base_url
        };
        let base = base.trim_end_matches('/').to_string();
        let mut hosts = recipe.hosts.clone();
        hosts.extend(host_of(&base));
        let parent_base = parent.and_then(base_of);
        // The parent is one of the operator's sites: its host is the site's too.
        hosts.extend(parent_base.as_deref().and_then(host_of));
        RecipeDriver {
            parent_base,
            site: site.name.clone(),
            recipe: Arc::new(recipe),
            base,
            hosts,
            solver: CaptchaSolver::new(site, metrics),
            derived: site.is_derived(),
            step_event: "recipe_step",
        }
    }

    /// Lets a person read the captchas (`captcha_solver = "human"` or the fallback).
    pub fn with_captchas(mut self, captchas: crate::lifecycle::captcha::Captchas) -> RecipeDriver {
        self.solver = self.solver.with_captchas(captchas);
        self
    }

    /// One attempt. An answer the recipe does not recognise logs the attempt's trace.
    pub async fn login(
        &self,
        creds: &Credentials<'_>,
        deadline: &Deadline,
    ) -> std::result::Result<LoginToken, LoginFailure> {
        let mut trace = Trace::default();
        let outcome = self.run(creds, deadline, &mut trace).await;
        if let Err(stop) = &outcome {
            if stop.unrecognised {
                for line in &trace.lines {
                    log::warn!(
                        "event=recipe_trace site={} account={} line=\"{}\"",
                        self.site,
                        creds.account,
                        line.replace('"', "'")
                    );
                }
            }
        }
        outcome.map_err(|stop| stop.failure)
    }

    /// One attempt whose trace is printed as it goes (`tokend recipe check`).
    pub async fn check(
        &self,
        creds: &Credentials<'_>,
        deadline: &Deadline,
    ) -> std::result::Result<LoginToken, LoginFailure> {
        let mut trace = Trace {
            live: true,
            ..Trace::default()
        };
        self.run(creds, deadline, &mut trace)
            .await
            .map_err(|stop| stop.failure)
    }

    async fn run(
        &self,
        creds: &Credentials<'_>,
        deadline: &Deadline,
        trace: &mut Trace,
    ) -> std::result::Result<LoginToken, Stop> {
        let client = client_with(creds.proxy, reqwest::header::HeaderMap::new())?;
        let mut attempt = Attempt {
            driver: self,
            creds,
            deadline,
            client,
            vars: Vars::new(),
            solved: false,
        };
        attempt
            .vars
            .insert("login".into(), Text::public(creds.account));
        attempt
            .vars
            .insert("password".into(), Text::secret(creds.password.expose()));
        if self.derived {
            attempt
                .vars
                .insert("parent_token".into(), Text::secret(creds.password.expose()));
            if let Some(base) = &self.parent_base {
                attempt
                    .vars
                    .insert("parent_base_url".into(), Text::public(base.clone()));
            }
        }
        trace.line(
            &attempt.secrets(),
            format!(
                "recipe `{}` for site `{}`, account `{}`, base {}",
                self.recipe.name, self.site, creds.account, self.base
            ),
        );
        for (i, step) in self.recipe.steps.iter().enumerate() {
            trace.line(
                &attempt.secrets(),
                format!("step {} `{}`", i + 1, step.name),
            );
            attempt.step(step, trace).await?;
        }
        attempt.token(trace)
    }
}

/// A `court_zxfw` or `court_baoquan` site as the built-in recipe of that name (issue 26):
/// the site's own keys (base_url, from_site, captcha_solver …) kept, the recipe named.
fn builtin_site(site: &SiteConfig) -> SiteConfig {
    let name = match site.driver {
        crate::config::DriverKind::CourtBaoquan => "court_baoquan",
        _ => "court_zxfw",
    };
    SiteConfig {
        driver: crate::config::DriverKind::Recipe,
        recipe: name.to_string(),
        ..site.clone()
    }
}

/// The site's `captcha_error_pattern`, `credential_error_pattern` and (when set)
/// `rate_limit_pattern` in place of the recipe's own patterns for those answers, in every
/// step that classifies them by pattern.
fn use_site_patterns(recipe: &mut Recipe, site: &SiteConfig) -> Result<()> {
    let compile = |key: &str, pattern: &str| {
        regex::Regex::new(pattern)
            .map_err(|e| Error::config(format!("sites.{}.{key}", site.name), e.to_string()))
    };
    let mut replacements = vec![
        (
            "answer.captcha_error",
            compile("captcha_error_pattern", &site.captcha_error_pattern)?,
        ),
        (
            "answer.credential_error",
            compile("credential_error_pattern", &site.credential_error_pattern)?,
        ),
    ];
    if !site.rate_limit_pattern.is_empty() {
        replacements.push((
            "answer.rate_limit",
            compile("rate_limit_pattern", &site.rate_limit_pattern)?,
        ));
    }
    for step in &mut recipe.steps {
        for (key, regex) in &replacements {
            if let Some(slot) = step.answer_regexes.get_mut(*key) {
                *slot = regex.clone();
            }
        }
    }
    Ok(())
}
