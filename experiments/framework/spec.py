"""What an experiment is made of: its schema, its columns, its results and its report part."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from experiments.framework.bench import BenchConfig
    from infer_core.measure.timing import Timing


class ConfigError(ValueError):
    """A value the user chose is invalid; the message names the full key and the value."""


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def require_plain_name(key: str, value: object, what: str) -> None:
    """A name that becomes a file or folder name stays one component inside its folder: letters, digits,
    ``. _ + -``, not starting with a dot (no ``/``, no ``..``, not empty)."""
    require(isinstance(value, str) and PLAIN_NAME.fullmatch(value) is not None,
            f"{key}={value!r} must be a plain name (letters, digits and . _ + -, not starting with a dot; no / or "
            f"..): it names {what}")


def require_positive(prefix: str, obj: object, *names: str, minimum: int = 1) -> None:
    """Check that each named integer field of ``obj`` is at least ``minimum``."""
    for name in names:
        value = getattr(obj, name)
        require(value >= minimum, f"{prefix}.{name}={value} must be >= {minimum}")


def knob(default: Any, meaning: str, path: bool = False) -> Any:
    """A schema field: its one default and what it means (shown by ``--help``, the README and docs).
    A ``path`` knob, when relative, is taken from the folder the command was started in."""
    meta = {"help": meaning, "path": path}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def resolve_paths(knobs: Knobs, base: Path) -> Knobs:
    """``knobs`` with every relative ``path`` knob made relative to ``base``."""
    from pathlib import Path

    moved = {f.name: str(base / value) for f in dataclasses.fields(knobs) if f.metadata.get("path")
             and isinstance(value := getattr(knobs, f.name), str) and not Path(value).is_absolute()}
    return dataclasses.replace(knobs, **moved) if moved else knobs


class DType(Enum):
    """Floating-point dtype of an experiment's arrays."""

    float32 = "float32"
    float64 = "float64"


class Knobs:
    """Base of every experiment schema (a dataclass whose fields are the knobs)."""

    def inactive(self) -> frozenset[str]:
        """Knobs that have no effect at this point: left out of its rows and of its ``config_hash``."""
        return frozenset()


def acting_knobs(knobs: Knobs) -> dict[str, Any]:
    """The knobs of a validated schema instance that act, in field order."""
    skip = knobs.inactive()
    return {f.name: getattr(knobs, f.name) for f in dataclasses.fields(knobs) if f.name not in skip}


#: Units of figures read off a clock or set by the load on the machine.
CLOCK_UNITS = frozenset({"s", "ms", "µs", "1/s", "GFLOP/s", "GB/s", "tok/s", "t/s", "req/s"})
KINDS = ("exact", "measurement", "sample", "context")


@dataclass(frozen=True)
class Column:
    """A column of ``results.csv`` or a sidecar: name, unit (``""`` when it has none), meaning, and its kind:
    ``exact`` (the same on every run of the same knobs and seed: a count, bytes, an error), ``measurement`` (read
    off a clock or moved by the load: compared as a ratio, never for equality), ``sample`` (one raw timing) or
    ``context`` (where it ran, such as a path: shown, never compared).
    Left out, the kind follows the unit: a clock's unit makes a measurement."""

    name: str
    unit: str
    meaning: str
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", "measurement" if self.unit in CLOCK_UNITS else "exact")
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")


@dataclass
class VariantResult:
    """The outcome of one measured variant (one row of ``results.csv``).

    ``timings`` holds the raw samples of each timed operation (written to ``samples.csv``);
    ``sidecars`` holds extra tables by file stem, columns by name (written as ``<stem>.csv``).
    """

    variant: str
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # ok | failed | skipped
    error: str = ""
    timings: dict[str, Timing] = field(default_factory=dict)
    sidecars: dict[str, Mapping[str, Any]] = field(default_factory=dict)


Plots = Callable[["pd.DataFrame", "Path"], list[tuple[str, "Path"]]]


@dataclass(frozen=True)
class Report:
    """An experiment's part of the report: its table's metric columns, its plots, its text."""

    headline: tuple[str, ...]  # metric columns of the results table
    plots: Plots = lambda df, out: []  # (title, path) of each figure written into ``out``
    sections: Callable[[pd.DataFrame], str] = lambda df: ""  # Markdown after the table
    point_labels: Callable[[pd.DataFrame], pd.Series] | None = None  # rows worth a label on the roofline


@dataclass(frozen=True)
class Experiment:
    """One experiment, registered with one line in ``experiments/registry.py``."""

    name: str  # the value of ``experiment`` in the config and in every row
    key: str  # config key of its knobs: ``kv`` for ``kv.*``
    schema: type[Knobs]  # a dataclass: each field a knob with its default; ``__post_init__`` checks
    columns: tuple[Column, ...]  # metric and correctness columns, in CSV order
    run: Callable[[Any, BenchConfig, int], list[VariantResult]]  # (knobs, bench, seed) -> rows
    report: Callable[[], Report]  # imported when a report is made, so a job never loads plotting
    summary: Callable[[list[VariantResult]], str] = lambda results: ""
    groups: tuple[str, ...] = ()  # config groups that only this experiment reads (``qmethod``)
    isolated: bool = False  # run in a child process of the point: a native crash fails this point alone
    timed: bool = False  # its figures come from the harness's samples: sweep.rounds passes, a canary before each
