-- The read model of the `orders` topic. Disposable: `python -m projector.rebuild`
-- replays the topic into empty tables and gets the same rows back.

-- One row per order_uid, the latest version. The body is the accepted message,
-- parsed; the normalized tables below are derived from it in the same transaction.
-- body_json is the same message as compact JSON text in the sender's key order: the
-- bytes the API serves, so a replica warms its cache without re-serializing (jsonb
-- keeps no key order).
CREATE TABLE order_snapshots (
    order_uid        text        PRIMARY KEY,
    body             jsonb       NOT NULL,
    body_json        text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- Boot warm-up and GET /orders read the most recently changed orders first.
CREATE INDEX order_snapshots_recent ON order_snapshots (updated_at DESC, order_uid DESC);

CREATE TABLE orders (
    order_uid          text        PRIMARY KEY,
    track_number       text        NOT NULL,
    entry              text        NOT NULL,
    locale             text        NOT NULL,
    internal_signature text        NOT NULL,
    customer_id        text        NOT NULL,
    delivery_service   text        NOT NULL,
    shardkey           text        NOT NULL,
    sm_id              bigint      NOT NULL,
    date_created       timestamptz NOT NULL,
    oof_shard          text        NOT NULL
);

CREATE TABLE deliveries (
    order_uid text PRIMARY KEY REFERENCES orders ON DELETE CASCADE,
    name      text NOT NULL,
    phone     text NOT NULL,
    zip       text NOT NULL,
    city      text NOT NULL,
    address   text NOT NULL,
    region    text NOT NULL,
    email     text NOT NULL
);

-- Money is in minor units, as in the message: integers, never floats.
CREATE TABLE payments (
    order_uid     text   PRIMARY KEY REFERENCES orders ON DELETE CASCADE,
    transaction   text   NOT NULL,
    request_id    text   NOT NULL,
    currency      text   NOT NULL,
    provider      text   NOT NULL,
    amount        bigint NOT NULL CHECK (amount >= 0),
    payment_dt    bigint NOT NULL,
    bank          text   NOT NULL,
    delivery_cost bigint NOT NULL CHECK (delivery_cost >= 0),
    goods_total   bigint NOT NULL CHECK (goods_total >= 0),
    custom_fee    bigint NOT NULL CHECK (custom_fee >= 0)
);

CREATE TABLE items (
    order_uid    text    NOT NULL REFERENCES orders ON DELETE CASCADE,
    position     integer NOT NULL,
    chrt_id      bigint  NOT NULL,
    track_number text    NOT NULL,
    price        bigint  NOT NULL CHECK (price >= 0),
    rid          text    NOT NULL,
    name         text    NOT NULL,
    sale         integer NOT NULL,
    size         text    NOT NULL,
    total_price  bigint  NOT NULL CHECK (total_price >= 0),
    nm_id        bigint  NOT NULL,
    brand        text    NOT NULL,
    status       integer NOT NULL,
    PRIMARY KEY (order_uid, position)
);

-- The next offset to apply per partition, written in the same transaction as the
-- rows: a message below it is a redelivery and is skipped.
CREATE TABLE applied_offsets (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
