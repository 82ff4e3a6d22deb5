"""The one output format of every benchmark, like llama-bench's: a table with one line per figure (its
median, its spread over rounds, its target and the verdict), then a closing line; ``Table.finish``
returns the exit code, non-zero when any target is missed."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from infer_core.measure.environment import blas_info, cpu_model


@dataclass(frozen=True)
class Figure:
    """One judged (or reported) number: per-round values, their unit, and the target on the median."""

    name: str
    values: np.ndarray | list[float] | float  # per-round values (ratios, shares) or one measurement
    unit: str = ""  # "x", "%", "ms", "GB/s" ...
    target: tuple[str, float] | None = None  # (">=" or "<=", bound) on the median; None: reported only
    holds: bool = True  # a further condition the verdict needs (e.g. bytes identical)
    note: str = ""  # what was compared, the medians behind a ratio, why a line is not judged

    @property
    def samples(self) -> np.ndarray:
        return np.atleast_1d(np.asarray(self.values, dtype=float))

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target
        return self.holds and (self.median >= bound if op == ">=" else self.median <= bound)


def _num(x: float, unit: str) -> str:
    return f"{x:.3g}{unit}" if abs(x) < 1000 else f"{x:,.0f}{unit}"


class Table:
    """Prints each figure as it is added; ``finish()`` prints the verdict line and returns the exit code."""

    def __init__(self, title: str) -> None:
        blas = blas_info()
        print(f"# {title}\n# {cpu_model()}, numpy {np.__version__}, {blas['blas']}, {blas['blas_threads']} BLAS "
              "thread(s)\n")
        print("| figure | median | spread (q1–q3) | n | target | verdict | note |")
        print("|---|---:|---:|---:|---|---|---|")
        self.figures: list[Figure] = []

    def add(self, f: Figure) -> Figure:
        s = f.samples
        spread = "—" if len(s) < 2 else "–".join(_num(q, f.unit) for q in np.percentile(s, [25, 75]))
        target = "—" if f.target is None else f"{f.target[0]} {_num(f.target[1], f.unit)}"
        verdict = {None: "reported", True: "MEETS", False: "MISSES"}[f.met]
        print(f"| {f.name} | {_num(f.median, f.unit)} | {spread} | {len(s)} | {target} | {verdict} | {f.note} |",
              flush=True)
        self.figures.append(f)
        return f

    def finish(self) -> int:
        judged = [f for f in self.figures if f.met is not None]
        missed = [f.name for f in judged if not f.met]
        print(f"\n{len(judged) - len(missed)} of {len(judged)} target(s) met" +
              (f"; missed: {'; '.join(missed)}" if missed else ""))
        sys.stdout.flush()
        return 1 if missed else 0
