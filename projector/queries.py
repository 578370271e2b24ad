"""The projector's SQL (the COPY statements of the normalized rows are in projector/rows.py)."""

# Locks this topic's position rows for the batch: a zombie worker of a previous
# generation waits instead of interleaving its writes with ours.
LOCK_POSITIONS = """
SELECT partition, next_offset, last_timestamp, last_digest, topic_id FROM applied_offsets
WHERE topic = %(topic)s AND partition = ANY(%(partitions)s)
FOR UPDATE
"""

READ_POSITIONS = """
SELECT partition, next_offset, last_timestamp, last_digest, topic_id FROM applied_offsets
WHERE topic = %(topic)s
"""

# New orders only: an order the read model has is left to LOCK_CURRENT_VERSIONS and
# REPLACE_SNAPSHOTS, which decide whether this version is newer (projector/versions.py). The
# snapshot keeps the order once, as the compact JSON the API serves; a jsonb copy beside it cost a
# parse and, the row passing 2 kB, a TOAST compression per order (the snapshot's COPY went from
# ~8k to ~30k orders/s without it, bench/findings.md).
INSERT_NEW_SNAPSHOTS = """
INSERT INTO order_snapshots
    (order_uid, body_json, source_partition, source_offset, version_partition, version_offset, version_time)
SELECT * FROM unnest(%(uids)b::text[], %(bodies)b::text[], %(partitions)b::int[], %(offsets)b::bigint[],
                     %(version_partitions)b::int[], %(version_offsets)b::bigint[],
                     %(version_timestamps)b::bigint[])
ON CONFLICT (order_uid) DO NOTHING
RETURNING order_uid
"""

# The versions the read model holds of these orders, locked until the transaction ends: a worker
# writing the same order from another partition waits, and then compares with what it wrote.
LOCK_CURRENT_VERSIONS = """
SELECT order_uid, body_json, version_partition, version_offset, version_time
FROM order_snapshots WHERE order_uid = ANY(%(uids)s)
FOR UPDATE
"""

REPLACE_SNAPSHOTS = """
UPDATE order_snapshots AS s
SET body_json = n.body_json, source_partition = n.source_partition, source_offset = n.source_offset,
    version_partition = n.version_partition, version_offset = n.version_offset,
    version_time = n.version_time, updated_at = now()
FROM unnest(%(uids)b::text[], %(bodies)b::text[], %(partitions)b::int[], %(offsets)b::bigint[],
            %(version_partitions)b::int[], %(version_offsets)b::bigint[], %(version_timestamps)b::bigint[])
     AS n(order_uid, body_json, source_partition, source_offset, version_partition, version_offset,
          version_time)
WHERE s.order_uid = n.order_uid
"""

# A new version's normalized rows replace the old ones: deleted here (deliveries, payments and
# items by cascade), then COPYed from the message like a new order's (projector/rows.py).
DELETE_NORMALIZED = "DELETE FROM orders WHERE order_uid = ANY(%(uids)s)"

# Positions only move forward; the digest and timestamp are those of the record just before, the
# topic id that of the incarnation they were read from.
RECORD_POSITIONS = """
INSERT INTO applied_offsets AS a (topic, partition, next_offset, last_timestamp, last_digest, topic_id)
SELECT %(topic)s, p.*, %(topic_id)s::uuid FROM unnest(%(partitions)s::int[], %(next_offsets)s::bigint[],
                                        %(timestamps)s::bigint[], %(digests)s::bytea[]) AS p
ON CONFLICT (topic, partition) DO UPDATE
SET next_offset = excluded.next_offset, last_timestamp = excluded.last_timestamp,
    last_digest = excluded.last_digest, topic_id = coalesce(excluded.topic_id, a.topic_id),
    updated_at = now()
WHERE a.next_offset < excluded.next_offset
"""

NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

# The first copy of each redrive (projector/redrive.py) is noted with the batch that processes it;
# the ones returned are seen for the first time.
NOTE_REDRIVES = """
INSERT INTO redrives (redrive_of, record_partition, record_offset)
SELECT * FROM unnest(%(redrives)s::text[], %(partitions)s::int[], %(offsets)s::bigint[])
ON CONFLICT (redrive_of) DO NOTHING
RETURNING redrive_of
"""

# Offsets the log deleted (retention, delete-records) before the projector applied them: a loss it
# could not prevent, kept for the audit (projector/audit.py).
RECORD_LOST = """
INSERT INTO lost_records (topic, partition, first_offset, end_offset)
SELECT %(topic)s, * FROM unnest(%(partitions)s::int[], %(firsts)s::bigint[], %(ends)s::bigint[])
ON CONFLICT (topic, partition, first_offset) DO UPDATE
SET end_offset = greatest(lost_records.end_offset, excluded.end_offset)
"""
