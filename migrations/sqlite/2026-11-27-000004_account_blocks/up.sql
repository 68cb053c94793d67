-- Account states that last (SPEC §11): a blacklist (credential_error) or a cooldown
-- (captcha_error, failed) is kept beside the account, so that it survives a restart, a
-- Redis flush and a cache clear. Both NULL: the account is not blocked.
ALTER TABLE account_credentials ADD COLUMN blocked_until TIMESTAMP;
ALTER TABLE account_credentials ADD COLUMN block_reason TEXT;
