"""Tables made from the schemas, so the help, the README and the docs cannot drift from the code:
the knobs (key, default, meaning) and the metric columns (name, unit, meaning)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from enum import Enum
from typing import Any

from experiments.framework.spec import Column

MARKER = re.compile(r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (calling its factory)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def show(value: Any) -> str:
    """A default as a user types it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def knobs(key: str, schema: type) -> list[tuple[str, str, str]]:
    """``(key.name, default, meaning)`` of every field of ``schema``."""
    return [(f"{key}.{f.name}", show(default_of(f)), f.metadata.get("help", "")) for f in dataclasses.fields(schema)]


def config_columns(key: str, schema: type) -> list[str]:
    """The row columns a point of this schema may write for its knobs."""
    return [f"{key}.{f.name}" for f in dataclasses.fields(schema)]


def knob_table(key: str, schema: type) -> str:
    """A Markdown table of the knobs of ``schema`` under ``key``."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {cell(m)} |" for k, d, m in knobs(key, schema)]
    return "\n".join(lines) + "\n"


def cell(text: str) -> str:
    """``text`` safe in a Markdown table cell: a bare ``|`` (as in ``max |x|``) would end the cell."""
    return text.replace("|", "\\|")


def column_table(columns: Iterable[Column]) -> str:
    """A Markdown table of metric columns."""
    lines = ["| column | unit | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.unit} | {cell(c.meaning)} |" for c in columns]
    return "\n".join(lines) + "\n"


def knob_help(groups: Iterable[tuple[str, type]]) -> str:
    """Plain text for ``--help``: every knob with its default and meaning, group by group."""
    out = []
    for key, schema in groups:
        title = (schema.__doc__ or "").strip().splitlines()[0].replace("`", "") if schema.__doc__ else ""
        out.append(f"{key}.*: {title}")
        rows = knobs(key, schema)
        width = max(len(f"{k}={d}") for k, d, _ in rows)
        out += [f"  {f'{k}={d}':<{width}}  {m.replace('`', '')}" for k, d, m in rows]
        out.append("")
    return "\n".join(out)


def fill_tables(text: str, tables: dict[str, str]) -> str:
    """``text`` with the body of each ``<!-- table:NAME -->`` ... ``<!-- /table -->`` block replaced by
    ``tables[NAME]``; raises KeyError naming a block that has no table."""
    return MARKER.sub(lambda m: m.group(1) + tables[m.group("name")] + m.group(4), text)
