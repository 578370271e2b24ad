"""What a record holds is judged alone (projector/core/verdicts.py): every anticipated fault of
one record becomes its own rejection, and an exception nobody anticipated is a bug of ours that
stops the worker, never a dead letter."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.orders import reference_order_bytes
from orderview.settings import Settings
from projector.batch import BatchProjector
from projector.core.records import Record
from projector.core.validate import Rejection
from projector.core.verdicts import Erase, Judge, Order, Rejected
from tests import strategies

UID = b"b563feb7b2b84b6test"
SECRET = b"secret"


class Exploding:
    """A validator that fails on one value the way nobody planned for."""

    def __init__(self, exc: BaseException, on: bytes) -> None:
        self.exc, self.on = exc, on

    def check(self, raw: bytes | None, key: bytes | None) -> dict | Rejection:
        if raw == self.on:
            raise self.exc
        return orjson.loads(raw)  # type: ignore[arg-type]


def judge_with(validator: object) -> Judge:
    judge = Judge(Settings().max_message_bytes, SECRET)
    judge.validator = validator  # type: ignore[assignment]
    return judge


@pytest.mark.parametrize(
    "exc",
    [RecursionError("maximum recursion depth exceeded"), MemoryError(), KeyError("payment"), ValueError("")],
)
def test_an_exception_nobody_anticipated_is_not_a_dead_letter_it_stops_the_batch(exc):
    good = reference_order_bytes()
    bad = b'{"poison": true}'
    batch = [Record(0, 0, UID, good), Record(0, 1, b"x", bad), Record(0, 2, UID, good)]
    projector = BatchProjector(Settings())
    projector.judge = judge_with(Exploding(exc, bad))
    with pytest.raises(type(exc)):
        projector.prepare(batch)


@given(
    st.lists(
        st.tuples(
            st.none() | st.binary(max_size=80),
            st.none() | st.binary(max_size=400) | strategies.hostile_documents(),
        ),
        max_size=20,
    )
)
def test_any_record_whatever_its_bytes_is_an_order_an_erasure_or_a_rejection_and_never_raises(pairs):
    for offset, (key, value) in enumerate(pairs):
        verdict = JUDGE(Record(0, offset, key, value))
        assert isinstance(verdict, Order | Erase | Rejected)
        if isinstance(verdict, Erase):
            assert value is None and key is not None


JUDGE = Judge(Settings().max_message_bytes, SECRET)
