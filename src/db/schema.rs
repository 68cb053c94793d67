//! The diesel schema of tokend's tables (SPEC §4), and the alert transitions beside them.
//!
//! Written by hand rather than printed by the diesel CLI, because one schema serves both
//! backends: the SQL types are chosen so that SQLite and PostgreSQL read and write the same
//! Rust types (ids as `BigInt`, times as naive UTC `Timestamp`, durations as `Double`).

diesel::table! {
    account_credentials (id) {
        id -> BigInt,
        site_name -> Text,
        account -> Text,
        password_encrypted -> Text,
        is_preferred -> Bool,
        is_active -> Bool,
        login_success_count -> BigInt,
        login_failure_count -> BigInt,
        last_login_success_at -> Nullable<Timestamp>,
        last_login_attempt_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        blocked_until -> Nullable<Timestamp>,
        block_reason -> Nullable<Text>,
        proxy_encrypted -> Nullable<Text>,
        proxy_display -> Nullable<Text>,
    }
}

diesel::table! {
    tokens (id) {
        id -> BigInt,
        site_name -> Text,
        account -> Text,
        token -> Text,
        token_type -> Text,
        expires_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        fence -> BigInt,
    }
}

diesel::table! {
    token_acquisition_history (id) {
        id -> BigInt,
        acquisition_id -> Text,
        site_name -> Text,
        account -> Nullable<Text>,
        credential_id -> Nullable<BigInt>,
        status -> Text,
        trigger_reason -> Text,
        attempt_count -> Integer,
        total_duration -> Double,
        login_duration -> Nullable<Double>,
        captcha_attempts -> Integer,
        network_retries -> Integer,
        token_fingerprint -> Nullable<Text>,
        token_redacted -> Nullable<Text>,
        error_message -> Nullable<Text>,
        error_details -> Nullable<Text>,
        created_at -> Timestamp,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    alert_transitions (id) {
        id -> BigInt,
        occurred_at -> Timestamp,
        alert_type -> Text,
        state -> Text,
        severity -> Nullable<Text>,
        message -> Nullable<Text>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    account_credentials,
    tokens,
    token_acquisition_history,
    alert_transitions
);
