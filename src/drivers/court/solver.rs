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

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::config::court::CaptchaSolverConfig;
use crate::config::{seconds, SiteConfig};
use crate::drivers::deadline::Deadline;
use crate::drivers::login::{clean_message, could_not_run, FailureKind, LoginFailure};
use crate::drivers::process::{read_capped, spawn_in_group};
use crate::lifecycle::captcha::Captchas;
use crate::watch::metrics::{Metrics, SolveResult};

/// Why a person cannot be asked (a driver built without the daemon's captcha registry).
pub const NO_HAND_OFF: &str =
    "no person to solve the captcha: the captcha hand-off is not available";
/// Longest answer read from a solver.
const MAX_ANSWER_BYTES: u64 = 4096;
/// Longest stderr read from a solver.
const MAX_STDERR_BYTES: u64 = 2048;
/// How long output is awaited after the solver exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(300);

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
                Err(failed) => {
                    self.count(failed.result);
                    // Logged whatever comes next, a person taking over included.
                    log::warn!(
                        "event=captcha_solver_failed site={} account={account} program={} cannot_run={} message=\"{}\"",
                        self.site,
                        argv.join(" "),
                        failed.cannot_run,
                        failed.message.replace('"', "'")
                    );
                    if failed.cannot_run {
                        // The site's configuration, not the account nor the captcha.
                        return Err(
                            LoginFailure::new(FailureKind::Misconfigured, failed.message)
                                .last_attempt(),
                        );
                    }
                    Some(failed.message)
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
    ) -> Result<String, SolverFailure> {
        let program = argv.first().map(String::as_str).unwrap_or_default();
        // The whole group goes when the solve ends, however it ends.
        let (mut child, _group) =
            spawn_in_group(program, &argv[1..]).map_err(|e| SolverFailure {
                result: SolveResult::Failed,
                message: format!("the captcha solver {} cannot run: {e}", argv.join(" ")),
                cannot_run: true,
            })?;
        let out = tokio::spawn(read_capped(child.stdout.take(), MAX_ANSWER_BYTES));
        let err = tokio::spawn(read_capped(child.stderr.take(), MAX_STDERR_BYTES));
        let limit = self.timeout.min(remaining);
        let Ok(status) = tokio::time::timeout(limit, show_image(&mut child, image)).await else {
            out.abort();
            err.abort();
            return Err(self.timed_out(program, limit));
        };
        let stdout = within_grace(out).await;
        let stderr = clean_message(&String::from_utf8_lossy(&within_grace(err).await), secrets);
        answer_of(argv, status, &stdout, &stderr)
    }

    /// A solver that gave no answer within `limit` (its group is killed as the run ends).
    fn timed_out(&self, program: &str, limit: Duration) -> SolverFailure {
        log::warn!(
            "event=captcha_solver_timeout site={} program={program} timeout={:.1}s",
            self.site,
            limit.as_secs_f64()
        );
        SolverFailure {
            result: SolveResult::Timeout,
            message: format!(
                "captcha solver {program} gave no answer within {:.1}s; its process group was killed",
                limit.as_secs_f64()
            ),
            cannot_run: false,
        }
    }
}

/// Writes the image to the solver's stdin, closes it, and waits for the solver to exit.
async fn show_image(child: &mut Child, image: &[u8]) -> std::io::Result<ExitStatus> {
    if let Some(mut pipe) = child.stdin.take() {
        // A solver that exits without reading is judged by its exit status.
        let _ = pipe.write_all(image).await;
        let _ = pipe.shutdown().await;
    }
    child.wait().await
}

/// What a reader task read, if it ends within [`OUTPUT_GRACE`]; else nothing.
async fn within_grace(reader: JoinHandle<Vec<u8>>) -> Vec<u8> {
    tokio::time::timeout(OUTPUT_GRACE, reader)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Why a solver run gave no answer.
struct SolverFailure {
    result: SolveResult,
    message: String,
    /// The program could not run at all (issue 21): the site's configuration is wrong.
    cannot_run: bool,
}

/// The solver's answer: its trimmed stdout after exit 0, else why there is none.
fn answer_of(
    argv: &[String],
    status: std::io::Result<ExitStatus>,
    stdout: &[u8],
    stderr: &str,
) -> Result<String, SolverFailure> {
    let program = argv.join(" ");
    let failed = |result, message: String, cannot_run| SolverFailure {
        result,
        message,
        cannot_run,
    };
    let status = status.map_err(|e| {
        failed(
            SolveResult::Failed,
            format!("captcha solver {program}: {e}"),
            false,
        )
    })?;
    if could_not_run(status.code(), stderr) {
        return Err(failed(
            SolveResult::Failed,
            format!("the captcha solver {program} cannot run ({status}): {stderr}"),
            true,
        ));
    }
    if !status.success() {
        return Err(failed(
            SolveResult::Failed,
            format!("captcha solver {program} exited with {status}: {stderr}"),
            false,
        ));
    }
    let text = String::from_utf8_lossy(stdout).trim().to_string();
    if text.is_empty() {
        return Err(failed(
            SolveResult::Empty,
            format!("captcha solver {program} printed nothing: {stderr}"),
            false,
        ));
    }
    Ok(text)
}
