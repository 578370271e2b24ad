"""`python -m bench [--quick] [--only reads,ingest,history,boot,standby,redrive]`: run the benchmarks, print a table, write
bench/RESULTS.md and bench/results.png. Needs Kafka and PostgreSQL up (`make up`); uses a database
and topics of its own and drops them at the end."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import traceback
from collections.abc import Callable

from bench import env, report
from bench.env import say
from bench.results import Results
from bench.scale import FULL, QUICK, Scale
from orderview.settings import Settings, get_settings

SECTIONS = ("reads", "ingest", "history", "boot", "standby", "redrive")
PARTS = {"ingest": ("ingest", "latency", "mixed")}  # sections that report under more than one heading
LAST_RUN = env.OUT / "last-run.json"  # what --report re-renders


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, about a minute")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    parser.add_argument(
        "--report", action="store_true", help="only re-render RESULTS.md and results.png from the last run"
    )
    args = parser.parse_args()
    if args.report:
        return _rerender()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    scale = QUICK if args.quick else FULL

    env.require_matplotlib()
    wrk_path = env.ensure_wrk() if {"reads", "ingest", "history", "standby"} & set(only) else ""
    machine = env.machine()
    results = Results(scale.name)
    started = time.perf_counter()

    runners: dict[str, Callable[[], None]] = {
        "reads": lambda: _reads(results, scale, wrk_path),
        "ingest": lambda: _ingest(results, scale, wrk_path),
        "history": lambda: _history(results, scale, wrk_path),
        "boot": lambda: _boot(results, scale),
        "standby": lambda: _standby(results, scale, wrk_path),
        "redrive": lambda: _redrive(results, scale),
    }
    for section in only:
        say(f"{section} ({scale.name})")
        t = time.perf_counter()
        try:
            for attempt in (1, 2):
                env.ensure_services()
                try:
                    runners[section]()
                    break
                except Exception as exc:
                    # Other people's fault tests restart the shared Kafka and PostgreSQL: try once more.
                    if attempt == 2 or not _lost_a_service(exc):
                        raise
                    say(f"{section}: lost Kafka or PostgreSQL ({exc}); running the section again")
                    for part in PARTS.get(section, (section,)):
                        results.drop_section(part)
                    results.note(
                        section, f"ran twice: the first attempt lost a service ({type(exc).__name__})."
                    )
        except Exception as exc:
            results.errors[section] = f"{type(exc).__name__}: {exc}"
            log = env.OUT / "logs" / "bench-errors.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                f.write(traceback.format_exc())
            say(f"{section} failed: {exc} (traceback in {log})")
        say(f"{section} done in {time.perf_counter() - t:.0f} s")

    elapsed = time.perf_counter() - started
    machine["load_after"] = env.load_average()
    print(report.table(results), flush=True)
    settings_text = _settings_text(scale)
    LAST_RUN.parent.mkdir(parents=True, exist_ok=True)
    LAST_RUN.write_text(
        json.dumps(
            {"results": results.to_json(), "machine": machine, "elapsed": elapsed, "settings": settings_text}
        )
    )
    report.RESULTS_MD.write_text(report.markdown(results, machine, elapsed, settings_text))
    report.chart(results)
    if scale is FULL and set(only) == set(SECTIONS) and not results.errors:
        report.update_readme(results)
    say(
        f"wrote {report.RESULTS_MD.relative_to(env.ROOT)} and {report.CHART.relative_to(env.ROOT)} ({elapsed / 60:.1f} min)"
    )
    return 1 if results.errors else 0


def _lost_a_service(exc: BaseException) -> bool:
    import psycopg
    from aiokafka.errors import KafkaConnectionError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (psycopg.OperationalError, KafkaConnectionError, ConnectionError)):
            return True
        seen = seen.__cause__ or seen.__context__
    # A child process's failure arrives as text.
    text = str(exc)
    if "OperationalError" in text or "KafkaConnectionError" in text or "Connection refused" in text:
        return True
    return not env.services_up()


def _rerender() -> int:
    if not LAST_RUN.is_file():
        raise SystemExit(f"bench: no previous run to re-render ({LAST_RUN} is missing)")
    last = json.loads(LAST_RUN.read_text())
    results = Results.from_json(last["results"])
    report.RESULTS_MD.write_text(report.markdown(results, last["machine"], last["elapsed"], last["settings"]))
    report.chart(results)
    print(report.table(results), flush=True)
    return 0


def _reads(results: Results, scale: Scale, wrk_path: str) -> None:
    from bench import reads

    with env.scratch("reads") as settings:
        reads.run(results, scale, wrk_path, settings)


def _ingest(results: Results, scale: Scale, wrk_path: str) -> None:
    from bench import ingest

    with env.scratch("ingest", topics=True) as settings, env.scratch("copy") as copy_settings:
        ingest.run(results, scale, settings, copy_settings, wrk_path)


def _history(results: Results, scale: Scale, wrk_path: str) -> None:
    from bench import history

    with env.scratch("history", topics=True) as settings:
        history.run(results, scale, settings, wrk_path)


def _boot(results: Results, scale: Scale) -> None:
    from bench import boot

    with env.scratch("boot") as settings:
        boot.run(results, scale, settings)


def _standby(results: Results, scale: Scale, wrk_path: str) -> None:
    from bench import standby

    with env.scratch("standby") as settings:
        standby.run(results, scale, wrk_path, settings)


def _redrive(results: Results, scale: Scale) -> None:
    from bench import redrive

    with env.scratch("redrive", topics=True) as settings:
        redrive.run(results, scale, settings)


def _settings_text(scale: Scale) -> str:
    base: Settings = get_settings()
    lines = [f"scale: {scale.name}"]
    lines += [f"  {k} = {v}" for k, v in dataclasses.asdict(scale).items() if k != "name"]
    lines.append(
        "orderview settings (the bench's own database and topics replace pg_database, orders_topic, dlq_topic, consumer_group):"
    )
    for field in dataclasses.fields(base):
        if "password" not in field.name:
            lines.append(f"  {field.name} = {getattr(base, field.name)}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
