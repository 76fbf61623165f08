"""The course's one figure style: sizes, colours, labelled axes, legends clear of the data.

Every chapter draws with these helpers so that the sixteen chapters read as one book:

    from minillm.plotting import figure, finish, COLORS
    fig, ax = figure()                          # the style applied, the course's default size
    ax.plot(steps, loss, color=COLORS["ours"], label="minillm")
    finish(ax, x="optimizer step", y="loss (nats/token)", title="Training loss")

`finish` refuses an axis label without its unit in parentheses (write "(count)" or "(ratio)"
for unitless quantities) and places the legend outside the axes, so it never covers data.
`beside_paper` draws the course's recurring comparison: our number next to the paper's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt

__all__ = ["COLORS", "STYLE", "apply_style", "figure", "finish", "beside_paper",
           "legend_outside"]

COLORS = {
    "ours": "#1f77b4",       # what this chapter measured
    "paper": "#d62728",      # the paper's number
    "baseline": "#7f7f7f",   # earlier chapters, references, context
    "highlight": "#ff7f0e",  # the chapter's own models on shared figures
    "good": "#2ca02c",
}

STYLE = {
    "figure.dpi": 80,
    "figure.figsize": (7.0, 4.0),
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "savefig.bbox": "tight",
}

_UNIT = re.compile(r"\(.+\)\s*$")


def apply_style() -> None:
    """Set the course's matplotlib style for the rest of the session."""
    mpl.rcParams.update(STYLE)


def figure(ncols: int = 1, nrows: int = 1, width: float | None = None,
           height: float | None = None, **kwargs):
    """`plt.subplots` in the course style; width and height in inches (default 7 × 4 per row)."""
    apply_style()
    w = width if width is not None else (7.0 if ncols == 1 else 4.0 * ncols)
    h = height if height is not None else 4.0 * nrows
    return plt.subplots(nrows, ncols, figsize=(w, h), **kwargs)


def _check_label(axis: str, label: str) -> str:
    if not label or not _UNIT.search(label):
        raise ValueError(f"{axis} label {label!r} has no unit: end it with the unit in "
                         "parentheses, e.g. 'time (s)', 'loss (nats/token)', 'share (%)'")
    return label


def legend_outside(ax) -> None:
    """The legend to the right of the axes, outside the plotting area (if there is one)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0)


def finish(ax, x: str | None, y: str | None, title: str, legend: bool = True) -> None:
    """Label both axes (with units), title the axes, move the legend outside the data.

    None leaves an axis unlabelled: only for a categorical axis whose tick labels name it."""
    if x is not None:
        ax.set_xlabel(_check_label("x", x))
    if y is not None:
        ax.set_ylabel(_check_label("y", y))
    ax.set_title(title)
    if legend:
        legend_outside(ax)
    ax.figure.tight_layout()


def beside_paper(ax, labels: Sequence[str], ours: Sequence[float],
                 paper: Sequence[float | None], unit: str, title: str,
                 paper_name: str = "paper", fmt: str = "{:.3g}") -> None:
    """Horizontal bars: our value and the paper's for each label (None: the paper has none)."""
    if not len(labels) == len(ours) == len(paper):
        raise ValueError(f"labels, ours and paper differ in length: {len(labels)}, {len(ours)}, "
                         f"{len(paper)}")
    y = range(len(labels))
    h = 0.38
    bars = ax.barh([i - h / 2 for i in y], ours, height=h, color=COLORS["ours"], label="minillm")
    ax.bar_label(bars, labels=[fmt.format(v) for v in ours], fontsize=8, padding=2)
    known = [(i, p) for i, p in zip(y, paper, strict=True) if p is not None]
    if known:
        pb = ax.barh([i + h / 2 for i, _ in known], [p for _, p in known], height=h,
                     color=COLORS["paper"], label=paper_name)
        ax.bar_label(pb, labels=[fmt.format(p) for _, p in known], fontsize=8, padding=2)
    ax.set_yticks(list(y), list(labels))
    ax.invert_yaxis()
    top = max([*ours, *[p for _, p in known]])
    ax.set_xlim(0, 1.18 * top if top > 0 else 1)
    finish(ax, x=unit, y=None, title=title)
