//! `GET /performance/resource-usage` and `POST /performance/resources/cleanup` (SPEC §7),
//! from the real state of the slots, locks, pool and process.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{ok, AppState};
use crate::actors::concurrency::{Cleanup, Usage};
use crate::error::Error;

/// Slots, queue, locks, limits, process, pool and Redis, as they are now.
#[utoipa::path(get, path = "/api/v1/automation/performance/resource-usage", operation_id = "resourceUsage", tag = "performance", responses((status = 200, description = "Active acquisitions, locks, queue, limits, process, pool, shared slots", body = super::schemas::Answer<super::schemas::ResourceUsageAnswer>)))]
pub async fn usage(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let local = state.slots.actor().send(Usage).await?;
    let limits = state.slots.limits().await;
    let shared = match state.slots.redis() {
        Some(redis) => match redis.usage().await {
            Ok((held, queued)) => {
                json!({"state": "connected", "active_total": held, "queue_size": queued})
            }
            Err(e) => json!({"state": "unreachable", "error": e.to_string()}),
        },
        None => json!(null),
    };
    let (connections, idle) = state.pool.state();
    let sites: serde_json::Map<String, serde_json::Value> = state
        .broker
        .site_reports()
        .await
        .into_iter()
        .map(|s| (s.name.clone(), json!(s)))
        .collect();
    Ok(ok(json!({
        "sites": sites,
        "slots_mode": state.slots.mode(),
        "active_acquisitions": {
            "total": local.active_total,
            "per_site": local.active_per_site,
            "per_account": local.active_per_account,
        },
        "active_locks": state.broker.active_locks(),
        "queue": {"size": local.queue_size, "oldest_wait_seconds": local.oldest_wait_seconds},
        "limits": limits,
        "recovered_deadlocks": local.recovered_deadlocks,
        "shared_slots": shared,
        "process": crate::process::usage(),
        "database_pool": {
            "backend": state.pool.backend().name(),
            "max_size": state.pool.max_size(),
            "connections": connections,
            "idle": idle,
        },
    })))
}

/// Frees slots held past their lease, drops waiters that gave up and idle locks.
#[utoipa::path(post, path = "/api/v1/automation/performance/resources/cleanup", operation_id = "cleanupResources", tag = "performance", responses((status = 200, description = "What was freed", body = super::schemas::Answer<super::schemas::CleanupAnswer>)))]
pub async fn cleanup(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let (leases, waiters) = state.slots.actor().send(Cleanup).await?;
    let locks = state.broker.drop_idle_locks();
    let shared = match state.slots.redis() {
        Some(redis) => {
            let (leases, waiters) = redis.cleanup().await?;
            json!({"expired_leases_freed": leases, "expired_waiters_dropped": waiters})
        }
        None => json!(null),
    };
    log::info!("event=resources_cleanup leases={leases} waiters={waiters} locks={locks}");
    Ok(ok(json!({
        "expired_leases_freed": leases,
        "expired_waiters_dropped": waiters,
        "idle_locks_dropped": locks,
        "shared_slots": shared,
    })))
}
