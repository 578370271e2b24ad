"""The boot baseline, standalone: the warm-up's query, raw.

    python -m bench.rawscan --limit N     (settings from ORDERVIEW_*; prints one JSON line)

The same SQL as the API's warm-up (api.views.RECENT_SNAPSHOTS, the N most recently changed
snapshots), through a server-side cursor fetching the same chunk size (--chunk) in binary format, as
the API role; the bodies are the bytes PostgreSQL sends (no JSON parsing, no cache): the cost of
reading them.
"""

from __future__ import annotations

import argparse
import json
import time

STARTED = time.perf_counter()

import psycopg  # noqa: E402  (imports are part of what is timed, as they are for the API)

from api.views import RECENT_SNAPSHOTS  # noqa: E402
from orderview.settings import get_settings  # noqa: E402


def scan(limit: int, chunk_size: int) -> dict[str, float]:
    settings = get_settings()
    connect_at = time.perf_counter()
    with psycopg.connect(settings.dsn("api"), autocommit=True) as conn:
        scan_at = time.perf_counter()
        rows = size = 0
        with conn.transaction():
            cur = conn.cursor(name="bench_raw_scan", binary=True)
            cur.execute(RECENT_SNAPSHOTS, {"limit": limit})
            while chunk := cur.fetchmany(chunk_size):
                rows += len(chunk)
                size += sum(len(body) for _, body, *_ in chunk)
        done = time.perf_counter()
    return {
        "rows": rows,
        "bytes": size,
        "imports_s": connect_at - STARTED,
        "scan_s": done - scan_at,
        "in_process_s": done - STARTED,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument(
        "--chunk", type=int, required=True, help="rows per fetch (the API's api.freshness.CHUNK)"
    )
    args = parser.parse_args()
    print(json.dumps(scan(args.limit, args.chunk)), flush=True)


if __name__ == "__main__":
    main()
