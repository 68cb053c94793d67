//! `HistoryActor`: owns the database side of tokend (SPEC §1).
//!
//! Runs on a `SyncArbiter` (a few threads of its own), so that diesel's blocking calls never
//! hold up the async threads that serve HTTP.
//!
//! Messages: [`CheckDatabase`] (health: a round trip and its latency).

use std::time::Instant;

use actix::prelude::*;
use serde::Serialize;

use crate::db::Pool;
use crate::error::Result;

pub struct HistoryActor {
    pool: Pool,
}

impl Actor for HistoryActor {
    type Context = SyncContext<Self>;
}

impl HistoryActor {
    pub fn start(pool: Pool, threads: usize) -> Addr<HistoryActor> {
        SyncArbiter::start(threads, move || HistoryActor { pool: pool.clone() })
    }
}

/// Is the database reachable, and how fast does it answer?
#[derive(Message)]
#[rtype(result = "Result<DatabaseStatus>")]
pub struct CheckDatabase;

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseStatus {
    pub backend: &'static str,
    pub url: String,
    pub latency_ms: f64,
    pub pool_connections: u32,
    pub pool_idle: u32,
}

impl Handler<CheckDatabase> for HistoryActor {
    type Result = Result<DatabaseStatus>;

    fn handle(&mut self, _: CheckDatabase, _: &mut SyncContext<Self>) -> Self::Result {
        let started = Instant::now();
        self.pool.ping()?;
        let (pool_connections, pool_idle) = self.pool.state();
        Ok(DatabaseStatus {
            backend: self.pool.backend().name(),
            url: self.pool.display_url().to_string(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            pool_connections,
            pool_idle,
        })
    }
}
