"""The course's one figure style: sizes, colours, labelled axes, legends clear of the data.

Every chapter draws with these helpers so that the sixteen chapters read as one book:

    from minillm.course.plotting import figure, finish, COLORS
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
           "legend_outside", "plot_timeline"]

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


def plot_timeline(events: list, ax=None, title: str | None = None,
                  unit: str = "ms"):
    """Draw a pipeline timeline: one row per stage, forwards and backwards as labelled bars.

    Args:
        events: `Event`s (or their dicts, as a results file holds them).
        ax: a matplotlib Axes to draw into (default: a new figure).
        title: the figure title (default: the measured bubble beside the formula's).
        unit: "ms" for measured timelines (seconds in the events), "steps" for simulated ones.

    Returns:
        The Axes.
    """
    from minillm.distributed.pipeline import Event, bubble_fraction, timeline_bubble

    events = [e if isinstance(e, Event) else Event(**e) for e in events]
    if ax is None:
        _, ax = figure(width=8, height=0.6 * (1 + max(e.stage for e in events)) + 1.2)
    colors = {"F": COLORS["ours"], "B": COLORS["highlight"]}
    scale = 1e3 if unit == "ms" else 1.0
    t0 = min(e.start for e in events)
    for e in events:
        start, end = scale * (e.start - t0), scale * (e.end - t0)
        ax.broken_barh([(start, end - start)], (e.stage - 0.4, 0.8), color=colors[e.kind],
                       edgecolor="white")
        ax.text((start + end) / 2, e.stage, str(e.micro), ha="center", va="center", fontsize=8,
                color="white")
    p = 1 + max(e.stage for e in events)
    m = 1 + max(e.micro for e in events)
    ax.set_yticks(range(p))
    ax.invert_yaxis()
    for kind, name in (("F", "forward"), ("B", "backward")):
        ax.add_patch(plt.Rectangle((0, 0), 0, 0, color=colors[kind], label=name))
    finish(ax, x=f"time from the first forward ({unit})", y="pipeline stage (index)",
           title=title or f"pipeline timeline, p={p}, m={m}: idle {timeline_bubble(events):.2f}"
                          f" (formula {bubble_fraction(p, m):.2f})")
    return ax
