//! Redis in the two high-availability shapes tokend supports (issue 24), as real processes on
//! 127.0.0.1 for one test, all run by the same `redis-server` binary:
//!
//! - [`SentinelSet`]: a master, one replica (`--replicaof`) and three sentinels (quorum 2,
//!   down after 1 s); the test kills the master and waits for the sentinels' failover.
//! - [`ClusterSet`]: three cluster masters (`redis-cli --cluster create … --cluster-replicas
//!   0`), every slot served.
//!
//! Start-up waits on conditions (the replica in sync, the sentinels knowing each other and the
//! replica, `cluster_state:ok` on every node), each with a deadline; everything is killed when
//! the set is dropped. Outside CI a missing `redis-server` (or `redis-cli`) skips the test, in
//! CI it fails it.

use super::redis_server::{cli_binary, server_binary};
use super::wait::wait_until_blocking_with;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "mymaster";

/// How long a start-up step may take before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// Whether `program --version` runs here (skip outside CI, fail in CI).
fn program_available(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    super::require(program, found)
}

/// One `redis-server` process (a data node or a sentinel), logging into its own directory.
struct Process {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `redis-server ARGS` in `dir` (created), its output in `dir/redis.log`.
    fn spawn(port: u16, dir: PathBuf, args: &[String]) -> Process {
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("redis.log")).unwrap();
        let child = Command::new(server_binary())
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        Process {
            port,
            dir,
            child: Some(child),
        }
    }

    /// A data node: no persistence, replicas served at once (no 5 s wait for more replicas).
    fn data_node(port: u16, dir: PathBuf, extra: &[&str]) -> Process {
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(dir.display().to_string());
        args.extend(extra.iter().map(|a| a.to_string()));
        Process::spawn(port, dir, &args)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// The end of its log, for a failure message.
    fn log_tail(&self) -> String {
        log_tail(&self.log())
    }

    /// Fails the test (with its log) if the process has exited.
    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "redis-server on port {} exited ({status}); its log:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
        }
    }

    /// SIGKILL, as a crashed host.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of the log at `path`, for a failure message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// `n` free ports on 127.0.0.1, distinct; with `bus`, each one's cluster bus port (+10000) is
/// free too.
fn free_ports(n: usize, bus: bool) -> Vec<u16> {
    // Below the kernel's ephemeral range (32768 and up here): a port the kernel hands out
    // for `:0` is free again once released, and any outgoing connection of a parallel test
    // may take it before the server binds it ("Address already in use"). Ports 12000–21999,
    // and their cluster bus ports 22000–31999, are never handed out that way.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let port = fastrand::u16(12_000..22_000);
        let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        if bus {
            match TcpListener::bind(("127.0.0.1", port + 10_000)) {
                Ok(bus) => held.push(bus),
                Err(_) => continue,
            }
        }
        held.push(listener);
        ports.push(port);
    }
    ports
}

/// A short connection to the server on `port`, or why there is none.
fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    conn.set_write_timeout(Some(Duration::from_secs(1)))?;
    Ok(conn)
}

/// `cmd` sent to the server on `port` (a new connection each time: the servers die in tests).
fn ask<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    cmd.query(&mut connect(port)?)
}

/// The `INFO section` text of the server on `port`, empty when it does not answer.
fn info(port: u16, section: &str) -> String {
    ask(port, redis::cmd("INFO").arg(section)).unwrap_or_default()
}

/// Whether the server on `port` answers and says it is a master (`ROLE`).
fn is_master(port: u16) -> bool {
    matches!(
        ask::<redis::Value>(port, &redis::cmd("ROLE")),
        Ok(redis::Value::Array(items))
            if matches!(items.first(), Some(redis::Value::BulkString(role)) if role == b"master")
    )
}

/// A field of a `SENTINEL sentinels|replicas` entry (flat `name value …`).
fn field<'a>(entry: &'a [String], name: &str) -> Option<&'a str> {
    entry
        .chunks(2)
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair.get(1))
        .map(String::as_str)
}

