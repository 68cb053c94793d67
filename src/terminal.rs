//! Reading a secret at a terminal: echo is turned off *before* the prompt is shown, so that
//! nothing typed (or pasted) ahead of the prompt appears on screen, and turned back on however
//! the read ends.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::io::AsRawFd;

/// Restores the terminal's settings when dropped.
struct EchoOff<'a> {
    tty: &'a File,
    saved: libc::termios,
}

impl EchoOff<'_> {
    fn new(tty: &File) -> std::io::Result<EchoOff<'_>> {
        let fd = tty.as_raw_fd();
        let mut saved = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: `fd` is an open terminal; tcgetattr fills `saved` when it returns 0.
        if unsafe { libc::tcgetattr(fd, saved.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: initialised by the successful tcgetattr above.
        let saved = unsafe { saved.assume_init() };
        let mut hidden = saved;
        hidden.c_lflag &= !libc::ECHO;
        // The Enter key still moves to the next line.
        hidden.c_lflag |= libc::ECHONL;
        // SAFETY: `hidden` is a valid termios for `fd`.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &hidden) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EchoOff { tty, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from this terminal.
        unsafe { libc::tcsetattr(self.tty.as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}

/// Shows `prompt` on the controlling terminal and reads one line from it without echo.
pub fn read_hidden(prompt: &str) -> std::io::Result<String> {
    let tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let _echo_off = EchoOff::new(&tty)?;
    (&tty).write_all(prompt.as_bytes())?;
    (&tty).flush()?;
    let mut line = String::new();
    BufReader::new(&tty).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
