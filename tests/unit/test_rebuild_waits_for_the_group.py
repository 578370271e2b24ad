"""A rebuild starts only once the projectors' consumer group is seen empty: a coordinator that
does not answer yet (a new cluster elects one first) is waited for, and is never taken for an
empty group."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError

from orderview.settings import Settings
from projector import rebuild


def _answers(monkeypatch: pytest.MonkeyPatch, answers: list[int | Exception]) -> Iterator[int]:
    """group_members answers these in turn (an exception is raised); the last one forever."""
    asked: list[int] = []

    async def group_members(settings: Settings) -> int:
        answer = answers[min(len(asked), len(answers) - 1)]
        asked.append(1)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(rebuild, "group_members", group_members)
    monkeypatch.setattr(rebuild, "GROUP_POLL_S", 0.0)
    return iter(asked)


async def test_a_coordinator_not_elected_yet_is_waited_for_then_the_empty_group_lets_the_rebuild_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = _answers(
        monkeypatch, [GroupCoordinatorNotAvailableError(), GroupCoordinatorNotAvailableError(), 0]
    )
    await rebuild.wait_for_an_empty_group(Settings(), patience_s=60.0)
    assert len(list(asked)) == 3


async def test_a_coordinator_that_never_answers_refuses_the_rebuild_in_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _answers(monkeypatch, [GroupCoordinatorNotAvailableError()])
    with pytest.raises(
        rebuild.Refused,
        match=r"did not answer within 0 s .*GroupCoordinatorNotAvailableError.*nothing was changed",
    ):
        await rebuild.wait_for_an_empty_group(Settings(), patience_s=0.0)


async def test_members_that_stay_refuse_the_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    _answers(monkeypatch, [2])
    with pytest.raises(rebuild.Refused, match="has 2 members"):
        await rebuild.wait_for_an_empty_group(Settings(), patience_s=0.0)


async def test_an_error_that_retrying_cannot_mend_is_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _answers(monkeypatch, [GroupAuthorizationFailedError()])
    with pytest.raises(GroupAuthorizationFailedError):
        await rebuild.wait_for_an_empty_group(Settings(), patience_s=60.0)
