"""Markdown tables for the report: cells a person reads."""

from __future__ import annotations

import pandas as pd


def fmt(value: object) -> str:
    """A cell for a Markdown table: 4 significant digits for floats, empty for missing."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def seconds(value: object) -> str:
    """A time a person reads: ``161.5 µs``, ``2.31 ms``, ``1.38 s``."""
    if not isinstance(value, (int, float)) or pd.isna(value):
        return fmt(value)
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value * 1e9:.4g} ns" if value else "0 s"


def markdown_table(df: pd.DataFrame) -> str:
    """``df`` as a GitHub Markdown table; columns of seconds (``*_s``, not rates ``*_per_s``) in s, ms, µs or ns."""
    timed = [str(c).endswith("_s") and not str(c).endswith("per_s") for c in df.columns]  # not rates (x_per_s)
    cells = [[seconds(v) if t else fmt(v) for t, v in zip(timed, row, strict=True)]
             for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)
