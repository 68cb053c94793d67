-- tokend schema, PostgreSQL flavour. Keep in step with ../../sqlite/<same folder>/up.sql:
-- tests/it/migrations.rs compares the two after running them.
CREATE TABLE account_credentials (
    id BIGSERIAL PRIMARY KEY,
    site_name TEXT NOT NULL,
    account TEXT NOT NULL,
    password_encrypted TEXT NOT NULL,
    is_preferred BOOLEAN NOT NULL DEFAULT FALSE,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    login_success_count BIGINT NOT NULL DEFAULT 0,
    login_failure_count BIGINT NOT NULL DEFAULT 0,
    last_login_success_at TIMESTAMP,
    last_login_attempt_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CONSTRAINT account_credentials_site_account_key UNIQUE (site_name, account)
);

CREATE TABLE tokens (
    id BIGSERIAL PRIMARY KEY,
    site_name TEXT NOT NULL,
    account TEXT NOT NULL,
    token TEXT NOT NULL,
    token_type TEXT NOT NULL DEFAULT 'Bearer',
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CONSTRAINT tokens_site_account_key UNIQUE (site_name, account)
);

CREATE TABLE token_acquisition_history (
    id BIGSERIAL PRIMARY KEY,
    acquisition_id TEXT NOT NULL,
    site_name TEXT NOT NULL,
    account TEXT,
    credential_id BIGINT,
    status TEXT NOT NULL,
    trigger_reason TEXT NOT NULL,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    total_duration DOUBLE PRECISION NOT NULL DEFAULT 0,
    login_duration DOUBLE PRECISION,
    captcha_attempts INTEGER NOT NULL DEFAULT 0,
    network_retries INTEGER NOT NULL DEFAULT 0,
    token_fingerprint TEXT,
    token_redacted TEXT,
    error_message TEXT,
    error_details TEXT,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    CONSTRAINT token_acquisition_history_acquisition_id_key UNIQUE (acquisition_id),
    CONSTRAINT token_acquisition_history_status_check CHECK (status IN
        ('success', 'failed', 'timeout', 'network_error', 'captcha_error', 'credential_error')),
    CONSTRAINT token_acquisition_history_trigger_check CHECK (trigger_reason IN
        ('token_needed', 'force_refresh', 'refresh_ahead', 'warm_up', 'manual'))
);

CREATE INDEX idx_history_site_created ON token_acquisition_history (site_name, created_at);
CREATE INDEX idx_history_account_created ON token_acquisition_history (account, created_at);
CREATE INDEX idx_history_status_created ON token_acquisition_history (status, created_at);
CREATE INDEX idx_history_credential ON token_acquisition_history (credential_id);
CREATE INDEX idx_history_created ON token_acquisition_history (created_at);
