"""order_uids recently found absent: a bounded LRU with a time limit, so a flood of unknown ids
costs one query per id, not one per request.

An entry is trusted only while LISTEN is up: a NOTIFY for an order forgets it at once (a new
order is visible immediately), and losing LISTEN forgets everything, since notifications may be
missed until it is back. `epoch` tells a lookup that started before such a change not to record
what it found.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from time import monotonic


class MissingOrders:
    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries = max(0, max_entries)
        self.ttl_s = ttl_s
        self._until: OrderedDict[str, float] = OrderedDict()
        self.trusted = False  # True while LISTEN is up
        self.epoch = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._until)

    def known(self, order_uid: str) -> bool:
        """Whether `order_uid` was found absent recently (counts a hit)."""
        until = self._until.get(order_uid)
        if until is None:
            return False
        if until < monotonic():
            del self._until[order_uid]
            return False
        self.hits += 1
        return True

    def add(self, order_uids: Iterable[str], epoch: int) -> None:
        """Record ids a lookup begun at `epoch` did not find, unless trust changed since."""
        if not self.trusted or epoch != self.epoch or self.max_entries == 0:
            return
        until = monotonic() + self.ttl_s
        entries = self._until
        for uid in order_uids:
            entries[uid] = until
            entries.move_to_end(uid)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def forget(self, order_uids: Iterable[str]) -> None:
        """These orders changed (a NOTIFY): they exist now."""
        entries = self._until
        for uid in order_uids:
            entries.pop(uid, None)

    def trust(self, listening: bool) -> None:
        """LISTEN came up or went down: forget everything, and record only while it is up."""
        self._until.clear()
        self.trusted = listening
        self.epoch += 1
