"""An order's history as the API answers it (api/history.py): pages whose patches replay exactly
to the versions, numbered from the oldest, with a cursor every string of its pattern decodes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import jsonpatch
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.errors import BadQuery
from api.history import (
    HISTORY_CURSOR_PATTERN,
    decode_history_cursor,
    encode_history_cursor,
    page,
    patch,
    record_time,
)
from api.views import HistoryRows, StoredVersion
from tests import strategies

APPLIED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def stored(order: dict, time: int, offset: int | None = None, **changes: object) -> StoredVersion:
    offset = time if offset is None else offset
    version = StoredVersion(time, 0, offset, 0, offset, time, 0, APPLIED, orjson.dumps(order))
    return version._replace(**changes)


def rows(versions: list[StoredVersion], earlier: int, older: int | None = None) -> HistoryRows:
    """What views.order_history reads for a first page of `earlier` history rows (newest first)."""
    *history, current = versions
    older = len(history) if older is None else older
    return HistoryRows(current, list(reversed(history))[:earlier], len(history), older)


def replay(versions: list[dict]) -> list[bytes]:
    """Each version a page shows, as canonical JSON: 1, 1.0 and true differ, key order does not."""
    orders: list[dict] = []
    for entry in versions:
        orders.append(entry["order"] if not orders else jsonpatch.apply_patch(orders[-1], entry["patch"]))
    return [canonical(order) for order in orders]


def canonical(document: object) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


@given(st.lists(strategies.orders(max_items=4), min_size=1, max_size=6))
def test_a_page_replays_to_exactly_its_versions(orders: list[dict]) -> None:
    versions = [stored(order, 1000 + i) for i, order in enumerate(orders)]
    answer = page("uid", rows(versions, earlier=len(orders)), first=True)
    assert replay(answer["versions"]) == [canonical(order) for order in orders]
    assert [v["version"] for v in answer["versions"]] == list(range(1, len(orders) + 1))
    assert answer["next_before"] is None


@given(st.lists(strategies.json_values(), min_size=2, max_size=6))
def test_patches_replay_arbitrary_json_too(documents: list[object]) -> None:
    """Whatever a body holds (a projector of another day may keep another shape)."""
    orders = [{"order_uid": "x", "value": document} for document in documents]
    versions = [stored(order, 1 + i) for i, order in enumerate(orders)]
    assert replay(page("x", rows(versions, earlier=len(orders)), first=True)["versions"]) == [
        canonical(order) for order in orders
    ]


def test_a_patch_tells_1_from_1_0_and_from_true_and_names_only_what_changed() -> None:
    before = {"a": 1, "b": [1, {"c": "x"}], "d": {"e": 1}}
    after = {"a": 1.0, "b": [True, {"c": "x"}], "d": {"e": 1}}
    assert patch(before, after) == [
        {"op": "replace", "path": "/a", "value": 1.0},
        {"op": "replace", "path": "/b/0", "value": True},
    ]
    assert patch({"k/~": {"x": 1}}, {"k/~": {"x": 2}}) == [{"op": "replace", "path": "/k~1~0/x", "value": 2}]
    assert patch({"a": [1, 2]}, {"a": [2]})[0]["path"].startswith("/a/")
    assert patch(before, before) == []


def test_a_first_page_ends_with_the_current_version_and_points_to_the_older_ones() -> None:
    orders = [{"order_uid": "u", "n": n} for n in range(5)]
    versions = [stored(order, 100 + n, offset=10 + n) for n, order in enumerate(orders)]
    answer = page("u", rows(versions, earlier=2), first=True)
    assert [(v["version"], v["current"]) for v in answer["versions"]] == [(3, False), (4, False), (5, True)]
    assert answer["versions"][0]["order"] == orders[2]
    assert answer["total_versions"] == 5
    assert answer["next_before"] == "102.0.12"  # the version of the page's oldest entry


def test_a_later_page_holds_only_history_rows_numbered_from_the_oldest() -> None:
    orders = [{"order_uid": "u", "n": n} for n in range(6)]
    versions = [stored(order, 100 + n) for n, order in enumerate(orders)]
    *history, current = versions
    # Before version 4's cursor: history rows 1..3 are older, the newest two of them on this page.
    later = HistoryRows(current, [history[2], history[1]], history_rows=5, older=3)
    answer = page("u", later, first=False)
    assert [(v["version"], v["current"]) for v in answer["versions"]] == [(2, False), (3, False)]
    assert answer["versions"][0]["order"] == orders[1]
    assert answer["next_before"] == "101.0.101"


def test_a_page_of_only_the_current_version_of_unknown_coordinates_leads_to_every_history_row() -> None:
    history = stored({"n": 1}, 5)
    current = stored({"n": 2}, -1, -1, partition=-1)
    answer = page("u", HistoryRows(current, [], history_rows=1, older=1), first=True)
    before = decode_history_cursor(answer["next_before"])
    assert before is not None and before > (history.time, history.partition, history.offset)


def test_each_entry_says_where_and_when_in_words() -> None:
    version = stored({"n": 1}, 1_767_225_600_123, offset=7, source_partition=2, timestamp_type=1)
    [entry] = page("u", HistoryRows(version, [], 0, 0), first=True)["versions"]
    assert entry["source"] == {"partition": 2, "offset": 7}
    assert entry["record_time"] == datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    assert entry["timestamp_type"] == "LogAppendTime"
    assert entry["applied_at"] == APPLIED
    unknown = stored(
        {"n": 1}, 5, source_partition=-1, source_offset=-1, record_timestamp=None, timestamp_type=None
    )
    [entry] = page("u", HistoryRows(unknown, [], 0, 0), first=True)["versions"]
    assert (entry["source"], entry["record_time"], entry["timestamp_type"]) == (None, None, None)


@pytest.mark.parametrize("timestamp", [None, -1, -(2**63), 2**63 - 1, 253_402_300_800_000])
def test_a_record_time_no_calendar_holds_is_none(timestamp: int | None) -> None:
    assert record_time(timestamp) is None


def test_a_record_time_is_utc_to_the_millisecond() -> None:
    assert record_time(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert record_time(1_700_000_000_001) == datetime(2023, 11, 14, 22, 13, 20, 1000, tzinfo=UTC)


@given(st.from_regex(HISTORY_CURSOR_PATTERN, fullmatch=True))
def test_every_string_of_the_documented_pattern_is_a_usable_cursor(raw: str) -> None:
    time, partition, offset = decode_history_cursor(raw)  # type: ignore[misc]
    assert -1 <= time < 2**63 and -1 <= partition < 2**31 and -1 <= offset < 2**63


@given(st.tuples(st.integers(-1, 10**18 - 1), st.integers(-1, 10**9 - 1), st.integers(-1, 10**18 - 1)))
def test_a_cursor_decodes_to_the_version_it_was_made_of(version: tuple[int, int, int]) -> None:
    assert decode_history_cursor(encode_history_cursor(version)) == version


@given(st.text(max_size=40).filter(lambda s: not re.fullmatch(HISTORY_CURSOR_PATTERN, s)))
def test_anything_else_is_a_bad_cursor(raw: str) -> None:
    with pytest.raises(BadQuery) as refused:
        decode_history_cursor(raw)
    assert refused.value.code == "bad_cursor"


def test_no_cursor_is_the_first_page() -> None:
    assert decode_history_cursor(None) is None
