//! `driver = "recipe"` (issue 26): a portal's login described as data. A [`format::Recipe`]
//! (TOML) lists steps; one attempt runs them in order on one cookie-keeping client that
//! follows no redirect: each step computes variables ([`expr`]), sends a request, classifies
//! the answer (rate limit, captcha error, credential error, success), reads a captcha and
//! takes values from the answer; the `[token]` table says where the token and its life are
//! and which header consumers send it in.
//!
//! Every step is written to a [`Trace`] (request line, status, the answer's shape, the
//! variables set, secrets masked): `tokend recipe check` prints it as it goes, and a login
//! whose answer the recipe does not recognise logs it (`event=recipe_trace`).

pub mod check;
mod ciphers;
pub mod expr;
pub mod format;

use std::sync::Arc;

use serde_json::Value;

use self::expr::{Text, Vars};
use self::format::{Body, Matcher, Recipe, Step};
use super::court::portal::{client_with, logged_answer, DEFAULT_LIFE};
use super::court::solver::CaptchaSolver;
use crate::config::SiteConfig;
use crate::drivers::deadline::Deadline;
use crate::drivers::login::{
    clean_message, expiry_in, expiry_of, network_cause, proxy_failure, read_answer, Credentials,
    FailureKind, LoginFailure, LoginToken,
};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, SolveResult};
use crate::secret::Secret;

/// Largest answer read from a step (a captcha image is a few KiB).
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;
/// How long connecting may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct RecipeDriver {
    site: String,
    recipe: Arc<Recipe>,
    /// The site's `base_url`, else the recipe's; no trailing slash.
    base: String,
    /// The hosts requests may go to: `base`'s and the recipe's `hosts`.
    hosts: Vec<String>,
    solver: CaptchaSolver,
    /// The site exchanges the token of `from_site` (handed in as the password).
    derived: bool,
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

impl RecipeDriver {
    pub fn new(site: &SiteConfig, metrics: Option<Arc<Metrics>>) -> Result<RecipeDriver> {
        let recipe =
            recipe_of(site).map_err(|e| Error::config(format!("sites.{}.recipe", site.name), e))?;
        let base = if site.base_url.is_empty() {
            &recipe.base_url
        } else {
            &site.base_url
        };
        let base = base.trim_end_matches('/').to_string();
        let mut hosts = recipe.hosts.clone();
        hosts.extend(host_of(&base));
        Ok(RecipeDriver {
            site: site.name.clone(),
            recipe: Arc::new(recipe),
            base,
            hosts,
            solver: CaptchaSolver::new(site, metrics),
            derived: site.is_derived(),
        })
    }

