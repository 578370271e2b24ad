"""Reading samples out of a Prometheus text exposition (a /metrics answer)."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from harness.readiness import http_get

_REPLICA = re.compile(r'replica="[^"]*"')


def sample(text: str, name: str, labels: str = "") -> float:
    """The sample written exactly `name{labels}` (labels as they appear in the text), 0 when absent."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def matching(text: str, name: str, **labels: str) -> float:
    """The first sample of `name` whose labels include `labels`, parsed as Prometheus does; 0 when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return s.value
    return 0.0


def total(text: str, name: str) -> float | None:
    """An unlabelled sample, or the sum over its label sets, None if absent. A `replica` label is
    ignored, so `name{kind="lookup"}` sums that series over the API's replicas."""
    found_total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        head = _REPLICA.sub("", head).replace("{,", "{").replace(",}", "}").removesuffix("{}")
        if head == name or head.startswith(name + "{"):
            found_total += float(value)
            found = True
    return found_total if found else None


def scrape(url: str) -> str:
    """The text a /metrics `url` answers; anything but 200 fails."""
    status, body, _ = http_get(url)
    if status != 200:
        raise RuntimeError(f"{url} answered {status}")
    return body.decode()
