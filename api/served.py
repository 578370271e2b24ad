"""What a replica has served, in the log's coordinates, so that a failover never takes it back.

An order's version is the record it came from: (partition, offset) in the orders topic. Every
snapshot a replica reads names its version, so the replica knows, per partition, the offset past
the newest version it has read (`offsets`): it has served nothing beyond. A database holds every
one of those versions, or a newer one of the same order, once its recorded positions
(`applied_offsets.next_offset`) are at or past those offsets.

The primary always does: what a replica reads there, the primary has. A database reached after
a failover may not: a promoted asynchronous standby can lack the last batches the old primary
committed, and their versions may be in a replica's cache or answers. Until the projector has
applied them again, a read of one of those orders would go back to an older version, or to no
order at all. So the replica stops vouching for the database when its LISTEN connection is lost,
and vouches again once the server at the other end of the new one holds what was served
(api/freshness.py checks that); meanwhile reads of the database wait (`wait`), cached orders are
served as they are, and the refreshes that notifications ask for are held.

Positions of another incarnation of the topic (deleted and created again: another Kafka topic id)
say nothing about these offsets: then the database's positions are taken as they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import NamedTuple

log = logging.getLogger("orderview.api.served")


class Position(NamedTuple):
    """One partition's recorded position in the read model: the next offset to apply."""

    next_offset: int
    topic_id: str | None


class Served:
    def __init__(self) -> None:
        self.offsets: dict[int, int] = {}  # partition -> one past the newest version read
        self._topic_ids: dict[int, str | None] = {}  # as the database last vouched for showed them
        self._vouched = asyncio.Event()
        self._vouched.set()  # a replica starts with the database it finds: it has served nothing

    @property
    def vouched(self) -> bool:
        return self._vouched.is_set()

    def saw(self, versions: Iterable[tuple[int | None, int | None]]) -> None:
        """Versions read from the database, as (partition, offset); None for an unknown one."""
        offsets = self.offsets
        for partition, offset in versions:
            if partition is not None and offset is not None and offset >= offsets.get(partition, 0):
                offsets[partition] = offset + 1

    def lost_sight(self) -> None:
        """The LISTEN connection is lost: the next database may be another one."""
        self._vouched.clear()

    def missing(self, positions: Mapping[int, Position]) -> dict[int, tuple[int, int]]:
        """Partitions whose served versions the database lacks: partition -> (its position, the
        offset it must reach). Empty when it holds everything served."""
        ids = {partition: position.topic_id for partition, position in positions.items()}
        if any(self._topic_ids.get(p, topic_id) != topic_id for p, topic_id in ids.items()):
            log.warning(
                "the read model's positions belong to another incarnation of the topic (it was deleted "
                "and created again): the offsets this replica served say nothing about them"
            )
            self.offsets = {p: position.next_offset for p, position in positions.items()}
        self._topic_ids.update(ids)
        found = {p: position.next_offset for p, position in positions.items()}
        return {p: (found.get(p, 0), need) for p, need in self.offsets.items() if found.get(p, 0) < need}

    def vouch(self) -> None:
        """The database holds what was served (or the replica gave up waiting): reads go on."""
        self._vouched.set()

    async def wait(self) -> None:
        """Until the replica vouches for the database again (the caller's deadline bounds it)."""
        if not self._vouched.is_set():
            await self._vouched.wait()
