//! Who reads a captcha (SPEC §15 step 3): `captcha_solver = ["program", "args"…]` gets the
//! image bytes on stdin and answers the text on stdout with exit 0. It runs with no shell, in
//! a process group of its own that is killed when it ends or at `captcha_solver_timeout`,
//! without tokend's own secrets in its environment; its stderr (scrubbed, cut) names why it
//! failed. `"human"` (and `captcha_fallback = "human"`) is the hand-off of SPEC §13: the
//! captcha is listed for a person (`GET /api/v1/automation/captchas`, the dashboard, `tokend
//! captcha list`) and the login's clock stands still until the answer comes or
//! `captcha_answer_timeout` passes.
//!
//! Every outcome is counted in `tokend_captcha_solves_total{site,result}`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::captcha::Captchas;
use crate::config::court::CaptchaSolverConfig;
use crate::config::{seconds, SiteConfig};
use crate::drivers::command::{read_capped, GroupGuard, HIDDEN_ENV};
use crate::drivers::{clean_message, Deadline, FailureKind, LoginFailure};
use crate::metrics::{Metrics, SolveResult};

/// Why a person cannot be asked (a driver built without the daemon's captcha registry).
pub const NO_HAND_OFF: &str =
    "no person to solve the captcha: the captcha hand-off is not available";
/// Longest answer read from a solver.
const MAX_ANSWER_BYTES: u64 = 4096;

pub struct CaptchaSolver {
    site: String,
    program: Option<Vec<String>>,
    /// A person is asked (directly, or after the program failed).
    human: bool,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
    /// Where a captcha waits for a person (the daemon's registry).
    captchas: Option<Captchas>,
}

impl CaptchaSolver {
    pub fn new(site: &SiteConfig, metrics: Option<Arc<Metrics>>) -> CaptchaSolver {
        let (program, human) = match &site.captcha_solver {
            Some(CaptchaSolverConfig::Program(argv)) => {
                (Some(argv.clone()), site.captcha_fallback == "human")
            }
            Some(solver) => (None, solver.is_human()),
            None => (None, site.captcha_fallback == "human"),
        };
        CaptchaSolver {
            site: site.name.clone(),
            program,
            human,
            timeout: seconds(site.captcha_solver_timeout),
            metrics,
            captchas: None,
        }
    }

    pub fn with_captchas(mut self, captchas: Captchas) -> CaptchaSolver {
        self.captchas = Some(captchas);
        self
    }

