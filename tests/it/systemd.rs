//! The systemd protocol, against a notify socket of the test's own: READY=1 once the
//! database, actors and HTTP are up (and not before), WATCHDOG=1 pings, STOPPING=1 on SIGTERM.
//! Every wait is for a message, with a deadline: a daemon that never sends one fails.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::{self, proxy, write_config, Daemon};

/// What the daemon sent to the socket, read until `done` holds of it or `within` passes.
fn messages_until(
    socket: &UnixDatagram,
    within: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !done(&seen) && Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    seen
}

fn count(seen: &[String], state: &str) -> usize {
    seen.iter().filter(|m| m.contains(state)).count()
}

/// Waits for `state` on the socket; fails the test when it does not come within `within`.
fn expect(socket: &UnixDatagram, state: &str, within: Duration) -> Vec<String> {
    let seen = messages_until(socket, within, |seen| count(seen, state) > 0);
    assert!(
        count(&seen, state) > 0,
        "no {state} within {within:?}; received: {seen:?}"
    );
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

/// What the daemon has sent so far and not yet read, without waiting.
fn pending(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = socket.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    socket.set_nonblocking(false).unwrap();
    seen
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
    expect(&socket, "READY=1", Duration::from_secs(10));
    // Pings every half period (0.2 s): two of them well within 5 s.
    let pings = messages_until(&socket, Duration::from_secs(5), |seen| {
        count(seen, "WATCHDOG=1") >= 2
    });
    assert!(
        count(&pings, "WATCHDOG=1") >= 2,
        "watchdog pings: {pings:?}"
    );
    let pid = daemon.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    expect(&socket, "STOPPING=1", Duration::from_secs(10));
    assert_eq!(daemon.terminate().code(), Some(0));
}

/// The address of the PostgreSQL server in a `postgres://user@host:port/db` URL.
fn pg_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    hostport.replace("localhost", "127.0.0.1").parse().unwrap()
}

#[test]
fn ready_only_once_the_database_is_reachable() {
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let addr = pg_addr(&pg.url);
    let proxy = proxy::Proxy::start(addr);
    proxy.cut();
    let through_proxy = pg
        .url
        .replacen(&addr.to_string(), &proxy.addr.to_string(), 1);
    assert_ne!(
        through_proxy, pg.url,
        "the test database URL must name host:port"
    );
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = notify_socket(dir.path());
    let config = write_config(
        dir.path(),
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{through_proxy}\"\n"),
    );
    let mut daemon =
        Daemon::start_with_env(dir.path(), &config, "info", &[("NOTIFY_SOCKET", &path)]);
    // HTTP is up and the daemon has found the database unreachable: not ready yet.
    let mut log = Vec::new();
    daemon.wait_for_log(
        "event=database_unreachable",
        Duration::from_secs(20),
        &mut log,
    );
    let sent = pending(&socket);
    assert_eq!(
        count(&sent, "READY=1"),
        0,
        "READY=1 sent without a database: {sent:?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("event=ready")),
        "ready without a database:\n{}",
        log.join("\n")
    );
    // The database comes back: the migrations are retried (every 10 s), then READY=1.
    proxy.restore();
    expect(&socket, "READY=1", Duration::from_secs(30));
    daemon.wait_for_log("event=database_reachable", Duration::from_secs(5), &mut log);
    drop(daemon);
}
