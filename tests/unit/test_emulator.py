"""The emulator: seeded orders, their later versions and erasures, bad messages of every kind, and a
stream whose end state is known."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from emulator import Message, expected_state, stream, vocab
from emulator.__main__ import file_messages, parse_args
from emulator.orders import BAD_KINDS, OrderFactory, bad_message, copy_order
from emulator.send import Tally
from emulator.stream import BLOCK, check_arguments
from harness.orders import REFERENCE_ORDER_PATH, reference_order_bytes
from orderview.settings import get_settings
from projector.core.validate import Rejection, Validator
from schemas.formats import is_date_time, is_email

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


# --- versions, erasures and dates ----------------------------------------------------------------

START = 1_772_355_600  # 2026-03-01T09:00:00Z


def with_erasures(count: int = 3000, seed: int = 4) -> list[Message]:
    return list(
        stream(
            count,
            seed=seed,
            invalid_share=0.1,
            repeat_share=0.2,
            erase_share=0.03,
            max_bytes=MAX_BYTES,
            start=START,
            rate=2,
        )
    )


ERASING = with_erasures()


def test_an_erasure_is_a_tombstone_of_an_order_sent_before_and_not_erased_yet():
    sent: set[str] = set()
    erased: set[str] = set()
    for message in ERASING:
        if message.kind == "erase":
            assert (message.key, message.value) == (message.order_uid.encode(), None)
            assert message.order_uid in sent and message.order_uid not in erased
            erased.add(message.order_uid)
        elif message.kind == "new":
            sent.add(message.order_uid)
    assert len(erased) == Counter(m.kind for m in ERASING)["erase"] > 0


def test_nothing_of_an_erased_order_is_sent_after_its_erasure():
    erased: set[str] = set()
    for message in ERASING:
        assert message.order_uid not in erased, message
        if message.kind == "erase":
            erased.add(message.order_uid)


@pytest.mark.parametrize(("count", "erase_share"), [(3000, 0.03), (250, 0.05), (37, 0.1)])
def test_erasures_come_in_their_exact_share(count, erase_share):
    kinds = Counter(
        m.kind for m in stream(count, seed=6, repeat_share=0.2, erase_share=erase_share, max_bytes=MAX_BYTES)
    )
    assert kinds["erase"] == round(count * erase_share)
    assert kinds["repeat"] == kinds["version"] == round(count * 0.1)


def test_no_erasures_unless_asked_for():
    assert "erase" not in {m.kind for m in mixed(5000)}


def test_expected_state_leaves_erased_orders_out():
    state: dict[str, dict] = {}
    for message in ERASING:
        if message.kind == "erase":
            del state[message.order_uid]
            continue
        got = VALIDATOR.check(message.value, message.key)
        if isinstance(got, dict):
            state[got["order_uid"]] = got
    assert expected_state(ERASING) == state
    erased = {m.order_uid for m in ERASING if m.kind == "erase"}
    assert erased and not erased & set(expected_state(ERASING))


def changed_fields(before: dict, after: dict, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        return [p for key in before for p in changed_fields(before[key], after[key], f"{path}/{key}")]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            p
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for p in changed_fields(b, a, f"{path}/{i}")
        ]
    return [] if before == after else [path]


def test_a_version_advances_an_items_status_or_corrects_the_address_or_the_phone():
    factory = OrderFactory(random.Random(12))
    seen = Counter()
    for _ in range(300):
        order = factory.order()
        for _ in range(4):
            version = factory.version(order)
            [field] = changed_fields(order, version)
            if field.endswith("/status"):
                index = int(field.split("/")[2])
                before, after = order["items"][index]["status"], version["items"][index]["status"]
                assert after == vocab.ITEM_STATUSES[vocab.ITEM_STATUSES.index(before) + 1], "one step forward"
                seen["status"] += 1
            else:
                assert field in ("/delivery/address", "/delivery/phone"), field
                seen[field] += 1
            order = version
    assert seen["status"] > seen["/delivery/address"] > 0 and seen["/delivery/phone"] > 0


def test_an_address_is_mostly_corrected_rather_than_replaced():
    factory = OrderFactory(random.Random(13))
    kept_street = 0
    for _ in range(300):
        order = factory.order()
        new = copy_order(order)
        factory._correct_address(new)
        old, fixed = order["delivery"]["address"], new["delivery"]["address"]
        assert fixed != old
        kept_street += fixed.startswith(old.rpartition(" ")[0])
    assert kept_street > 150


def test_statuses_never_go_back_however_many_versions_an_order_has():
    factory = OrderFactory(random.Random(14))
    order = factory.order()
    for _ in range(100):
        version = factory.version(order)
        for before, after in zip(order["items"], version["items"], strict=True):
            assert after["status"] >= before["status"]
        order = version
    assert all(item["status"] == vocab.ITEM_STATUSES[-1] for item in order["items"])


def created(message: Message) -> float:
    return datetime.fromisoformat(orjson.loads(message.value)["date_created"]).timestamp()


def test_new_orders_are_dated_at_or_before_the_streams_time_within_a_week():
    for message in ERASING:
        if message.kind == "new":
            assert message.at - 7 * 86400 <= created(message) <= message.at
            payment = orjson.loads(message.value)["payment"]["payment_dt"]
            assert created(message) <= payment <= max(created(message), message.at)


def test_the_streams_time_moves_on_at_the_rate_from_its_start():
    assert [m.at for m in ERASING[:3]] == [START, START + 0.5, START + 1.0]


def test_recent_orders_read_varied_dates_around_the_streams_time():
    """Most were created minutes before they were sent, some hours, a few days."""
    new = [m for m in ERASING if m.kind == "new"][-200:]
    lags = [m.at - created(m) for m in new]
    assert len({datetime.fromtimestamp(created(m), UTC).date() for m in new}) >= 3
    assert len({created(m) for m in new}) >= 100
    assert sum(lag <= 120 for lag in lags) > 100
    assert sum(lag > 3600 for lag in lags) > 5


def test_the_same_seed_and_start_give_the_same_stream_and_another_start_only_other_dates():
    assert with_erasures() == ERASING
    later = list(
        stream(
            3000,
            seed=4,
            invalid_share=0.1,
            repeat_share=0.2,
            erase_share=0.03,
            max_bytes=MAX_BYTES,
            start=START + 86400,
            rate=2,
        )
    )
    assert [(m.kind, m.order_uid) for m in later] == [(m.kind, m.order_uid) for m in ERASING]
    assert [m.value for m in later] != [m.value for m in ERASING]


def test_the_start_defaults_to_now_and_reads_iso_8601():
    assert parse_args(["--start", "2026-03-01T09:00:00Z"]).start == START
    assert parse_args(["--start", "2026-03-01T11:00:00+02:00"]).start == START
    assert abs(parse_args([]).start - time.time()) < 60
    with pytest.raises(SystemExit):
        parse_args(["--start", "yesterday"])


def test_erasures_are_asked_for_on_the_command_line_and_need_new_orders_to_erase():
    assert parse_args(["--erase-share", "0.02"]).erase_share == 0.02
    with pytest.raises(SystemExit):
        parse_args(["--erase-share", "0.5", "--repeat-share", "0.5"])
    with pytest.raises(ValueError):
        check_arguments(10, 0.0, 0.0, MAX_BYTES, erase_share=1.0)


def test_the_summary_counts_erasures():
    tally = Tally()
    for message in ERASING[:500]:
        tally.record(message, None)
    assert f"  erase    {Counter(m.kind for m in ERASING[:500])['erase']}" in tally.summary()
