"""What each stall of a chaos run was waiting for: the faults it overlapped and what the workers
logged meanwhile (their warnings and errors: a session timed out, a coordinator lost, a retry
against the database), so a stall longer than its faults explain stands out."""

from __future__ import annotations

import datetime
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

STALL_NOTE_S = 5.0  # stalls at least this long are listed and explained
BEFORE_S = 15.0  # a fault this long before a stall began may be its cause (a session timeout is 10 s)
LEVELS = frozenset({"warning", "error", "critical"})
SHOWN = 4  # log messages shown per stall, the most frequent first


@dataclass(frozen=True, slots=True)
class Stall:
    """A partition behind what was sent whose recorded position stood still (monotonic seconds)."""

    partition: int
    since: float
    until: float

    @property
    def seconds(self) -> float:
        return self.until - self.since


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    began: float  # monotonic seconds
    ended: float


@dataclass(frozen=True, slots=True)
class LogLine:
    at: float  # monotonic seconds
    worker: str
    text: str  # logger and message, shortened


def log_lines(paths: Iterable[Path], clock: float | None = None) -> list[LogLine]:
    """Warnings and errors of the workers' JSON logs, on the monotonic clock (`clock`: wall − monotonic)."""
    clock = time.time() - time.monotonic() if clock is None else clock
    found: list[LogLine] = []
    for path in paths:
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for raw in lines:
            try:
                entry = orjson.loads(raw)
                if entry.get("level") not in LEVELS:
                    continue
                wall = datetime.datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
            except (orjson.JSONDecodeError, KeyError, ValueError, AttributeError):
                continue  # not one of our JSON lines (a traceback's continuation)
            logger = str(entry.get("logger", "")).rsplit(".", 1)[-1]
            found.append(LogLine(wall - clock, path.stem, f"{logger}: {str(entry.get('msg', ''))[:90]}"))
    return sorted(found, key=lambda line: line.at)


def explain(stall: Stall, faults: Sequence[Fault], lines: Sequence[LogLine], started: float) -> str:
    """One line: the stall, the faults it overlapped, and the workers' most frequent complaints."""
    near = [f for f in faults if f.began <= stall.until and f.ended >= stall.since - BEFORE_S]
    said = Counter(line.text for line in lines if stall.since <= line.at <= stall.until)
    what = (
        ", ".join(
            f"{f.kind} {f.began - started:.0f}–{f.ended - started:.0f} s"
            + (
                f" (ended {stall.until - f.ended:.1f} s before the stall did)"
                if f.ended < stall.until
                else ""
            )
            for f in near
        )
        or "no fault"
    )
    logged = "; ".join(f"{text} ×{n}" for text, n in said.most_common(SHOWN)) or "nothing"
    return (
        f"partition {stall.partition} stood {stall.seconds:.1f} s "
        f"({stall.since - started:.0f}–{stall.until - started:.0f} s): faults {what}; workers logged {logged}"
    )
