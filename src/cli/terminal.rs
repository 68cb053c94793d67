//! Reading a secret at a terminal: echo is turned off *before* the prompt is shown, so that
//! nothing typed (or pasted) ahead of the prompt appears on screen, and turned back on however
//! the read ends. And the one road for text of others (a portal's captcha prompt, an account
//! name, a daemon's error) to the operator's terminal: [`printable`].

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

/// `text` as the CLI prints it: control characters (escape sequences, BEL, C1 codes) and the
/// Unicode bidirectional overrides removed, tabs and line breaks as one space, so that text a
/// portal or another operator supplied can neither drive the terminal nor break a table row.
pub fn printable(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\t' | '\n' | '\r' => Some(' '),
            c if c.is_control() => None,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' => None,
            c => Some(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_never_reach_the_terminal() {
        let prompt = "\u{1b}]0;pwned\u{7}\u{1b}[2J请输入\u{9b}31m\u{202e}abc\nnext";
        assert_eq!(super::printable(prompt), "]0;pwned[2J请输入31mabc next");
    }
}
