//! The `command` driver: runs the site's program with no shell, in a process group of its own.
//!
//! Protocol: one JSON line on stdin, `{"site_name", "account", "password"}` (the password is
//! never in argv or the environment); one JSON object on stdout, `{"token", "expires_at":
//! RFC 3339}` or `{"token", "expires_in": seconds}`. Exit 0 success, 10 credential error,
//! 11 captcha error, 12 network error, anything else failed. Stderr (cut to 2 KiB, secrets
//! masked) becomes the error message. On timeout the whole process group is killed.
//!
//! Captcha hand-off (SPEC §13): stdin stays open after the request line. A program that
//! meets a captcha only a person can solve prints a line `{"captcha": {"image_base64",
//! "prompt"}}`; the challenge is listed in the API, and the person's answer is written to
//! its stdin as one line `{"answer": …}`. While the person solves it, `login_timeout` stands
//! still; nobody answering within `retry.captcha_answer_timeout` is a `captcha_error` that is
//! not retried.

use std::process::ExitStatus;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::deadline::Deadline;
use super::login::{
    clean_message, could_not_run, expiry_in, expiry_of, Credentials, FailureKind, LoginFailure,
    LoginToken, MAX_ERROR_BYTES,
};
use super::process::{read_capped, spawn_in_group, GroupGuard};
use crate::config::SiteConfig;
use crate::lifecycle::captcha::Captchas;
use crate::vault::secret::Secret;

/// How long output is awaited after the program exited, before its group is killed.
const OUTPUT_GRACE: std::time::Duration = std::time::Duration::from_millis(300);
/// Largest stdout read from a login program.
const MAX_STDOUT_BYTES: u64 = 64 * 1024;
/// Longest stdout line looked at for a captcha (a base64 image).
const MAX_LINE_BYTES: u64 = 4 * 1024 * 1024;

pub struct CommandDriver {
    program: String,
    args: Vec<String>,
    default_ttl: Duration,
    /// Where captchas for a person are posted; `None`: a captcha line fails the login.
    captchas: Option<Captchas>,
}

/// A captcha the program asks a person to solve.
#[derive(Deserialize)]
struct CaptchaLine {
    captcha: CaptchaPrompt,
}

#[derive(Deserialize)]
struct CaptchaPrompt {
    #[serde(default)]
    image_base64: String,
    #[serde(default)]
    prompt: String,
}

#[derive(Deserialize)]
struct DriverOutput {
    token: String,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    expires_in: Option<f64>,
}

impl CommandDriver {
    pub fn new(site: &SiteConfig, default_ttl: Duration) -> CommandDriver {
        CommandDriver {
            program: site.command.first().cloned().unwrap_or_default(),
            args: site.command.iter().skip(1).cloned().collect(),
            default_ttl,
            captchas: None,
        }
    }

    /// The program and its arguments, as a message names them.
    fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn with_captchas(mut self, captchas: Captchas) -> CommandDriver {
        self.captchas = Some(captchas);
        self
    }

    /// Hands a captcha to a person and waits for the answer, the login's clock stopped.
    async fn hand_off(
        &self,
        creds: &Credentials<'_>,
        prompt: CaptchaPrompt,
        deadline: &Deadline,
    ) -> Result<String, LoginFailure> {
        let Some(captchas) = &self.captchas else {
            return Err(LoginFailure::new(
                FailureKind::Captcha,
                format!(
                    "{} asked for a captcha answer, which nobody can give here",
                    self.program
                ),
            )
            .last_attempt());
        };
        let mut ticket = captchas.open(
            creds.site,
            creds.account,
            &prompt.prompt,
            &prompt.image_base64,
        );
        deadline.pause();
        let answer = ticket.wait().await;
        deadline.resume();
        answer.ok_or_else(|| {
            LoginFailure::new(
                FailureKind::Captcha,
                format!(
                    "nobody answered captcha {} within retry.captcha_answer_timeout ({:.0}s)",
                    ticket.id(),
                    captchas.answer_timeout().as_secs_f64()
                ),
            )
            .last_attempt()
        })
    }

