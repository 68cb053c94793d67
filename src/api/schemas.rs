//! `Answer<T>`, the envelope `{"success": true, "data": T}` of the OpenAPI document, and the
//! shapes of the answers still built with `json!` (the health report), for the document
//! only. Most answers are now the `Serialize + ToSchema` types their handlers return (next
//! to each handler); these go the same way. `tests/openapi.rs` validates every real answer
//! against the document, so a shape here that drifts from its answer fails there.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

/// `{"success": true, "data": …}`.
#[derive(ToSchema)]
pub struct Answer<T> {
    success: bool,
    data: T,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Warning,
    Degraded,
    Unhealthy,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum AlertSeverity {
    Low,
    Medium,
    High,
}

#[derive(ToSchema)]
pub struct AlertAnswer {
    #[schema(rename = "type")]
    kind: String,
    message: String,
    severity: AlertSeverity,
    value: f64,
    threshold: f64,
}

#[derive(ToSchema)]
pub struct HealthAnswer {
    status: HealthStatus,
    #[schema(value_type = String, format = DateTime)]
    timestamp: String,
    metrics: crate::actors::alert::HealthMetrics,
    alerts: Vec<AlertAnswer>,
    /// The `[alerts]` thresholds.
    thresholds: BTreeMap<String, f64>,
    /// database, cache, slots, secret_key, …: each with its `status`.
    #[schema(value_type = Object)]
    components: Value,
}
