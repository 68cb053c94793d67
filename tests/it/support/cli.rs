//! The real `tokend` binary as a command: [`run_cli`] runs it to the end and captures its
//! status, stdout and stderr; [`stdout`], [`stderr`] and [`text`] read what it printed.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

/// `tokend ARGS` in `dir` (tokend's own variables cleared, then `env` set), with `stdin`
/// written to its input; waits for it to exit.
pub fn run_cli(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = super::tokend(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokend");
    // A command that refuses its arguments exits without reading stdin: a broken pipe then.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// [`run_cli`] with `--config CONFIG` after `args`.
pub fn run_cli_with_config(dir: &Path, config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut all = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    run_cli(dir, &all, &[], stdin)
}

/// What the command printed on stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the command printed on stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Stdout then stderr, for a check that does not mind which one a message went to.
pub fn text(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}
