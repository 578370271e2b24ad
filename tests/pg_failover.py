"""A primary and streaming standbys of a test's own, to fail over, run by `ops/postgres.sh` (the
script users run) in a run folder of their own, on ports of their own: ORDERVIEW_PG_PORT + 8 and
the four after it (below the kernel's range for outgoing connections when the session's port is:
a server killed and started again never finds its port taken by a client).

- the primary;
- `standby`: a streaming standby whose WAL stream comes through `wal`, a proxy (tests/pg_proxy.py)
  that can hold it back: from then on the standby misses what the primary commits, as an
  asynchronous standby does behind a slow or broken link. Its replay is not what is held: a
  promoted standby first replays every WAL record it received;
- `cascade`: a standby of the standby, which follows it onto its new timeline once it is promoted
  (what API replicas read from across a failover);
- `vip`: a forwarder standing for an address that follows the primary (a VIP, HAProxy with
  Patroni), which the test moves.

`crash_primary` kills the primary's postmaster (kill -9); `promote` makes the standby the primary.
`lost_commits` reads the dead primary's WAL past the point where the standby's new timeline forked
(pg_waldump): the transactions it committed that the promoted standby never had.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from harness import ROOT
from harness.scratch import unique
from orderview.settings import Settings
from tests.pg_proxy import PgProxy

T = TypeVar("T")
PORT_OFFSET = 8
POSITIONS = "SELECT partition, next_offset FROM applied_offsets WHERE topic = %(topic)s"
IN_RECOVERY = "SELECT pg_is_in_recovery()"


def _bindable(port: int) -> bool:
    """Whether a server could listen there (as servers do, past connections in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class _ProxyLoop:
    """An event loop of the proxies' own, in a thread: the test's loop blocks in synchronous
    database calls, which go through the VIP's proxy."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pg-proxies", daemon=True)
        self._thread.start()

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class FailoverCluster:
    def __init__(self, base: Settings, cascade: bool = True) -> None:
        first = base.pg_servers()[0][1] + PORT_OFFSET
        self.primary_port, self.wal_port, self.standby_port, self.cascade_port, self.vip_port = range(
            first, first + 5
        )
        self._standbys: set[int] = set()  # ports whose server `standby start` made (the rest: `start`)
        self.cascade = cascade
        self.run_dir = ROOT / ".run" / unique("failover-")
        self.admin_user, self.admin_password = base.pg_admin_user, base.pg_admin_password
        self.wal: PgProxy | None = None
        self.vip: PgProxy | None = None
        self._proxies = _ProxyLoop()

    # --- the ops script, for one server of the cluster -------------------------------------------
    def _ops(self, *args: str, primary: int, standby: int | None = None) -> str:
        env = {
            **os.environ,
            "ORDERVIEW_RUN_DIR": str(self.run_dir),
            "ORDERVIEW_PG_HOST": "127.0.0.1",
            "ORDERVIEW_PG_PORT": str(primary),
            "ORDERVIEW_PG_READ_HOST": "127.0.0.1",
            "ORDERVIEW_PG_READ_PORT": str(standby or 0),
            "ORDERVIEW_PG_ADMIN_USER": self.admin_user,
            "ORDERVIEW_PG_ADMIN_PASSWORD": self.admin_password,
        }
        done = subprocess.run(
            ["bash", "ops/postgres.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"ops/postgres.sh {' '.join(args)} failed: {done.stderr}"
        return done.stdout.strip()

    @property
    def cluster_dir(self) -> Path:
        return Path(self._ops("where", primary=self.primary_port))

    def standby_dir(self, port: int) -> Path:
        return Path(self._ops("standby", "where", primary=self.primary_port, standby=port))

    async def start(self) -> FailoverCluster:
        ports = (self.primary_port, self.wal_port, self.standby_port, self.cascade_port, self.vip_port)
        taken = [port for port in ports if not _bindable(port)]
        assert not taken, f"ports {taken} are taken: the failover cluster needs ORDERVIEW_PG_PORT + 8 to + 12"
        await asyncio.to_thread(self._ops, "start", primary=self.primary_port)
        self.wal = self._proxies.run(PgProxy("127.0.0.1", self.primary_port, port=self.wal_port).start())
        # The standby's primary, as `standby start` records it, is the proxy: its WAL comes through it.
        await self._start_standby(self.wal_port, self.standby_port)
        if self.cascade:
            await self._start_standby(self.standby_port, self.cascade_port)
        self.vip = self._proxies.run(PgProxy("127.0.0.1", self.primary_port, port=self.vip_port).start())
        return self

    async def stop(self) -> None:
        """Stop every server and proxy, and remove the run folder."""
        for proxy in (self.vip, self.wal):
            if proxy is not None:
                self._proxies.run(proxy.close())
        self._proxies.close()
        with contextlib.suppress(AssertionError):
            await asyncio.to_thread(self._ops, "standby", "stop-all", primary=self.primary_port)
        with contextlib.suppress(AssertionError):
            await asyncio.to_thread(self._ops, "stop", primary=self.primary_port)
        cluster = self.cluster_dir
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(cluster, ignore_errors=True)  # root's clusters live in postgres's home

    # --- settings that reach it -------------------------------------------------------------------
    def through_hosts(self, base: Settings) -> Settings:
        """The primary found among the hosts: the old primary, then the standby."""
        return replace(
            base,
            pg_host="127.0.0.1,127.0.0.1",
            pg_port=f"{self.primary_port},{self.standby_port}",
            pg_target_session_attrs="read-write",
        )

    def through_vip(self, base: Settings) -> Settings:
        """The primary behind one address that the test moves."""
        return replace(base, pg_host="127.0.0.1", pg_port=str(self.vip_port))

    def reading_the_cascade(self, settings: Settings) -> Settings:
        return replace(settings, pg_read_host="127.0.0.1", pg_read_port=str(self.cascade_port))

    # --- faults -----------------------------------------------------------------------------------
    def hold_wal(self) -> None:
        """The standby receives no more WAL: what the primary commits from now on, it lacks."""
        assert self.wal is not None
        self.wal.frozen = True

    def data_dir(self, port: int) -> Path:
        return (self.standby_dir(port) if port in self._standbys else self.cluster_dir) / "data"

    async def _start_standby(self, primary: int, port: int) -> None:
        await asyncio.to_thread(self._ops, "standby", "start", primary=primary, standby=port)
        self._standbys.add(port)

    async def crash_primary(self) -> None:
        """kill -9 of the primary's postmaster; its backends notice and exit."""
        pid_file = self.data_dir(self.primary_port) / "postmaster.pid"
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        for _ in range(200):
            if _refuses(self.primary_port):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the killed primary still accepts connections after 10 s")

    async def promote(self) -> None:
        await asyncio.to_thread(
            self._ops, "standby", "promote", primary=self.wal_port, standby=self.standby_port
        )
        for _ in range(200):
            if not await asyncio.to_thread(self._in_recovery, self.standby_port):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the promoted standby is still in recovery after 10 s")

    async def move_vip(self) -> None:
        assert self.vip is not None
        await asyncio.to_thread(self._proxies.run, self.vip.move("127.0.0.1", self.standby_port))

    async def fail_over(self, lag_s: float, decide_s: float) -> int:
        """The whole failover, again and again (chaos): the standby misses `lag_s` of WAL, the
        primary dies, `decide_s` later the standby is promoted and the VIP moves to it; then a new
        standby of it takes the dead primary's port, for the next one. Returns the transactions
        the promoted standby lacked."""
        self.hold_wal()
        await asyncio.sleep(lag_s)
        await self.crash_primary()
        await asyncio.sleep(decide_s)
        await self.promote()
        await self.move_vip()
        lost = await asyncio.to_thread(self.lost_commits)
        dead, self.primary_port, self.standby_port = self.primary_port, self.standby_port, self.primary_port
        if dead in self._standbys:  # a former standby's copy: made afresh
            await asyncio.to_thread(self._ops, "standby", "destroy", primary=self.primary_port, standby=dead)
        assert self.wal is not None
        await asyncio.to_thread(self._proxies.run, self.wal.move("127.0.0.1", self.primary_port))
        self.wal.frozen = False
        await self._start_standby(self.wal_port, self.standby_port)
        return lost

    # --- what they hold ---------------------------------------------------------------------------
    def _admin(self, port: int, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=port,
            dbname=database,
            user=self.admin_user,
            password=self.admin_password,
            autocommit=True,
            connect_timeout=3,
        )

    def _in_recovery(self, port: int) -> bool:
        with self._admin(port) as conn:
            return conn.execute(IN_RECOVERY).fetchone()[0]  # type: ignore[index]

    def positions(self, port: int, database: str, topic: str) -> dict[int, int]:
        """One server's recorded positions of the topic: partition -> next offset."""
        with self._admin(port, database) as conn:
            return dict(conn.execute(POSITIONS, {"topic": topic}).fetchall())  # type: ignore[arg-type]

    def lost_commits(self) -> int:
        """Transactions the dead primary committed past the fork of the promoted standby's timeline."""
        history = sorted((self.data_dir(self.standby_port) / "pg_wal").glob("*.history"))
        assert history, "the promoted standby has no timeline history file"
        # Its last line is the switch to the newest timeline: "<parent timeline>\t<switch point>\t<reason>".
        parent, fork = history[-1].read_text().strip().splitlines()[-1].split()[:2]
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        dump = subprocess.run(
            [
                str(bindir / "pg_waldump"),
                *("-p", str(self.data_dir(self.primary_port) / "pg_wal")),
                *("-t", parent, "-s", fork, "-r", "Transaction"),
            ],
            capture_output=True,
            text=True,
        )
        # It reads to the end of the WAL written, and says so by failing on the first invalid record.
        return sum(1 for line in dump.stdout.splitlines() if "desc: COMMIT" in line)
