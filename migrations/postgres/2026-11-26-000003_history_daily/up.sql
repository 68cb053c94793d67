-- Daily totals of token_acquisition_history by site, account and status, kept in step with
-- it as rows are written (each acquisition_id counted once), so that /statistics reads a few
-- thousand rows however large the history grows. Days are 'YYYY-MM-DD' (UTC).
CREATE TABLE token_acquisition_daily (
    day TEXT NOT NULL,
    site_name TEXT NOT NULL,
    account TEXT NOT NULL,
    status TEXT NOT NULL,
    acquisitions BIGINT NOT NULL,
    duration_sum DOUBLE PRECISION NOT NULL,
    duration_max DOUBLE PRECISION NOT NULL,
    login_duration_sum DOUBLE PRECISION NOT NULL,
    logins BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    captcha_attempts BIGINT NOT NULL,
    network_retries BIGINT NOT NULL,
    PRIMARY KEY (day, site_name, account, status)
);

CREATE INDEX idx_daily_site_day ON token_acquisition_daily (site_name, day);

-- Rows already in the history count too.
INSERT INTO token_acquisition_daily
SELECT to_char(created_at, 'YYYY-MM-DD'), site_name, COALESCE(account, ''), status, COUNT(*),
       SUM(total_duration), MAX(total_duration), SUM(COALESCE(login_duration, 0)), COUNT(login_duration),
       SUM(attempt_count), SUM(captcha_attempts), SUM(network_retries)
FROM token_acquisition_history
GROUP BY 1, 2, 3, 4;