/// A master, one replica and three sentinels watching them as [`MASTER_NAME`] (quorum 2,
/// `down-after-milliseconds 1000`): the smallest Sentinel deployment that fails over.
pub struct SentinelSet {
    /// The two data nodes (master and replica at start; their roles swap on a failover).
    data: Mutex<Vec<Process>>,
    sentinels: Mutex<Vec<Process>>,
    sentinel_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Starts the set and returns once the replica is in sync and every sentinel knows the
    /// master, the replica and the two other sentinels; `None` when `redis-server` is not
    /// installed outside CI.
    pub fn start() -> Option<SentinelSet> {
        if !program_available(&server_binary()) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(5, false);
        let (master_port, replica_port) = (ports[0], ports[1]);
        let sentinel_ports = ports[2..].to_vec();
        let node_dir = |port: u16| dir.path().join(format!("node-{port}"));

        // The master first, then the replica (which would otherwise wait a second before it
        // tries again), then the sentinels (whose first look at the master then already shows
        // the replica; the next look is 10 s later).
        let mut master = Process::data_node(master_port, node_dir(master_port), &[]);
        wait_until_blocking_with(
            "the master to answer",
            START_DEADLINE,
            || {
                master.assert_running();
                connect(master_port).ok().map(drop)
            },
            String::new,
        );
        let master_arg = master_port.to_string();
        let mut replica = Process::data_node(
            replica_port,
            node_dir(replica_port),
            &["--replicaof", "127.0.0.1", &master_arg],
        );
        let replica_log = replica.log();
        wait_until_blocking_with(
            "the replica to be in sync",
            START_DEADLINE,
            || {
                replica.assert_running();
                info(replica_port, "replication")
                    .contains("master_link_status:up")
                    .then_some(())
            },
            || log_tail(&replica_log),
        );
        let sentinels: Vec<Process> = sentinel_ports
            .iter()
            .map(|&port| {
                let sdir = dir.path().join(format!("sentinel-{port}"));
                std::fs::create_dir_all(&sdir).unwrap();
                let conf = sdir.join("sentinel.conf");
                std::fs::write(&conf, sentinel_conf(port, master_port, &sdir)).unwrap();
                Process::spawn(
                    port,
                    sdir,
                    &[conf.display().to_string(), "--sentinel".to_string()],
                )
            })
            .collect();
        let set = SentinelSet {
            data: Mutex::new(vec![master, replica]),
            sentinels: Mutex::new(sentinels),
            sentinel_ports,
            _dir: dir,
        };
        set.wait_until_sentinels_agree(replica_port);
        Some(set)
    }

