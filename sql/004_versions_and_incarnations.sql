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

-- Dead letters published again by `python -m projector.redrive`, each applied once: the
-- dead-lettered record (`<orders topic>:<partition>:<offset>`) a redrive is of, and where its first
-- redriven copy was read; a later copy of the same (a letter redriven twice, or two letters of one
-- record) is skipped.
CREATE TABLE redrives (
    redrive_of       text        PRIMARY KEY,
    record_partition integer     NOT NULL,
    record_offset    bigint      NOT NULL,
    applied_at       timestamptz NOT NULL DEFAULT now()
);

-- Offsets [first_offset, end_offset) of a partition that retention or delete-records removed
-- before the projector applied them: a loss it reports (log, metric, and here for the audit).
CREATE TABLE lost_records (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    first_offset bigint      NOT NULL,
    end_offset   bigint      NOT NULL,
    noticed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, first_offset)
);
