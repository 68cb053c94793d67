//! Private PostgreSQL servers for one test: a primary made by `initdb`, a streaming standby
//! made from it by `pg_basebackup -R`, each in a temporary directory on a free port of
//! 127.0.0.1 with trust authentication, stopped (`pg_ctl stop -m immediate`) when dropped.
//! They can be stopped and promoted, for the failover tests; the shared PostgreSQL of the
//! other tests is never touched.
//!
//! The server programs are Debian's (`/usr/lib/postgresql/VERSION/bin`, the newest there) or
//! those of `TOKEND_TEST_PG_BIN`. PostgreSQL refuses to run as root: as root, every program
//! runs as the `postgres` user (`runuser`), in a directory that user owns.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::{Connection, PgConnection, RunQueryDsl};

/// The user the servers run as when the tests run as root.
const SERVER_USER: &str = "postgres";

/// The directory of `initdb`, `pg_ctl` and `pg_basebackup`, if there is one.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("TOKEND_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists() && bin.join("pg_basebackup").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether private servers can be run here (skip outside CI, fail in CI).
pub fn available() -> bool {
    let found = bin_dir().is_some_and(|bin| bin.join("pg_ctl").exists())
        && (!is_root() || server_user_ids().is_some());
    super::require("postgresql server binaries", found)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of [`SERVER_USER`].
fn server_user_ids() -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(SERVER_USER).ok()?;
    // SAFETY: getpwnam takes a NUL-terminated name; the entry is read at once, before any
    // other call that could reuse its static buffer (the tests do not call getpw* elsewhere).
    unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        (!entry.is_null()).then(|| ((*entry).pw_uid, (*entry).pw_gid))
    }
}

/// A port nobody listened on a moment ago (see [`super::server_port`]).
pub fn free_port() -> u16 {
    super::server_port()
}

/// A port on 127.0.0.1 that neither takes nor refuses a connection: its SYNs are dropped, as
/// those sent to a host gone with its machine are. A listener whose backlog (of one) is
/// filled by a connection it never accepts; dropped with it.
pub struct SilentPort {
    pub port: u16,
    _listener: TcpListener,
    _filler: TcpStream,
}

impl SilentPort {
    pub fn start() -> SilentPort {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: `listen` on a socket this function owns, to shrink its backlog to one.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let addr: SocketAddr = listener.local_addr().unwrap();
        let filler = TcpStream::connect(addr).unwrap();
        let answered = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(
            answered
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
            "the port is meant to be silent: {answered:?}"
        );
        SilentPort {
            port: addr.port(),
            _listener: listener,
            _filler: filler,
        }
    }
}

/// One PostgreSQL server of the test's own.
pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    running: AtomicBool,
}

impl PgServer {
    /// A new primary with an empty database `tokend`; `None` when the server programs are
    /// missing outside CI.
    pub fn primary() -> Option<PgServer> {
        if !available() {
            return None;
        }
        let server = PgServer::unstarted();
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                path_arg(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        server.configure();
        server.start();
        let mut admin = PgConnection::establish(&server.url("postgres")).unwrap();
        diesel::sql_query("CREATE DATABASE tokend")
            .execute(&mut admin)
            .unwrap();
        Some(server)
    }

    /// A streaming standby of `primary` (hot standby: it answers read-only queries), started.
    pub fn standby_of(primary: &PgServer) -> PgServer {
        let server = PgServer::unstarted();
        let data = server.data();
        let source = format!("host=127.0.0.1 port={} user=postgres", primary.port);
        server.run(
            "pg_basebackup",
            &[
                "-d",
                &source,
                "-D",
                path_arg(&data),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        );
        server.configure();
        server.start();
        server
    }

    /// A directory owned by the server's user, and a port.
    fn unstarted() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("tokend-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            let (uid, gid) = server_user_ids().expect("the postgres user");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        PgServer {
            port: free_port(),
            dir,
            running: AtomicBool::new(false),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// This server's own port and socket directory, TCP on 127.0.0.1 only, and no fsync
    /// (an immediate stop is a crash of the server, not of the machine: the files are safe).
    /// Settings later in the file win, so a standby's copy of its primary's is overridden.
    fn configure(&self) {
        use std::io::Write;
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nshared_buffers = 16MB\nmax_connections = 40\n",
            self.port,
            self.dir.path().display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .unwrap();
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A connection to database `tokend` on this server alone.
    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url("tokend")).unwrap()
    }

    /// Starts the server and waits until it takes connections (`pg_ctl start -w`).
    fn start(&self) {
        let (data, log) = (self.data(), self.log());
        self.running.store(true, Ordering::SeqCst);
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path_arg(&data),
                "-l",
                path_arg(&log),
            ],
        );
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`): its connections are
    /// cut, nothing is flushed.
    pub fn stop_immediate(&self) {
        if self.running.swap(false, Ordering::SeqCst) {
            let data = self.data();
            self.run(
                "pg_ctl",
                &["stop", "-w", "-m", "immediate", "-D", path_arg(&data)],
            );
        }
    }

    /// Makes a standby the primary, and waits until it takes writes (`pg_ctl promote -w`).
    pub fn promote(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["promote", "-w", "-t", "60", "-D", path_arg(&data)],
        );
    }

    /// Runs one of the server programs (as the server's user when root), failing the test
    /// with its output and the server's log when it fails.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = bin_dir().expect("postgresql server binaries").join(program);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        // A working directory the server's user may enter (pg_ctl's child inherits it).
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
        output
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running.swap(false, Ordering::SeqCst) {
            // No assertion here: a drop during a panic must not panic again.
            let path = bin_dir().map(|bin| bin.join("pg_ctl"));
            if let Some(path) = path {
                let mut command = if is_root() {
                    let mut command = Command::new("runuser");
                    command.args(["-u", SERVER_USER, "--"]).arg(path);
                    command
                } else {
                    Command::new(path)
                };
                let _ = command
                    .args(["stop", "-w", "-m", "immediate", "-D"])
                    .arg(self.data())
                    .current_dir(self.dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Waits until `standby` has replayed everything `primary` has written so far.
pub fn wait_replayed(primary: &PgServer, standby: &PgServer, within: Duration) {
    #[derive(diesel::QueryableByName)]
    struct Lsn {
        #[diesel(sql_type = diesel::sql_types::Text)]
        lsn: String,
    }
    #[derive(diesel::QueryableByName)]
    struct CaughtUp {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        caught_up: bool,
    }
    let written: Lsn = diesel::sql_query("SELECT pg_current_wal_lsn()::text AS lsn")
        .get_result(&mut primary.connect())
        .unwrap();
    let mut on_standby = standby.connect();
    super::wait_until_blocking("the standby to replay the primary's WAL", within, || {
        let replayed: CaughtUp = diesel::sql_query(format!(
            "SELECT COALESCE(pg_last_wal_replay_lsn() >= '{}'::pg_lsn, false) AS caught_up",
            written.lsn
        ))
        .get_result(&mut on_standby)
        .unwrap();
        replayed.caught_up.then_some(())
    });
}
