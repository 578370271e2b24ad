"""What tests and bench share: scratch settings, service processes, topics, metrics, readiness.

One module a job: `ports` (free loopback ports), `readiness` (HTTP GET, polling until ready),
`processes` (a service as a child process, its log, its exit), `metrics` (reading Prometheus
text), `scratch` (settings naming a database, topics and group of a run's own), `topics`
(creating and deleting them), `orders` (the reference order), `history` (versions written into the
read model as the projector writes them), `replication` (a streaming standby and per-replica
coherence). Nothing here imports tests/ or bench/.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
