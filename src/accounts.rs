//! Managing login accounts: adding (the password sealed before it reaches the database),
//! importing a CSV file in one transaction, listing without passwords, removing.

use std::io::Read;

use chrono::Utc;
use diesel::Connection;

use crate::config::validate_site_name;
use crate::crypto::{SealContext, SecretKey};
use crate::db::models::{AccountCredential, NewAccountCredential};
use crate::db::{self, DbConnection, Pool};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Longest account name accepted; portals use short user names or phone numbers.
const ACCOUNT_MAX: usize = 128;

/// An account to add, before its password is sealed.
#[derive(Debug)]
pub struct NewAccount {
    pub site_name: String,
    pub account: String,
    pub password: Secret,
    pub preferred: bool,
}

impl NewAccount {
    /// Checks the fields; `field` prefixes name where they came from (a CLI argument, a line).
    fn validate(&self) -> Result<()> {
        validate_site_name("site", &self.site_name)?;
        let account = self.account.trim();
        if account.is_empty()
            || account.len() > ACCOUNT_MAX
            || account.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                "account",
                format!("must be 1 to {ACCOUNT_MAX} printable characters"),
            ));
        }
        if self.password.is_empty() {
            return Err(Error::invalid("password", "must not be empty"));
        }
        Ok(())
    }
}

fn insert(conn: &mut DbConnection, key: &SecretKey, new: &NewAccount) -> Result<AccountCredential> {
    new.validate()?;
    let account = new.account.trim();
    let sealed = key.seal(
        new.password.expose(),
        SealContext::Password {
            site: &new.site_name,
            account,
        },
    )?;
    let now = Utc::now().naive_utc();
    db::accounts::insert(
        conn,
        &NewAccountCredential {
            site_name: &new.site_name,
            account,
            password_encrypted: &sealed,
            is_preferred: new.preferred,
            is_active: true,
            login_success_count: 0,
            login_failure_count: 0,
            created_at: now,
            updated_at: now,
        },
    )
}

/// Adds one account.
pub fn add(pool: &Pool, key: &SecretKey, new: &NewAccount) -> Result<AccountCredential> {
    insert(&mut *pool.get()?, key, new)
}

/// Imports `site_name,account,password[,preferred]` lines (an optional header line is
/// recognised) in one transaction: a malformed line imports nothing and is named.
pub fn import(pool: &Pool, key: &SecretKey, input: impl Read) -> Result<usize> {
    let records = parse_import(input)?;
    let mut conn = pool.get()?;
    conn.transaction(|conn| {
        for (line, record) in &records {
            insert(conn, key, record).map_err(|e| Error::Import {
                line: *line,
                message: e.to_string(),
            })?;
        }
        Ok::<_, Error>(records.len())
    })
}

fn parse_import(mut input: impl Read) -> Result<Vec<(usize, NewAccount)>> {
    // Read whole (import files are small), so that lines are counted from the bytes: the CSV
    // reader's own count leaves out blank and comment lines.
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|e| Error::Import {
        line: 0,
        message: format!("cannot read the input: {e}"),
    })?;
    let physical_line = |position: Option<&csv::Position>| {
        position.map_or(0, |p| {
            let end = usize::try_from(p.byte())
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let start = bytes[..end].iter().filter(|&&b| b == b'\n').count();
            // The record starts after any blank or comment lines: skip to its first field.
            let skipped = bytes[end..]
                .split(|&b| b == b'\n')
                .take_while(|l| {
                    let l = l.trim_ascii();
                    l.is_empty() || l.starts_with(b"#")
                })
                .count();
            start + skipped + 1
        })
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::Fields)
        .comment(Some(b'#'))
        .from_reader(&bytes[..]);
    let mut records = Vec::new();
    for result in reader.records() {
        let record = result.map_err(|e| Error::Import {
            line: physical_line(e.position()),
            message: format!("not valid CSV: {e}"),
        })?;
        let line = physical_line(record.position());
        let bad = |message: String| Error::Import { line, message };
        if records.is_empty() && record.get(0) == Some("site_name") {
            continue; // header
        }
        if !(3..=4).contains(&record.len()) {
            return Err(bad(format!(
                "expected site_name,account,password[,preferred], found {} fields",
                record.len()
            )));
        }
        let preferred = match record.get(3).unwrap_or("").to_ascii_lowercase().as_str() {
            "" | "false" | "0" | "no" => false,
            "true" | "1" | "yes" => true,
            _ => {
                return Err(bad(format!(
                    "preferred must be true/false, yes/no or 1/0 (any case), not `{}`",
                    record.get(3).unwrap_or("")
                )))
            }
        };
        let new = NewAccount {
            site_name: record[0].to_string(),
            account: record[1].to_string(),
            password: Secret::new(&record[2]),
            preferred,
        };
        new.validate().map_err(|e| bad(e.to_string()))?;
        records.push((line, new));
    }
    if records.is_empty() {
        return Err(Error::Import {
            line: 0,
            message: "no accounts in the input".into(),
        });
    }
    Ok(records)
}

pub fn list(pool: &Pool, site: Option<&str>) -> Result<Vec<AccountCredential>> {
    if let Some(site) = site {
        validate_site_name("site", site)?;
    }
    db::accounts::list(&mut *pool.get()?, site)
}

/// Removes an account; [`Error::AccountNotFound`] when there is none.
pub fn remove(pool: &Pool, site: &str, account: &str) -> Result<()> {
    validate_site_name("site", site)?;
    if db::accounts::delete(&mut *pool.get()?, site, account)? {
        Ok(())
    } else {
        Err(Error::AccountNotFound {
            site: site.into(),
            account: account.into(),
        })
    }
}

/// The password of an account, decrypted for a login.
pub fn password(key: &SecretKey, credential: &AccountCredential) -> Result<Secret> {
    key.open(
        &credential.password_encrypted,
        SealContext::Password {
            site: &credential.site_name,
            account: &credential.account,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(text: &str) -> usize {
        match parse_import(text.as_bytes()) {
            Err(Error::Import { line, .. }) => line,
            other => panic!("expected an import error, got {other:?}"),
        }
    }

    #[test]
    fn import_parsing() {
        let ok = "site_name,account,password,preferred\ncourt_zxfw,alice,\"pw,with,commas\",true\ncourt_zxfw,bob,pw2\n";
        let records = parse_import(ok.as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].1.password.expose(), "pw,with,commas");
        assert!(records[0].1.preferred);
        assert_eq!(records[1].0, 3);

        assert_eq!(line_of("court_zxfw,alice,pw\nbad site,bob,pw\n"), 2);
        assert_eq!(line_of("court_zxfw,alice,pw\ncourt_zxfw,bob\n"), 2);
        assert_eq!(line_of("court_zxfw,alice,pw,maybe\n"), 1);
        assert_eq!(line_of("court_zxfw,alice,\n"), 1);
        assert_eq!(line_of(""), 0);
        // Blank and comment lines count: the line named is the line in the file.
        assert_eq!(
            line_of("\n# accounts\n\ncourt_zxfw,alice,pw\nbad site,bob,pw\n"),
            5
        );
        assert_eq!(line_of("# c\n\n# d\n\nbad site,bob,pw\n"), 5);
        let cases = "court_zxfw,a,pw,TRUE\ncourt_zxfw,b,pw,Yes\ncourt_zxfw,c,pw,NO\ncourt_zxfw,d,pw,False\n";
        let preferred: Vec<bool> = parse_import(cases.as_bytes())
            .unwrap()
            .iter()
            .map(|(_, r)| r.preferred)
            .collect();
        assert_eq!(preferred, [true, true, false, false]);
    }
}