    /// Lets a person read the captchas (`captcha_solver = "human"` or the fallback).
    pub fn with_captchas(mut self, captchas: crate::captcha::Captchas) -> RecipeDriver {
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

/// Why an attempt stopped.
struct Stop {
    failure: LoginFailure,
    /// The answer matched nothing the recipe knows: the portal may have changed.
    unrecognised: bool,
}

impl From<LoginFailure> for Stop {
    fn from(failure: LoginFailure) -> Stop {
        Stop {
            failure,
            unrecognised: false,
        }
    }
}

/// What one attempt printed or would log.
#[derive(Default)]
pub struct Trace {
    pub lines: Vec<String>,
    live: bool,
}

impl Trace {
    fn line(&mut self, secrets: &[String], text: String) {
        let hidden: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let text = clean_message(&text, &hidden);
        if self.live {
            println!("{text}");
        }
        self.lines.push(text);
    }
}

/// A step's answer.
struct Answer {
    status: u16,
    cookies: Vec<(String, String)>,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    json: Option<Value>,
}

struct Attempt<'a> {
    driver: &'a RecipeDriver,
    creds: &'a Credentials<'a>,
    deadline: &'a Deadline,
    client: reqwest::Client,
    vars: Vars,
    /// A captcha was read in this attempt (a captcha error counts against the solver).
    solved: bool,
}

impl Attempt<'_> {
    /// Every secret value known so far: masked wherever text is shown.
    fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .vars
            .values()
            .filter(|t| t.secret && !t.value.is_empty())
            .map(|t| t.value.clone())
            .collect();
        if let Some(proxy) = self.creds.proxy {
            out.push(proxy.expose().to_string());
        }
        out
    }

    fn failure(&self, step: &Step, kind: FailureKind, what: &str) -> LoginFailure {
        let secrets = self.secrets();
        let hidden: Vec<&str> = secrets.iter().map(String::as_str).collect();
        LoginFailure::new(
            kind,
            clean_message(&format!("step `{}`: {what}", step.name), &hidden),
        )
    }

    fn mismatch(&self, step: &Step, what: &str, trace: &mut Trace) -> Stop {
        let failure = self.failure(step, FailureKind::Failed, what);
        trace.line(&self.secrets(), format!("  STOP: {}", failure.message));
        Stop {
            failure,
            unrecognised: true,
        }
    }

    fn set(&mut self, name: &str, text: Text, trace: &mut Trace) {
        let shown = if text.secret {
            format!("<{} chars, secret>", text.value.chars().count())
        } else {
            format!("{:?}", cut(&text.value, 80))
        };
        self.vars.insert(name.to_string(), text);
        trace.line(&self.secrets(), format!("  set {name} = {shown}"));
    }

    async fn step(&mut self, step: &Step, trace: &mut Trace) -> std::result::Result<(), Stop> {
        for (name, expr) in &step.set {
            let text = expr.eval(&self.vars).map_err(|e| {
                self.failure(step, FailureKind::Failed, &format!("set.{name}: {e}"))
            })?;
            self.set(name, text, trace);
        }
        let Some(request) = &step.request else {
            return Ok(());
        };
        let answer = self.send(step, request, trace).await?;
        self.classify(step, &answer, trace)?;
        if let Some((image, into)) = &step.captcha {
            let bytes = image_of(image, &answer)
                .map_err(|why| self.mismatch(step, &format!("captcha.image: {why}"), trace))?;
            let secrets = self.secrets();
            let hidden: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let text = self
                .driver
                .solver
                .solve(self.creds.account, &bytes, self.deadline, &hidden)
                .await?;
            self.solved = true;
            trace.line(
                &secrets,
                format!("  captcha: {} image bytes read", bytes.len()),
            );
            self.set(into, Text::secret(text), trace);
        }
        for (name, extract) in &step.extract {
            match extracted(step, name, extract, &answer) {
                Ok(Some(value)) => {
                    let secret = extract.secret || extract.cookie.is_some();
                    self.set(name, Text { value, secret }, trace);
                }
                Ok(None) => trace.line(
                    &self.secrets(),
                    format!("  {name}: not in the answer (optional)"),
                ),
                Err(why) => {
                    return Err(self.mismatch(step, &format!("extract.{name}: {why}"), trace))
                }
            }
        }
        Ok(())
    }

    /// Sends the step's request to an allowed host; 429 and 5xx are network errors.
    async fn send(
        &self,
        step: &Step,
        request: &format::Request,
        trace: &mut Trace,
    ) -> std::result::Result<Answer, Stop> {
        let render = |what: &str, t: &expr::Template| {
            t.render(&self.vars)
                .map(|t| t.value)
                .map_err(|e| self.failure(step, FailureKind::Failed, &format!("{what}: {e}")))
        };
        let path = render("url", &request.url)?;
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path
        } else {
            format!("{}{}", self.driver.base, path)
        };
        let host = host_of(&url);
        if !host.as_ref().is_some_and(|h| self.driver.hosts.contains(h)) {
            return Err(self
                .failure(
                    step,
                    FailureKind::Misconfigured,
                    &format!("url: `{}` is not on a host of the site ({}): list it in the recipe's hosts", crate::secret::redact_url(&url), self.driver.hosts.join(", ")),
                )
                .last_attempt()
                .into());
        }
        let mut builder = self
            .driver_client()
            .request(request.method.clone(), &url)
            .timeout(self.deadline.remaining());
        for (name, template) in self.driver.recipe.headers.iter().chain(&request.headers) {
            builder = builder.header(name.as_str(), render(&format!("headers.{name}"), template)?);
        }
        builder = match &request.body {
            Body::None => builder,
            Body::Form(fields) => {
                let mut pairs = Vec::new();
                for (name, template) in fields {
                    pairs.push((name.clone(), render(&format!("form.{name}"), template)?));
                }
                builder.form(&pairs)
            }
            Body::Json(json) => {
                let body = render_json(json, &self.vars)
                    .map_err(|e| self.failure(step, FailureKind::Failed, &format!("json: {e}")))?;
                builder.json(&body)
            }
        };
        let line = format!("  {} {}", request.method, crate::secret::redact_url(&url));
        trace.line(&self.secrets(), line);
        let answer = self.receive(step, builder).await?;
        let secrets = self.secrets();
        let hidden: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let shape = logged_answer(&answer.body, &hidden);
        log::info!(
            "event=recipe_step site={} account={} step={} http_status={} bytes={} answer={shape}",
            self.driver.site,
            self.creds.account,
            step.name,
            answer.status,
            answer.body.len(),
        );
        trace.line(
            &secrets,
            format!(
                "  → HTTP {}, {} bytes: {shape}",
                answer.status,
                answer.body.len()
            ),
        );
        match self.refused_status(step, answer.status) {
            Some(failure) => Err(failure.into()),
            None => Ok(answer),
        }
    }

    /// A status that ends the step whatever the recipe says: 429 and 5xx are network errors;
    /// 401/403 on a derived site refuse the parent's token, which is then dropped so that the
    /// next acquisition gets a fresh one.
    fn refused_status(&self, step: &Step, status: u16) -> Option<LoginFailure> {
        if self.driver.derived && matches!(status, 401 | 403) {
            let why = format!("HTTP {status}: the parent's token was refused");
            return Some(
                self.failure(step, FailureKind::Failed, &why)
                    .refusing_parent(true),
            );
        }
        (status == 429 || status >= 500).then(|| {
            self.failure(step, FailureKind::Network, &format!("HTTP {status}"))
                .congested(status == 429)
        })
    }

    fn driver_client(&self) -> &reqwest::Client {
        &self.client
    }

    async fn receive(
        &self,
        step: &Step,
        builder: reqwest::RequestBuilder,
    ) -> std::result::Result<Answer, LoginFailure> {
        let secrets = self.secrets();
        let hidden: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let response = builder.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                FailureKind::Timeout
            } else if e.is_builder() {
                // A header value with a line break, say: the recipe's fault, not the network's.
                FailureKind::Failed
            } else {
                FailureKind::Network
            };
            let cause = network_cause(&e, None, CONNECT_TIMEOUT);
            match self.creds.proxy.filter(|_| e.is_connect()) {
                Some(proxy) => proxy_failure(
                    proxy,
                    self.creds.own_proxy,
                    &format!("step `{}`: {cause}", step.name),
                    &hidden,
                ),
                None => self.failure(step, kind, &format!("request failed: {cause}")),
            }
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let cookies = response
            .cookies()
            .map(|c| (c.name().to_string(), c.value().to_string()))
            .collect();
        let body = read_answer(response, MAX_ANSWER_BYTES).await.map_err(|e| {
            self.failure(
                step,
                FailureKind::Network,
                &format!("reading the answer: {e}"),
            )
        })?;
        let json = serde_json::from_slice(&body).ok();
        Ok(Answer {
            status,
            cookies,
            headers,
            body,
            json,
        })
    }

    /// The answer as the recipe classifies it: `Ok` for a success.
    fn classify(
        &self,
        step: &Step,
        answer: &Answer,
        trace: &mut Trace,
    ) -> std::result::Result<(), Stop> {
        let Some(spec) = &step.answer else {
            if (200..300).contains(&answer.status) {
                return Ok(());
            }
            return Err(self.mismatch(
                step,
                &format!("HTTP {} (the step expects a 2xx answer)", answer.status),
                trace,
            ));
        };
        let holds = |key: &str, m: &Option<Matcher>| {
            m.as_ref().is_some_and(|m| matches(step, key, m, answer))
        };
        let message = spec
            .message
            .as_ref()
            .and_then(|p| answer.json.as_ref()?.pointer(p).map(value_text))
            .unwrap_or_default();
        let said = |what: &str| {
            format!(
                "{what} (HTTP {}: {})",
                answer.status,
                if message.is_empty() {
                    "no message"
                } else {
                    &message
                }
            )
        };
        let kind = if holds("answer.rate_limit", &spec.rate_limit) {
            Some((FailureKind::Network, "rate limited", true))
        } else if holds("answer.captcha_error", &spec.captcha_error) {
            Some((FailureKind::Captcha, "captcha error", false))
        } else if holds("answer.credential_error", &spec.credential_error) {
            Some((FailureKind::Credential, "credential error", false))
        } else {
            None
        };
        if let Some((kind, what, congested)) = kind {
            if kind == FailureKind::Captcha && self.solved {
                self.driver.solver.count(SolveResult::Rejected);
            }
            let failure = self.failure(step, kind, &said(what)).congested(congested);
            trace.line(&self.secrets(), format!("  answer: {what}"));
            return Err(failure.into());
        }
        let success = match &spec.success {
            Some(m) => matches(step, "answer.success", m, answer),
            None => (200..300).contains(&answer.status),
        };
        if success {
            trace.line(&self.secrets(), "  answer: success".into());
            return Ok(());
        }
        Err(self.mismatch(
            step,
            &said(
                "the answer matches none of success, captcha_error, credential_error, rate_limit",
            ),
            trace,
        ))
    }

    /// The token, its life and the header consumers send, after the last step.
    fn token(&self, trace: &mut Trace) -> std::result::Result<LoginToken, Stop> {
        let recipe = &self.driver.recipe;
        let last = recipe.steps.last().map_or("token", |s| s.name.as_str());
        let token = recipe
            .token_value
            .eval(&self.vars)
            .ok()
            .map(|t| t.value)
            .filter(|t| !t.trim().is_empty());
        let Some(token) = token else {
            let failure = LoginFailure::new(
                FailureKind::Failed,
                format!("after step `{last}`: token.value gives no token"),
            );
            trace.line(&self.secrets(), format!("  STOP: {}", failure.message));
            return Err(Stop {
                failure,
                unrecognised: true,
            });
        };
        let life = std::time::Duration::from_secs(recipe.life);
        let expires_at = recipe
            .expires_in
            .as_ref()
            .and_then(|e| e.eval(&self.vars).ok())
            .and_then(|t| t.value.trim().parse::<f64>().ok())
            .and_then(expiry_in)
            .unwrap_or_else(|| expiry_of(&token, if life.is_zero() { DEFAULT_LIFE } else { life }));
        let mut secrets = self.secrets();
        secrets.push(token.clone());
        trace.line(
            &secrets,
            format!(
                "token: {} expires {} ; consumers send `{}`",
                crate::secret::redact(&token),
                expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                recipe.header
            ),
        );
        Ok(LoginToken {
            token: Secret::new(token),
            expires_at,
            token_type: Some(recipe.header.clone()),
        })
    }
}

