//! The one Redis link: the connection, the one breaker in front of it, the key schema and the
//! Lua scripts. Everything tokend keeps in Redis goes through here: the token cache
//! ([`crate::cache::RedisStore`]), the login slots and single-flight locks
//! ([`crate::slots::redis::RedisSlots`]), circuits, login budgets, adaptive limits, checkouts
//! and round-robin turns. Nothing else opens a Redis connection.
//!
//! | file | idea |
//! |---|---|
//! | `mod.rs` | [`RedisLink`]: one constructor from the configuration, calls through the breaker, the probe |
//! | `topology.rs` | [`Topology`]: one server, Sentinel or Cluster, and the connection of each |
//! | `sentinel.rs`, `follow.rs` | the sentinels asked for the master; the link following it through failovers |
//! | `cluster.rs` | commands run on every master of a cluster (`SCAN`, `INFO`), the masters there are |
//! | `breaker.rs` | [`Breaker`]: up, degraded (a pause that doubles), probing |
//! | `keys.rs` | [`Keys`]: every key, one function each, with Redis Cluster hash tags |
//! | `scripts.rs`, `scripts/*.lua` | the Lua scripts, each with its KEYS/ARGV table |
//!
//! A call is refused at once while the link is not up ([`Error::CacheUnavailable`]), and each
//! user then takes its in-process fallback: a silent Redis is found out once (one command
//! timeout, by the call that meets it; a refused connection at once; resets once they go on
//! for [`ERROR_GRACE`]) and every policy falls back at that moment. The link's
//! own background probe asks Redis again when the pause is over, and when it answers every
//! policy goes back to Redis together. A few calls are sent whatever the breaker says
//! ([`Admit::Always`]: invalidations, releases of leases and locks, renewals, all off the
//! caller's path or where losing the write is worse than waiting); their answers count too.

pub mod breaker;
mod cluster;
mod follow;
pub mod keys;
pub mod scripts;
pub mod sentinel;
pub mod topology;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ::redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, ScriptInvocation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use self::breaker::{Breaker, Failure, LinkState, ERROR_GRACE};
pub use self::keys::Keys;
use self::sentinel::Sentinels;
use self::topology::Conn;
pub use self::topology::{Topology, COMMAND_TIMEOUT, CONNECT_TIMEOUT};
use crate::config::RedisConfig;
use crate::error::{Error, Result};
use crate::vault::secret::redact_url;

/// The shortest sleep of the probe between two looks at the breaker.
const PROBE_TICK: Duration = Duration::from_millis(10);

/// Whether a call heeds the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Refused at once while the link is not up (the caller falls back).
    WhenUp,
    /// Sent anyway (a write that must not be lost, or one off the caller's path).
    Always,
}

/// The connection to Redis and its one breaker. Cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

struct Inner {
    topology: Topology,
    /// What every call clones: `None` until the sentinels named a master; swapped when they
    /// name another.
    conn: RwLock<Option<Conn>>,
    /// For connections of their own (subscriptions): the server, the current master, or
    /// each cluster node in turn (`PUBLISH` reaches every node of a cluster).
    subscribe_to: RwLock<Vec<::redis::Client>>,
    /// The sentinels, with [`Topology::Sentinel`].
    sentinels: Option<Sentinels>,
    /// `host:port` of the server, or of the master the sentinels named.
    master: RwLock<Option<String>>,
    /// Replicas of the current master (Sentinel): grants then wait for one (`WAIT`).
    replicas: AtomicUsize,
    /// Counts master switches: a subscription made before one is made again.
    switches: tokio::sync::watch::Sender<u64>,
    /// Set while the sentinels are being asked.
    finding_master: tokio::sync::Mutex<()>,
    /// Set once the watcher of `+switch-master` runs.
    watching: AtomicBool,
    /// Set while a background search for the master runs.
    asking: AtomicBool,
    /// Seed nodes of a cluster, to subscribe through one that answers.
    next_node: AtomicUsize,
    /// How long Redis out of reach is taken for a failover under way (zero: one server).
    failover_wait: Duration,
    /// This process's name in the changes it publishes, so that it can tell its own.
    origin: String,
    keys: Keys,
    breaker: Breaker,
    display_url: String,
    /// Set while the background probe task runs.
    probing: AtomicBool,
}

