//! Start-up checks: what would otherwise fail later, found before the first caller does.
//!
//! - [`load_key`]: the secret key, refusing to create a new key file beside a database that
//!   already holds secrets sealed under another key (they could never be opened again).
//! - [`key_opens_stored_secret`]: tries to open one stored password with the key.
//! - [`command_programs`]: each `command` driver's program (and captcha solver program)
//!   exists and may be run, and each argument that is a path (a script) exists.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::config::{Config, DriverKind};
use crate::db::{DbConnection, Pool};
use crate::error::{Error, Result};
use crate::vault::crypto::{SealContext, SecretKey};

/// The phrase operators (and tests) look for when the key is wrong.
pub const KEY_MISMATCH: &str = "the secret key does not match the stored accounts";

/// Loads the secret key for commands that use `pool` (already migrated). A missing key file
/// is created only when the database holds no secrets yet.
pub fn load_key(config: &Config, pool: &Pool) -> Result<SecretKey> {
    let security = &config.security;
    if security.secret_key.is_none() && !security.key_file.exists() {
        let mut conn = pool.get()?;
        if crate::db::accounts::holds_secrets(&mut conn)? {
            return Err(Error::config(
                "security.key_file",
                format!(
                    "{} does not exist, but the database {} already holds encrypted accounts or \
                     tokens: a new key could not open them. Restore the key file, set \
                     TOKEND_SECRET_KEY, or point database.url at another database",
                    security.key_file.display(),
                    pool.display_url()
                ),
            ));
        }
    }
    SecretKey::load(security)
}

/// Opens the password of one stored account: `Err` with [`KEY_MISMATCH`] when the key cannot.
/// No account stored: nothing to check.
pub fn key_opens_stored_secret(conn: &mut DbConnection, key: &SecretKey) -> Result<()> {
    let Some((site, account, sealed)) = crate::db::accounts::first_sealed_password(conn)? else {
        return Ok(());
    };
    key.open(
        &sealed,
        SealContext::Password {
            site: &site,
            account: &account,
        },
    )
    .map(drop)
    .map_err(|_| {
        Error::Crypto(format!(
            "{KEY_MISMATCH} (the password of `{account}` of site `{site}` does not open): use \
             the TOKEND_SECRET_KEY or key file the accounts were added with"
        ))
    })
}

/// Every `command` driver's program exists and is executable; the error names
/// `sites[i].command`.
pub fn command_programs(config: &Config) -> Result<()> {
    for (index, site) in config.sites.iter().enumerate() {
        // A captcha solver program (SPEC §15) is checked the same way.
        if let Some(crate::config::court::CaptchaSolverConfig::Program(argv)) = &site.captcha_solver
        {
            argv_runs(argv)
                .map_err(|why| Error::config(format!("sites[{index}].captcha_solver"), why))?;
        }
        if site.driver == DriverKind::Command {
            argv_runs(&site.command)
                .map_err(|why| Error::config(format!("sites[{index}].command"), why))?;
        }
    }
    Ok(())
}

/// The program of `argv` can be run, and every argument that is a path exists.
fn argv_runs(argv: &[String]) -> std::result::Result<(), String> {
    let Some(program) = argv.first() else {
        return Ok(());
    };
    runnable(program).map_err(|reason| format!("`{program}` {reason}"))?;
    match argv[1..]
        .iter()
        .find(|arg| path_like(arg) && !std::path::Path::new(arg.as_str()).exists())
    {
        Some(missing) => Err(format!(
            "`{missing}` (an argument of `{program}`) does not exist"
        )),
        None => Ok(()),
    }
}

/// An argument that names a file: it holds a `/`, and is not an option (`-x`, `--x=/y`),
/// an assignment (`a=/b`), a URL or a piece of code (`sh -c "sleep 1; …"`: blanks or shell
/// characters).
fn path_like(arg: &str) -> bool {
    arg.contains('/')
        && !arg.starts_with('-')
        && !arg.contains("://")
        && !arg
            .chars()
            .any(|c| c.is_whitespace() || "=;&|$<>*?()`'\"{}[]".contains(c))
}

/// Whether `program` (a path, or a name looked up in `PATH`) can be run.
fn runnable(program: &str) -> std::result::Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(program))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut found_but_not_executable = None;
    for candidate in candidates {
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Ok(candidate)
            }
            Ok(_) => found_but_not_executable = Some(candidate),
            Err(_) => {}
        }
    }
    Err(match found_but_not_executable {
        Some(path) => format!("({}) is not an executable file", path.display()),
        None if program.contains('/') => "does not exist".to_string(),
        None => "is not found in PATH".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_arguments_must_exist() {
        let argv = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let missing = argv_runs(&argv(&["sh", "/nonexistent/solve.py"])).unwrap_err();
        assert!(missing.contains("/nonexistent/solve.py"), "{missing}");
        assert!(argv_runs(&argv(&["sh", "/bin/sh", "--out=/nonexistent/x", "-c"])).is_ok());
        assert!(argv_runs(&argv(&["sh", "http://example.invalid/x", "plain"])).is_ok());
        assert!(argv_runs(&argv(&["sh", "-c", "sleep 1 & echo $! > /nonexistent/p"])).is_ok());
    }

    #[test]
    fn programs_are_found_or_named() {
        assert!(runnable("sh").is_ok());
        assert!(runnable("/bin/sh").is_ok());
        assert!(runnable("/nonexistent/login")
            .unwrap_err()
            .contains("does not exist"));
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("login");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert!(runnable(plain.to_str().unwrap())
            .unwrap_err()
            .contains("not an executable"));
    }
}
