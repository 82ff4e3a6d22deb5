"""Gather the ``results.csv`` of one or more sweeps into plots and a Markdown report.

    python experiments/report.py                          # the newest sweep under outputs/sweeps
    python experiments/report.py outputs/sweeps/NAME --out my_report

Writes ``<out>/results.csv`` (every row, concatenated), each experiment's PNGs and
``<out>/report.md``. Default ``<out>``: ``<first folder>/report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib

matplotlib.use("Agg")

from experiments.framework.bench import BenchConfig
from experiments.registry import EXPERIMENTS
from experiments.reporting.gather import build_report
from experiments.reporting.load import ReportError, newest_sweep

SWEEPS = Path("outputs/sweeps")
MACHINE_FILE = Path(BenchConfig().machine_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="sweep or run folders (default: newest sweep)")
    parser.add_argument("--out", type=Path, help="report folder (default: <first folder>/report)")
    parser.add_argument("--machine", type=Path, default=MACHINE_FILE,
                        help=f"machine reference for the roofline (default: {MACHINE_FILE})")
    args = parser.parse_args(argv)
    try:
        folders = args.folders or [newest_sweep(SWEEPS)]
        out = args.out or folders[0] / "report"
        path = build_report(folders, out, args.machine, EXPERIMENTS)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
