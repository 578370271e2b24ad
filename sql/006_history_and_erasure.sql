-- Erasure and history (README: "Erasing an order", "History").
--
-- An erased order keeps its snapshot row without a body (body_json NULL): the order_uid and the
-- erasure's version, nothing of the customer. The erasure is a version like any other, and an older
-- version arriving later must find it there to know it lost. Its normalized rows and its history
-- are deleted. The API serves only rows with a body.
ALTER TABLE order_snapshots ALTER COLUMN body_json DROP NOT NULL;

-- What the history shows of the current version: when it was applied, and the timestamp of the
-- record it came from with its type (0 CreateTime, 1 LogAppendTime). updated_at moves on an
-- identical re-send too (its version is newer); applied_at only when the order changes.
ALTER TABLE order_snapshots
    ADD COLUMN applied_at       timestamptz,
    ADD COLUMN record_timestamp bigint,
    ADD COLUMN timestamp_type   smallint;
UPDATE order_snapshots SET applied_at = updated_at;
ALTER TABLE order_snapshots ALTER COLUMN applied_at SET NOT NULL, ALTER COLUMN applied_at SET DEFAULT now();

-- Every earlier version of an order, append-only: a version moves here from order_snapshots when
-- a newer one replaces it, so the current version is always the snapshot's row and an order seen
-- once costs no history row. An order's history is its rows here, then its snapshot, in version
-- order. A version of unknown coordinates (kept by `rebuild --keep`) has -1 in each.
CREATE TABLE order_history (
    order_uid         text        NOT NULL,
    version_time      bigint      NOT NULL,
    version_partition integer     NOT NULL,
    version_offset    bigint      NOT NULL,
    source_partition  integer     NOT NULL,
    source_offset     bigint      NOT NULL,
    record_timestamp  bigint,
    timestamp_type    smallint,
    applied_at        timestamptz NOT NULL,
    body_json         text        NOT NULL,
    PRIMARY KEY (order_uid, version_time, version_partition, version_offset)
);
