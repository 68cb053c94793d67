//! Redis Sentinel: which server is the master now. tokend asks the sentinels
//! (`SENTINEL get-master-addr-by-name`), checks the server they name with `ROLE` (a sentinel
//! may still name the old master in the middle of a failover), and asks again whenever the
//! link meets an error, a timeout or a `READONLY` answer, or a sentinel announces
//! `+switch-master`. The redis crate's own Sentinel client resolves the master once; this
//! is tokend's own small follower of it ([`super::RedisLink`] swaps its connection).

use std::sync::atomic::{AtomicUsize, Ordering};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, Value};

use super::topology::{at, split_address, COMMAND_TIMEOUT, CONNECT_TIMEOUT};
use crate::config::RedisConfig;
use crate::error::{Error, Result};

/// The channel on which sentinels announce a new master: `NAME OLD_IP OLD_PORT NEW_IP NEW_PORT`.
pub const SWITCH_CHANNEL: &str = "+switch-master";

/// The master the sentinels named and `ROLE` confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub host: String,
    pub port: u16,
    /// Replicas connected to it (from `ROLE`): a grant waits for one of them (`WAIT`).
    pub replicas: usize,
}

impl Master {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The sentinels of `[redis] sentinels` and the master they watch.
pub struct Sentinels {
    /// Each sentinel's connection settings (its own user and password).
    sentinels: Vec<ConnectionInfo>,
    master_name: String,
    /// The master's settings (`[redis] url`'s credentials and database), at no address yet.
    template: ConnectionInfo,
    /// The sentinel that answered last: asked first next time.
    preferred: AtomicUsize,
}

impl Sentinels {
    pub fn from_config(config: &RedisConfig, template: ConnectionInfo) -> Result<Sentinels> {
        let mut sentinels = Vec::with_capacity(config.sentinels.len());
        for address in &config.sentinels {
            let (host, port) = split_address(address)?;
            let mut settings = ::redis::RedisConnectionInfo::default();
            if !config.sentinel_username.is_empty() {
                settings = settings.set_username(&config.sentinel_username);
            }
            if !config.sentinel_password.is_empty() {
                settings = settings.set_password(config.sentinel_password.expose());
            }
            let info = (host.as_str(), port)
                .into_connection_info()
                .map_err(|e| Error::config("redis.sentinels", format!("`{address}`: {e}")))?
                .set_redis_settings(settings);
            sentinels.push(info);
        }
        Ok(Sentinels {
            sentinels,
            master_name: config.sentinel_master.trim().to_string(),
            template,
            preferred: AtomicUsize::new(0),
        })
    }

    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The master's connection settings at `master`'s address.
    pub fn master_info(&self, master: &Master) -> ConnectionInfo {
        at(&self.template, &master.host, master.port)
    }

    /// How many sentinels are configured.
    pub fn len(&self) -> usize {
        self.sentinels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sentinels.is_empty()
    }

    /// The `i`th sentinel's settings, counting from the one that answered last.
    pub fn sentinel(&self, i: usize) -> &ConnectionInfo {
        let first = self.preferred.load(Ordering::Relaxed);
        &self.sentinels[(first + i) % self.sentinels.len()]
    }

    /// Asks every sentinel at once for the master; the first to name a server that says it
    /// is the master wins. Bounded by the command timeout as a whole: silent sentinels cost
    /// one timeout, not one each.
    pub async fn find_master(&self) -> Result<Master> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let mut asks: FuturesUnordered<_> = self
            .sentinels
            .iter()
            .enumerate()
            .map(|(index, sentinel)| async move {
                (index, sentinel.addr().to_string(), self.ask(sentinel).await)
            })
            .collect();
        let mut errors = Vec::new();
        let first = async {
            while let Some((index, address, answer)) = asks.next().await {
                match answer {
                    Ok(master) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Some(master);
                    }
                    Err(e) => errors.push(format!("{address}: {e}")),
                }
            }
            None
        };
        let found = tokio::time::timeout(COMMAND_TIMEOUT, first).await;
        if let Ok(Some(master)) = found {
            return Ok(master);
        }
        if found.is_err() {
            errors.push(format!(
                "the others: no answer within {}s",
                COMMAND_TIMEOUT.as_secs()
            ));
        }
        Err(Error::CacheUnavailable(format!(
            "no sentinel named a master for `{}`: {}",
            self.master_name,
            errors.join("; ")
        )))
    }

    async fn ask(&self, sentinel: &ConnectionInfo) -> std::result::Result<Master, String> {
        let mut conn = connect(sentinel.clone()).await?;
        let named: Option<(String, u16)> = ::redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let (host, port) = named
            .ok_or_else(|| format!("does not monitor a master named `{}`", self.master_name))?;
        let mut master = connect(at(&self.template, &host, port))
            .await
            .map_err(|e| format!("the master it named, {host}:{port}: {e}"))?;
        let role: Value = ::redis::cmd("ROLE")
            .query_async(&mut master)
            .await
            .map_err(|e| format!("ROLE on {host}:{port}: {e}"))?;
        match parse_role(&role) {
            Some(Role::Master { replicas }) => Ok(Master {
                host,
                port,
                replicas,
            }),
            Some(Role::Other(role)) => Err(format!(
                "it named {host}:{port}, which says it is a {role} (a failover under way)"
            )),
            None => Err(format!("ROLE on {host}:{port}: unreadable answer")),
        }
    }
}

