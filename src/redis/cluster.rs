//! Redis Cluster: the commands that need every master rather than the shard of one key
//! (`SCAN` for key counts and `cache clear`, `INFO memory`), and which masters there are
//! (`CLUSTER NODES`, also for `/health`). With one server or Sentinel they run as usual.

use ::redis::{Cmd, FromRedisValue};

use super::topology::{self, Conn, Topology};
use super::{Admit, RedisLink};
use crate::error::{Error, Result};

impl RedisLink {
    /// Every key matching `pattern`, found with SCAN (never KEYS, which blocks Redis); on a
    /// cluster, on every master.
    pub async fn scan(&self, what: &str, pattern: &str, batch: usize) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let nodes: Vec<Option<(String, u16)>> = match self.inner.topology {
            Topology::Cluster => self
                .cluster_masters()
                .await?
                .iter()
                .map(|address| topology::split_address(address).ok())
                .collect(),
            _ => vec![None],
        };
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let cmd = ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(batch)
                    .clone();
                let (next, found): (u64, Vec<String>) = match &node {
                    Some((host, port)) => self.on_node(what, host, *port, cmd).await?,
                    None => self.query(what, Admit::WhenUp, &cmd).await?,
                };
                keys.extend(found);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }

    /// `used_memory` from `INFO memory`, in bytes (summed over a cluster's masters).
    pub async fn used_memory(&self, what: &str) -> Result<u64> {
        let read = |info: &str| -> u64 {
            info.lines()
                .find_map(|line| line.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let cmd = ::redis::cmd("INFO").arg("memory").clone();
        if self.inner.topology != Topology::Cluster {
            let info: String = self.query(what, Admit::WhenUp, &cmd).await?;
            return Ok(read(&info));
        }
        let mut total = 0;
        for address in self.cluster_masters().await? {
            let (host, port) = topology::split_address(&address)?;
            let info: String = self.on_node(what, &host, port, cmd.clone()).await?;
            total += read(&info);
        }
        Ok(total)
    }

    /// `host:port` of each master of the cluster (`CLUSTER NODES`).
    pub(super) async fn cluster_masters(&self) -> Result<Vec<String>> {
        let cmd = ::redis::cmd("CLUSTER").arg("NODES").clone();
        let nodes: String = self.query("redis cluster", Admit::WhenUp, &cmd).await?;
        Ok(masters_of(&nodes))
    }

    /// One command on one node of the cluster.
    async fn on_node<T: FromRedisValue>(
        &self,
        what: &str,
        host: &str,
        port: u16,
        cmd: Cmd,
    ) -> Result<T> {
        use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let Conn::Cluster(mut conn) = self.conn(what, Admit::WhenUp).await? else {
            return Err(Error::Internal(format!("{what}: not a cluster")));
        };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_string(),
            port,
        });
        let value = conn.route_command(cmd, routing).await;
        let value = self.outcome(what, value)?;
        ::redis::from_redis_value(value)
            .map_err(|e| Error::CacheUnavailable(format!("{what}: {e}")))
    }
}

/// The masters' `host:port` in a `CLUSTER NODES` answer.
pub(super) fn masters_of(nodes: &str) -> Vec<String> {
    let mut masters: Vec<String> = nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let is_master = flags.split(',').any(|f| f == "master");
            let failed = flags.split(',').any(|f| f == "fail" || f == "noaddr");
            // `ip:port@cport[,hostname]`
            let address = fields.get(1)?.split('@').next()?;
            (is_master && !failed && !address.starts_with(':')).then(|| address.to_string())
        })
        .collect();
    masters.sort();
    masters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_name_their_live_masters() {
        let nodes = "\
07c3 127.0.0.1:7101@17101 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:7102@17102 master - 0 1426238317239 2 connected 5461-10922
292f 127.0.0.1:7103@17103,node3.local master,fail - 1426238316232 0 3 connected
e7d1 127.0.0.1:7104@17104 slave 07c3 0 1426238317741 1 connected
824f :0@0 master,noaddr - 1426238316232 0 3 disconnected";
        assert_eq!(masters_of(nodes), ["127.0.0.1:7101", "127.0.0.1:7102"]);
    }
}