/// Whether every key of `m` holds for `answer`.
fn matches(step: &Step, key: &str, m: &Matcher, answer: &Answer) -> bool {
    if m.status.is_some_and(|s| s != answer.status) {
        return false;
    }
    let value = match &m.json {
        Some(pointer) => match answer.json.as_ref().and_then(|j| j.pointer(pointer)) {
            Some(Value::Null) | None => return false,
            Some(v) => Some(v),
        },
        None => None,
    };
    if let (Some(want), Some(got)) = (&m.equals, value) {
        let want = serde_json::to_value(want).unwrap_or(Value::Null);
        if !same(&want, got) {
            return false;
        }
    }
    if let Some(regex) = step.answer_regexes.get(key) {
        let text = match value {
            Some(v) => value_text(v),
            None => String::from_utf8_lossy(&answer.body).into_owned(),
        };
        return regex.is_match(&text);
    }
    true
}

/// `equals` compares numbers as numbers, and a number to a numeric string.
fn same(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a)) => {
            b.trim().parse::<f64>().ok() == a.as_f64()
        }
        _ => want == got,
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A variable's value from the answer; `Ok(None)`: optional and absent.
fn extracted(
    step: &Step,
    name: &str,
    extract: &format::Extract,
    answer: &Answer,
) -> std::result::Result<Option<String>, String> {
    let found: std::result::Result<String, String> = if let Some(pointer) = &extract.json {
        match answer.json.as_ref() {
            None => Err("the answer is not JSON".into()),
            Some(json) => match json.pointer(pointer) {
                Some(Value::Null) | None => Err(format!("no `{pointer}` in the answer")),
                Some(v) => Ok(value_text(v)),
            },
        }
    } else if extract.regex.is_some() {
        let regex = &step.answer_regexes[&format!("extract.{name}")];
        let body = String::from_utf8_lossy(&answer.body);
        let group = extract
            .group
            .unwrap_or(usize::from(regex.captures_len() > 1));
        regex
            .captures(&body)
            .and_then(|c| c.get(group))
            .map(|m| m.as_str().to_string())
            .ok_or_else(|| "the regex does not match the answer".into())
    } else if let Some(cookie) = &extract.cookie {
        answer
            .cookies
            .iter()
            .find(|(n, _)| n == cookie)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("the answer sets no cookie `{cookie}`"))
    } else if let Some(header) = &extract.header {
        answer
            .headers
            .get(header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| format!("the answer has no header `{header}`"))
    } else {
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    };
    match found {
        Ok(value) => Ok(Some(value)),
        Err(_) if extract.optional => Ok(None),
        Err(why) => Err(why),
    }
}

/// The captcha image: the raw body, or base64 (maybe a data URL) at a JSON pointer.
fn image_of(image: &str, answer: &Answer) -> std::result::Result<Vec<u8>, String> {
    use base64::Engine;
    let bytes = if image == "body" {
        answer.body.clone()
    } else {
        let text = answer
            .json
            .as_ref()
            .and_then(|j| j.pointer(image))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no `{image}` text in the answer"))?;
        let encoded = match text.split_once("base64,") {
            Some((head, rest)) if head.starts_with("data:") => rest,
            _ => text,
        };
        let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| format!("`{image}` is not base64: {e}"))?
    };
    if bytes.is_empty() {
        return Err("the image is empty".into());
    }
    Ok(bytes)
}

/// A JSON body template with every string rendered.
fn render_json(value: &Value, vars: &Vars) -> std::result::Result<Value, String> {
    Ok(match value {
        Value::String(text) => Value::String(expr::Template::parse(text)?.render(vars)?.value),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_json(v, vars))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_json(v, vars)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// `host[:port]` of a URL, lowercase.
fn host_of(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.to_ascii_lowercase();
    Some(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}
