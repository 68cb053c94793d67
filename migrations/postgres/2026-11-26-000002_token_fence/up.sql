-- The fencing number of the slot lease under which the token was obtained (SPEC §9): a
-- write with an older number than the stored one is discarded. 0 means unfenced.
ALTER TABLE tokens ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
