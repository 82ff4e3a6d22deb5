"""Gather the ``results.csv`` of one or more sweeps into plots and a Markdown report, or compare sweeps.

    python experiments/report.py                          # the newest sweep under outputs/sweeps
    python experiments/report.py outputs/sweeps/NAME --out my_report
    python experiments/report.py compare A B [C ...] [--labels a,b] [--threshold 10%] [--fail-above 10%]
                                         [--fail-on-inconclusive]
    python experiments/report.py compare SWEEP --between matmul.dtype[=float32,float64]   # settings of one sweep

A report writes ``<out>/results.csv`` (every row, concatenated), each experiment's PNGs and
``<out>/report.md``; default ``<out>``: ``<first folder>/report``. A comparison pairs the points of each
later sweep with the first's and writes ``compare.md``, ``compare.csv`` and ``compare_ratios.png``; default
``<out>``: ``<last folder>/compare``. ``--between`` compares the settings of one knob within one sweep instead,
pass by pass: their points ran side by side in each pass, the way to resolve small changes on a drifting machine.
Each timed point gets a verdict: faster, slower, no change (its interval
within ±threshold) or inconclusive. With ``--fail-above`` it exits 2 when a point is *slower* at that limit (its
whole interval above it), listing those points; with ``--fail-on-inconclusive``, also when a point is inconclusive.
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
from infer_core.measure.machine import MachineFileError, cached_entries

SWEEPS = Path("outputs/sweeps")
MACHINE_FILE = Path(BenchConfig().machine_file)


def percent(text: str) -> float:
    """``10%`` or ``0.1`` -> 0.1."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share: write 10% or 0.1") from None
    if not 0 < value < 10:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0% (and below 1000%)")
    return value


def check_out(out: Path) -> None:
    """An output folder that exists as something else is refused before anything is computed."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file, not a folder: name a folder (it is made if missing)")


def compare_parser() -> argparse.ArgumentParser:
    """The ``compare`` subcommand's options (also shown by ``report.py --help``)."""
    parser = argparse.ArgumentParser(prog="report.py compare", description="Compare sweeps: each later one "
                                     "against the first, point by point, with the noise accounted for.")
    parser.add_argument("folders", nargs="+", type=Path, help="sweep or run folders; the first is the baseline")
    parser.add_argument("--between", metavar="KNOB[=A,B]", help="compare the settings of KNOB within one sweep "
                        "(its points' passes side by side: sweep.rounds of 2 or more), each against the first "
                        "(default: every value, in the sweep's order)")
    parser.add_argument("--labels", help="names of the sweeps, comma-separated (default: folder names)")
    parser.add_argument("--threshold", type=percent, help="smallest change that counts (default 10%%, or "
                        "--fail-above's value)")
    parser.add_argument("--fail-above", type=percent, help="exit 2 when a point is slower by more: its whole interval "
                        "above 1 + this")
    parser.add_argument("--fail-on-inconclusive", action="store_true", help="exit 2 also when a point's interval "
                        "cannot tell a change of the threshold's size from none (more sweep.rounds narrow it)")
    parser.add_argument("--normalize", choices=["copy", "sgemm"], help="divide each pass of a timed point by the "
                        "drift canary's reading before it (its copy or sgemm speed), instead of widening the interval "
                        "by the machine's move between the sweeps (see docs/protocol.md for when it helps)")
    parser.add_argument("--out", type=Path, help="folder of the comparison (default: <last folder>/compare)")
    return parser


def compare_main(argv: list[str]) -> int:
    from experiments.reporting.compare import compare as compare_sweeps
    from experiments.reporting.compare import regressions
    from experiments.reporting.compare_report import write
    from experiments.reporting.stats import INCONCLUSIVE
    from experiments.reporting.sweeps import read_sweep, split

    parser = compare_parser()
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [f.name for f in args.folders]
    if args.between and len(args.folders) != 1:
        parser.error(f"--between compares settings within one sweep: give one folder ({len(args.folders)} given)")
    if not args.between and (len(args.folders) < 2 or len(labels) != len(args.folders)):
        parser.error(f"give two or more folders and as many labels ({len(args.folders)} folders, {len(labels)} "
                     "labels), or one folder with --between")
    threshold = args.threshold or args.fail_above or 0.10
    out = args.out or args.folders[-1] / "compare"
    try:
        check_out(out)
        if args.between:
            knob, _, values = args.between.partition("=")
            sweeps = split(read_sweep(args.folders[0], labels[0]), knob, values.split(",") if values else None)
        else:
            sweeps = [read_sweep(f, label) for f, label in zip(args.folders, labels, strict=True)]
        result = compare_sweeps(sweeps, EXPERIMENTS, threshold, args.normalize, paired=bool(args.between))
        path = write(result, out, threshold, args.fail_above)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in result.left_out:
        print(f"left out: {line}", file=sys.stderr)
    print(f"comparison: {path}")
    code = 0
    if args.fail_above is not None:
        bad = regressions(result, args.fail_above)
        for row in bad.itertuples():
            print(f"slower: {row.experiment} {row.point} · {row.measure} [{row.sweep}]: x{row.ratio:.3f} "
                  f"({row.ratio_low:.3f} to {row.ratio_high:.3f})", file=sys.stderr)
        if not bad.empty:
            print(f"{len(bad)} point(s) slower by more than {100 * args.fail_above:g}% (the whole 90% interval above "
                  "it)", file=sys.stderr)
            code = 2
    if args.fail_on_inconclusive and not result.timed.empty:
        unsure = result.timed[result.timed["verdict"] == INCONCLUSIVE]
        if not unsure.empty:
            print(f"{len(unsure)} point(s) inconclusive at {100 * threshold:g}%: their interval crosses the threshold "
                  "(more sweep.rounds, or a quieter machine, narrow it)", file=sys.stderr)
            code = 2
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="subcommand:\n\n" + compare_parser().format_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path, help="sweep or run folders (default: newest sweep)")
    parser.add_argument("--out", type=Path, help="report folder (default: <first folder>/report)")
    parser.add_argument("--machine", type=Path, default=MACHINE_FILE,
                        help=f"machine reference for the roofline (default: {MACHINE_FILE})")
    args = parser.parse_args(argv)
    try:
        folders = args.folders or [newest_sweep(SWEEPS)]
        out = args.out or folders[0] / "report"
        check_out(out)
        if args.machine != MACHINE_FILE:  # a file the user named must be a machine reference
            try:
                cached_entries(args.machine)
            except MachineFileError as exc:
                raise ReportError(f"--machine: {exc}") from None
        path = build_report(folders, out, args.machine, EXPERIMENTS)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
