"""Plot helpers shared by the chapters: one style, Chinese labels, attention heatmaps.

Call :func:`use_course_style` once at the top of a notebook.
"""
from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
from matplotlib import font_manager
import matplotlib.pyplot as plt

__all__ = ["use_course_style", "heatmap", "CJK_FONT"]

_FONT_FILE = Path(__file__).parent / "data" / "fonts" / "WenQuanYiMicroHei-subset.ttf"
CJK_FONT = "WenQuanYi Micro Hei"


def use_course_style() -> None:
    """Register the bundled CJK font (as a fallback after DejaVu Sans) and set a few defaults."""
    # The CJK font has no bold face: matplotlib would log a findfont message for bold text in every notebook.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    if CJK_FONT not in {f.name for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(str(_FONT_FILE))
    matplotlib.rcParams.update(
        {
            "font.family": ["DejaVu Sans", CJK_FONT],
            "axes.unicode_minus": False,
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "figure.figsize": (6.4, 4.0),
            "axes.spines.top": False,
            "axes.spines.right": False,
            "image.cmap": "viridis",
        }
    )


def heatmap(matrix, row_labels=None, col_labels=None, ax=None, title=None, annotate=True, fmt="{:.2f}",
            cmap="viridis", vmin=0.0, vmax=None, xlabel="key", ylabel="query"):
    """Draw a (T, S) matrix (attention weights, a mask) with labelled rows and columns."""
    import numpy as np

    m = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"heatmap: expected a 2-D matrix (T, S), received shape {m.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.55 * m.shape[1] + 2, 0.5 * m.shape[0] + 1.2))
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(m.shape[1]), labels=col_labels if col_labels is not None else range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]), labels=row_labels if row_labels is not None else range(m.shape[0]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.spines[:].set_visible(False)
    if title:
        ax.set_title(title)
    if annotate and m.size <= 400:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                r, g, b, _ = im.cmap(im.norm(m[i, j]))  # dark text on light cells, whatever the colour map
                light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
                ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=8,
                        color="black" if light else "white")
    return ax
