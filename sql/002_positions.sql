-- What a recorded position points to: the timestamp and SHA-256 (of key and value) of the
-- last record applied, checked against the log before the position is trusted, so that a
-- recreated or truncated topic stops the projector instead of being skipped as redeliveries.
-- NULL for positions recorded before this migration: those are not verified.
ALTER TABLE applied_offsets
    ADD COLUMN last_timestamp bigint,
    ADD COLUMN last_digest    bytea;