impl RedisLink {
    /// The link the configuration asks for; `None` without Redis. Redis is connected lazily:
    /// tokend starts while Redis (or every sentinel, or the cluster) is down.
    pub fn from_config(config: &RedisConfig) -> Result<Option<RedisLink>> {
        if !config.enabled() {
            return Ok(None);
        }
        let template = topology::template(config)?;
        let topology = Topology::of(config);
        let (conn, subscribe_to, sentinels, master, shown) = match topology {
            Topology::Single => {
                let (conn, client) = topology::server(template.clone())?;
                let master = Some(template.addr().to_string());
                (
                    Some(conn),
                    vec![client],
                    None,
                    master,
                    redact_url(config.url.expose()),
                )
            }
            Topology::Sentinel => {
                let sentinels = Sentinels::from_config(config, template)?;
                let shown = format!(
                    "sentinel://{}/{}",
                    config.sentinels.join(","),
                    sentinels.master_name()
                );
                (None, vec![], Some(sentinels), None, shown)
            }
            Topology::Cluster => {
                let conn = topology::cluster(&config.cluster, &template)?;
                let mut clients = Vec::with_capacity(config.cluster.len());
                for node in &config.cluster {
                    let (host, port) = topology::split_address(node)?;
                    let info = topology::at(&template, &host, port);
                    clients.push(
                        ::redis::Client::open(info)
                            .map_err(|e| Error::config("redis.cluster", e.to_string()))?,
                    );
                }
                let shown = format!("cluster://{}", config.cluster.join(","));
                (Some(conn), clients, None, None, shown)
            }
        };
        Ok(Some(RedisLink {
            inner: Arc::new(Inner {
                topology,
                conn: RwLock::new(conn),
                subscribe_to: RwLock::new(subscribe_to),
                sentinels,
                master: RwLock::new(master),
                replicas: AtomicUsize::new(0),
                switches: tokio::sync::watch::channel(0).0,
                finding_master: tokio::sync::Mutex::new(()),
                watching: AtomicBool::new(false),
                asking: AtomicBool::new(false),
                next_node: AtomicUsize::new(0),
                failover_wait: match topology {
                    Topology::Single => Duration::ZERO,
                    _ => Duration::from_secs_f64(config.failover_wait),
                },
                origin: uuid::Uuid::new_v4().simple().to_string(),
                keys: Keys::new(&config.key_prefix),
                breaker: Breaker::default(),
                display_url: shown,
                probing: AtomicBool::new(false),
            }),
        }))
    }

    /// A link to one server at `url` with keys under `key_prefix`.
    pub fn open(url: &str, key_prefix: &str) -> Result<RedisLink> {
        let config = RedisConfig {
            url: crate::vault::secret::Secret::new(url.to_string()),
            key_prefix: key_prefix.to_string(),
            ..RedisConfig::default()
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(Error::config(
                "redis.url",
                format!("{}: must start with redis:// or rediss://", redact_url(url)),
            ));
        }
        RedisLink::from_config(&config).map(|link| link.expect("a URL enables Redis"))
    }

    /// How long a Redis out of reach may be a failover under way (`[redis] failover_wait`
    /// with Sentinel or Cluster; zero with one server, which does not fail over).
    pub fn failover_wait(&self) -> Duration {
        self.inner.failover_wait
    }

    /// One server, the master the sentinels name, or a cluster.
    pub fn topology(&self) -> Topology {
        self.inner.topology
    }

    /// Where the link is now, for `/health` and `/resource-usage`.
    pub async fn whereabouts(&self) -> Whereabouts {
        let masters = match self.inner.topology {
            Topology::Cluster if self.is_up() => self.cluster_masters().await.ok(),
            _ => None,
        };
        Whereabouts {
            topology: self.inner.topology,
            master: self.master(),
            masters,
            status: if self.is_up() { "up" } else { "degraded" }.to_string(),
        }
    }

    /// `host:port` of the server or the current master (`None` before the sentinels named
    /// one, and with a cluster).
    pub fn master(&self) -> Option<String> {
        self.inner
            .master
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A receiver told of each master switch (a subscription made before is stale).
    pub fn switches(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.switches.subscribe()
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// How a change this process publishes reads on the channel of changes: `ORIGIN KEY`
    /// (the origin is this process's own; a listener skips its own changes, which its near
    /// cache already holds).
    pub fn change_message(&self, key: &str) -> String {
        format!("{} {key}", self.inner.origin)
    }

    /// The key of a change read on the channel, unless this process published it.
    pub fn foreign_change<'a>(&self, message: &'a str) -> Option<&'a str> {
        match message.split_once(' ') {
            Some((origin, _)) if origin == self.inner.origin => None,
            Some((_, key)) => Some(key),
            None => Some(message),
        }
    }

