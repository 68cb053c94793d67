ALTER TABLE account_credentials DROP COLUMN proxy_display;
ALTER TABLE account_credentials DROP COLUMN proxy_encrypted;
