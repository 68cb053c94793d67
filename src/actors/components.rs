//! The `components` of the health report (`GET /performance/health`): each part of tokend
//! with its `status`. [`super::alert::AlertActor`] checks the database, the cache backend, the
//! metrics actor and the sites; the HTTP handler (`api/health.rs`) adds the login slots, the
//! history's dead letters and the secret key, which it holds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::cache::CacheHealthReport;
use crate::broker::SiteReport;
use crate::db::status::DatabaseStatus;

/// What a component's check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Up,
    /// Cannot be used (the database, the metrics actor).
    Down,
    /// Not reached; tokend works around it (the cache backend: the in-process fallback).
    Degraded,
}

/// One checked component: `up` with its details, or its state and the error that put it
/// there.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Check<T> {
    pub status: CheckStatus,
    /// What the check measured (when `up`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<T>,
    /// Why the component is not `up`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl<T> Check<T> {
    /// `up`, with what the check measured.
    pub fn up(details: Option<T>) -> Check<T> {
        Check {
            status: CheckStatus::Up,
            details,
            error: None,
        }
    }

    /// Not up (`status`), because of `error`.
    pub fn failed(status: CheckStatus, error: String) -> Check<T> {
        Check {
            status,
            details: None,
            error: Some(error),
        }
    }
}

/// The login slots: shared through Redis, or held in process (by design, or as a fallback
/// while Redis is unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlotsStatus {
    Up,
    /// Redis is unreachable: login limits hold per instance.
    Degraded,
}

/// `components.slots`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SlotsComponent {
    pub status: SlotsStatus,
    /// `memory`, `redis`, or `memory (redis unreachable)`.
    pub mode: String,
}

/// Whether history rows wait in the dead-letter file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HistoryStatus {
    Up,
    /// Rows the database refused for their content are kept in `dead_letter_file`.
    DeadLetters,
}

/// `components.history`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryComponent {
    pub status: HistoryStatus,
    #[schema(value_type = String)]
    pub dead_letter_file: PathBuf,
    pub dead_letter_rows: usize,
}

/// Whether the secret key opens the stored passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecretKeyStatus {
    /// It opens a stored password (or none is stored).
    Ok,
    /// Accounts are sealed under another key: every login with them would fail.
    Mismatch,
    /// The database cannot be asked.
    Unknown,
}

/// `components.secret_key`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretKeyComponent {
    pub status: SecretKeyStatus,
}

/// `components` of the health report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthComponents {
    /// `up` (with backend, latency, pool) or `down`: the one case answered with 503.
    pub database: Check<DatabaseStatus>,
    /// `up` (with backend, keys, latency) or `degraded`.
    pub cache: Check<CacheHealthReport>,
    /// The metrics actor: `up`, or `down` when it does not answer (metrics unknown).
    pub monitor: Check<NoDetails>,
    /// Whether each site can serve a login, by name.
    pub sites: BTreeMap<String, SiteReport>,
    /// The parts the HTTP handler adds (it holds them); absent only from the alert actor's
    /// own evaluations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<SlotsComponent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryComponent>,
    /// Where Redis is: topology, current master, `up` or `degraded` (absent without Redis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<crate::redis::Whereabouts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<SecretKeyComponent>,
}

/// A check that reports no details.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NoDetails {}