    /// The URL without its password, for logs and `/health`.
    pub fn display_url(&self) -> &str {
        &self.inner.display_url
    }

    pub fn state(&self) -> LinkState {
        self.inner.breaker.state()
    }

    /// Whether calls go to Redis now (else every user is on its in-process fallback).
    pub fn is_up(&self) -> bool {
        self.inner.breaker.is_up()
    }

    /// One command; `what` names the user in errors and logs ("redis slots").
    pub async fn query<T: FromRedisValue>(&self, what: &str, admit: Admit, cmd: &Cmd) -> Result<T> {
        let mut conn = self.conn(what, admit).await?;
        self.outcome(what, cmd.query_async(&mut conn).await)
    }

    /// Several commands in one round trip.
    pub async fn pipe<T: FromRedisValue>(&self, what: &str, pipe: &Pipeline) -> Result<T> {
        let mut conn = self.conn(what, Admit::WhenUp).await?;
        self.outcome(what, pipe.query_async(&mut conn).await)
    }

    /// One run of a script of [`scripts`].
    pub async fn invoke<T: FromRedisValue>(
        &self,
        what: &str,
        admit: Admit,
        script: &ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn(what, admit).await?;
        self.outcome(what, script.invoke_async(&mut conn).await)
    }

    /// After a lease or lock was granted: waits (at most `within`) until a replica has it
    /// too, so that a failover right after the grant does not lose it. Only when the master
    /// has replicas (Sentinel); a replica that does not answer in time is logged, not fatal
    /// (the fencing number still guards every write).
    pub async fn replicate(&self, what: &str, within: Duration) {
        if self.inner.replicas.load(Ordering::Relaxed) == 0 {
            return;
        }
        let millis = within.as_millis() as u64;
        let cmd = ::redis::cmd("WAIT").arg(1).arg(millis).clone();
        match self.query::<u64>(what, Admit::Always, &cmd).await {
            Ok(0) => {
                log::debug!("event=redis_wait_unacknowledged op=\"{what}\" within_ms={millis}")
            }
            Ok(_) => {}
            Err(e) => log::debug!("event=redis_wait_failed op=\"{what}\" error=\"{e}\""),
        }
    }

