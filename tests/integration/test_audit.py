"""The audit command reconciles every offset of the topic with the read model and the DLQ."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import psycopg

from emulator.stream import expected_state, stream
from harness import ROOT
from harness.processes import Projector
from orderview.settings import Settings
from projector.audit import audit
from tests import support
from tests.readmodel import wait_for_orders


def audit_command(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "projector.audit", *args],
        cwd=ROOT, env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def test_the_audit_accounts_for_every_message_then_finds_the_one_the_read_model_lost(
    clean_settings: Settings,
) -> None:
    s = clean_settings
    messages = list(stream(2_000, seed=41, invalid_share=0.1, repeat_share=0.2))
    invalid = sum(m.kind == "invalid" for m in messages)
    p = Projector(s, "projector-audited").start().wait_ready()
    try:
        await support.produce(s, [(m.key, m.value) for m in messages])
        await wait_for_orders(s, len(expected_state(messages)))
        await support.wait_until(
            lambda: p.metric("orderview_projector_consumed_total") >= len(messages), message="all consumed"
        )
    finally:
        assert p.terminate() == 0

    found = await audit(s)
    assert found.messages == len(messages)
    assert found.total("missing") == found.total("not_yet_applied") == found.total("lost") == 0
    assert found.total("dead_lettered") == invalid
    assert found.total("applied") == len(expected_state(messages))
    assert found.total("superseded") > 0 and found.total("resent") > 0
    assert sum(found.total(k) for k in ("applied", "superseded", "resent")) == len(messages) - invalid

    done = audit_command(s)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing missing" in done.stdout

    with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
        uid, partition, offset = conn.execute(
            "DELETE FROM order_snapshots WHERE order_uid = (SELECT min(order_uid) FROM order_snapshots)"
            " RETURNING order_uid, source_partition, source_offset"
        ).fetchone()
    done = audit_command(s, "--json")
    assert done.returncode == 1
    result = orjson.loads(done.stdout)
    assert {"partition": partition, "offset": offset} in result["missing"]
    assert result["totals"]["missing"] == sum(m.key == uid.encode() and m.kind != "invalid" for m in messages)
    assert result["messages"] == len(messages) and result["messages_per_s"] > 0
    assert result["value_bytes"] == sum(len(m.value) for m in messages if m.value is not None)
