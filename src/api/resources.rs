//! `GET /performance/resource-usage` and `POST /performance/resources/cleanup` (SPEC §7),
//! from the real state of the slots, locks, pool and process.

use std::collections::{BTreeMap, HashMap};

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::answer::ok;
use super::state::AppState;
use crate::broker::SiteReport;
use crate::daemon::resources::ProcessUsage;
use crate::error::Error;
use crate::lifecycle::checkout::Checkout;
use crate::slots::concurrency::SlotLimits;
use crate::slots::LimitsSource;

/// `GET /performance/resource-usage`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceUsageAnswer {
    /// Per site: health, circuit, effective slot limit, login budget.
    pub sites: BTreeMap<String, SiteReport>,
    /// `memory`, `redis`, or `memory (redis unreachable)` (the in-process fallback).
    #[schema(value_type = String)]
    pub slots_mode: &'static str,
    pub active_acquisitions: ActiveAcquisitions,
    pub active_locks: usize,
    /// The live checkouts this instance knows.
    pub checkouts: Vec<Checkout>,
    pub queue: QueueUsage,
    pub limits: SlotLimits,
    /// Where `limits` come from; `fallback`: Redis cannot be read, so these hold in this
    /// process only (`limits_error` says why).
    pub limits_source: LimitsSource,
    pub limits_error: Option<String>,
    pub recovered_deadlocks: u64,
    /// The slots shared through Redis; `null` without Redis.
    pub shared_slots: Option<SharedSlots>,
    /// Where Redis is (topology, current master); `null` without Redis.
    pub redis: Option<crate::redis::Whereabouts>,
    pub process: ProcessUsage,
    pub database_pool: PoolUsage,
}

/// Logins in flight in this process.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveAcquisitions {
    pub total: u32,
    pub per_site: HashMap<String, u32>,
    /// By `site:account`.
    pub per_account: HashMap<String, u32>,
}

/// Waiters for a slot in this process.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueUsage {
    pub size: usize,
    pub oldest_wait_seconds: f64,
}

/// The slots every instance shares through Redis, or why they cannot be read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SharedSlots {
    Connected { active_total: u64, queue_size: u64 },
    Unreachable { error: String },
}

/// The database connection pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolUsage {
    /// `sqlite` or `postgres`.
    #[schema(value_type = String)]
    pub backend: &'static str,
    pub max_size: u32,
    pub connections: u32,
    pub idle: u32,
}

/// `POST /performance/resources/cleanup`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CleanupAnswer {
    pub expired_leases_freed: usize,
    pub expired_waiters_dropped: usize,
    pub idle_locks_dropped: usize,
    /// What was freed in the slots shared through Redis; `null` without Redis.
    pub shared_slots: Option<SharedCleanup>,
}

/// What a cleanup freed in the shared slots.
#[derive(Debug, Serialize, ToSchema)]
pub struct SharedCleanup {
    pub expired_leases_freed: u64,
    pub expired_waiters_dropped: u64,
}

/// Slots, queue, locks, limits, process, pool and Redis, as they are now.
#[utoipa::path(
    get,
    path = "/api/v1/automation/performance/resource-usage",
    operation_id = "resourceUsage",
    tag = "performance",
    responses(
        (status = 200, description = "Active acquisitions, locks, queue, limits, process, pool, shared slots", body = super::answer::Answer<ResourceUsageAnswer>),
    ),
)]
pub async fn usage(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let local = state.slots.usage_here().await?;
    let limits = state.slots.limits().await;
    let shared_slots = state.slots.usage_shared().await.map(|shared| match shared {
        Ok((active_total, queue_size)) => SharedSlots::Connected {
            active_total,
            queue_size,
        },
        Err(e) => SharedSlots::Unreachable {
            error: e.to_string(),
        },
    });
    let redis = match state.slots.link() {
        Some(link) => Some(link.whereabouts().await),
        None => None,
    };
    let (connections, idle) = state.pool.state();
    let sites = state
        .broker
        .site_reports()
        .await
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    Ok(ok(ResourceUsageAnswer {
        sites,
        slots_mode: state.slots.mode(),
        active_acquisitions: ActiveAcquisitions {
            total: local.active_total,
            per_site: local.active_per_site,
            per_account: local.active_per_account,
        },
        active_locks: state.broker.active_locks(),
        checkouts: state.broker.checkouts().known(),
        queue: QueueUsage {
            size: local.queue_size,
            oldest_wait_seconds: local.oldest_wait_seconds,
        },
        limits: limits.limits,
        limits_source: limits.source,
        limits_error: limits.error,
        recovered_deadlocks: local.recovered_deadlocks,
        shared_slots,
        redis,
        process: crate::daemon::resources::usage(),
        database_pool: PoolUsage {
            backend: state.pool.backend().name(),
            max_size: state.pool.max_size(),
            connections,
            idle,
        },
    }))
}

/// Frees slots held past their lease, drops waiters that gave up and idle locks.
#[utoipa::path(
    post,
    path = "/api/v1/automation/performance/resources/cleanup",
    operation_id = "cleanupResources",
    tag = "performance",
    responses(
        (status = 200, description = "What was freed", body = super::answer::Answer<CleanupAnswer>),
    ),
)]
pub async fn cleanup(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let (leases, waiters) = state.slots.cleanup_here().await?;
    let locks = state.broker.drop_idle_locks();
    let shared_slots = state.slots.cleanup_shared().await.transpose()?.map(
        |(expired_leases_freed, expired_waiters_dropped)| SharedCleanup {
            expired_leases_freed,
            expired_waiters_dropped,
        },
    );
    log::info!("event=resources_cleanup leases={leases} waiters={waiters} locks={locks}");
    Ok(ok(CleanupAnswer {
        expired_leases_freed: leases,
        expired_waiters_dropped: waiters,
        idle_locks_dropped: locks,
        shared_slots,
    }))
}