/// A short-lived connection within tokend's timeouts.
pub async fn connect(info: ConnectionInfo) -> std::result::Result<MultiplexedConnection, String> {
    let client = ::redis::Client::open(info).map_err(|e| e.to_string())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())
}

/// What `ROLE` says a server is.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    Master {
        replicas: usize,
    },
    /// `slave`, `sentinel`…
    Other(String),
}

/// `ROLE`: `["master", offset, [[ip, port, offset], …]]` for a master.
fn parse_role(value: &Value) -> Option<Role> {
    let Value::Array(parts) = value else {
        return None;
    };
    let role = match parts.first()? {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(text) => text.clone(),
        _ => return None,
    };
    if role != "master" {
        return Some(Role::Other(role));
    }
    let replicas = match parts.get(2) {
        Some(Value::Array(replicas)) => replicas.len(),
        _ => 0,
    };
    Some(Role::Master { replicas })
}

/// The master named in a `+switch-master` message, when it is `name`'s.
pub fn switched_to(message: &str, name: &str) -> Option<String> {
    let mut parts = message.split_whitespace();
    if parts.next()? != name {
        return None;
    }
    let (_, _, host, port) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn role_tells_a_master_and_counts_its_replicas() {
        let master = Value::Array(vec![
            bulk("master"),
            Value::Int(3129659),
            Value::Array(vec![Value::Array(vec![
                bulk("127.0.0.1"),
                bulk("9001"),
                bulk("3129242"),
            ])]),
        ]);
        assert_eq!(parse_role(&master), Some(Role::Master { replicas: 1 }));
        let replica = Value::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            Value::Int(9000),
            bulk("connected"),
            Value::Int(3167038),
        ]);
        assert_eq!(parse_role(&replica), Some(Role::Other("slave".into())));
        assert_eq!(parse_role(&Value::Nil), None);
    }

    #[test]
    fn a_switch_message_names_the_new_master_of_its_own_name_only() {
        let message = "mymaster 127.0.0.1 6380 127.0.0.1 6381";
        assert_eq!(
            switched_to(message, "mymaster").as_deref(),
            Some("127.0.0.1:6381")
        );
        assert_eq!(switched_to(message, "other"), None);
        assert_eq!(switched_to("mymaster 1 2", "mymaster"), None);
    }

    /// Sentinels that take the connection and never answer (a hung host) are asked at once,
    /// not one after another: the search ends after one command timeout, naming them.
    #[actix_rt::test]
    async fn silent_sentinels_cost_one_timeout_not_one_each() {
        let silent: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let config = RedisConfig {
            sentinels: silent
                .iter()
                .map(|l| l.local_addr().unwrap().to_string())
                .collect(),
            sentinel_master: "m".into(),
            ..RedisConfig::default()
        };
        let sentinels = Sentinels::from_config(
            &config,
            "redis://127.0.0.1/0".into_connection_info().unwrap(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let failed = sentinels.find_master().await.unwrap_err().to_string();
        // One after another they would take three command timeouts (6 s).
        assert!(
            started.elapsed() < COMMAND_TIMEOUT * 2,
            "{:?}: {failed}",
            started.elapsed()
        );
        assert!(
            failed.contains("timed out") || failed.contains("no answer within"),
            "{failed}"
        );
    }
}
