-- The total order of an order's versions (projector/core/versions.py): a version is
-- (time, partition, offset), compared in that order, where time is its partition's clock at the
-- record: the latest record timestamp of the partition up to and including it. The clock never
-- goes back within a partition, so the later offset always wins there, and the triple is unique.
--
-- applied_offsets.clock: the partition's clock at the position (the record just before it), so
-- that the next batch continues it. Positions recorded before this migration start from the
-- timestamp of their last record.
ALTER TABLE applied_offsets ADD COLUMN clock bigint NOT NULL DEFAULT 0;
UPDATE applied_offsets SET clock = coalesce(last_timestamp, 0);

-- The snapshot's version: its time is the clock, not the record's own timestamp.
ALTER TABLE order_snapshots RENAME COLUMN version_timestamp TO version_time;
