//! A helper program run for a login (the `command` driver's program, a court site's captcha
//! solver): started with no shell, in a process group of its own that is killed with it,
//! without tokend's own secrets in its environment; its output read without ever blocking it.
//! A leaf, shared by [`super::command`] and [`super::court::solver`].

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

/// Starts `program` with `args`, its stdin, stdout and stderr piped, in a group of its own
/// (the [`GroupGuard`] kills the group when dropped) and without [`crate::config::SECRET_ENV`].
pub fn spawn_in_group(program: &str, args: &[String]) -> std::io::Result<(Child, GroupGuard)> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for var in crate::config::SECRET_ENV {
        command.env_remove(var);
    }
    let child = command.spawn()?;
    let group = GroupGuard(child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32)));
    Ok((child, group))
}

/// Reads up to `cap` bytes of `pipe`, then drains the rest.
pub async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    cap: u64,
) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(pipe) = pipe {
        let mut limited = pipe.take(cap);
        // A read error ends the output: what was read so far is all there is, and the exit
        // status says how the program ended.
        let _ = limited.read_to_end(&mut buf).await;
        // Drain the rest so the program is not blocked writing to a full pipe; what is
        // drained is thrown away, so an error draining it changes nothing.
        let mut rest = limited.into_inner();
        let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
    }
    buf
}

/// The login program's process group; dropping it kills every process left in the group
/// (helpers such as a browser must not outlive the login).
pub struct GroupGuard(Option<nix::unistd::Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // ESRCH (the group is already gone) is the normal case after a clean exit.
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}
