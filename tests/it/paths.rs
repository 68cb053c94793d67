//! Relative paths follow the config file, not the current folder; every command that touches
//! data names the database it used; a new key file is never created beside stored secrets.

use crate::support;

#[test]
fn relative_paths_follow_the_config_file() {
    let root = tempfile::tempdir().unwrap();
    let w1 = root.path().join("w1");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&w1).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(
        w1.join("tokend.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();

    let add = [
        "accounts",
        "add",
        "court_zxfw",
        "bob",
        "--password-stdin",
        "--config",
        "../w1/tokend.toml",
    ];
    let out = support::run_cli(&elsewhere, &add, &[], "pw-bob\n");
    assert!(out.status.success(), "{}", support::text(&out));
    let db = w1.join("tokend.db");
    assert!(
        support::text(&out).contains(&format!("in sqlite://{}", db.display())),
        "the database is not named: {}",
        support::text(&out)
    );
    assert!(db.exists(), "no database beside the config");
    assert!(
        w1.join("tokend.key").exists(),
        "no key file beside the config"
    );
    let strays: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().collect();
    assert!(
        strays.is_empty(),
        "files created in the current folder: {strays:?}"
    );

    // The listing names the same database, from a third folder.
    let list = support::run_cli(
        root.path(),
        &["accounts", "list", "--config", "w1/tokend.toml"],
        &[],
        "",
    );
    assert!(list.status.success(), "{}", support::text(&list));
    assert!(
        support::text(&list).contains("bob"),
        "{}",
        support::text(&list)
    );
    assert!(
        support::text(&list).contains(&format!("sqlite://{}", db.display())),
        "{}",
        support::text(&list)
    );

    // The key file lost: a new one beside a database that holds secrets is refused.
    std::fs::remove_file(w1.join("tokend.key")).unwrap();
    let add_carol = [
        "accounts",
        "add",
        "court_zxfw",
        "carol",
        "--password-stdin",
        "--config",
        "../w1/tokend.toml",
    ];
    let refused = support::run_cli(&elsewhere, &add_carol, &[], "pw-carol\n");
    assert_eq!(
        refused.status.code(),
        Some(78),
        "{}",
        support::text(&refused)
    );
    let message = support::text(&refused);
    assert!(
        message.contains(&w1.join("tokend.key").display().to_string())
            && message.contains(&db.display().to_string()),
        "both paths must be named: {message}"
    );
    assert!(
        !w1.join("tokend.key").exists(),
        "a new key file was created anyway"
    );
}

#[test]
fn postgres_url_is_named_with_its_password_masked() {
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let url = pg.url.replace("postgres@", "postgres:hunter2-secret@");
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_cli(
        dir.path(),
        &["accounts", "list"],
        &[
            ("DATABASE_URL", &url),
            (
                "TOKEND_SECRET_KEY",
                "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
            ),
        ],
        "",
    );
    assert!(out.status.success(), "{}", support::text(&out));
    let message = support::text(&out);
    assert!(message.contains("postgres:***@"), "{message}");
    assert!(!message.contains("hunter2-secret"), "{message}");
}
