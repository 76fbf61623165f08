"""The one figure style: labelled axes with units, legends outside the data, ours beside the paper."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from minillm.course.plotting import COLORS, STYLE, beside_paper, figure, finish


def test_figure_applies_the_style():
    fig, ax = figure()
    assert plt.rcParams["axes.spines.top"] is False
    assert tuple(fig.get_size_inches()) == (7.0, 4.0)
    fig2, axes = figure(ncols=3)
    assert len(axes) == 3 and fig2.get_size_inches()[0] == 12.0
    assert STYLE["legend.frameon"] is False
    plt.close("all")


@pytest.mark.parametrize("label", ["loss", "", "step (", "tokens per second"])
def test_an_axis_label_without_its_unit_is_refused(label):
    _, ax = figure()
    with pytest.raises(ValueError, match="no unit"):
        finish(ax, x=label, y="loss (nats/token)", title="t")
    plt.close("all")


def test_the_legend_sits_outside_the_axes():
    fig, ax = figure()
    ax.plot([0, 1], [0, 1], label="a")
    ax.plot([0, 1], [1, 0], label="b")
    finish(ax, x="step (count)", y="loss (nats/token)", title="two lines")
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1
    assert ax.get_xlabel() == "step (count)" and ax.get_title() == "two lines"
    plt.close(fig)


def test_beside_paper_draws_both_and_skips_missing_paper_values():
    _, ax = figure()
    beside_paper(ax, ["a", "b", "c"], [1.0, 2.0, 3.0], [1.5, None, 2.5], unit="ratio (x)",
                 title="ours vs paper")
    ours = [p for p in ax.patches if p.get_facecolor()[:3] == matplotlib.colors.to_rgb(COLORS["ours"])]
    paper = [p for p in ax.patches if p.get_facecolor()[:3] == matplotlib.colors.to_rgb(COLORS["paper"])]
    assert [p.get_width() for p in ours] == [1.0, 2.0, 3.0]
    assert [p.get_width() for p in paper] == [1.5, 2.5]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="differ in length"):
        beside_paper(ax, ["a"], [1.0, 2.0], [None], unit="x (1)", title="t")
    plt.close("all")
