"""The parts everything stands on are real: the broker, the database, the roles, the scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg import sql

from harness import scratch
from harness.ports import free_port, free_port_pair
from orderview.bootstrap import create_database, drop_database, migrate
from orderview.settings import Settings
from tests import support

ROOT = Path(__file__).resolve().parents[2]


async def test_committed_offset_is_where_the_next_group_member_resumes(clean_settings: Settings) -> None:
    s = clean_settings
    await support.produce(s, [(b"k", f"m{i}".encode()) for i in range(10)])
    group = scratch.unique("roundtrip-")

    first = AIOKafkaConsumer(
        s.orders_topic,
        bootstrap_servers=s.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=4,
    )
    await first.start()
    try:
        got = []
        while len(got) < 4:
            for records in (await first.getmany(timeout_ms=1000, max_records=4 - len(got))).values():
                got.extend(records)
        tp = TopicPartition(got[0].topic, got[0].partition)
        await first.commit({tp: got[-1].offset + 1})
    finally:
        await first.stop()

    second = AIOKafkaConsumer(
        s.orders_topic,
        bootstrap_servers=s.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await second.start()
    try:
        rest = []
        while len(got) + len(rest) < 10:
            for records in (await second.getmany(timeout_ms=1000)).values():
                rest.extend(records)
    finally:
        await second.stop()
    values = [r.value for r in got + rest]
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(10))
    assert len(values) == 10, "the second member resumed after the committed offset"


async def test_orders_topic_is_an_event_log_with_three_partitions(settings: Settings) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        assert len(await producer.partitions_for(settings.orders_topic)) == settings.orders_partitions
    finally:
        await producer.stop()


def test_api_role_is_refused_an_insert(settings: Settings) -> None:
    with psycopg.connect(settings.dsn("api")) as conn:
        conn.execute("SELECT count(*) FROM orders")  # it can read
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO applied_offsets (topic, partition, next_offset) VALUES ('t', 0, 1)")


def test_projector_role_can_write(settings: Settings) -> None:
    with psycopg.connect(settings.dsn("projector")) as conn:
        conn.execute(
            "INSERT INTO applied_offsets (topic, partition, next_offset) VALUES ('write-test', 0, 1)"
        )
        conn.rollback()


def _schema(settings: Settings) -> list[tuple]:
    with psycopg.connect(settings.dsn("owner")) as conn:
        return conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall()


def test_migrations_applied_twice_leave_the_schema_unchanged(settings: Settings) -> None:
    before = _schema(settings)
    assert migrate(settings) == []
    assert _schema(settings) == before


@pytest.mark.slow
def test_make_up_twice_is_a_no_op_and_make_down_leaves_nothing_of_ours() -> None:
    """A second Kafka and PostgreSQL, on other ports and in a run folder of their own."""
    run_dir = ROOT / ".run" / scratch.unique("updown-")
    env = {
        **os.environ,
        "ORDERVIEW_RUN_DIR": str(run_dir),
        # Free ports, not fixed ones: another checkout's test run may use any fixed pair.
        "ORDERVIEW_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port_pair()}",
        "ORDERVIEW_PG_PORT": str(free_port()),
    }

    def make(target: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "-C", str(ROOT), target], env=env, capture_output=True, text=True, timeout=300
        )

    try:
        first = make("up")
        assert first.returncode == 0, first.stderr
        assert _processes_in(run_dir), "make up started Kafka and PostgreSQL"
        second = make("up")
        assert second.returncode == 0, second.stderr
        assert "starting" not in second.stderr, second.stderr
        assert "already" in second.stderr
    finally:
        down = make("down")
    assert down.returncode == 0, down.stderr
    assert not _processes_in(run_dir), "a process started by `make up` is still running"
    shutil.rmtree(run_dir, ignore_errors=True)


def _processes_in(run_dir: Path) -> list[str]:
    # -ww: without a terminal, ps cuts lines at 80 columns, and a long clone path hid the run folder.
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(run_dir) in line]


def test_compose_file_describes_the_same_stack_with_real_settings() -> None:
    """Every ORDERVIEW_ variable in compose.yaml is one that settings.py reads (the real Compose
    loads the file in tests/unit/test_compose.py)."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "bootstrap", "projector", "api", "emulator", "prometheus"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["postgres"]["image"].startswith("postgres:")
    assert "${ORDERVIEW_PUBLISH_ADDRESS:-127.0.0.1}:8081:8081" in services["api"]["ports"]
    for name in ("kafka", "postgres", "projector", "api", "emulator"):  # a worker that stops is restarted
        assert services[name]["restart"] == "unless-stopped", name
    for name, service in services.items():  # published on loopback unless told otherwise
        for port in service.get("ports", []):
            assert port.startswith("${ORDERVIEW_PUBLISH_ADDRESS:-127.0.0.1}:"), (name, port)
    for name in ("bootstrap", "projector", "api", "emulator"):  # no default passwords to refuse
        environment = services[name]["environment"]
        for role in ("ADMIN", "OWNER", "PROJECTOR", "API"):
            assert environment[f"ORDERVIEW_PG_{role}_PASSWORD_FILE"] == (
                f"/run/orderview/passwords/ORDERVIEW_PG_{role}_PASSWORD"
            ), name
    users = [
        line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")
    ]
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"
    assert_observability_profile_scrapes_the_stack(services)
    known = set(Settings().to_env())
    for name, service in services.items():
        for variable in service.get("environment", {}):
            if variable.startswith("ORDERVIEW_"):
                assert variable.removesuffix("_FILE") in known, f"{name}: {variable} is not a setting"