    /// One attempt: the program runs, is answered (the request line, then any captcha's
    /// answer), and its exit status and output say how the login went.
    pub async fn login(
        &self,
        creds: &Credentials<'_>,
        deadline: &Deadline,
    ) -> Result<LoginToken, LoginFailure> {
        let secrets: Vec<&str> = std::iter::once(creds.password.expose())
            .chain(creds.proxy.map(Secret::expose))
            .collect();
        let mut run = ProgramRun::start(self)?;
        let status = run.converse(self, creds, deadline).await?;
        let (stdout, stderr) = run.output().await;
        self.verdict(status, &stdout, &stderr, &secrets)
    }

    /// What the program's exit says: the token on stdout after exit 0, else a failure of the
    /// kind its exit code names, its stderr the message.
    fn verdict(
        &self,
        status: std::io::Result<ExitStatus>,
        stdout: &[u8],
        stderr: &[u8],
        secrets: &[&str],
    ) -> Result<LoginToken, LoginFailure> {
        let status = status.map_err(|e| {
            LoginFailure::new(
                FailureKind::Failed,
                format!("waiting for {}: {e}", self.program),
            )
        })?;
        let stderr_text = clean_message(&String::from_utf8_lossy(stderr), secrets);
        if could_not_run(status.code(), &stderr_text) {
            return Err(LoginFailure::new(
                FailureKind::Misconfigured,
                format!(
                    "the login program {} cannot run ({status}): {stderr_text}",
                    self.command_line()
                ),
            ));
        }
        let kind = match status.code() {
            Some(0) => return self.parse_output(stdout, secrets),
            Some(10) => FailureKind::Credential,
            Some(11) => FailureKind::Captcha,
            Some(12) => FailureKind::Network,
            _ => FailureKind::Failed,
        };
        let message = if stderr_text.is_empty() {
            format!("{} exited with {status}", self.program)
        } else {
            stderr_text
        };
        Err(LoginFailure::new(kind, message))
    }

    fn parse_output(&self, stdout: &[u8], secrets: &[&str]) -> Result<LoginToken, LoginFailure> {
        let bad = |why: &str| {
            LoginFailure::new(
                FailureKind::Failed,
                clean_message(
                    &format!(
                        "{} exited 0 but its output {why} ({} bytes on stdout)",
                        self.program,
                        stdout.len()
                    ),
                    secrets,
                ),
            )
        };
        let text = std::str::from_utf8(stdout).map_err(|_| bad("is not UTF-8"))?;
        let output: DriverOutput = serde_json::from_str(text.trim()).map_err(|e| {
            bad(&format!(
                "is not a JSON object with a string `token`: {}",
                e.classify_name()
            ))
        })?;
        if output.token.trim().is_empty() {
            return Err(bad("has an empty `token`"));
        }
        let expires_at = match (output.expires_at, output.expires_in) {
            (Some(at), _) if at > Utc::now() => at,
            (Some(_), _) => return Err(bad("has an `expires_at` in the past")),
            (None, Some(secs)) => expiry_in(secs)
                .ok_or_else(|| bad("has an `expires_in` that is not a positive number"))?,
            (None, None) => expiry_of(&output.token, self.default_ttl),
        };
        Ok(LoginToken {
            token: Secret::new(output.token),
            expires_at,
            token_type: None,
        })
    }
}

/// One run of the login program: the process, its group, and the tasks reading its output.
/// Output is read by tasks of their own, so that a helper the program leaves running (a
/// browser holding the pipes open) cannot keep the login waiting after it exited.
struct ProgramRun {
    /// Reads stdout: the output, less the captcha lines (sent to `captchas`).
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    /// Stays open after the request line, for a captcha's answer; `None` once the program
    /// stopped reading.
    stdin: Option<ChildStdin>,
    /// The captchas the program asks a person to solve.
    captchas: mpsc::Receiver<CaptchaPrompt>,
    /// Kills the whole group however the login ends: timeout, error, or being dropped
    /// because the acquisition as a whole timed out or its caller went away.
    group: GroupGuard,
    child: Child,
}

impl ProgramRun {
    fn start(driver: &CommandDriver) -> Result<ProgramRun, LoginFailure> {
        let (mut child, group) = spawn_in_group(&driver.program, &driver.args).map_err(|e| {
            LoginFailure::new(
                FailureKind::Misconfigured,
                format!(
                    "the login program {} cannot run: {e}",
                    driver.command_line()
                ),
            )
        })?;
        let (captcha_tx, captchas) = mpsc::channel(1);
        Ok(ProgramRun {
            stdout: tokio::spawn(read_output(
                child.stdout.take(),
                MAX_STDOUT_BYTES,
                captcha_tx,
            )),
            stderr: tokio::spawn(read_capped(child.stderr.take(), MAX_ERROR_BYTES as u64 * 2)),
            stdin: child.stdin.take(),
            captchas,
            group,
            child,
        })
    }

