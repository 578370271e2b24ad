"""What a benchmark run found: figures (ratios are figures too), targets, notes."""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field

_OPS = {">=": operator.ge, "<=": operator.le}
RATIO = "×"


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str  # RATIO for a ratio against a baseline
    target: tuple[str, float] | None = None  # e.g. (">=", 0.9)
    note: str = ""
    baseline: str = ""  # what a target is measured against, in words and figures

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target
        return _OPS[op](self.value, bound)

    @property
    def is_ratio(self) -> bool:
        return self.unit == RATIO

    def target_text(self) -> str:
        if self.target is None:
            return ""
        unit = "" if self.is_ratio else f" {self.unit}"
        return f"{self.target[0]} {self.target[1]:g}{unit}"

    def value_text(self) -> str:
        v = self.value
        if self.is_ratio:
            return f"{v:.2f}×"
        if self.unit in ("ms", "s", "µs") or abs(v) < 100:
            return f"{v:,.3g} {self.unit}" if abs(v) < 10 else f"{v:,.1f} {self.unit}"
        return f"{v:,.0f} {self.unit}"


@dataclass
class Results:
    scale: str
    figures: list[Figure] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # section -> lines
    errors: dict[str, str] = field(default_factory=dict)  # section -> why it did not finish
    series: dict[str, object] = field(default_factory=dict)  # raw data for the chart
    settings: dict[str, str] = field(default_factory=dict)  # what each section ran with

    def figure(
        self,
        section: str,
        name: str,
        value: float,
        unit: str,
        target: tuple[str, float] | None = None,
        note: str = "",
        baseline: str = "",
    ) -> Figure:
        f = Figure(section, name, float(value), unit, target, note, baseline)
        self.figures.append(f)
        return f

    def ratio(
        self,
        section: str,
        name: str,
        value: float,
        target: tuple[str, float] | None = None,
        note: str = "",
        baseline: str = "",
    ) -> Figure:
        return self.figure(section, name, value, RATIO, target, note, baseline)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def get(self, section: str, name: str) -> float | None:
        for f in self.figures:
            if f.section == section and f.name == name:
                return f.value
        return None

    def drop_section(self, section: str) -> None:
        """Forget what a failed attempt at a section recorded (its notes stay)."""
        self.figures = [f for f in self.figures if f.section != section]
        self.settings.pop(section, None)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> Results:
        figures = [
            Figure(**{**f, "target": tuple(f["target"]) if f["target"] else None}) for f in raw["figures"]
        ]
        return cls(**{**raw, "figures": figures})

    def targets(self) -> list[Figure]:
        return [f for f in self.figures if f.target is not None]

    def missed(self) -> list[Figure]:
        return [f for f in self.figures if f.met is False]
