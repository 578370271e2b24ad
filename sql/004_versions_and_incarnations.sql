-- Which incarnation of the topic a position belongs to: Kafka's topic id, a UUID the broker gives
-- a topic when it is created (a topic deleted and created again under the same name gets another).
-- A position is distrusted when the id differs, not merely because its record is gone: compaction
-- and retention remove records from the same incarnation. NULL: recorded before this migration.
ALTER TABLE applied_offsets ADD COLUMN topic_id uuid;

-- Which event an order's current version is, to tell a newer version from an older one that comes
-- late: within a partition the later offset wins, across partitions the later record timestamp
-- (milliseconds). Usually the record applied (source_partition, source_offset); a redriven dead
-- letter is a new record that keeps its original event's coordinates here. NULL: unknown (before
-- this migration, or kept by a rebuild from another log): any version of the log replaces it.
ALTER TABLE order_snapshots
    ADD COLUMN version_partition integer,
    ADD COLUMN version_offset    bigint,
    ADD COLUMN version_timestamp bigint;
UPDATE order_snapshots SET version_partition = source_partition, version_offset = source_offset;

-- Dead letters published again by `python -m projector.redrive`, each once: a letter redriven
-- twice is applied (or dead-lettered again) once. The letter is `<dlq topic>:<partition>:<offset>`;
-- the record is where its redriven copy was read in the orders topic.
CREATE TABLE redriven_letters (
    letter           text        PRIMARY KEY,
    record_partition integer     NOT NULL,
    record_offset    bigint      NOT NULL,
    applied_at       timestamptz NOT NULL DEFAULT now()
);
