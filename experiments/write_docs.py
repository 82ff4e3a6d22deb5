"""Rewrite the tables in README.md and docs/*.md that are made from the code: the knobs (from the
schemas) and the row columns (from the experiments, the store and the environment record).

    python experiments/write_docs.py            # rewrite them
    python experiments/write_docs.py --check    # exit 1, naming the files, if any is out of date

A table lives between ``<!-- table:NAME -->`` and ``<!-- /table -->``; a test runs ``--check``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.framework import store
from experiments.framework.app import SweepSettings
from experiments.framework.bench import BenchConfig
from experiments.framework.knobs import column_table, fill_tables, knob_table
from experiments.framework.spec import Column
from experiments.registry import EXPERIMENTS
from experiments.shared import requests
from infer_core.measure.environment import Environment

ROOT = Path(__file__).resolve().parents[1]
FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))


def tables() -> dict[str, str]:
    """Every generated table, by name."""
    made = {"knobs.bench": knob_table("bench", BenchConfig), "knobs.sweep": knob_table("sweep", SweepSettings),
            "columns.identity": column_table(store.IDENTITY_COLUMNS),
            "columns.outcome": column_table(store.OUTCOME_COLUMNS),
            "columns.samples": column_table(store.SAMPLE_MEANINGS),
            "columns.canary": column_table(store.CANARY_COLUMNS),
            "columns.environment": column_table(Column(f.name, "", f.metadata["help"]) for f in fields(Environment)),
            "columns.requests": column_table(requests.COLUMNS)}
    for exp in EXPERIMENTS.values():
        made[f"knobs.{exp.key}"] = knob_table(exp.key, exp.schema)
        made[f"columns.{exp.name}"] = column_table(exp.columns)
    return made


def stale(files: tuple[Path, ...] = FILES) -> dict[Path, str]:
    """The files whose generated tables differ from the code, with their up-to-date text."""
    made = tables()
    out = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        new = fill_tables(text, made)
        if new != text:
            out[path] = new
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a table is out of date")
    args = parser.parse_args(argv)
    changed = stale()
    for path, text in changed.items():
        if args.check:
            print(f"out of date: {path.relative_to(ROOT)} (run: python experiments/write_docs.py)", file=sys.stderr)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"rewrote the tables in {path.relative_to(ROOT)}")
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
