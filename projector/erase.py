"""Erase orders, and say what of them remains where.

    python -m projector.erase b563feb7b2b84b6test [...]    a tombstone for each, then what remains
    python -m projector.erase --dry-run b563feb7b2b84b6test  only what holds the order now

A tombstone (the order's key, no value) is Kafka's delete of a key: the projector erases the order
from every table of the read model and from the API's caches, as a version like any other (an
older version arriving later does not bring it back). What the read model cannot erase is listed:
- the orders topic: its records of the order stay until compaction removes them (a topic whose
  `cleanup.policy` includes `compact` drops a key's older records, then the tombstone itself after
  `delete.retention.ms`), or retention deletes them; a topic that does neither keeps them;
- the dead-letter topic: copies of the order's bad records, which Kafka cannot delete one by one;
  `kafka-delete-records` deletes a partition's records up to an offset (all letters before it too).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from orderview import jsonlog, kafka_clients
from orderview.settings import Settings, get_settings
from projector.adapters.dead_letters import letters_of
from projector.adapters.kafka import scan

ORDER_UID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


@dataclass
class Remains:
    """Where an order's bytes still are, by topic: (partition, offset) of each record."""

    topic: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    letters: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    compacted: bool = False


async def erase(settings: Settings, uids: Sequence[str], dry_run: bool = False) -> Remains:
    if not dry_run:
        producer = kafka_clients.producer(settings)  # acks=all, idempotent
        await producer.start()
        try:
            for uid in uids:
                await (await producer.send(settings.orders_topic, value=None, key=uid.encode()))
        finally:
            await producer.stop()
    return await remains(settings, set(uids))


async def remains(settings: Settings, uids: set[str]) -> Remains:
    found = Remains({uid: [] for uid in uids}, {uid: [] for uid in uids})
    keys = {uid.encode(): uid for uid in uids}
    async for _, records in scan(settings, settings.orders_topic):
        for r in records:
            if r.key in keys and r.value is not None:
                found.topic[keys[r.key]].append((r.partition, r.offset))
    async for record, _, _ in letters_of(settings):
        if record.key in keys:
            found.letters[keys[record.key]].append((record.partition, record.offset))
    found.compacted = await _compacted(settings)
    return found


async def _compacted(settings: Settings) -> bool:
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.orders_topic)]
        )
        for _, _, _, _, entries in response.resources:
            for name, value, *_ in entries:
                if name == "cleanup.policy":
                    return "compact" in (value or "")
    finally:
        await admin.close()
    return False


def report(found: Remains, settings: Settings, dry_run: bool) -> str:
    lines = []
    for uid in sorted(found.topic):
        at = found.topic[uid]
        lines.append(
            f"{uid}: {'would be erased' if dry_run else 'erased'} from the read model and the API's caches"
        )
        if at:
            until = (
                "until compaction removes them"
                if found.compacted
                else "for as long as the topic keeps records"
            )
            shown = ", ".join(f"{p}:{o}" for p, o in at[:10])
            lines.append(f"  {settings.orders_topic} holds {len(at)} of its records ({shown}) {until}")
        letters = found.letters[uid]
        if letters:
            shown = ", ".join(f"{p}:{o}" for p, o in letters[:10])
            lines.append(
                f"  {settings.dlq_topic} holds {len(letters)} dead letters of it ({shown}): Kafka deletes no "
                "single record; kafka-delete-records deletes a partition's records up to an offset"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m projector.erase",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("uids", nargs="+", metavar="ORDER_UID")
    parser.add_argument("--dry-run", action="store_true", help="send no tombstone; say what holds the orders")
    args = parser.parse_args(argv)
    bad = [uid for uid in args.uids if not ORDER_UID.match(uid)]
    if bad:
        parser.error(f"not an order_uid (1 to 64 of A-Z a-z 0-9 _ -): {bad[0]!r}")
    settings = get_settings()
    jsonlog.setup("WARNING")
    found = asyncio.run(erase(settings, args.uids, dry_run=args.dry_run))
    print(report(found, settings, args.dry_run))
    sys.exit(0)


if __name__ == "__main__":
    main()
