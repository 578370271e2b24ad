"""Free loopback ports for the services a test or a benchmark starts."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A port free on 127.0.0.1 now (the kernel's choice, so in the ephemeral range)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A free port whose successor is free too (Kafka's listener and its controller's)."""
    while True:
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def below_ephemeral_ports() -> int:
    """The first port the kernel hands out for outgoing connections. A client that reconnects to
    a stopped broker's free port in that range may be given that very port and connect to itself
    (TCP self-connect), holding it until it times out: the broker cannot bind it on restart. Ports
    of nodes that tests kill and restart are chosen below it."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_run(n: int) -> int:
    """The first of n consecutive free ports, below the ephemeral range."""
    rng = random.Random()
    while True:
        first = rng.randrange(20000, below_ephemeral_ports() - n)
        sockets = []
        try:
            for port in range(first, first + n):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
