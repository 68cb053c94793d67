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

/// Why an acquisition was started (`token_acquisition_history.trigger_reason`). The table
/// also admits `warm_up` and `manual` (SPEC §3); tokend starts no acquisition for either
/// (a warm-up loads lists, it does not log in), so they have no variant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerReason {
    TokenNeeded,
    ForceRefresh,
    RefreshAhead,
}

impl TriggerReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::TokenNeeded => "token_needed",
            TriggerReason::ForceRefresh => "force_refresh",
            TriggerReason::RefreshAhead => "refresh_ahead",
        }
    }
}

/// Why an account may not log in for a while (SPEC §11), stored in
/// `account_credentials.block_reason`: the failure that was the account's own fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// A wrong password or a locked account: blacklisted for `blacklist_duration_hours`.
    CredentialError,
    /// The captcha was not solved: cools down for `captcha_cooldown`.
    CaptchaError,
    /// An unknown failure: cools down for `failure_cooldown`.
    Failed,
    /// The account's own proxy could not be reached or refused: cools down for
    /// `proxy_cooldown`.
    ProxyError,
}

impl BlockReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::CredentialError => "credential_error",
            BlockReason::CaptchaError => "captcha_error",
            BlockReason::Failed => "failed",
            BlockReason::ProxyError => "proxy_error",
        }
    }

    pub fn parse(text: &str) -> Option<BlockReason> {
        [
            BlockReason::CredentialError,
            BlockReason::CaptchaError,
            BlockReason::Failed,
            BlockReason::ProxyError,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }

    /// The account state it puts the account in.
    pub fn state(self) -> AccountState {
        match self {
            BlockReason::CredentialError => AccountState::Blacklisted,
            BlockReason::CaptchaError | BlockReason::Failed | BlockReason::ProxyError => {
                AccountState::CoolingDown
            }
        }
    }
}

/// What an account can do now (`GET /accounts`, `tokend accounts list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    Active,
    Blacklisted,
    CoolingDown,
    Inactive,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::Blacklisted => "blacklisted",
            AccountState::CoolingDown => "cooling_down",
            AccountState::Inactive => "inactive",
        }
    }
}

/// Why a request was refused before any login ran (SPEC §11 "every request counts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    NoAvailableAccount,
    SiteUnavailable,
    QueueFull,
    QueueTimeout,
    LoginBudgetExhausted,
    /// Redis (the shared locks and slots) failed while the caller waited.
    CacheUnavailable,
}

impl RejectionReason {
    pub const ALL: [RejectionReason; 6] = [
        RejectionReason::NoAvailableAccount,
        RejectionReason::SiteUnavailable,
        RejectionReason::QueueFull,
        RejectionReason::QueueTimeout,
        RejectionReason::LoginBudgetExhausted,
        RejectionReason::CacheUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectionReason::NoAvailableAccount => "no_available_account",
            RejectionReason::SiteUnavailable => "site_unavailable",
            RejectionReason::QueueFull => "queue_full",
            RejectionReason::QueueTimeout => "queue_timeout",
            RejectionReason::LoginBudgetExhausted => "login_budget_exhausted",
            RejectionReason::CacheUnavailable => "cache_unavailable",
        }
    }
}
