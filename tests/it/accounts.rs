//! Accounts through the real `tokend` binary: passwords go in on stdin, are stored encrypted
//! (never in the database files), come back out decrypted only with the right key, and are
//! never printed. Import is all or nothing.

use std::path::Path;
use std::process::Output;

use tokend::db::Pool;
use tokend::vault::crypto::SecretKey;

use crate::support;

const PASSWORD: &str = "Zx!pw-9f3kq8-密码";

fn run(dir: &Path, db_url: &str, args: &[&str], stdin: &str) -> Output {
    support::run_cli(dir, args, &[("DATABASE_URL", db_url)], stdin)
}

/// Every file under `dir` (database, WAL, shared memory) as bytes.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(path).unwrap());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn account_lifecycle(dir: &Path, db_url: &str) {
    let out = run(
        dir,
        db_url,
        &[
            "accounts",
            "add",
            "court_zxfw",
            "alice",
            "--password-stdin",
            "--preferred",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{}", support::text(&out));

    // Adding it again is refused with exit 1.
    let again = run(
        dir,
        db_url,
        &["accounts", "add", "court_zxfw", "alice", "--password-stdin"],
        "other\n",
    );
    assert_eq!(again.status.code(), Some(1), "{}", support::text(&again));
    assert!(support::text(&again).contains("already exists"));

    // The password decrypts with the key tokend created, and only for its own row.
    let key = SecretKey::load(&tokend::config::SecurityConfig {
        key_file: dir.join("tokend.key"),
        secret_key: None,
    })
    .unwrap();
    let pool = Pool::connect(db_url, 2).unwrap();
    let rows = tokend::accounts::list(&pool, Some("court_zxfw")).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].is_preferred);
    assert_ne!(rows[0].password_encrypted, PASSWORD);
    assert_eq!(
        tokend::accounts::password(&key, &rows[0]).unwrap().expose(),
        PASSWORD
    );

    // list shows the account, never the password or its ciphertext.
    let listed = run(dir, db_url, &["accounts", "list"], "");
    assert!(listed.status.success());
    assert!(support::text(&listed).contains("alice"));
    assert!(!support::text(&listed).contains(PASSWORD));
    assert!(!support::text(&listed).contains(&rows[0].password_encrypted));
    let json = run(
        dir,
        db_url,
        &["accounts", "list", "--json", "--site", "court_zxfw"],
        "",
    );
    let line: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(line["account"], "alice");
    assert!(line.get("password_encrypted").is_none());

    // Remove, then removing again is exit 1.
    assert!(run(
        dir,
        db_url,
        &["accounts", "remove", "court_zxfw", "alice"],
        ""
    )
    .status
    .success());
    assert_eq!(
        run(
            dir,
            db_url,
            &["accounts", "remove", "court_zxfw", "alice"],
            ""
        )
        .status
        .code(),
        Some(1)
    );
}

#[test]
fn sqlite_accounts_are_encrypted_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/tokend.db", dir.path().display());
    account_lifecycle(dir.path(), &db_url);
    // Add one more and look at the raw files, WAL included.
    let out = run(
        dir.path(),
        &db_url,
        &[
            "accounts",
            "add",
            "court_baoquan",
            "bob",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success());
    let bytes = all_bytes(dir.path());
    assert!(
        contains(&bytes, "court_baoquan"),
        "sanity: the file holds the site name"
    );
    assert!(
        !contains(&bytes, PASSWORD),
        "the plaintext password is in the database files"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("tokend.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn postgres_accounts_round_trip() {
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    account_lifecycle(dir.path(), &pg.url);
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/tokend.db", dir.path().display());
    let bad_site = run(
        dir.path(),
        &db_url,
        &["accounts", "add", "court zxfw", "a", "--password-stdin"],
        "pw\n",
    );
    assert_eq!(bad_site.status.code(), Some(64));
    assert!(support::text(&bad_site).contains("not a valid site name"));
    let empty = run(
        dir.path(),
        &db_url,
        &["accounts", "add", "court_zxfw", "a", "--password-stdin"],
        "\n",
    );
    assert_eq!(empty.status.code(), Some(64));
    assert!(support::text(&empty).contains("empty password"));
    let no_flag = run(
        dir.path(),
        &db_url,
        &["accounts", "add", "court_zxfw", "a"],
        "pw\n",
    );
    assert_eq!(
        no_flag.status.code(),
        Some(64),
        "the password is never taken from argv"
    );
}

#[test]
fn import_is_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/tokend.db", dir.path().display());
    let bad = "site_name,account,password,preferred\ncourt_zxfw,a1,pw1\ncourt_zxfw,a2,pw2,true\ncourt zxfw,a3,pw3\n";
    let out = run(dir.path(), &db_url, &["accounts", "import", "-"], bad);
    assert_eq!(out.status.code(), Some(65), "{}", support::text(&out));
    assert!(
        support::text(&out).contains("line 4"),
        "the bad line is named: {}",
        support::text(&out)
    );
    let listed = run(dir.path(), &db_url, &["accounts", "list", "--json"], "");
    assert!(listed.stdout.is_empty(), "nothing was imported");

    // A duplicate inside the file is caught by the database and also rolls back everything.
    let dup = "court_zxfw,a1,pw1\ncourt_zxfw,a1,pw2\n";
    let out = run(dir.path(), &db_url, &["accounts", "import", "-"], dup);
    assert_eq!(out.status.code(), Some(65), "{}", support::text(&out));
    assert!(support::text(&out).contains("line 2"));
    assert!(
        run(dir.path(), &db_url, &["accounts", "list", "--json"], "")
            .stdout
            .is_empty()
    );

    let good = "court_zxfw,a1,\"p,w1\"\ncourt_baoquan,b1,pw2,true\n";
    let path = dir.path().join("accounts.csv");
    std::fs::write(&path, good).unwrap();
    let out = run(
        dir.path(),
        &db_url,
        &["accounts", "import", path.to_str().unwrap()],
        "",
    );
    assert!(out.status.success(), "{}", support::text(&out));
    assert!(support::text(&out).contains("imported 2"));
    let listed = run(dir.path(), &db_url, &["accounts", "list", "--json"], "");
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 2);
}
