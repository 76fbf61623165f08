"""The cells a widget needs (tests/cell_slice.py, used by the browser walk): a backward slice over a
notebook's code cells, read from their source."""

from __future__ import annotations

import json

from browser import REPO
from cell_slice import cells_to_run, widget_cells


def _notebook(*sources: str) -> list[dict]:
    return [{"cell_type": "markdown" if s.startswith("# ") else "code", "source": s}
            for s in sources]


def test_a_widget_runs_after_what_it_reads_and_what_changed_that_and_nothing_else():
    cells = _notebook(
        "# Title",                                        # 0 markdown
        "%matplotlib inline\nimport math\nscale = 2",      # 1 setup
        "table = []",                                      # 2 read by the widget's function
        "slow = sum(range(10**6))  # an experiment",       # 3 not needed
        "table.append(math.pi * scale)",                   # 4 changes table in place
        "fig, ax = 1, 2\nprint(ax)",                       # 5 scratch names, not needed
        "def show(k):\n    fig, ax = 3, 4\n    return table[k] * ax",  # 6 fig, ax are local
        "from minillm.course import interact\ninteract(show, k=0);",    # 7 the widget
        "after = show(0)",                                 # 8 after the widget
    )
    assert widget_cells(cells) == [7]
    assert cells_to_run(cells, [7]) == [1, 2, 4, 6, 7]


def test_a_name_bound_again_needs_only_its_last_binding_unless_it_reads_the_old_one():
    cells = _notebook("x = 1", "x = 2", "y = 10", "y = y + 1", "interact(lambda: x + y)")
    assert cells_to_run(cells, [4]) == [1, 2, 3, 4]


def test_a_function_reading_a_global_needs_the_cell_that_binds_it():
    cells = _notebook("model = 'trained'", "def sample():\n    return model", "model2 = 0",
                      "interact(sample)")
    assert cells_to_run(cells, [3]) == [0, 1, 3]


def test_every_chapter_with_widgets_runs_a_slice_ending_at_its_widgets():
    for path in sorted((REPO / "chapters").glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text()
        widgets = widget_cells(json.loads(text)["cells"])
        assert ("from minillm.course import interact" in text) == bool(widgets), path.name
        cells = json.loads(text)["cells"]
        if widgets:
            run = cells_to_run(cells, widgets)
            assert set(widgets) <= set(run) and run == sorted(run) and run[-1] == widgets[-1]
            assert all(cells[i]["cell_type"] == "code" for i in run), path.name
