"""What every figure shares: the theme and atomic saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.ticker import FuncFormatter

from infer_core.files import atomic_path


def theme() -> None:
    """Large, clean figures that read well on a slide."""
    sns.set_theme(context="talk", style="whitegrid")


def plain(x: float) -> str:
    """A tick value in plain, short form: 0.05, 30, 4000, 20k, 3M."""
    for scale, suffix in ((1e6, "M"), (1e4, "k")):
        if abs(x) >= scale:
            return f"{x / (1e3 if suffix == 'k' else scale):g}{suffix}"
    return f"{x:g}"


def plain_log_ticks(fig: plt.Figure) -> None:
    """Every log axis of ``fig`` labelled in plain numbers (:func:`plain`: "30", not "3×10¹"); between the powers
    of ten every tick is labelled on an axis spanning under half a decade, 2 and 5 only under a decade and a
    half, none on a wider one: so that neighbouring labels do not collide."""
    for ax in fig.axes:
        for axis, lims in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() != "log" or min(lims) <= 0:
                continue
            span = np.log10(max(lims) / min(lims))
            shown = range(2, 10) if span < 0.5 else (2, 5) if span < 1.5 else ()

            def minor(x: float, _: int | None = None, shown: tuple | range = shown) -> str:
                mantissa = round(x / 10 ** np.floor(np.log10(x) + 1e-9), 6)
                return plain(x) if mantissa in shown else ""

            axis.set_major_formatter(FuncFormatter(lambda x, _=None: plain(x)))
            axis.set_minor_formatter(FuncFormatter(minor))


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Plain log ticks (:func:`plain_log_ticks`), lay out, write atomically at 150 dpi, close; returns ``path``.
    A figure of several axes is laid out first so that they do not overlap; the tight bounding box keeps every
    title and label in the picture (a layout pass on one axes would only draw the figure once more)."""
    plain_log_ticks(fig)
    if len(fig.axes) > 1:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")  # titles and labels outside the axes stay in the picture
    plt.close(fig)
    return path
