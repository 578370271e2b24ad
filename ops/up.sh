#!/usr/bin/env bash
# Everything the service needs, started and migrated. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/venv.sh
.venv/bin/python -m orderview.settings  # refuses unusable settings in one sentence
bash ops/postgres.sh start
bash ops/kafka.sh start
.venv/bin/python -m orderview.bootstrap