    /// Hands the captcha to a person and waits, the login's clock stopped meanwhile.
    async fn ask_a_person(
        &self,
        account: &str,
        image: &[u8],
        deadline: &Deadline,
    ) -> Result<String, String> {
        use base64::Engine;
        let Some(captchas) = &self.captchas else {
            return Err(NO_HAND_OFF.to_string());
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(image);
        let mut ticket = captchas.open(
            &self.site,
            account,
            "请输入图片中的验证码 Type the characters in the image",
            &encoded,
        );
        deadline.pause();
        let answer = ticket.wait().await;
        deadline.resume();
        match answer {
            Some(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            _ => Err(format!(
                "nobody answered captcha {} within retry.captcha_answer_timeout ({:.0}s)",
                ticket.id(),
                captchas.answer_timeout().as_secs_f64()
            )),
        }
    }

    /// Counts one outcome.
    pub fn count(&self, result: SolveResult) {
        if let Some(metrics) = &self.metrics {
            metrics.captcha_solve(&self.site, result);
        }
    }

    /// The text of the captcha `image`, before `deadline`; a failure is a `captcha_error`
    /// (the retry fetches a fresh captcha).
    pub async fn solve(
        &self,
        account: &str,
        image: &[u8],
        deadline: &Deadline,
        secrets: &[&str],
    ) -> Result<String, LoginFailure> {
        let program_failure = match &self.program {
            Some(argv) => match self.run(argv, image, deadline.remaining(), secrets).await {
                Ok(text) => {
                    self.count(SolveResult::Solved);
                    return Ok(text);
                }
                Err((result, message)) => {
                    self.count(result);
                    Some(message)
                }
            },
            None => None,
        };
        if !self.human {
            let message = program_failure.unwrap_or_else(|| {
                self.count(SolveResult::Unavailable);
                format!(
                    "site `{}` has no captcha_solver: set captcha_solver = [\"python3\", \"/path/to/ddddocr_solve.py\"]",
                    self.site
                )
            });
            return Err(LoginFailure::new(FailureKind::Captcha, message));
        }
        match self.ask_a_person(account, image, deadline).await {
            Ok(text) => {
                self.count(SolveResult::Solved);
                Ok(text)
            }
            Err(why) => {
                self.count(SolveResult::Unavailable);
                let message = match program_failure {
                    Some(message) => format!("{message}; captcha_fallback = \"human\": {why}"),
                    None => why,
                };
                // Nobody answered: another attempt would meet the same silence.
                Err(LoginFailure::new(FailureKind::Captcha, message).last_attempt())
            }
        }
    }

    /// Runs the program once: its trimmed stdout, or why there is none.
    async fn run(
        &self,
        argv: &[String],
        image: &[u8],
        remaining: Duration,
        secrets: &[&str],
    ) -> Result<String, (SolveResult, String)> {
        let program = argv.first().map(String::as_str).unwrap_or_default();
        let mut command = Command::new(program);
        command
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for var in HIDDEN_ENV {
            command.env_remove(var);
        }
        let mut child = command.spawn().map_err(|e| {
            (
                SolveResult::Failed,
                format!("captcha solver: cannot run {program}: {e}"),
            )
        })?;
        // The whole group goes when the solve ends, however it ends.
        let _group = GroupGuard(child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32)));
        let out = tokio::spawn(read_capped(child.stdout.take(), MAX_ANSWER_BYTES));
        let err = tokio::spawn(read_capped(child.stderr.take(), 2048));
        let mut stdin = child.stdin.take();
        let limit = self.timeout.min(remaining);
        let run = async {
            if let Some(pipe) = stdin.as_mut() {
                // A solver that exits without reading is judged by its exit status.
                let _ = pipe.write_all(image).await;
                let _ = pipe.shutdown().await;
            }
            drop(stdin);
            child.wait().await
        };
        let status = match tokio::time::timeout(limit, run).await {
            Ok(status) => status,
            Err(_) => {
                out.abort();
                err.abort();
                log::warn!(
                    "event=captcha_solver_timeout site={} program={program} timeout={:.1}s",
                    self.site,
                    limit.as_secs_f64()
                );
                return Err((
                    SolveResult::Timeout,
                    format!(
                        "captcha solver {program} gave no answer within {:.1}s; its process group was killed",
                        limit.as_secs_f64()
                    ),
                ));
            }
        };
        let grace = Duration::from_millis(300);
        let stdout = tokio::time::timeout(grace, out)
            .await
            .ok()
            .and_then(Result::ok);
        let stderr = tokio::time::timeout(grace, err)
            .await
            .ok()
            .and_then(Result::ok);
        let stderr = clean_message(
            &String::from_utf8_lossy(&stderr.unwrap_or_default()),
            secrets,
        );
        let status = status.map_err(|e| {
            (
                SolveResult::Failed,
                format!("captcha solver {program}: {e}"),
            )
        })?;
        if !status.success() {
            return Err((
                SolveResult::Failed,
                format!("captcha solver {program} exited with {status}: {stderr}"),
            ));
        }
        let text = String::from_utf8_lossy(&stdout.unwrap_or_default())
            .trim()
            .to_string();
        if text.is_empty() {
            return Err((
                SolveResult::Empty,
                format!("captcha solver {program} printed nothing: {stderr}"),
            ));
        }
        Ok(text)
    }
}
