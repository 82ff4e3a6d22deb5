"""Whether a reader can read a figure: every text it draws, measured with the renderer's own extents; two that
overlap (a legend counts as one box), text too small, an axis with a single labelled tick."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from experiments.reporting.plotting import overlap


def texts(fig: plt.Figure) -> list[tuple[str, Bbox, float, object]]:
    """Every text the figure draws, after a draw: (text, its extent in pixels, font size in points, its owner: the
    legend it belongs to, else None). Legends come as one box each, owner the legend itself."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found: list[tuple[str, Bbox, float, object]] = []
    seen: set[int] = set()  # a suptitle is also among the figure's texts

    def add(t: Text, owner: object = None) -> None:
        if id(t) not in seen and t.get_visible() and t.get_text().strip():
            seen.add(id(t))
            found.append((t.get_text(), t.get_window_extent(renderer), t.get_fontsize(), owner))

    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis._update_ticks():  # the ticks drawn (inside the view), major and minor
                for label, on in ((tick.label1, tick.label1.get_visible()), (tick.label2, tick.label2.get_visible())):
                    if on:
                        add(label)
            add(axis.label)
            add(axis.get_offset_text())
        for t in (ax.title, ax._left_title, ax._right_title, *ax.texts):
            add(t)
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            found.append(("legend", legend.get_window_extent(renderer), 99.0, legend))
            for t in (*legend.get_texts(), legend.get_title()):
                add(t, legend)
    for t in fig.texts:
        add(t)
    if getattr(fig, "_suptitle", None) is not None:
        add(fig._suptitle)
    for legend in fig.legends:
        found.append(("legend", legend.get_window_extent(renderer), 99.0, legend))
        for t in (*legend.get_texts(), legend.get_title()):
            add(t, legend)
    return found


def text_problems(fig: plt.Figure, min_points: float = 9.0, slack_px: float = 1.0) -> list[str]:
    """What a reader cannot read: two texts that overlap (a legend counts as one box over the texts outside it),
    text under ``min_points``, an axis with a single labelled tick."""
    items = texts(fig)
    problems = [f"{text!r} is {size:g} pt" for text, _, size, _ in items if size < min_points]
    for i, (a, box_a, _, owner_a) in enumerate(items):
        for b, box_b, _, owner_b in items[i + 1:]:
            if owner_a is not None and owner_b is not None and owner_a is owner_b:
                continue  # a legend and its own entries
            if (a == "legend" and owner_b is owner_a) or (b == "legend" and owner_a is owner_b):
                continue
            if overlap(box_a, box_b, slack_px):
                problems.append(f"{a!r} overlaps {b!r}")
    for ax in fig.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labelled = [t for t in axis._update_ticks() if t.label1.get_visible() and t.label1.get_text().strip()]
            if ax.get_visible() and axis.get_visible() and len(labelled) == 1:
                problems.append(f"the {name} axis of {ax.get_title()!r} has one labelled tick")
    return problems
