"""JSON-lines logging. Records carry identifiers (uid, partition, offset, reason), never payloads."""

from __future__ import annotations

import logging
import sys
import time

import orjson

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class OncePer:
    """Says whether something is worth logging again: a new key at once, the same one at most once
    per `seconds` (a condition that lasts is said once a minute, not at every retry)."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._last: dict[object, float] = {}

    def __call__(self, key: object) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -self.seconds) < self.seconds:
            return False
        if len(self._last) > 1000:  # keys are few (reasons, topics); never unbounded
            self._last.clear()
        self._last[key] = now
        return True


class Repeats(logging.Filter):
    """Lets the same message of a library through once a minute: aiokafka says "Topic … not found
    in cluster metadata" at every metadata refresh, up to ten times a second, while the project
    says once what is missing and what to do."""

    def __init__(self, seconds: float = 60.0) -> None:
        super().__init__()
        self._once = OncePer(seconds)

    LIBRARIES = ("aiokafka", "faust", "mode")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.LIBRARIES):
            return True
        try:
            key = (record.name, record.getMessage())
        except Exception:  # a message that cannot be rendered is let through as it is
            return True
        return self._once(key)


def logging_config(level: str) -> dict:
    """A logging.config.dictConfig that writes JSON lines to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"repeats": {"()": Repeats}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": sys.stderr,
                "filters": ["repeats"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "aiokafka": {"level": "WARNING"},
            "faust": {"level": "WARNING"},
            "mode": {"level": "WARNING"},
        },
    }


def setup(level: str) -> None:
    import logging.config

    logging.config.dictConfig(logging_config(level))
