"""The emulator: seeded orders, bad messages of every kind, and a stream whose end state is known."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import orjson
import pytest

from emulator import Message, expected_state, stream
from emulator.__main__ import file_messages, parse_args
from emulator.orders import BAD_KINDS, OrderFactory, bad_message
from emulator.send import Tally
from emulator.stream import BLOCK, check_arguments
from orderview.settings import get_settings
from projector.validate import Rejection, Validator
from schemas.formats import is_date_time, is_email
from tests.support import REFERENCE_ORDER_PATH, reference_order_bytes

MAX_BYTES = 64 * 1024
VALIDATOR = Validator(max_bytes=MAX_BYTES)


def mixed(count: int = 2000, seed: int = 42) -> list[Message]:
    return list(stream(count, seed=seed, invalid_share=0.1, repeat_share=0.2, max_bytes=MAX_BYTES))


MIXED = mixed()


# --- orders --------------------------------------------------------------------------------------


def test_generated_orders_are_valid_and_keyed_by_their_uid():
    for message in stream(500, seed=1):
        assert message.kind == "new"
        assert message.key == message.order_uid.encode()
        assert VALIDATOR.check(message.value, message.key) == orjson.loads(message.value)


def test_generated_orders_look_real():
    order = OrderFactory(random.Random(3)).order()
    assert is_email(order["delivery"]["email"])
    assert is_date_time(order["date_created"]) and order["date_created"].endswith("Z")
    assert order["delivery"]["phone"].startswith("+")
    assert order["payment"]["transaction"] == order["order_uid"]
    for item in order["items"]:
        assert item["total_price"] == item["price"] * (100 - item["sale"]) // 100


def test_order_uids_are_unique():
    uids = [m.order_uid for m in stream(20_000, seed=5)]
    assert len(set(uids)) == len(uids)


def test_a_new_version_keeps_the_uid_changes_something_and_stays_valid():
    rng = random.Random(8)
    factory = OrderFactory(rng)
    for _ in range(200):
        order = factory.order()
        version = factory.version(order)
        assert version["order_uid"] == order["order_uid"]
        assert version != order
        assert isinstance(VALIDATOR.check(orjson.dumps(version), version["order_uid"].encode()), dict)


@pytest.mark.parametrize("defect", BAD_KINDS)
def test_each_bad_kind_is_rejected_with_its_declared_reason(defect):
    rng = random.Random(defect)
    factory = OrderFactory(rng)
    for _ in range(30):
        bad = bad_message(rng, factory.order(), max_bytes=MAX_BYTES, defect=defect)
        got = VALIDATOR.check(bad.value, bad.key)
        assert isinstance(got, Rejection), bad.value[:200]
        assert got.reason == bad.reason == BAD_KINDS[defect][0], (got, bad.value[:200])


def test_an_oversize_message_is_one_byte_over_the_limit():
    bad = bad_message(
        random.Random(1), OrderFactory(random.Random(1)).order(), max_bytes=MAX_BYTES, defect="too_large"
    )
    assert len(bad.value) == MAX_BYTES + 1


# --- the stream ----------------------------------------------------------------------------------


def test_the_same_seed_gives_a_byte_identical_stream():
    assert mixed(seed=42) == MIXED


def test_another_seed_gives_another_stream():
    assert [m.value for m in mixed(seed=43)] != [m.value for m in MIXED]


@pytest.mark.parametrize(
    ("count", "invalid_share", "repeat_share"),
    [(2000, 0.1, 0.2), (250, 0.07, 0.33), (1, 0.0, 0.0), (37, 0.5, 0.25)],
)
def test_the_counts_per_kind_match_the_shares_exactly(count, invalid_share, repeat_share):
    kinds = Counter(
        m.kind
        for m in stream(
            count, seed=9, invalid_share=invalid_share, repeat_share=repeat_share, max_bytes=MAX_BYTES
        )
    )
    assert sum(kinds.values()) == count
    assert kinds["invalid"] == round(count * invalid_share)
    assert kinds["repeat"] == round(count * repeat_share / 2)
    assert kinds["version"] == round(count * repeat_share / 2)


def test_every_prefix_of_an_endless_stream_is_close_to_the_shares():
    messages = stream(0, seed=2, invalid_share=0.1, repeat_share=0.2, max_bytes=MAX_BYTES)
    prefix = [next(messages) for _ in range(10 * BLOCK)]
    assert Counter(m.kind for m in prefix[:BLOCK])["invalid"] == 10
    assert Counter(m.kind for m in prefix)["invalid"] == 100


def test_the_first_message_is_a_new_order_when_repeats_are_asked_for():
    for seed in range(20):
        first_valid = next(m for m in stream(10, seed=seed, repeat_share=0.8) if m.kind != "invalid")
        assert first_valid.kind == "new"


def test_every_invalid_message_is_rejected_with_exactly_its_declared_reason():
    for message in MIXED:
        got = VALIDATOR.check(message.value, message.key)
        if message.kind == "invalid":
            assert isinstance(got, Rejection) and got.reason == message.reason, (message, got)
        else:
            assert got == orjson.loads(message.value), (message, got)


def test_invalid_messages_come_in_many_kinds_and_every_reason():
    invalid = [m for m in mixed(5000) if m.kind == "invalid"]
    assert {m.reason for m in invalid} == {"decode", "schema", "invariant", "too_large"}
    assert len({m.defect for m in invalid}) >= len(BAD_KINDS) - 1


def test_invalid_messages_carry_the_uid_they_pretend_to_have_as_key():
    for message in MIXED:
        if message.kind == "invalid" and message.defect != "key_mismatch":
            assert message.key == message.order_uid.encode()


def test_a_repeat_is_the_latest_value_of_its_order_again():
    latest: dict[str, bytes] = {}
    for message in MIXED:
        if message.kind == "repeat":
            assert message.value == latest[message.order_uid]
        if message.kind in ("new", "version"):
            latest[message.order_uid] = message.value


def test_a_version_is_a_changed_order_already_sent():
    latest: dict[str, bytes] = {}
    for message in MIXED:
        if message.kind == "version":
            assert message.order_uid in latest and message.value != latest[message.order_uid]
        if message.kind in ("new", "version"):
            latest[message.order_uid] = message.value


def test_some_invalid_messages_are_bad_updates_of_sent_orders():
    sent: set[str] = set()
    bad_updates = 0
    for message in MIXED:
        bad_updates += message.kind == "invalid" and message.order_uid in sent
        if message.kind == "new":
            sent.add(message.order_uid)
    assert bad_updates > 0


def test_expected_state_is_the_fold_of_what_the_validator_accepts():
    state: dict[str, dict] = {}
    for message in MIXED:
        got = VALIDATOR.check(message.value, message.key)
        if isinstance(got, dict):
            state[got["order_uid"]] = got
    assert expected_state(MIXED) == state
    assert len(state) == Counter(m.kind for m in MIXED)["new"]


@pytest.mark.parametrize(
    ("count", "invalid_share", "repeat_share", "max_bytes"),
    [
        (-1, 0, 0, MAX_BYTES),
        (1, 1.5, 0, MAX_BYTES),
        (1, 0.6, 0.6, MAX_BYTES),
        (1, 0.5, 0.5, MAX_BYTES),
        (1, 0, 0, 100),
    ],
)
def test_impossible_arguments_are_refused(count, invalid_share, repeat_share, max_bytes):
    with pytest.raises(ValueError):
        check_arguments(count, invalid_share, repeat_share, max_bytes)


# --- the command line ----------------------------------------------------------------------------


def test_files_are_sent_untouched_keyed_by_their_order_uid():
    [message] = file_messages([REFERENCE_ORDER_PATH])
    assert message.value == reference_order_bytes()
    assert message.key == b"b563feb7b2b84b6test"
    assert message.kind == "file"


def test_a_file_without_an_order_uid_is_refused(tmp_path: Path):
    path = tmp_path / "x.json"
    path.write_bytes(b"[1, 2]")
    with pytest.raises(ValueError):
        file_messages([path])


def test_endless_runs_need_a_rate():
    with pytest.raises(SystemExit):
        parse_args(["--count", "0"])
    assert parse_args(["--count", "0", "--rate", "10"]).count == 0


def test_defaults_come_from_the_settings_and_a_seed_is_always_chosen():
    args = parse_args([])
    settings = get_settings()
    assert (args.bootstrap, args.topic) == (settings.kafka_bootstrap, settings.orders_topic)
    assert args.max_bytes == settings.max_message_bytes
    assert isinstance(args.seed, int)


def test_the_summary_counts_by_kind_and_invalid_reason():
    tally = Tally()
    for message in MIXED[:300]:
        tally.record(message, None)
    tally.record(MIXED[0], TimeoutError())
    summary = tally.summary()
    kinds = Counter(m.kind for m in MIXED[:300])
    assert "sent 300 messages" in summary
    assert f"  invalid  {kinds['invalid']}" in summary
    assert "not sent 1:" in summary and "new: TimeoutError 1" in summary
