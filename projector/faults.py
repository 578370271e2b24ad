"""What a failure is, and what the worker does about it.

Three kinds, and nothing else:
- one message's fault, anticipated: bad bytes, the schema, the invariants, the size, forged
  redrive headers (projector/core/verdicts.py), or rows the database refuses while it takes a
  valid order of its own (projector/adapters/postgres.py: the canary). It becomes that message's
  dead letter and the stream goes on.
- an outage: the database or the broker cannot be reached or answered late, a topic is missing.
  The batch is rolled back and retried with capped backoff; /readyz says what is down.
- anything else: a bug, a privilege revoked, a position the log cannot have produced, a plan whose
  fates do not add up. The worker stops at once, loudly, with a non-zero exit status and nothing
  of the interrupted batch recorded or committed; whoever restarts it (compose, `make run`) starts
  again from the last durable position. An error nobody anticipated never turns into progress.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import psycopg
from aiokafka.errors import KafkaError, KafkaTimeoutError, KafkaUnavailableError

from orderview import refusals
from projector.core.plan import FatesBroken as FatesBroken
from projector.core.plan import UntrustedPosition as UntrustedPosition

log = logging.getLogger("orderview.projector")

# sysexits.h: EX_SOFTWARE for an error nobody anticipated, EX_DATAERR for a read model that
# does not match the log.
EXIT_FAILED = 70
EXIT_UNTRUSTED_POSITION = 65

# The database refuses one event's rows (a constraint, a number out of range, a row too big for an
# index): that event's fault if the database takes a valid order of its own (the canary), found by
# writing halves of the batch, then halves of the refused halves, down to single events.
EVENT_FAULTS = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded)


class SystemicRefusal(Exception):
    """The database refuses every valid order the same way: its fault, not the orders'."""


class PartitionBusy(Exception):
    """Another session owns partitions of this batch: a worker of an older consumer generation
    finishing its batch, or a rebuild. Waited out like an outage."""

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions
        super().__init__(
            f"partition {', '.join(map(str, partitions))} of the orders topic is being written by "
            "another projector (a previous owner finishing its batch, or a rebuild); waiting for it"
        )


class TopicMissing(Exception):
    """A topic the worker needs does not exist: not a fault of the worker's, which waits, not
    ready, saying which topic and how to create it."""

    def __init__(self, topic: str, role: str) -> None:
        self.topic = topic
        super().__init__(
            f"the {role} topic {topic!r} does not exist: create it (python -m orderview.bootstrap "
            f"creates the orders and dead-letter topics with the project's settings)"
        )


def outage(exc: BaseException) -> str | None:
    """What is down, when `exc` means the database or the broker is unreachable or slow, or a
    topic is missing."""
    if isinstance(exc, TopicMissing | PartitionBusy):
        return str(exc)
    if (refused := refusals.database(exc, "projector")) is not None:  # a setting: one sentence
        return refused
    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, EVENT_FAULTS):
        return f"database unavailable: {describe(exc)}"
    if isinstance(exc, KafkaError) and (
        exc.retriable or isinstance(exc, KafkaTimeoutError | KafkaUnavailableError)
    ):
        return f"broker unavailable: {describe(exc)}"
    return None


def stop_worker(why: str, exc: BaseException | None = None, status: int = EXIT_FAILED) -> NoReturn:
    """Log why and end the process now: no cleanup that could acknowledge, commit or retry.

    os._exit, not sys.exit: a clean shutdown runs Faust's and aiokafka's stop paths, which may
    wait on the very thing that failed; what is durable is already in PostgreSQL.
    """
    try:
        log.critical(
            "stopping the worker: %s",
            why,
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
            extra={"exit_status": status},
        )
        logging.shutdown()
    finally:
        sys.stderr.flush()
        os._exit(status)


async def close_quietly(closable: object, close: str = "close") -> None:
    """Close a connection or client of a service that may be gone: one that fails to close is
    gone either way."""
    try:
        await getattr(closable, close)()
    except Exception:
        pass


def describe(exc: BaseException, limit: int = 200) -> str:
    """`Type: message`, the message clipped; never raises."""
    try:
        text = str(exc).strip()
    except Exception:  # a message that cannot even be rendered still has a type
        text = ""
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__
