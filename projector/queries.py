"""The projector's SQL (the COPY statements of the normalized rows are in projector/rows.py)."""

# Locks this topic's position rows for the batch: a zombie worker of a previous
# generation waits instead of interleaving its writes with ours.
LOCK_POSITIONS = """
SELECT partition, next_offset, last_timestamp, last_digest FROM applied_offsets
WHERE topic = %(topic)s AND partition = ANY(%(partitions)s)
FOR UPDATE
"""

READ_POSITIONS = """
SELECT partition, next_offset, last_timestamp, last_digest FROM applied_offsets WHERE topic = %(topic)s
"""

# Returns only the orders whose JSON changed (inserted or replaced): an identical redelivery
# touches nothing. The snapshot keeps the order once, as the compact JSON the API serves; a jsonb
# copy beside it cost a parse and, the row passing 2 kB, a TOAST compression per order (the
# snapshot's COPY went from ~8k to ~30k orders/s without it, bench/findings.md).
UPSERT_SNAPSHOTS = """
INSERT INTO order_snapshots AS s (order_uid, body_json, source_partition, source_offset)
SELECT * FROM unnest(%(uids)b::text[], %(bodies)b::text[], %(partitions)b::int[], %(offsets)b::bigint[])
ON CONFLICT (order_uid) DO UPDATE
SET body_json = excluded.body_json,
    source_partition = excluded.source_partition,
    source_offset = excluded.source_offset,
    updated_at = now()
WHERE s.body_json IS DISTINCT FROM excluded.body_json
RETURNING order_uid, (xmax = 0) AS inserted
"""

# A new version's normalized rows replace the old ones: deleted here (deliveries, payments and
# items by cascade), then COPYed from the message like a new order's (projector/rows.py).
DELETE_NORMALIZED = "DELETE FROM orders WHERE order_uid = ANY(%(uids)s)"

# Positions only move forward; the digest and timestamp are those of the record just before.
RECORD_POSITIONS = """
INSERT INTO applied_offsets AS a (topic, partition, next_offset, last_timestamp, last_digest)
SELECT %(topic)s, * FROM unnest(%(partitions)s::int[], %(next_offsets)s::bigint[],
                               %(timestamps)s::bigint[], %(digests)s::bytea[])
ON CONFLICT (topic, partition) DO UPDATE
SET next_offset = excluded.next_offset, last_timestamp = excluded.last_timestamp,
    last_digest = excluded.last_digest, updated_at = now()
WHERE a.next_offset < excluded.next_offset
"""

NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"
