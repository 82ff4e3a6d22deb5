"""Shared by the report modules: which columns hold config, and Markdown tables."""

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


def markdown_table(df: pd.DataFrame) -> str:
    """``df`` as a GitHub Markdown table."""
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def config_columns(df: pd.DataFrame) -> list[str]:
    """The flattened config columns (``seed``, ``bench.*``, ``<key>.*``), in file order."""
    return [c for c in df.columns if c == "seed" or "." in c]
