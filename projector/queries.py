"""The projector's SQL. The normalized tables are derived from the snapshot in SQL,
in the same transaction, so there is one definition of an order's rows."""

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

# Returns only the orders whose body changed: an identical redelivery touches nothing.
UPSERT_SNAPSHOTS = """
INSERT INTO order_snapshots AS s (order_uid, body, body_json, source_partition, source_offset)
SELECT uid, json::jsonb, json, part, off
FROM unnest(%(uids)b::text[], %(bodies)b::text[], %(partitions)b::int[], %(offsets)b::bigint[])
     AS t(uid, json, part, off)
ON CONFLICT (order_uid) DO UPDATE
SET body = excluded.body,
    body_json = excluded.body_json,
    source_partition = excluded.source_partition,
    source_offset = excluded.source_offset,
    updated_at = now()
WHERE s.body IS DISTINCT FROM excluded.body
RETURNING order_uid, (xmax = 0) AS inserted
"""

# New orders' normalized rows are COPYed from the parsed message (no conflict to
# arbitrate); changed orders are upserted from their snapshot by the statements below.
ORDER_COLUMNS = (
    "order_uid",
    "track_number",
    "entry",
    "locale",
    "internal_signature",
    "customer_id",
    "delivery_service",
    "shardkey",
    "sm_id",
    "date_created",
    "oof_shard",
)
DELIVERY_COLUMNS = ("name", "phone", "zip", "city", "address", "region", "email")
PAYMENT_COLUMNS = (
    "transaction",
    "request_id",
    "currency",
    "provider",
    "amount",
    "payment_dt",
    "bank",
    "delivery_cost",
    "goods_total",
    "custom_fee",
)
ITEM_COLUMNS = (
    "chrt_id",
    "track_number",
    "price",
    "rid",
    "name",
    "sale",
    "size",
    "total_price",
    "nm_id",
    "brand",
    "status",
)
COPY_ORDERS = f"COPY orders ({', '.join(ORDER_COLUMNS)}) FROM STDIN"
COPY_DELIVERIES = f"COPY deliveries (order_uid, {', '.join(DELIVERY_COLUMNS)}) FROM STDIN"
COPY_PAYMENTS = f"COPY payments (order_uid, {', '.join(PAYMENT_COLUMNS)}) FROM STDIN"
COPY_ITEMS = f"COPY items (order_uid, position, {', '.join(ITEM_COLUMNS)}) FROM STDIN"

UPSERT_ORDERS = """
INSERT INTO orders (order_uid, track_number, entry, locale, internal_signature, customer_id,
                    delivery_service, shardkey, sm_id, date_created, oof_shard)
SELECT s.order_uid, r.track_number, r.entry, r.locale, r.internal_signature, r.customer_id,
       r.delivery_service, r.shardkey, r.sm_id, r.date_created, r.oof_shard
FROM order_snapshots s,
     jsonb_to_record(s.body) AS r(track_number text, entry text, locale text, internal_signature text,
                                  customer_id text, delivery_service text, shardkey text, sm_id bigint,
                                  date_created timestamptz, oof_shard text)
WHERE s.order_uid = ANY(%(uids)s)
ON CONFLICT (order_uid) DO UPDATE
SET track_number = excluded.track_number, entry = excluded.entry, locale = excluded.locale,
    internal_signature = excluded.internal_signature, customer_id = excluded.customer_id,
    delivery_service = excluded.delivery_service, shardkey = excluded.shardkey,
    sm_id = excluded.sm_id, date_created = excluded.date_created, oof_shard = excluded.oof_shard
"""

UPSERT_DELIVERIES = """
INSERT INTO deliveries (order_uid, name, phone, zip, city, address, region, email)
SELECT s.order_uid, r.name, r.phone, r.zip, r.city, r.address, r.region, r.email
FROM order_snapshots s,
     jsonb_to_record(s.body -> 'delivery') AS r(name text, phone text, zip text, city text,
                                                address text, region text, email text)
WHERE s.order_uid = ANY(%(uids)s)
ON CONFLICT (order_uid) DO UPDATE
SET name = excluded.name, phone = excluded.phone, zip = excluded.zip, city = excluded.city,
    address = excluded.address, region = excluded.region, email = excluded.email
"""

UPSERT_PAYMENTS = """
INSERT INTO payments (order_uid, transaction, request_id, currency, provider, amount, payment_dt,
                      bank, delivery_cost, goods_total, custom_fee)
SELECT s.order_uid, r.transaction, r.request_id, r.currency, r.provider, r.amount, r.payment_dt,
       r.bank, r.delivery_cost, r.goods_total, r.custom_fee
FROM order_snapshots s,
     jsonb_to_record(s.body -> 'payment') AS r(transaction text, request_id text, currency text,
                                               provider text, amount bigint, payment_dt bigint, bank text,
                                               delivery_cost bigint, goods_total bigint, custom_fee bigint)
WHERE s.order_uid = ANY(%(uids)s)
ON CONFLICT (order_uid) DO UPDATE
SET transaction = excluded.transaction, request_id = excluded.request_id, currency = excluded.currency,
    provider = excluded.provider, amount = excluded.amount, payment_dt = excluded.payment_dt,
    bank = excluded.bank, delivery_cost = excluded.delivery_cost, goods_total = excluded.goods_total,
    custom_fee = excluded.custom_fee
"""

# A new version replaces the order's items: their number may change.
DELETE_ITEMS = "DELETE FROM items WHERE order_uid = ANY(%(uids)s)"

INSERT_ITEMS = """
INSERT INTO items (order_uid, position, chrt_id, track_number, price, rid, name, sale, size,
                   total_price, nm_id, brand, status)
SELECT s.order_uid, e.ordinality - 1, r.chrt_id, r.track_number, r.price, r.rid, r.name, r.sale,
       r.size, r.total_price, r.nm_id, r.brand, r.status
FROM order_snapshots s
CROSS JOIN LATERAL jsonb_array_elements(s.body -> 'items') WITH ORDINALITY AS e(item, ordinality)
CROSS JOIN LATERAL jsonb_to_record(e.item) AS r(chrt_id bigint, track_number text, price bigint,
                                                rid text, name text, sale integer, size text,
                                                total_price bigint, nm_id bigint, brand text,
                                                status integer)
WHERE s.order_uid = ANY(%(uids)s)
"""

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
