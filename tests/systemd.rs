//! The systemd protocol, against a notify socket of the test's own: READY=1 once the
//! database, actors and HTTP are up (and not before), WATCHDOG=1 pings, STOPPING=1 on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{write_config, Daemon};

fn messages_until(socket: &UnixDatagram, wanted: &str, within: Duration) -> Vec<String> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while started.elapsed() < within {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = message.contains(wanted);
            seen.push(message);
            if done {
                break;
            }
        }
    }
    seen
}

fn notify_socket(dir: &std::path::Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    (socket, path.to_string_lossy().into_owned())
}

#[test]
fn ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = notify_socket(dir.path());
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n");
    let daemon = Daemon::start_with_env(
        dir.path(),
        &config,
        "info",
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "400000")],
    );
    let seen = messages_until(&socket, "READY=1", Duration::from_secs(5));
    assert!(seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    let pings = messages_until(&socket, "never", Duration::from_millis(1000));
    assert!(
        pings.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "watchdog pings: {pings:?}"
    );
    let pid = daemon.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let seen = messages_until(&socket, "STOPPING=1", Duration::from_secs(5));
    assert!(seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");
    assert_eq!(daemon.terminate().code(), Some(0));
}

#[test]
fn not_ready_while_the_database_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = notify_socket(dir.path());
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"postgres://tokend@127.0.0.1:1/tokend\"\n");
    let daemon = Daemon::start_with_env(dir.path(), &config, "info", &[("NOTIFY_SOCKET", &path)]);
    let seen = messages_until(&socket, "READY=1", Duration::from_millis(1500));
    assert!(
        !seen.iter().any(|m| m.contains("READY=1")),
        "READY=1 sent without a database: {seen:?}"
    );
    drop(daemon);
}
