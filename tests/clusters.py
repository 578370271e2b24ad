"""Services of a test's own, started by the ops scripts on free ports in a run folder of their own:
a Kafka cluster of N nodes (nodes killed and restarted at will), a PostgreSQL with TLS.

The shared Kafka and PostgreSQL of `make test` stay as they are; these are for what those cannot
be (several brokers, a SASL_SSL listener, `ssl = on`) without changing them for every other test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Self

from aiokafka import TopicPartition

from harness import ROOT
from harness.ports import free_port, free_port_run
from harness.scratch import unique
from orderview import kafka_clients
from orderview.settings import Settings

OPS = ROOT / "ops"


class OpsService:
    """An ops script with a run folder and ports of its own."""

    script = ""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.run_dir = ROOT / ".run" / unique(f"{name}-")
        self.env = {**os.environ, "ORDERVIEW_RUN_DIR": str(self.run_dir), **env}
        self._share_kafka_jars()

    def ops(self, *args: str, timeout: float = 300) -> str:
        out = subprocess.run(
            ["bash", str(OPS / self.script), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, f"ops/{self.script} {' '.join(args)}: {out.stderr}"
        return out.stdout.strip()

    def start(self) -> Self:
        self.ops("start")
        return self

    def stop(self) -> None:
        """Stop it and remove its run folder."""
        self.ops("stop")
        self.remove()

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    def remove(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _share_kafka_jars(self) -> None:
        """The jars Maven resolved for the shared broker: resolving them again costs seconds."""
        resolved = ROOT / ".run" / "kafka" / "classpath.txt"
        run_resolved = Path(os.environ.get("ORDERVIEW_RUN_DIR", ROOT / ".run")) / "kafka" / "classpath.txt"
        for source in (run_resolved, resolved):
            if source.is_file():
                (self.run_dir / "kafka").mkdir(parents=True, exist_ok=True)
                shutil.copy(source, self.run_dir / "kafka" / "classpath.txt")
                return


class KafkaCluster(OpsService):
    """`ops/kafka.sh` with ORDERVIEW_KAFKA_NODES nodes; with `sasl_ssl`, a SASL_SSL listener too."""

    script = "kafka.sh"

    def __init__(self, nodes: int, sasl_ssl: bool = False, password: str = "orderview-test") -> None:
        ports: list[int] = []
        while len(ports) < nodes:
            port = free_port_run(2)  # the node's listener and its controller's
            if not {port, port + 1} & {p + d for p in ports for d in (0, 1)}:
                ports.append(port)
        self.nodes = nodes
        self.bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports)
        self.sasl_ssl_port = free_port_run(nodes) if sasl_ssl else None
        self.password = password
        env = {
            "ORDERVIEW_KAFKA_BOOTSTRAP": self.bootstrap,
            "ORDERVIEW_KAFKA_NODES": str(nodes),
            "ORDERVIEW_KAFKA_SASL_USERNAME": "orderview",
            "ORDERVIEW_KAFKA_SASL_PASSWORD": password,
        }
        if self.sasl_ssl_port is not None:
            env["ORDERVIEW_KAFKA_SASL_SSL_PORT"] = str(self.sasl_ssl_port)
        super().__init__(f"kafka{nodes}", env)

    @property
    def sasl_ssl_bootstrap(self) -> str:
        assert self.sasl_ssl_port is not None
        return ",".join(f"127.0.0.1:{self.sasl_ssl_port + i}" for i in range(self.nodes))

    def settings(self, base: Settings) -> Settings:
        """`base` reaching this cluster (PLAINTEXT)."""
        return replace(base, kafka_bootstrap=self.bootstrap)

    def sasl_ssl_settings(self, base: Settings, mechanism: str = "SCRAM-SHA-512") -> Settings:
        """`base` reaching this cluster's SASL_SSL listener, trusting the run folder's CA."""
        return replace(
            base,
            kafka_bootstrap=self.sasl_ssl_bootstrap,
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username="orderview",
            kafka_sasl_password=self.password,
            kafka_ssl_cafile=str(self.tls_dir / "ca.pem"),
        )

    def kill(self, node: int) -> None:
        """kill -9 one node."""
        self.ops("kill-node", str(node))

    def start_node(self, node: int) -> None:
        """Start one node and wait until it answers."""
        self.ops("start-node", str(node))

    def controller(self) -> int:
        """The node leading the KRaft quorum now (the active controller)."""
        return int(self.ops("controller"))

    async def leader(self, settings: Settings, topic: str, partition: int) -> int:
        """The node leading one partition now."""
        client = kafka_clients.client(self.settings(settings))
        await client.bootstrap()
        try:
            await client.add_topic(topic)
            await client.force_metadata_update()
            return client.cluster.leader_for_partition(TopicPartition(topic, partition)) - 1  # node.id - 1
        finally:
            await client.close()


class TlsPostgres(OpsService):
    """`ops/postgres.sh` with `ssl = on` and a certificate from the run folder's CA."""

    script = "postgres.sh"

    def __init__(self) -> None:
        self.port = free_port()
        super().__init__("pgtls", {"ORDERVIEW_PG_PORT": str(self.port), "ORDERVIEW_PG_SERVER_SSL": "on"})

    def settings(self, base: Settings) -> Settings:
        """`base` on this server, verifying its certificate and name (verify-full)."""
        return replace(
            base,
            pg_host="127.0.0.1",
            pg_port=self.port,
            pg_sslmode="verify-full",
            pg_sslrootcert=str(self.tls_dir / "ca.pem"),
        )


class CertificateAuthority(OpsService):
    """`ops/tls.sh` in a run folder of its own: a CA that signed none of the other services'."""

    script = "tls.sh"

    def __init__(self) -> None:
        super().__init__("ca", {})

    def make(self) -> Path:
        """The CA's certificate."""
        self.ops("make")
        return self.tls_dir / "ca.pem"
