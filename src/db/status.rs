//! Is the database reachable, and how fast does it answer? The `database` component of
//! `/health`.

use std::time::Instant;

use serde::Serialize;

use super::Pool;
use crate::error::Result;

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DatabaseStatus {
    /// `sqlite` or `postgresql`.
    #[schema(value_type = String)]
    pub backend: std::borrow::Cow<'static, str>,
    pub url: String,
    pub latency_ms: f64,
    pub pool_connections: u32,
    pub pool_idle: u32,
}

/// One round trip (`SELECT 1`) on the pool's blocking threads, with its latency and the
/// pool's state.
pub async fn check(pool: &Pool) -> Result<DatabaseStatus> {
    let started = Instant::now();
    pool.run(|conn| {
        diesel::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), conn)?;
        Ok(())
    })
    .await?;
    let (pool_connections, pool_idle) = pool.state();
    Ok(DatabaseStatus {
        backend: pool.backend().name().into(),
        url: pool.display_url().to_string(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        pool_connections,
        pool_idle,
    })
}
