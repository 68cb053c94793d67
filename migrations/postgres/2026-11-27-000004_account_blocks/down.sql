ALTER TABLE account_credentials DROP COLUMN block_reason;
ALTER TABLE account_credentials DROP COLUMN blocked_until;
