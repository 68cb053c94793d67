//! One attempt of a recipe: its variables and its cookie-keeping client; each step computes,
//! sends to an allowed host, classifies the answer, reads a captcha and extracts values, and
//! writes what it did to the [`Trace`] with every secret masked.

use super::answer::{
    cut, extracted, host_of, image_of, matches, render_json, value_text, Answer, ImageFault,
};
use super::driver::RecipeDriver;
use super::expr::{self, Text, Vars};
use super::format::{self, Body, Matcher, Step};
use crate::drivers::court::portal::{logged_answer, DEFAULT_LIFE};
use crate::drivers::deadline::Deadline;
use crate::drivers::login::{
    clean_message, expiry_in, expiry_of, network_cause, proxy_failure, read_answer, Credentials,
    FailureKind, LoginFailure, LoginToken,
};
use crate::vault::secret::Secret;
use crate::watch::metrics::SolveResult;

/// Largest answer read from a step (a captcha image is a few KiB).
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;
/// How long connecting may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why an attempt stopped.
pub(super) struct Stop {
    pub(super) failure: LoginFailure,
    /// The answer matched nothing the recipe knows: the portal may have changed.
    pub(super) unrecognised: bool,
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
    pub(super) live: bool,
}

impl Trace {
    pub(super) fn line(&mut self, secrets: &[String], text: String) {
        let hidden: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let text = clean_message(&text, &hidden);
        if self.live {
            println!("{text}");
        }
        self.lines.push(text);
    }
}

pub(super) struct Attempt<'a> {
    pub(super) driver: &'a RecipeDriver,
    pub(super) creds: &'a Credentials<'a>,
    pub(super) deadline: &'a Deadline,
    pub(super) client: reqwest::Client,
    pub(super) vars: Vars,
    /// A captcha was read in this attempt (a captcha error counts against the solver).
    pub(super) solved: bool,
}

impl Attempt<'_> {
    /// Every secret value known so far: masked wherever text is shown.
    pub(super) fn secrets(&self) -> Vec<String> {
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

    pub(super) async fn step(
        &mut self,
        step: &Step,
        trace: &mut Trace,
    ) -> std::result::Result<(), Stop> {
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
            let bytes = image_of(image, &answer).map_err(|fault| match fault {
                ImageFault::Missing(why) => {
                    self.mismatch(step, &format!("captcha.image: {why}"), trace)
                }
                ImageFault::Unreadable(why) => {
                    let failure =
                        self.failure(step, FailureKind::Captcha, &format!("captcha.image: {why}"));
                    trace.line(&self.secrets(), format!("  STOP: {}", failure.message));
                    Stop {
                        failure,
                        unrecognised: false,
                    }
                }
            })?;
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
                    &format!("url: `{}` is not on a host of the site ({}): list it in the recipe's hosts", crate::vault::secret::redact_url(&url), self.driver.hosts.join(", ")),
                )
                .last_attempt()
                .into());
        }
        let mut builder = self
            .client
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
        let line = format!(
            "  {} {}",
            request.method,
            crate::vault::secret::redact_url(&url)
        );
        trace.line(&self.secrets(), line);
        let answer = self.receive(step, builder).await?;
        let secrets = self.secrets();
        let hidden: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let shape = logged_answer(&answer.body, &hidden);
        log::info!(
            "event={} site={} account={} step={} http_status={} bytes={} answer={shape}",
            self.driver.step_event,
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
    pub(super) fn token(&self, trace: &mut Trace) -> std::result::Result<LoginToken, Stop> {
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
                crate::vault::secret::redact(&token),
                expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                recipe.header
            ),
        );
        Ok(LoginToken {
            token: Secret::new(token),
            expires_at,
            token_type: Some(scheme_of(&recipe.header)),
        })
    }
}

/// The `token_type` of a consumer header: the plain scheme when there is one (`Authorization:
/// Bearer {token}` → `Bearer`, `Authorization: {token}` → empty, `Cookie: {token}` →
/// `Cookie`), so that answers read as those of other sites; else the template itself
/// (`X-Access-Token: {token}`), which [`crate::config::ready_header`] understands.
pub(super) fn scheme_of(header: &str) -> String {
    let Some((name, value)) = header.split_once(':') else {
        return header.to_string();
    };
    let (name, value) = (name.trim(), value.trim());
    if name.eq_ignore_ascii_case("cookie") && value == "{token}" {
        return crate::config::COOKIE_SESSION.to_string();
    }
    if name.eq_ignore_ascii_case("authorization") {
        if value == "{token}" {
            return String::new();
        }
        if let Some(scheme) = value.strip_suffix(" {token}") {
            if !scheme.is_empty() && !scheme.contains(['{', '}', ' ']) {
                return scheme.to_string();
            }
        }
    }
    header.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_schemes_read_as_other_sites_do() {
        let cases = [
            ("Authorization: Bearer {token}", "Bearer"),
            ("Authorization: {token}", ""),
            ("Cookie: {token}", "Cookie"),
            ("X-Access-Token: {token}", "X-Access-Token: {token}"),
            ("Cookie: SID={token}", "Cookie: SID={token}"),
        ];
        for (header, scheme) in cases {
            assert_eq!(super::scheme_of(header), scheme, "{header}");
            // The same header either way.
            let (a, b) = (
                crate::config::ready_header(header, "t"),
                crate::config::ready_header(scheme, "t"),
            );
            assert_eq!((a.0, a.1.expose()), (b.0, b.1.expose()), "{header}");
        }
    }
}