def assert_observability_profile_scrapes_the_stack(services: dict) -> None:
    """Prometheus runs with ops/prometheus/ as it is, its targets are compose's services on the
    ports they listen on, and Grafana is given the data source and the dashboard."""
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["observability"]
    assert "./ops/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules.yml"]
    targets = {}
    for job in config["scrape_configs"]:
        (files,) = [sd["files"] for sd in job["file_sd_configs"]]
        targets[job["job_name"]] = [
            t
            for f in files
            for group in yaml.safe_load((ROOT / "ops" / "prometheus" / f).read_text())
            for t in group["targets"]
        ]
    assert targets == {"orderview-api": ["api:8081"], "orderview-projector": ["projector:6066"]}
    assert "${ORDERVIEW_PUBLISH_ADDRESS:-127.0.0.1}:8081:8081" in services["api"]["ports"]
    assert "${ORDERVIEW_PUBLISH_ADDRESS:-127.0.0.1}:6066:6066" in services["projector"]["ports"]
    assert "./ops/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./ops/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    sources = yaml.safe_load((ROOT / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads((ROOT / "ops/grafana/dashboards/orderview.json").read_text())
    used = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert used == {source["uid"]}


def test_missing_java_is_one_clear_sentence_not_a_stack_trace(tmp_path: Path) -> None:
    """Kafka's script on a machine without Java (a PATH holding only basic tools)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mkdir", "cat", "sleep", "kill", "printf"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {
        "PATH": str(bin_dir),
        "ORDERVIEW_RUN_DIR": str(tmp_path / "run"),
        "ORDERVIEW_KAFKA_BOOTSTRAP": "127.0.0.1:19999",
    }
    out = subprocess.run(
        ["bash", str(ROOT / "ops" / "kafka.sh"), "start"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "[orderview] Java 17+ is required to run Kafka: install it (Debian: apt-get install openjdk-17-jre-headless)."
    ]


FOREIGN_TABLE = "dba_notes"


def test_a_table_the_project_does_not_own_leaves_the_bootstrap_working(settings: Settings) -> None:
    with psycopg.connect(settings.admin_dsn_for(settings.pg_database), autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {FOREIGN_TABLE} (note text)")  # owned by the superuser
        try:
            migrate(settings)
            with psycopg.connect(settings.dsn("api")) as conn:
                conn.execute("SELECT count(*) FROM order_snapshots")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f"SELECT * FROM {FOREIGN_TABLE}")
        finally:
            admin.execute(f"DROP TABLE {FOREIGN_TABLE}")


def test_passwords_with_spaces_and_quotes_work_from_bootstrap_to_query(settings: Settings) -> None:
    tag = scratch.unique("")
    password = """p w'd "x" \\ y"""
    odd = replace(
        settings,
        pg_database=f"orderview_pw_{tag}",
        **{f"pg_{role}_user": f"orderview_{role}_{tag}" for role in ("owner", "projector", "api")},
        **{f"pg_{role}_password": f"{password} {role}" for role in ("owner", "projector", "api")},
    )
    create_database(odd)
    try:
        for role in ("owner", "projector", "api"):
            with psycopg.connect(odd.dsn(role)) as conn:
                assert conn.execute("SELECT current_user").fetchone()[0] == f"orderview_{role}_{tag}"
    finally:
        drop_database(odd)
        with psycopg.connect(settings.dsn("admin"), autocommit=True) as admin:
            for role in ("api", "projector", "owner"):
                admin.execute(
                    sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(f"orderview_{role}_{tag}"))
                )


def _postgres_sh(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "ops" / "postgres.sh"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_local_cluster_in_a_private_clone_starts_wants_passwords_and_hides_its_socket(
    tmp_path: Path,
) -> None:
    """A clone under a 0700 directory (as in root's home): the cluster starts anyway; nobody
    connects without the password, not even on its socket, which only its owner can reach."""
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    port = str(free_port())
    env = {**os.environ, "ORDERVIEW_RUN_DIR": str(private / "clone" / ".run"), "ORDERVIEW_PG_PORT": port}
    where = _postgres_sh("where", env)
    assert where.returncode == 0, where.stderr
    cluster = Path(where.stdout.strip())
    assert (cluster.is_absolute() and cluster.parent.name == "orderview") or cluster.is_relative_to(private)
    try:
        started = _postgres_sh("start", env)
        assert started.returncode == 0, started.stderr
        sockets = cluster / "socket"
        owner = (cluster / "data").stat().st_uid
        assert (sockets.stat().st_mode & 0o777, sockets.stat().st_uid) == (0o700, owner)
        no_password = {k: v for k, v in env.items() if k != "PGPASSWORD"}
        for host in (str(sockets), "127.0.0.1"):
            refused = subprocess.run(
                ["psql", "-X", "-w", "-h", host, "-p", port, "-U", "postgres", "-c", "select 1"],
                env=no_password,
                capture_output=True,
                text=True,
            )
            assert refused.returncode != 0 and "password" in refused.stderr, (host, refused.stderr)
        settings = replace(Settings(), pg_port=int(port))
        with psycopg.connect(settings.dsn("admin")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stopped = _postgres_sh("stop", env)
        if cluster.parent.name == "orderview":  # outside tmp_path: the cluster's own folder only
            shutil.rmtree(cluster, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
