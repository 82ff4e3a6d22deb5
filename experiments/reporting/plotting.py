"""What every figure shares: the theme, plain log ticks, point labels and legends placed clear of other text,
unstable points ringed, and atomic saving (with the checks a test may add)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import LogFormatter, LogFormatterSciNotation
from matplotlib.transforms import Bbox

from infer_core.measure.files import atomic_path


def theme() -> None:
    """Large, clean figures that read well on a slide."""
    sns.set_theme(context="talk", style="whitegrid")


def plain(x: float) -> str:
    """A tick value in plain, short form: 0.05, 30, 4000, 20k, 3M."""
    for scale, suffix in ((1e6, "M"), (1e4, "k")):
        if abs(x) >= scale:
            return f"{x / (1e3 if suffix == 'k' else scale):g}{suffix}"
    return f"{x:g}"


UNSTABLE = "unstable timing (CV > 10% or a sample under 1 ms)"


def mark_unstable(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, flag: str = "unstable",
                  label: str = UNSTABLE) -> None:
    """Ring the points of ``df`` whose ``flag`` column is True, and name the rings in the legend."""
    if flag not in df:
        return
    shaky = df[df[flag].astype(str) == "True"].dropna(subset=[x, y])
    if shaky.empty:
        return
    ax.scatter(shaky[x], shaky[y], s=260, facecolors="none", edgecolors="crimson", lw=2, zorder=4, label=label)
    ax.legend(fontsize=11)


class PlainLogFormatter(LogFormatter):
    """matplotlib's own choice of which log ticks to label (decades; on a narrow axis, some or all ticks between
    them), written as plain numbers (:func:`plain`)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return plain(x) if super().__call__(x, pos) else ""

    def set_locs(self, locs: object = None) -> None:
        """matplotlib's choice, except that an axis where it would label fewer than two ticks (64 to 160: only
        100) labels every tick between the powers of ten."""
        super().set_locs(locs)
        low, high = sorted(self.axis.get_view_interval())
        if self._sublabels is None or low <= 0:
            return
        shown = {round(c * 10.0**d, 9) for d in range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
                 for c in self._sublabels if low <= c * 10.0**d <= high}
        if len(shown) < 2:
            self._sublabels = set(range(1, 11))


def legend_below(fig: plt.Figure, handles: list, labels: list[str], ncol: int, fontsize: float = 11) -> None:
    """One legend for the whole figure, centred under everything its axes draw (tick labels and axis titles
    included, measured in the final layout), so that it covers none of them."""
    plain_log_ticks(fig)
    if len(fig.axes) > 1:
        fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bottom = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes if ax.get_visible())
    fig.legend(handles, labels, loc="upper center", ncol=ncol, fontsize=fontsize,
               bbox_to_anchor=(0.5, (bottom - 8) / fig.bbox.height))


#: Where a point's label may go, in points from the point, tried in turn until it collides with no label placed.
OFFSETS = ((4, 4), (4, -14), (-4, 4), (-4, -14), (4, 16), (4, -26), (-4, 16), (-4, -26), (8, 28), (8, -38))


def label_points(ax: plt.Axes, points: list[tuple[float, float, str]], fontsize: float = 10) -> None:
    """Label each point (x, y, text) beside it, at the first of :data:`OFFSETS` where its text overlaps no label
    placed before (call it once the axes' data and scales are set). A figure of several axes is laid out as
    :func:`save_figure` will lay it out, and the labels placed again until the layout no longer moves them."""
    fig = ax.figure
    plain_log_ticks(fig)
    notes: list = []
    for _ in range(3):
        for note in notes:
            note.remove()
        if len(fig.axes) > 1:
            fig.tight_layout()
        fig.canvas.draw()
        notes = _place(ax, points, fontsize)
        if len(fig.axes) == 1:
            return
        fig.tight_layout()
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        after = [n.get_window_extent(renderer) for n in notes]
        if not any(overlap(a, b) for i, a in enumerate(after) for b in after[i + 1:]):
            return


def _place(ax: plt.Axes, points: list[tuple[float, float, str]], fontsize: float, pad_px: float = 4.0) -> list:
    """Annotations at the first free offset, each kept ``pad_px`` from the others (a later layout pass moves
    the points a little)."""
    renderer = ax.figure.canvas.get_renderer()
    notes, placed = [], []
    for x, y, text in points:
        for dx, dy in OFFSETS:
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                               ha="left" if dx >= 0 else "right")
            box = note.get_window_extent(renderer).padded(pad_px)
            if not any(overlap(box, other) for other in placed) or (dx, dy) == OFFSETS[-1]:
                break
            note.remove()
        notes.append(note)
        placed.append(box)
    return notes


def overlap(a: Bbox, b: Bbox, slack_px: float = 1.0) -> bool:
    """Whether two boxes share more than ``slack_px`` in both directions."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > slack_px and min(a.y1, b.y1) - max(a.y0, b.y0) > slack_px


def plain_log_ticks(fig: plt.Figure) -> None:
    """Every log axis of ``fig`` that still has matplotlib's default labels gets :class:`PlainLogFormatter`
    (an axis whose ticks a figure set itself keeps them)."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            if isinstance(axis.get_major_formatter(), LogFormatterSciNotation):
                axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
            if isinstance(axis.get_minor_formatter(), LogFormatterSciNotation):
                axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


#: Checks run on every figure before it is saved (a test appends one to look for text that overlaps).
AUDITS: list[Callable[[plt.Figure, Path], None]] = []


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Plain log ticks (:func:`plain_log_ticks`), lay out, write atomically at 150 dpi, close; returns ``path``.
    A figure of several axes is laid out first so that they do not overlap; the tight bounding box keeps every
    title and label in the picture (a layout pass on one axes would only draw the figure once more)."""
    plain_log_ticks(fig)
    if len(fig.axes) > 1:
        fig.tight_layout()
    for audit in AUDITS:
        audit(fig, path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")  # titles and labels outside the axes stay in the picture
    plt.close(fig)
    return path