    /// A connection of its own subscribed to `channel` (within the connect and command
    /// timeouts), for a listener that reads it until it ends. A failure to reach Redis is
    /// the link's news like any call's; a refusal (an ACL without the channel) is not. On
    /// a cluster, through one node after another (a `PUBLISH` reaches every node).
    pub async fn subscribe(&self, channel: &str) -> Result<::redis::aio::PubSub> {
        const WHAT: &str = "redis subscription";
        if self.inner.topology == Topology::Sentinel && self.master().is_none() {
            self.find_master().await?;
        }
        let client = {
            let clients = self
                .inner
                .subscribe_to
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if clients.is_empty() {
                return Err(Error::CacheUnavailable(format!("{WHAT}: no master known")));
            }
            let turn = self.inner.next_node.load(Ordering::Relaxed);
            clients[turn % clients.len()].clone()
        };
        let result = self.subscribe_with(&client, channel).await;
        if result.is_err() {
            self.inner.next_node.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn subscribe_with(
        &self,
        client: &::redis::Client,
        channel: &str,
    ) -> Result<::redis::aio::PubSub> {
        const WHAT: &str = "redis subscription";
        let connect = client.get_async_pubsub();
        let mut pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return Err(self.subscription_failed(&e)),
            Err(_) => {
                self.found_unreachable(WHAT, "no connection within the connect timeout");
                return Err(Error::CacheUnavailable(format!(
                    "{WHAT}: no connection within the connect timeout"
                )));
            }
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, pubsub.subscribe(channel)).await {
            Ok(Ok(())) => Ok(pubsub),
            Ok(Err(e)) => Err(self.subscription_failed(&e)),
            Err(_) => {
                self.found_unreachable(WHAT, "SUBSCRIBE unanswered within the command timeout");
                Err(Error::CacheUnavailable(format!(
                    "{WHAT}: SUBSCRIBE unanswered within the command timeout"
                )))
            }
        }
    }

    /// A connection of another part (a subscription) ended: an error like a reset, an
    /// outage only if errors go on (see [`breaker`]).
    pub fn connection_dropped(&self, what: &str, why: &str) {
        self.failed(what, Failure::Error, why);
    }

    fn subscription_failed(&self, e: &RedisError) -> Error {
        if let Some(how) = failure_of(e) {
            self.failed("redis subscription", how, &e.to_string());
        }
        Error::CacheUnavailable(format!("redis subscription: {e}"))
    }

    /// Round trip in milliseconds, through the breaker.
    pub async fn ping(&self) -> Result<f64> {
        let started = Instant::now();
        let _: String = self
            .query("redis", Admit::WhenUp, &::redis::cmd("PING"))
            .await?;
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    }

    /// The connection a call uses, unless the breaker refuses the call; with Sentinel, the
    /// master is found first when none is known yet.
    async fn conn(&self, what: &str, admit: Admit) -> Result<Conn> {
        if admit == Admit::WhenUp && !self.is_up() {
            return Err(Error::CacheUnavailable(format!(
                "{what}: Redis is left alone after a failure until a probe finds it back"
            )));
        }
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        self.watch_switches();
        if let Err(e) = self.find_master().await {
            // Every sentinel was asked: with no master known, Redis is out of reach.
            self.failed(what, Failure::Silent, &e.to_string());
            return Err(e);
        }
        self.current()
            .ok_or_else(|| Error::CacheUnavailable(format!("{what}: no master known")))
    }

    fn current(&self) -> Option<Conn> {
        self.inner
            .conn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What a call's answer says of the link.
    fn outcome<T>(&self, what: &str, result: ::redis::RedisResult<T>) -> Result<T> {
        match result {
            Ok(value) => {
                self.answered("call");
                Ok(value)
            }
            Err(e) => {
                match failure_of(&e) {
                    Some(how) => self.failed(what, how, &e.to_string()),
                    None => self.answered("call"),
                }
                Err(Error::CacheUnavailable(format!("{what}: {e}")))
            }
        }
    }

    fn answered(&self, by: &str) {
        if self.inner.breaker.succeeded() == breaker::Change::Closed {
            log::info!(
                "event=redis_restored url={} by={by}",
                self.inner.display_url
            );
            log::info!("event=slots_restored mode=redis");
        }
    }

    /// Another part found Redis unreachable by its own means (a wait of its own that ran
    /// out): the link takes it for silent, as after a command timeout.
    pub fn found_unreachable(&self, what: &str, why: &str) {
        self.failed(what, Failure::Silent, why);
    }

    fn failed(&self, what: &str, how: Failure, e: &str) {
        self.spawn_find_master();
        if self.inner.breaker.failed(how) == breaker::Change::Opened {
            log::warn!(
                "event=redis_unreachable url={} op=\"{what}\" error=\"{e}\" fallback=in_process retry_in={}s",
                self.inner.display_url,
                breaker::FIRST_PAUSE.as_secs()
            );
            log::warn!("event=slots_fallback mode=in_process");
        }
        if !self.is_up() {
            self.spawn_probe();
        }
    }

    /// Starts the background probe unless it runs (outside a runtime there is none: the
    /// next failure tries again).
    fn spawn_probe(&self) {
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.clone().probe_until_up());
            }
            Err(_) => self.inner.probing.store(false, Ordering::Release),
        }
    }

    /// Waits each pause out and asks Redis, until it answers.
    async fn probe_until_up(self) {
        while let Some(left) = self.inner.breaker.pause_left() {
            tokio::time::sleep(left.max(PROBE_TICK)).await;
            if !self.inner.breaker.begin_probe() {
                continue;
            }
            // With Sentinel, the master may be another by now.
            if self.inner.sentinels.is_some() {
                let find = self.find_master();
                if !matches!(
                    tokio::time::timeout(COMMAND_TIMEOUT * 2, find).await,
                    Ok(Ok(()))
                ) {
                    self.inner.breaker.probe_failed();
                    continue;
                }
            }
            let Some(mut conn) = self.current() else {
                self.inner.breaker.probe_failed();
                continue;
            };
            let cmd = ::redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            match tokio::time::timeout(COMMAND_TIMEOUT, ping).await {
                Ok(Ok(_)) => self.answered("probe"),
                Ok(Err(e)) if failure_of(&e).is_none() => self.answered("probe"),
                _ => self.inner.breaker.probe_failed(),
            }
        }
        self.inner.probing.store(false, Ordering::Release);
        // A failure that came between the last probe and the flag: its probe starts now.
        if !self.is_up() {
            self.spawn_probe();
        }
    }
}