    /// Waits until every sentinel knows the two others and the replica on `replica_port`.
    fn wait_until_sentinels_agree(&self, replica_port: u16) {
        let replica = replica_port.to_string();
        for &port in &self.sentinel_ports {
            wait_until_blocking_with(
                &format!("sentinel {port} to know the other sentinels and the replica"),
                START_DEADLINE,
                || {
                    // Not poisoned-or-panic: a failed start must not abort the whole test binary.
                    let mut sentinels = self.sentinels.lock().unwrap_or_else(|p| p.into_inner());
                    for process in sentinels.iter_mut() {
                        process.assert_running();
                    }
                    let others: Vec<Vec<String>> = ask(
                        port,
                        redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME),
                    )
                    .ok()?;
                    let replicas: Vec<Vec<String>> = ask(
                        port,
                        redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME),
                    )
                    .ok()?;
                    let has_replica = replicas
                        .iter()
                        .any(|r| field(r, "port") == Some(replica.as_str()));
                    (others.len() == 2 && has_replica).then_some(())
                },
                || self.logs(),
            );
        }
    }

    /// `127.0.0.1:PORT` of each sentinel, for `[redis] sentinels`.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// `sentinels = [...]` and `sentinel_master = ...` for a `[redis]` table.
    pub fn config_lines(&self) -> String {
        let addrs: Vec<String> = self
            .sentinel_addrs()
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        format!(
            "sentinels = [{}]\nsentinel_master = \"{MASTER_NAME}\"",
            addrs.join(", ")
        )
    }

    /// The master the sentinels name now (`host:port`), asking each in turn until one
    /// answers.
    pub fn master_addr(&self) -> String {
        self.sentinel_ports
            .iter()
            .find_map(|&port| self.master_named_by(port))
            .expect("no sentinel names a master")
    }

    /// The master that the sentinel on `port` names, if it answers.
    fn master_named_by(&self, port: u16) -> Option<String> {
        let addr: Vec<String> = ask(
            port,
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME),
        )
        .ok()?;
        (addr.len() == 2).then(|| format!("{}:{}", addr[0], addr[1]))
    }

    /// SIGKILLs the process of the current master (a crashed host) and returns its address.
    pub fn kill_master(&self) -> String {
        let master = self.master_addr();
        let mut data = self.data.lock().unwrap();
        let process = data
            .iter_mut()
            .find(|p| p.addr() == master)
            .unwrap_or_else(|| panic!("the master {master} is not one of this set's servers"));
        assert!(
            process.child.is_some(),
            "the master {master} is dead already"
        );
        process.kill();
        master
    }

    /// Waits (blocking, up to `within`) until every sentinel names a master other than `old`
    /// and that server answers `ROLE` as a master; returns its address.
    pub fn wait_for_failover(&self, old: &str, within: Duration) -> String {
        wait_until_blocking_with(
            &format!("the sentinels to fail over from {old}"),
            within,
            || {
                let named: Vec<Option<String>> = self
                    .sentinel_ports
                    .iter()
                    .map(|&port| self.master_named_by(port))
                    .collect();
                let new = named.first()?.clone()?;
                let agreed = named.iter().all(|n| n.as_deref() == Some(new.as_str()));
                let port = new.rsplit_once(':')?.1.parse().ok()?;
                (agreed && new != old && is_master(port)).then_some(new)
            },
            || self.logs(),
        )
    }

    /// The end of every sentinel's log, for a failure message.
    fn logs(&self) -> String {
        let sentinels = self.sentinels.lock().unwrap();
        sentinels
            .iter()
            .map(|s| format!("-- sentinel {}:\n{}", s.port, s.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        // The sentinels first, so that none reconfigures a server while it goes.
        // A lock poisoned by a failed check is still taken: a panic in a drop would abort
        // the whole test binary.
        let mut sentinels = self.sentinels.lock().unwrap_or_else(|p| p.into_inner());
        for process in sentinels.iter_mut() {
            process.kill();
        }
        let mut data = self.data.lock().unwrap_or_else(|p| p.into_inner());
        for process in data.iter_mut() {
            process.kill();
        }
    }
}

/// A sentinel's config file (the sentinel rewrites it, so it is a file of its own).
fn sentinel_conf(port: u16, master_port: u16, dir: &Path) -> String {
    format!(
        "port {port}\nbind 127.0.0.1\ndir \"{dir}\"\nsentinel resolve-hostnames no\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 2000\n",
        dir = dir.display()
    )
}

/// Three Redis Cluster masters sharing the 16384 slots, no replicas.
pub struct ClusterSet {
    nodes: Vec<Process>,
    _dir: tempfile::TempDir,
}

impl ClusterSet {
    /// Starts three nodes, joins them with `redis-cli --cluster create`, and returns once
    /// every node says `cluster_state:ok`; `None` when `redis-server` or `redis-cli` is not
    /// installed outside CI.
    pub fn start() -> Option<ClusterSet> {
        if !program_available(&server_binary()) || !program_available(&cli_binary()) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Process> = free_ports(3, true)
            .into_iter()
            .map(|port| {
                let node_dir = dir.path().join(format!("node-{port}"));
                let conf = node_dir.join("nodes.conf").display().to_string();
                Process::data_node(
                    port,
                    node_dir,
                    &["--cluster-enabled", "yes", "--cluster-config-file", &conf],
                )
            })
            .collect();
        for node in nodes.iter_mut() {
            let port = node.port;
            wait_until_blocking_with(
                &format!("cluster node {port} to answer"),
                START_DEADLINE,
                || {
                    node.assert_running();
                    connect(port).ok().map(drop)
                },
                String::new,
            );
        }
        let addrs: Vec<String> = nodes.iter().map(Process::addr).collect();
        let created = Command::new(cli_binary())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let set = ClusterSet { nodes, _dir: dir };
        for node in &set.nodes {
            let port = node.port;
            wait_until_blocking_with(
                &format!("cluster node {port} to say cluster_state:ok"),
                START_DEADLINE,
                || {
                    let state: String = ask(port, redis::cmd("CLUSTER").arg("INFO")).ok()?;
                    state.contains("cluster_state:ok").then_some(())
                },
                || node.log_tail(),
            );
        }
        Some(set)
    }

    /// `127.0.0.1:PORT` of each node, for `[redis] cluster`.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(Process::addr).collect()
    }

    /// `cluster = [...]` for a `[redis]` table.
    pub fn config_lines(&self) -> String {
        let addrs: Vec<String> = self.addrs().iter().map(|a| format!("\"{a}\"")).collect();
        format!("cluster = [{}]", addrs.join(", "))
    }

    /// The number of keys on each node (`DBSIZE`), in the order of [`ClusterSet::addrs`].
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| ask(n.port, &redis::cmd("DBSIZE")).unwrap_or(0))
            .collect()
    }
}
