"""What every figure shares: the theme and atomic saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from infer_core.files import atomic_path


def theme() -> None:
    """Large, clean figures that read well on a slide."""
    sns.set_theme(context="talk", style="whitegrid")


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write atomically at 150 dpi, close; returns ``path``. A figure of several axes is laid out
    first so that they do not overlap; the tight bounding box keeps every title and label in the picture
    (a layout pass on one axes would only draw the figure once more)."""
    if len(fig.axes) > 1:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")  # titles and labels outside the axes stay in the picture
    plt.close(fig)
    return path