/// Where the link is, for `/health` (`components.redis`) and `/resource-usage` (`redis`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Whereabouts {
    /// `single`, `sentinel` or `cluster`.
    pub topology: Topology,
    /// `host:port` of the server, or of the master the sentinels named; `null` with a
    /// cluster or before a master is known.
    pub master: Option<String>,
    /// A cluster's masters (`null` otherwise, or while Redis is unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masters: Option<Vec<String>>,
    /// `up`, or `degraded` (every user on its in-process fallback).
    pub status: String,
}

/// Whether an error means Redis cannot be reached, and how; `None` for an answer that refused
/// the command (a type or script error says Redis is there).
fn failure_of(e: &RedisError) -> Option<Failure> {
    use ::redis::ServerErrorKind as S;
    // No answer, or nobody listening: every call would wait or fail alike.
    if e.is_timeout() || e.is_connection_refusal() {
        return Some(Failure::Silent);
    }
    let unreachable = e.is_io_error()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Io
                | ErrorKind::Client
                | ErrorKind::AuthenticationFailed
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown | S::ReadOnly
                )
        );
    unreachable.then_some(Failure::Error)
}

/// A link to the test Redis (`TOKEND_TEST_REDIS_URL`) under a prefix of its own, for unit
/// tests; `None` (skipped) when Redis is not there outside CI.
#[cfg(test)]
pub(crate) async fn test_link() -> Option<RedisLink> {
    let url = std::env::var("TOKEND_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("tokend-unit-{}", uuid::Uuid::new_v4());
    let link = RedisLink::open(&url, &prefix).unwrap();
    if link.ping().await.is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Redis is required in CI but is not reachable"
        );
        eprintln!("SKIPPED: Redis is not reachable; start it to run this test");
        return None;
    }
    Some(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing listens on port 1: a refused connection is an outage at once (as silence is),
    /// and the calls after it are refused without a try; `Admit::Always` still tries.
    #[actix_rt::test]
    async fn a_refused_connection_opens_the_link_for_every_user() {
        let link = RedisLink::open("redis://127.0.0.1:1/0", "unit").unwrap();
        assert_eq!(link.state(), LinkState::Up);
        assert!(link.ping().await.is_err());
        assert!(!link.is_up(), "nobody listens: down");
        assert!(matches!(link.state(), LinkState::Degraded { .. }));
        let started = Instant::now();
        let refused: Result<u64> = link
            .query("redis turns", Admit::WhenUp, ::redis::cmd("INCR").arg("k"))
            .await;
        assert!(matches!(refused, Err(Error::CacheUnavailable(m)) if m.contains("left alone")));
        assert!(started.elapsed() < Duration::from_millis(50));
        let tried: Result<u64> = link
            .query("redis locks", Admit::Always, ::redis::cmd("DEL").arg("k"))
            .await;
        assert!(matches!(tried, Err(Error::CacheUnavailable(m)) if !m.contains("left alone")));
    }

    /// A link to sentinels that are not there starts, refuses calls with a message naming
    /// the master it looked for, and shows where it looks.
    #[actix_rt::test]
    async fn sentinels_that_do_not_answer_leave_the_link_degraded_with_a_reason() {
        let config = RedisConfig {
            sentinels: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            sentinel_master: "tokend-master".into(),
            ..RedisConfig::default()
        };
        let link = RedisLink::from_config(&config).unwrap().unwrap();
        assert_eq!(link.topology(), Topology::Sentinel);
        assert_eq!(
            link.display_url(),
            "sentinel://127.0.0.1:1,127.0.0.1:2/tokend-master"
        );
        let failed = link.ping().await.unwrap_err().to_string();
        assert!(failed.contains("tokend-master"), "{failed}");
        assert!(failed.contains("127.0.0.1:2"), "{failed}");
        let whereabouts = link.whereabouts().await;
        assert_eq!(whereabouts.master, None);
        assert_eq!(whereabouts.status, "degraded");
    }
}
