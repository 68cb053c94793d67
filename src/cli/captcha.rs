//! `tokend captcha list | show | answer`: captchas a login program handed to a person,
//! through the running daemon.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Subcommand;

use crate::api::captchas::{CaptchaAnswer, CaptchaAnswered, CaptchasAnswer};
use crate::cli::client::{read, wire_text};
use crate::cli::terminal::printable;
use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum CaptchaCommand {
    /// List the captchas waiting for an answer (id, site, account, prompt, expiry).
    List {
        /// The daemon's address (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
        /// Print the whole answer (images included, as data URLs) as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to keep trying while the daemon refuses connections (it may be starting).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
    /// Save the image of captcha ID to FILE (a link to it at a terminal that shows links).
    Show {
        id: String,
        /// Where to write the image (PNG, JPEG or GIF, as the login program gave it).
        #[arg(long, value_name = "FILE", required = true)]
        save: PathBuf,
        /// The daemon's address (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
        /// Seconds to keep trying while the daemon refuses connections (it may be starting).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
    /// Answer captcha ID; without ANSWER, the first line of stdin is the answer.
    Answer {
        id: String,
        answer: Option<String>,
        /// The daemon's address (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
        /// Seconds to keep trying while the daemon refuses connections (it may be starting).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        wait: f64,
    },
}

const CAPTCHAS: &str = "/api/v1/automation/captchas";

/// `tokend captcha list | answer ID [ANSWER]`, through the daemon.
pub(super) fn run(config: &Config, command: CaptchaCommand) -> Result<()> {
    let runtime = actix_web::rt::System::new();
    match command {
        CaptchaCommand::List { url, json, wait } => {
            let data = runtime.block_on(crate::cli::client::get_json(
                config,
                &crate::cli::client::Endpoint::new(url.as_deref(), wait),
                CAPTCHAS,
            ))?;
            let pending: CaptchasAnswer = read(&format!("GET {CAPTCHAS}"), &data)?;
            if json {
                println!("{data}");
                return Ok(());
            }
            if pending.captchas.is_empty() {
                eprintln!("no captcha is waiting for an answer");
            }
            for c in pending.captchas {
                // The prompt is the portal's, the account an operator's: neither is trusted.
                println!(
                    "{}\t{}\t{}\texpires_at={}\t{}",
                    printable(&c.id),
                    printable(&c.site_name),
                    printable(&c.account),
                    wire_text(&c.expires_at),
                    printable(&c.prompt)
                );
            }
            Ok(())
        }
        CaptchaCommand::Show {
            id,
            save,
            url,
            wait,
        } => {
            let pending: CaptchasAnswer = runtime.block_on(crate::cli::client::get(
                config,
                &crate::cli::client::Endpoint::new(url.as_deref(), wait),
                CAPTCHAS,
            ))?;
            save_captcha_image(&pending, &id, &save)
        }
        CaptchaCommand::Answer {
            id,
            answer,
            url,
            wait,
        } => {
            let answer = match answer {
                Some(answer) => answer,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| Error::io("stdin", e))?;
                    line
                }
            };
            let answer = answer.trim();
            if answer.is_empty() {
                return Err(Error::invalid("answer", "is empty"));
            }
            let path = format!(
                "/api/v1/automation/captchas/{}",
                percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
            );
            let _: CaptchaAnswered = runtime.block_on(crate::cli::client::post(
                config,
                &crate::cli::client::Endpoint::new(url.as_deref(), wait),
                &path,
                &CaptchaAnswer {
                    answer: answer.to_string(),
                },
            ))?;
            println!("answered captcha {}", printable(&id));
            Ok(())
        }
    }
}

/// `tokend captcha show ID --save FILE`: the pending challenge's image, decoded from its
/// data URL, written to FILE; at a terminal the path is a link (OSC 8) to the file.
fn save_captcha_image(pending: &CaptchasAnswer, id: &str, file: &std::path::Path) -> Result<()> {
    use base64::Engine;
    let challenge = (pending.captchas.iter())
        .find(|c| c.id == id)
        .ok_or_else(|| Error::CaptchaNotFound(id.to_string()))?;
    let encoded = challenge
        .image
        .split_once(";base64,")
        .map(|(_, encoded)| encoded)
        .ok_or_else(|| Error::Daemon(format!("captcha `{id}` has no base64 image")))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| Error::Daemon(format!("captcha `{id}`: the image is not base64: {e}")))?;
    std::fs::write(file, &bytes).map_err(|e| Error::io(file, e))?;
    let shown = if std::io::stdout().is_terminal() {
        terminal_link(file)
    } else {
        file.display().to_string()
    };
    println!(
        "saved the image of captcha {id} ({} / {}: {}) to {shown}",
        // The prompt is the portal's, the account an operator's: neither is trusted.
        printable(&challenge.site_name),
        printable(&challenge.account),
        printable(&challenge.prompt)
    );
    Ok(())
}

/// `file` as an OSC 8 hyperlink to `file://HOST/ABSOLUTE-PATH`: a terminal that knows the
/// sequence shows the path as a link, one that does not shows the path alone.
fn terminal_link(file: &std::path::Path) -> String {
    const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let target = format!(
        "file://{}{}",
        host.trim(),
        percent_encoding::utf8_percent_encode(&absolute.to_string_lossy(), PATH_SET)
    );
    format!("\x1b]8;;{target}\x1b\\{}\x1b]8;;\x1b\\", file.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_link_points_at_the_absolute_file() {
        let link = terminal_link(std::path::Path::new("/tmp/a b.png"));
        assert!(link.starts_with("\x1b]8;;file://"), "{link:?}");
        assert!(
            link.contains("/tmp/a%20b.png\x1b\\/tmp/a b.png\x1b]8;;\x1b\\"),
            "{link:?}"
        );
    }
}
