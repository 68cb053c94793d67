//! The one Redis link: the connection, the one breaker in front of it, the key schema and the
//! Lua scripts. Everything tokend keeps in Redis goes through here: the token cache
//! ([`crate::cache::RedisStore`]), the login slots and single-flight locks
//! ([`crate::slots::redis::RedisSlots`]), circuits, login budgets, adaptive limits, checkouts
//! and round-robin turns. Nothing else opens a Redis connection.
//!
//! | file | idea |
//! |---|---|
//! | `mod.rs` | [`RedisLink`]: one constructor from the configuration, calls through the breaker, the probe |
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
pub mod keys;
pub mod scripts;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, ScriptInvocation};

pub use self::breaker::{Breaker, Failure, LinkState, ERROR_GRACE};
pub use self::keys::Keys;
use crate::config::RedisConfig;
use crate::error::{Error, Result};
use crate::vault::secret::redact_url;

/// How long a connection to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may go unanswered: the most a caller waits on a silent Redis.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

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
    conn: ConnectionManager,
    /// For connections of their own (subscriptions).
    client: ::redis::Client,
    /// This process's name in the changes it publishes, so that it can tell its own.
    origin: String,
    keys: Keys,
    breaker: Breaker,
    display_url: String,
    /// Set while the background probe task runs.
    probing: AtomicBool,
}

impl RedisLink {
    /// The link the configuration asks for; `None` without `[redis] url`. Redis is connected
    /// lazily: tokend starts while Redis is down.
    pub fn from_config(config: &RedisConfig) -> Result<Option<RedisLink>> {
        if !config.enabled() {
            return Ok(None);
        }
        RedisLink::open(config.url.expose(), &config.key_prefix).map(Some)
    }

    /// A link to `url` with keys under `key_prefix` (what [`RedisLink::from_config`] builds).
    pub fn open(url: &str, key_prefix: &str) -> Result<RedisLink> {
        let client = ::redis::Client::open(url)
            .map_err(|e| Error::config("redis.url", format!("{}: {e}", redact_url(url))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| Error::config("redis.url", e.to_string()))?;
        Ok(RedisLink {
            inner: Arc::new(Inner {
                conn,
                client,
                origin: uuid::Uuid::new_v4().simple().to_string(),
                keys: Keys::new(key_prefix),
                breaker: Breaker::default(),
                display_url: redact_url(url),
                probing: AtomicBool::new(false),
            }),
        })
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
        let mut conn = self.inner.conn.clone();
        self.call(what, admit, cmd.query_async(&mut conn)).await
    }

    /// Several commands in one round trip.
    pub async fn pipe<T: FromRedisValue>(&self, what: &str, pipe: &Pipeline) -> Result<T> {
        let mut conn = self.inner.conn.clone();
        self.call(what, Admit::WhenUp, pipe.query_async(&mut conn))
            .await
    }

    /// One run of a script of [`scripts`].
    pub async fn invoke<T: FromRedisValue>(
        &self,
        what: &str,
        admit: Admit,
        script: &ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.inner.conn.clone();
        self.call(what, admit, script.invoke_async(&mut conn)).await
    }

    /// A connection of its own subscribed to `channel` (within the connect and command
    /// timeouts), for a listener that reads it until it ends. A failure to reach Redis is
    /// the link's news like any call's; a refusal (an ACL without the channel) is not.
    pub async fn subscribe(&self, channel: &str) -> Result<::redis::aio::PubSub> {
        const WHAT: &str = "redis subscription";
        let connect = self.inner.client.get_async_pubsub();
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

    async fn call<T>(
        &self,
        what: &str,
        admit: Admit,
        call: impl Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T> {
        if admit == Admit::WhenUp && !self.is_up() {
            return Err(Error::CacheUnavailable(format!(
                "{what}: Redis is left alone after a failure until a probe finds it back"
            )));
        }
        match call.await {
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
            let mut conn = self.inner.conn.clone();
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
}
