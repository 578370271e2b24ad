"""What the project's command lines share."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime


def iso_time_ms(text: str) -> int:
    """An ISO 8601 time (Z or an offset; without one, UTC) as milliseconds since the epoch, or an
    argparse error naming it."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
