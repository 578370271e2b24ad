-- The snapshot keeps the order once: as body_json, the compact JSON the API serves. Its jsonb
-- copy cost the projector a parse and, the row passing 2 kB with both, a TOAST compression per
-- order; what read it (new versions' rows, GET /orders' summaries) now reads body_json or the
-- normalized tables. An identical re-send is one with the same body_json.
ALTER TABLE order_snapshots DROP COLUMN body;
