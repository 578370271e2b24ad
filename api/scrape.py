"""/metrics for the whole API: every replica's series, each labelled with its `replica`.

Replicas share a port, so a scrape reaches whichever the kernel picks. Each replica writes its
own exposition to a file of a directory the supervisor gives them all (atomically, every
second and at each scrape it answers) and answers a scrape with every replica's file merged.
Its own file is written just before, and a file only ever gets newer, so no counter seen by
successive scrapes goes down, whichever replica answers (until a replica restarts: a reset of
that replica's series, as Prometheus expects). The hot path is untouched: the counters stay
plain ints, read here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

FLUSH_INTERVAL_S = 1.0


class _Families:
    """What generate_latest needs: something whose collect() yields metric families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def labelled(registry: CollectorRegistry, replica: str) -> Iterator[Metric]:
    """The registry's families, every sample with a `replica` label."""
    for family in registry.collect():
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [
            Sample(s.name, {**s.labels, "replica": replica}, s.value, s.timestamp, s.exemplar)
            for s in family.samples
        ]
        yield copy


def merged(texts: Iterable[str]) -> Iterator[Metric]:
    """Families of several expositions, one family per name with all their samples."""
    families: dict[str, Metric] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            into = families.get(family.name)
            if into is None:
                into = families[family.name] = Metric(family.name, family.documentation, family.type)
            into.samples.extend(family.samples)
    return iter(families.values())


class ReplicaFiles:
    def __init__(self, directory: Path, registry: CollectorRegistry, replica: str) -> None:
        self.directory = directory
        self.registry = registry
        self.replica = replica
        self.path = directory / f"replica-{replica}.prom"

    def write(self) -> None:
        text = generate_latest(_Families(labelled(self.registry, self.replica)))
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(text)
        os.replace(temporary, self.path)  # readers see the old file or the new, never half

    def exposition(self) -> bytes:
        """Every replica's metrics, this one's as of now."""
        self.write()
        texts = []
        for path in sorted(self.directory.glob("replica-*.prom")):
            try:
                texts.append(path.read_text())
            except FileNotFoundError:  # the supervisor is cleaning up
                continue
        return generate_latest(_Families(merged(texts)))


class OwnOnly:
    """A replica on its own (no supervisor): its metrics, labelled alike."""

    def __init__(self, registry: CollectorRegistry, replica: str) -> None:
        self.registry = registry
        self.replica = replica

    def write(self) -> None:
        pass

    def exposition(self) -> bytes:
        return generate_latest(_Families(labelled(self.registry, self.replica)))
