-- A sticky proxy per account (SPEC §12): the URL sealed like a password (it may carry
-- credentials), and its display form with any password masked, for listings.
ALTER TABLE account_credentials ADD COLUMN proxy_encrypted TEXT;
ALTER TABLE account_credentials ADD COLUMN proxy_display TEXT;
