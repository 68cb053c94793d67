//! Where Redis is, and the connection to it: one server (`[redis] url`), the master a set of
//! sentinels names (`sentinels`, followed through failovers by [`super::sentinel`]), or a
//! Redis Cluster (`cluster`: the redis crate's cluster connection, which follows `MOVED` and
//! `ASK` and refreshes its slot map by itself).
//!
//! Every connection is made lazily: tokend starts while Redis is down, and the first call
//! (or the link's probe) finds out.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::RedisConfig;
use crate::error::{Error, Result};

/// How long a connection to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may go unanswered: the most a caller waits on a silent Redis.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How tokend reaches Redis, as `/health` and `/resource-usage` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// One server at `[redis] url`.
    Single,
    /// The master the sentinels name, followed through failovers.
    Sentinel,
    /// A Redis Cluster.
    Cluster,
}

impl Topology {
    pub fn of(config: &RedisConfig) -> Topology {
        if !config.sentinels.is_empty() {
            Topology::Sentinel
        } else if !config.cluster.is_empty() {
            Topology::Cluster
        } else {
            Topology::Single
        }
    }
}

/// A connection every call can clone: to one server (the single one, or the current
/// master), or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The connection settings of `[redis] url` (credentials, database, TLS), or the defaults
/// when it is empty (a Sentinel or Cluster setup without credentials).
pub(crate) fn template(config: &RedisConfig) -> Result<ConnectionInfo> {
    let url = config.url.expose();
    let url = if url.is_empty() {
        "redis://127.0.0.1:6379/0"
    } else {
        url
    };
    url.into_connection_info().map_err(|e| {
        Error::config(
            "redis.url",
            format!("{}: {e}", crate::vault::secret::redact_url(url)),
        )
    })
}

/// `template`'s settings at another address (a master the sentinels named, a cluster node),
/// keeping TLS when the template has it.
pub(crate) fn at(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_string(), port),
    };
    template.clone().set_addr(addr)
}

/// `host:port` split (validated by the configuration already).
pub(crate) fn split_address(address: &str) -> Result<(String, u16)> {
    address
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)))
        .ok_or_else(|| Error::config("redis", format!("`{address}` is not host:port")))
}

/// A lazily connected manager of one server's connection, within tokend's timeouts.
pub(crate) fn server(info: ConnectionInfo) -> Result<(Conn, ::redis::Client)> {
    let client = ::redis::Client::open(info).map_err(|e| Error::config("redis", e.to_string()))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| Error::config("redis", e.to_string()))?;
    Ok((Conn::Server(conn), client))
}

/// A cluster connection from the seed `nodes`, connected in the background: a redirection
/// (`MOVED`, `ASK`) or a node that fails over is retried a few times within the command
/// timeout, then reported like any unreachable Redis.
pub(crate) fn cluster(nodes: &[String], template: &ConnectionInfo) -> Result<Conn> {
    let mut seeds = Vec::with_capacity(nodes.len());
    for node in nodes {
        let (host, port) = split_address(node)?;
        seeds.push(at(template, &host, port));
    }
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(COMMAND_TIMEOUT)
        .overall_response_timeout(Some(COMMAND_TIMEOUT))
        .retries(4)
        .min_retry_wait(20)
        .max_retry_wait(400);
    if let Some(user) = template.redis_settings().username() {
        builder = builder.username(user);
    }
    if let Some(password) = template.redis_settings().password() {
        builder = builder.password(password);
    }
    let client = builder
        .build()
        .map_err(|e| Error::config("redis.cluster", e.to_string()))?;
    let config = ::redis::cluster::ClusterConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(COMMAND_TIMEOUT);
    Ok(Conn::Cluster(
        client.get_pending_async_connection_with_config(config),
    ))
}
