//! The vocabulary of an acquisition's result, shared by the history table, metrics and alerts.

use serde::{Deserialize, Serialize};

/// How an acquisition that reached a login ended (`token_acquisition_history.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcquisitionStatus {
    Success,
    Failed,
    Timeout,
    NetworkError,
    CaptchaError,
    CredentialError,
}

impl AcquisitionStatus {
    pub const ALL: [AcquisitionStatus; 6] = [
        AcquisitionStatus::Success,
        AcquisitionStatus::Failed,
        AcquisitionStatus::Timeout,
        AcquisitionStatus::NetworkError,
        AcquisitionStatus::CaptchaError,
        AcquisitionStatus::CredentialError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AcquisitionStatus::Success => "success",
            AcquisitionStatus::Failed => "failed",
            AcquisitionStatus::Timeout => "timeout",
            AcquisitionStatus::NetworkError => "network_error",
            AcquisitionStatus::CaptchaError => "captcha_error",
            AcquisitionStatus::CredentialError => "credential_error",
        }
    }
}

/// Why an acquisition was started (`token_acquisition_history.trigger_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerReason {
    TokenNeeded,
    ForceRefresh,
    RefreshAhead,
    WarmUp,
    Manual,
}

impl TriggerReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::TokenNeeded => "token_needed",
            TriggerReason::ForceRefresh => "force_refresh",
            TriggerReason::RefreshAhead => "refresh_ahead",
            TriggerReason::WarmUp => "warm_up",
            TriggerReason::Manual => "manual",
        }
    }
}