    /// Writes the request line, then hands the captchas the program asks about to a person
    /// and writes their answers, until the program exits or the login's deadline passes.
    async fn converse(
        &mut self,
        driver: &CommandDriver,
        creds: &Credentials<'_>,
        deadline: &Deadline,
    ) -> Result<std::io::Result<ExitStatus>, LoginFailure> {
        let request = request_line(creds);
        let (stdin, captchas, child) = (&mut self.stdin, &mut self.captchas, &mut self.child);
        let exchange = async {
            // A program that exits without reading its stdin is not an error of ours. Stdin
            // stays open: a captcha's answer may follow.
            write_line(stdin, &request).await;
            loop {
                tokio::select! {
                    status = child.wait() => break Ok(status),
                    Some(prompt) = captchas.recv() => {
                        let answer = driver.hand_off(creds, prompt, deadline).await?;
                        write_line(stdin, &serde_json::json!({"answer": answer})).await;
                    }
                }
            }
        };
        let ended = deadline.run(Duration::ZERO, exchange).await;
        let failure = match ended {
            Some(Ok(status)) => return Ok(status),
            Some(Err(failure)) => failure,
            None => LoginFailure::new(
                FailureKind::Timeout,
                format!(
                    "{} did not finish within login_timeout; its process group was killed",
                    driver.program
                ),
            ),
        };
        self.stdout.abort();
        self.stderr.abort();
        Err(failure)
    }

    /// What the program wrote (stdout, stderr), once it exited: read at once, unless
    /// helpers hold the pipes; then they are killed with the group and the readers end.
    async fn output(self) -> (Vec<u8>, Vec<u8>) {
        let ProgramRun {
            mut stdout,
            mut stderr,
            group,
            ..
        } = self;
        let joined = tokio::time::timeout(OUTPUT_GRACE, async {
            ((&mut stdout).await, (&mut stderr).await)
        })
        .await;
        match joined {
            Ok((out, err)) => (out.unwrap_or_default(), err.unwrap_or_default()),
            Err(_) => {
                drop(group);
                let out = tokio::time::timeout(OUTPUT_GRACE, stdout).await;
                let err = tokio::time::timeout(OUTPUT_GRACE, stderr).await;
                (
                    out.ok().and_then(Result::ok).unwrap_or_default(),
                    err.ok().and_then(Result::ok).unwrap_or_default(),
                )
            }
        }
    }
}

/// The request line written to the program's stdin.
fn request_line(creds: &Credentials<'_>) -> serde_json::Value {
    let mut request = serde_json::json!({
        "site_name": creds.site,
        "account": creds.account,
        "password": creds.password.expose(),
    });
    if let Some(proxy) = creds.proxy {
        request["proxy"] = serde_json::Value::from(proxy.expose());
    }
    request
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong fields",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

async fn write_line(stdin: &mut Option<tokio::process::ChildStdin>, line: &serde_json::Value) {
    if let Some(pipe) = stdin.as_mut() {
        let ok = pipe.write_all(format!("{line}\n").as_bytes()).await.is_ok()
            && pipe.flush().await.is_ok();
        if !ok {
            *stdin = None;
        }
    }
}

/// Reads the program's stdout: captcha lines go to `captchas`, the rest (up to `cap` bytes)
/// is the output; what is beyond is drained so the program never blocks on a full pipe.
async fn read_output(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    cap: u64,
    captchas: tokio::sync::mpsc::Sender<CaptchaPrompt>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(pipe) = pipe else { return out };
    let mut reader = tokio::io::BufReader::new(pipe);
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Ok(CaptchaLine { captcha }) = serde_json::from_slice(&line) {
            // The login gone (receiver dropped): nobody will answer, the group is killed.
            let _ = captchas.send(captcha).await;
            continue;
        }
        let room = (cap as usize).saturating_sub(out.len());
        out.extend_from_slice(&line[..line.len().min(room)]);
    }
    out
}
