//! `GET /performance/resource-usage` and `POST /performance/resources/cleanup` (SPEC §7),
//! from the real state of the slots, locks, pool and process.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::answer::ok;
use super::state::AppState;
use crate::error::Error;

/// Slots, queue, locks, limits, process, pool and Redis, as they are now.
#[utoipa::path(
    get,
    path = "/api/v1/automation/performance/resource-usage",
    operation_id = "resourceUsage",
    tag = "performance",
    responses(
        (status = 200, description = "Active acquisitions, locks, queue, limits, process, pool, shared slots", body = super::schemas::Answer<super::schemas::ResourceUsageAnswer>),
    ),
)]
pub async fn usage(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let local = state.slots.usage_here().await?;
    let limits = state.slots.limits().await;
    let shared = match state.slots.usage_shared().await {
        Some(Ok((held, queued))) => {
            json!({"state": "connected", "active_total": held, "queue_size": queued})
        }
        Some(Err(e)) => json!({"state": "unreachable", "error": e.to_string()}),
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
        "checkouts": state.broker.checkouts().known(),
        "queue": {"size": local.queue_size, "oldest_wait_seconds": local.oldest_wait_seconds},
        "limits": limits.limits,
        // `redis`, `local` or `fallback` (Redis unreadable: these hold in this process only).
        "limits_source": limits.source,
        "limits_error": limits.error,
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
#[utoipa::path(
    post,
    path = "/api/v1/automation/performance/resources/cleanup",
    operation_id = "cleanupResources",
    tag = "performance",
    responses(
        (status = 200, description = "What was freed", body = super::schemas::Answer<super::schemas::CleanupAnswer>),
    ),
)]
pub async fn cleanup(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let (leases, waiters) = state.slots.cleanup_here().await?;
    let locks = state.broker.drop_idle_locks();
    let shared = match state.slots.cleanup_shared().await.transpose()? {
        Some((leases, waiters)) => {
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
