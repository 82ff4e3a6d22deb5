"""The machine experiment's part of the report: the measured peaks, as a table."""

from __future__ import annotations

import pandas as pd

from experiments.framework.spec import Report
from experiments.reporting.tables import markdown_table


def sections(df: pd.DataFrame) -> str:
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return ""
    table = ok.pivot_table(index="blas_threads", columns="variant", values=["gflops", "gb_per_s"], aggfunc="max")
    table.columns = [f"{variant} {'GFLOP/s' if metric == 'gflops' else 'GB/s'}" for metric, variant in table.columns]
    table = table.dropna(axis=1, how="all").reset_index()
    return "\n".join(["### Machine reference", "", markdown_table(table), ""])


REPORT = Report(headline=("gflops", "gb_per_s", "blas_threads"), sections=sections)
