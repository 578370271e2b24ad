"""Order emulator: seeded, realistic order events (and bad ones) for the `orders` topic.

`python -m emulator --help` sends them to Kafka; `stream()` is the same stream for tests.
"""

from emulator.stream import Message, expected_state, stream

__all__ = ["Message", "expected_state", "stream"]
