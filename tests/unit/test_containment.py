"""One message can never raise out of its batch: whatever goes wrong while judging it becomes
its own dead letter."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderview.settings import Settings
from projector.judge import Judge
from projector.messages import Incoming
from projector.validate import Rejection
from tests import strategies
from tests.support import reference_order_bytes

UID = b"b563feb7b2b84b6test"


class Exploding:
    """A validator that fails on one value the way nobody planned for."""

    def __init__(self, exc: BaseException, on: bytes) -> None:
        self.exc, self.on = exc, on

    def check(self, raw: bytes | None, key: bytes | None) -> dict | Rejection:
        if raw == self.on:
            raise self.exc
        return orjson.loads(raw)  # type: ignore[arg-type]


def projector_with(validator: object) -> Judge:
    judge = Judge(Settings().max_message_bytes)
    judge.validator = validator  # type: ignore[assignment]
    return judge


@pytest.mark.parametrize(
    "exc",
    [RecursionError("maximum recursion depth exceeded"), MemoryError(), KeyError("payment"), ValueError("")],
)
def test_an_exception_while_judging_one_message_makes_it_unprocessable_and_spares_the_others(exc):
    good = reference_order_bytes()
    bad = b'{"poison": true}'
    batch = [Incoming(0, 0, UID, good), Incoming(0, 1, b"x", bad), Incoming(0, 2, UID, good)]
    prepared = projector_with(Exploding(exc, bad)).prepare(batch)
    assert set(prepared.accepted) == {(0, 0), (0, 2)}
    [letter] = prepared.dead.values()
    assert (letter.reason, letter.path, letter.message.offset) == ("unprocessable", "$", 1)
    assert letter.error.startswith(type(exc).__name__)


def test_an_exception_whose_message_cannot_be_rendered_still_names_its_type():
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    letter = projector_with(Exploding(Unprintable(), b"{}")).prepare([Incoming(0, 0, UID, b"{}")]).dead[0, 0]
    assert letter.error == "Unprintable"


@given(
    st.lists(
        st.tuples(
            st.none() | st.binary(max_size=80),
            st.none() | st.binary(max_size=400) | strategies.hostile_documents(),
        ),
        max_size=20,
    )
)
def test_every_message_of_any_batch_is_either_accepted_or_dead_lettered(pairs):
    batch = [Incoming(0, offset, key, value) for offset, (key, value) in enumerate(pairs)]
    prepared = BATCH_PROJECTOR.prepare(batch)
    assert set(prepared.accepted) | set(prepared.dead) == {(0, m.offset) for m in batch}
    assert not set(prepared.accepted) & set(prepared.dead)


BATCH_PROJECTOR = Judge(Settings().max_message_bytes)
