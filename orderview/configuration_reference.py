"""docs/configuration.md, written from orderview/settings.py: `python -m orderview.configuration_reference`.

What the page says of a setting is what settings.py says, read from its source:
- a field's name, type and default (the dataclass's own);
- the comment lines right above a field, which speak of it and of the fields right below it up to
  the next blank line or comment; a comment at the end of a field's line, of that field alone;
- sections: a comment line right after a blank line (or first in the class) that is not a
  sentence (no final full stop) heads a section, `Title: what it covers` or `Title (…)`;
- CHOICES and FILES, the values a setting takes and the settings that name files.
The variables the ops scripts read that no setting has are listed with the scripts that read them.
With `--check`, it writes nothing and exits 1 when the page differs.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from orderview import settings as settings_module
from orderview.settings import PREFIX

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
COMMAND = "python -m orderview.configuration_reference"
TYPES = {int: "integer", float: "number", str: "text"}
TABLE_HEAD = "| variable | type | default | meaning |"
OPS_VARIABLE = re.compile(r"\$\{?(ORDERVIEW_[A-Z0-9_]*[A-Z0-9])")


@dataclass
class Group:
    """Fields with nothing between them, and the comment lines above the first."""

    note: list[str]
    fields: list[str] = field(default_factory=list)


@dataclass
class Section:
    title: str
    intro: str
    groups: list[Group] = field(default_factory=list)


def sections(source: str) -> tuple[list[Section], dict[str, str]]:
    """The sections of class Settings in settings.py's source, and each field's own line comment."""
    lines = source.splitlines()
    (cls,) = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Settings"]
    own = _line_comments(source)
    found: list[Section] = []
    previous_end = cls.lineno  # 1-based line of the last thing before the next field
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            previous_end = node.end_lineno or node.lineno
            continue
        comments, gap = _comments_above(lines, node.lineno, previous_end, first=previous_end == cls.lineno)
        if comments and gap and not comments[0].endswith("."):
            title, intro = _heading(comments.pop(0))
            found.append(Section(title, intro))
        elif not found:
            found.append(Section("Settings", ""))
        groups = found[-1].groups
        if comments or gap or not groups:
            groups.append(Group(comments))
        groups[-1].fields.append(node.target.id)
        previous_end = node.end_lineno or node.lineno
    fields = [n for n in cls.body if isinstance(n, ast.AnnAssign)]
    return found, {
        n.target.id: " ".join(own[i] for i in range(n.lineno, (n.end_lineno or n.lineno) + 1) if i in own)
        for n in fields
        if isinstance(n.target, ast.Name)
    }


def _comments_above(lines: list[str], lineno: int, previous_end: int, first: bool) -> tuple[list[str], bool]:
    """The comment lines right above line `lineno` (1-based, as `previous_end`, the line of the
    code before them), and whether a blank line or the class's start comes before them."""
    comments: list[str] = []
    i = lineno - 2  # 0-based index of the line above
    while i >= previous_end and lines[i].strip().startswith("#"):
        comments.insert(0, lines[i].strip().removeprefix("#").strip())
        i -= 1
    gap = first if i < previous_end else not lines[i].strip()
    return comments, gap


def _heading(line: str) -> tuple[str, str]:
    match = re.fullmatch(r"(.+?)(?::\s*(.+)|\s*\((.+)\))?", line)
    assert match is not None
    title, after_colon, in_brackets = match.groups()
    intro = after_colon or in_brackets or ""
    return title.strip(), (intro[:1].upper() + intro[1:] + ".") if intro else ""


def _line_comments(source: str) -> dict[int, str]:
    """Comments at the end of a line of code, by line number."""
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and token.line.strip() != token.string.strip():
            comments[token.start[0]] = token.string.removeprefix("#").strip()
    return comments


def ops_variables(ops: Path, known: set[str]) -> dict[str, list[str]]:
    """ORDERVIEW_ variables the ops scripts read that are no setting, and the scripts reading them."""
    found: dict[str, set[str]] = {}
    for script in sorted(ops.glob("*.sh")):
        for name in OPS_VARIABLE.findall(script.read_text()):
            if name not in known:
                found.setdefault(name, set()).add(f"ops/{script.name}")
    return {name: sorted(scripts) for name, scripts in sorted(found.items())}


def render(module: ModuleType = settings_module, ops: Path = ROOT / "ops") -> str:
    """The page, from a settings module: its Settings, CHOICES and FILES, and its source."""
    found, own = sections(Path(module.__file__ or "").read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(module.Settings)}
    choices, files = module.CHOICES, module.FILES
    out = [
        "# Configuration",
        "",
        f"<!-- Written by `{COMMAND}` from orderview/settings.py: edit that file, then run it. -->",
        "",
        "Every setting is an environment variable `ORDERVIEW_<NAME>`, read by `orderview/settings.py`",
        "for every process of the project; unset or empty, the default holds. `ORDERVIEW_<NAME>_FILE`",
        "may name a file that holds the value instead (a secret mounted by Docker or Kubernetes;",
        "compose.yaml passes its passwords so). A value of the wrong type, or a choice not listed,",
        "stops the process with one sentence naming the variable; so do passwords left at their",
        "defaults when a service listens off loopback.",
    ]
    for section in found:
        out += ["", f"## {section.title}"]
        if section.intro:
            out += ["", section.intro]
        shared = True  # the table open now is one a shared note stands above: close it
        for group in section.groups:
            note = " ".join(group.note)
            if note and len(group.fields) > 1:
                out += ["", note]
            if shared or (note and len(group.fields) > 1):
                out += ["", TABLE_HEAD, "|---|---|---|---|"]
            shared = bool(note) and len(group.fields) > 1
            for i, name in enumerate(group.fields):
                meaning = [note] if note and not shared and i == 0 else []
                meaning += filter(None, [own.get(name, "")])
                if name in choices:
                    meaning.append("one of " + ", ".join(f"`{c}`" for c in choices[name]))
                if name in files:
                    meaning.append("a file that must be readable")
                out.append(_row(name, defaults[name], meaning))
    scripts = ops_variables(ops, {PREFIX + name.upper() for name in defaults})
    if scripts:
        out += [
            "",
            "## Read by the ops scripts only",
            "",
            "The services do not read these; the scripts that read them say what for.",
            "The ops scripts read the settings above from their variables only, not from `_FILE`.",
            "",
            "| variable | read by |",
            "|---|---|",
        ]
        out += [f"| `{name}` | {', '.join(f'`{s}`' for s in where)} |" for name, where in scripts.items()]
    return "\n".join(out) + "\n"


def _row(name: str, default: object, notes: list[str]) -> str:
    kind = TYPES.get(type(default), type(default).__name__)
    shown = "empty" if default == "" else f"`{default}`"
    meaning = ""
    for note in notes:
        meaning += (" " if meaning.endswith(".") else "; " if meaning else "") + note
    return f"| `{PREFIX}{name.upper()}` | {kind} | {shown} | {meaning} |"


def main(argv: list[str]) -> None:
    page = render()
    if argv == ["--check"]:
        if not PAGE.exists() or PAGE.read_text() != page:
            sys.exit(
                f"[orderview] {PAGE.relative_to(ROOT)} differs from orderview/settings.py: run `{COMMAND}`"
            )
        return
    if argv:
        sys.exit(f"usage: {COMMAND} [--check]")
    PAGE.write_text(page)
    print(f"[orderview] wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
