//! The systemd install of the README, for real: its steps run (into a temporary root), then
//! tokend runs as an unprivileged user (`nobody`, as `DynamicUser=yes` would) against the files
//! they laid out, with the environment file read by "systemd" (this test, as root). The unit
//! is checked with `systemd-analyze verify` when that command exists.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support;

const NOBODY: u32 = 65534;

/// The fenced block after `<!-- systemd-install -->` in the README.
fn install_block() -> String {
    let readme = include_str!("../../README.md");
    let after = readme
        .split("<!-- systemd-install -->")
        .nth(1)
        .expect("the README marks its install steps with <!-- systemd-install -->");
    let body = after.split_once("```sh\n").expect("a ```sh block").1;
    body.split_once("\n```").expect("closed").0.to_string()
}

/// The variables of an `EnvironmentFile=`, as systemd reads them.
fn environment_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A tokend command as the service would run it: as `nobody`, in the state directory, with
/// only the environment systemd gives it.
fn as_service(bin: &Path, state: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(state)
        .uid(NOBODY)
        .gid(NOBODY);
    cmd
}

/// Runs the install steps (rewritten into the temporary root) with `bash -e`.
fn run_install(script: &str) {
    let out = Command::new("bash")
        .args(["-e", "-c", script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the install steps failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_says_to_back_up_the_key_and_ships_the_browser_drop_in() {
    let readme = include_str!("../../README.md");
    assert!(readme.contains("**Back up\n`TOKEND_SECRET_KEY`**"));
    assert!(readme.contains("systemd/tokend-browser.conf"));
    assert!(readme.contains("python3 -m venv /opt/tokend/venv"));
    let drop_in = include_str!("../../systemd/tokend-browser.conf");
    assert!(drop_in.contains("RestrictNamespaces=") && drop_in.contains("SystemCallFilter="));
}

#[test]
fn the_readme_install_runs_as_an_unprivileged_user() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the install test needs root (to install and then drop to nobody)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = |path: &str| format!("{}{path}", root.display());
    for dir in ["/usr/local/bin", "/etc/systemd/system"] {
        std::fs::create_dir_all(r(dir)).unwrap();
    }
    let script: String = install_block()
        .lines()
        .filter(|l| !l.starts_with("cargo build") && !l.starts_with("systemctl"))
        .map(|l| {
            l.replace("target/release/tokend", support::BIN)
                .replace("/usr/local/bin/", &r("/usr/local/bin/"))
                .replace("/etc/systemd/system", &r("/etc/systemd/system"))
                .replace("/etc/tokend", &r("/etc/tokend"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    run_install(&script);
    // Pasted again (an upgrade): the secrets and the config stay as they were.
    let env_file = r("/etc/tokend/tokend.env");
    let first = std::fs::read_to_string(&env_file).unwrap();
    let config_first = std::fs::read_to_string(r("/etc/tokend/tokend.toml")).unwrap();
    std::fs::write(
        r("/etc/tokend/tokend.toml"),
        config_first.clone() + "# edited\n",
    )
    .unwrap();
    run_install(&script);
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        first,
        "a second install changed tokend.env (a new TOKEND_SECRET_KEY locks every password)"
    );
    assert!(std::fs::read_to_string(r("/etc/tokend/tokend.toml"))
        .unwrap()
        .ends_with("# edited\n"));
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // An env file made by hand without the key gets one, and keeps what it had.
    std::fs::write(&env_file, "DATABASE_URL=sqlite:///x.db\n").unwrap();
    run_install(&script);
    let refilled = environment_file(Path::new(&env_file));
    for key in ["DATABASE_URL", "TOKEND_SECRET_KEY", "TOKEND_ADMIN_TOKEN"] {
        assert_eq!(
            refilled.iter().filter(|(k, _)| k == key).count(),
            1,
            "{key}: {refilled:?}"
        );
    }
    std::fs::write(&env_file, &first).unwrap();

    // What systemd does at start: the state directory, owned by the service user, mode 0700.
    let state = Path::new(&r("/var/lib/tokend")).to_path_buf();
    std::fs::create_dir_all(&state).unwrap();
    chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    for dir in ["/var/lib", "/var"] {
        std::fs::set_permissions(r(dir), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The installed config, moved into the temporary root (its paths) on a free port.
    let config = Path::new(&r("/etc/tokend/tokend.toml")).to_path_buf();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("admin_token = \"") || text.contains("admin_token = \"\""));
    std::fs::write(
        &config,
        text.replace("/var/lib/tokend", &r("/var/lib/tokend"))
            .replace("127.0.0.1:8000", "127.0.0.1:0"),
    )
    .unwrap();
    let env = environment_file(Path::new(&r("/etc/tokend/tokend.env")));
    assert!(env.iter().any(|(k, _)| k == "TOKEND_SECRET_KEY"), "{env:?}");
    let admin = env
        .iter()
        .find(|(k, _)| k == "TOKEND_ADMIN_TOKEN")
        .map(|(_, v)| v.clone())
        .expect("an admin token in tokend.env");
    let bin = Path::new(&r("/usr/local/bin/tokend")).to_path_buf();

    // An account, added as the service's user.
    let mut add = as_service(&bin, &state, &env)
        .args([
            "accounts",
            "add",
            "court_zxfw",
            "alice",
            "--password-stdin",
            "--config",
        ])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"pw-alice\n").unwrap();
    let added = add.wait_with_output().unwrap();
    assert!(
        added.status.success(),
        "accounts add as nobody: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(String::from_utf8_lossy(&added.stdout)
        .contains(&format!("sqlite://{}/tokend.db", state.display())));

    // The daemon, as the service's user.
    let mut child = as_service(&bin, &state, &env)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let addr = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                let addr = line
                    .split("event=listening addr=")
                    .nth(1)
                    .and_then(|a| a.split_whitespace().next())
                    .map(str::to_string);
                seen.push(line);
                if let Some(addr) = addr {
                    break addr;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!(
                    "tokend as nobody did not start ({status}):\n{}",
                    seen.join("\n")
                );
            }
        }
    };
    let health = actix_web::rt::System::new().block_on(async move {
        reqwest::Client::new()
            .get(format!(
                "http://{addr}/api/v1/automation/performance/health"
            ))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health["data"]["status"], "healthy", "{health}");

    // The unit as installed, when systemd-analyze is there.
    let unit = r("/etc/systemd/system/tokend.service");
    let Ok(unit_text) = std::fs::read_to_string(&unit) else {
        panic!("the install steps did not install the unit");
    };
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze verify (not installed)");
        return;
    }
    let checked = root.join("tokend.service");
    std::fs::write(
        &checked,
        unit_text.replace("/usr/local/bin/tokend", &bin.display().to_string()),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("tokend.service"),
        "systemd-analyze verify complains: {said}"
    );
    // With the browser drop-in beside it (read through the unit path).
    let drop_ins = root.join("tokend.service.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("browser.conf"),
        include_str!("../../systemd/tokend-browser.conf"),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", root.display()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "verify with the drop-in: {said}");
    assert!(!said.contains("browser.conf"), "the drop-in: {said}");
}
