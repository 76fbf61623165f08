"""The notebook conventions of DESIGN.md, checked on every stored chapter (no execution here:
nbval executes the chapters, and with them the exercise solutions).

- Numbers in prose come from the code: the closing "What we saw" section states its numbers
  in a code cell that renders Markdown from the variables computed above it; a Markdown cell
  there that holds a digit (other than a chapter, section, table, figure or equation number or
  a year) fails, because a hand-typed number drifts from the run.
- Exercises: 3-5, graded (recall, derivation, experiment), solutions the reader reveals
  (<details>), and at least one solution run as a code cell ("# Solution N").
- The metric line: every chapter that trains or changes a model draws the lineage figure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "chapters").glob("[0-9][0-9]_*.ipynb"))
LINEAGE_CHAPTERS = {"01", "02", "03", "04", "05", "06", "07", "08", "11", "12", "13", "14", "15",
                    "17", "19", "20"}  # train or change a model

# references that are not measured numbers
ALLOWED = re.compile(
    r"[Cc]hapters? \d\d(?:(?:,| and| or|-|–)\s*\d\d)*|§\s?[\d.]+|\b(?:19|20)\d\d\b|"
    r"(?:Table|Figure|Fig\.|Eq\.|Equation|Section|Appendix|section)s? [A-Z]?\d+(?:\.\d+)*|"
    r"\bch\d\d\b|\d\d_\w+\.ipynb|`[^`]*`|\$[^$]*\$|\[\d+\]")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def closing_section(cells: list[dict]) -> list[dict]:
    """The cells from the "What we saw" heading to the next heading of level 1 or 2."""
    start = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                  and re.match(r"#{1,3} What we saw", _src(c).strip())), None)
    if start is None:
        return []
    out = [cells[start]]
    for c in cells[start + 1:]:
        if c["cell_type"] == "markdown" and re.match(r"#{1,2} ", _src(c).strip()):
            break
        out.append(c)
    return out


def typed_numbers(text: str) -> list[str]:
    """Digit runs in Markdown prose that are not references (see ALLOWED)."""
    return re.findall(r"\d[\d,.]*", ALLOWED.sub(" ", text))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem[:2])
def test_closing_numbers_are_rendered_from_the_run(path):
    section = closing_section(_cells(path))
    assert section, f"{path.name}: no '## What we saw' closing section"
    typed = {n for c in section if c["cell_type"] == "markdown" for n in typed_numbers(_src(c))}
    assert not typed, (f"{path.name}: the closing section types numbers by hand {sorted(typed)}; "
                       "render them from the variables (display(Markdown(f'...'))) instead")
    rendered = [c for c in section if c["cell_type"] == "code" and "Markdown(" in _src(c)]
    assert rendered, f"{path.name}: the closing section has no code cell that renders Markdown"
    for c in rendered:
        shown = [o for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
        assert shown, f"{path.name}: the closing cell was not executed (no Markdown output stored)"


def test_typed_numbers_sees_measurements_but_not_references():
    assert typed_numbers("ours reached 2.31 bits/byte, 5.0x faster") == ["2.31", "5.0"]
    assert typed_numbers("as in chapter 06 and Table 4.1 (2012), §5.1, `d_model=128`, $O(n^2)$") \
        == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem[:2])
def test_three_to_five_exercises_with_solutions_that_run(path):
    cells = _cells(path)
    ex = [c for c in cells if c["cell_type"] == "markdown" and _src(c).lstrip().startswith(
        "## Exercises")]
    assert len(ex) == 1, f"{path.name}: one '## Exercises' cell expected, found {len(ex)}"
    text = _src(ex[0])
    items = re.findall(r"^\d+\. \*\*(\w+)", text, re.M)
    assert 3 <= len(items) <= 5, f"{path.name}: {len(items)} exercises; write 3-5"
    kinds = {k.lower() for k in items}
    assert "recall" in kinds and kinds & {"derivation", "experiment"}, (
        f"{path.name}: exercises graded from recall to a derivation or experiment, got {items}")
    assert "<details>" in text, f"{path.name}: solutions should be hidden in <details>"
    solutions = [c for c in cells if c["cell_type"] == "code" and re.match(
        r"# Solution \d", _src(c))]
    assert solutions, f"{path.name}: no solution code cell ('# Solution N') for nbval to run"


@pytest.mark.parametrize("path", [p for p in CHAPTERS if p.stem[:2] in LINEAGE_CHAPTERS],
                         ids=lambda p: p.stem[:2])
def test_chapters_that_train_a_model_place_it_on_the_metric_line(path):
    cells = [c for c in _cells(path) if c["cell_type"] == "code" and "plot_lineage(" in _src(c)]
    assert cells, f"{path.name}: trains or changes a model but never draws plot_lineage"
    assert any("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", [])), (
        f"{path.name}: the lineage figure is not stored (run the chapter)")


# Figures go through minillm.course.plotting: `figure()` makes them in the course style and `finish()`
# labels every axis with its unit (it raises on a label without one, so nbval catches it),
# titles the axes and moves the legend off the data. Drawing the labels, titles or legends by
# hand bypasses both checks.
RAW_FIGURE_CALLS = re.compile(
    r"plt\.(?:subplots|figure|xlabel|ylabel|title|legend)\(|"
    r"\.set_(?:xlabel|ylabel|title)\(|\.legend\(|\.set\([^)]*(?:xlabel|ylabel|title)\s*=")
FINISHERS = ("finish(", "beside_paper(")


def raw_figure_calls(source: str) -> list[str]:
    """Matplotlib calls in `source` that draw a figure's labels, titles or legends by hand."""
    return RAW_FIGURE_CALLS.findall(source)


def test_raw_figure_calls_are_seen():
    assert raw_figure_calls("fig, ax = plt.subplots()\nax.set_xlabel('x')\nax.legend()") == [
        "plt.subplots(", ".set_xlabel(", ".legend("]
    assert raw_figure_calls("ax.set(xlabel='x (s)')") == [".set(xlabel="]
    assert raw_figure_calls("fig, ax = figure()\nfinish(ax, 'x (s)', 'y (nats)', 'T')") == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem[:2])
def test_one_figure_style(path):
    bad = []
    for i, c in enumerate(_cells(path)):
        if c["cell_type"] != "code":
            continue
        src = _src(c)
        bad += [f"cell {i}: {call}" for call in raw_figure_calls(src)]
        if re.search(r"(?<![\w.])figure\(", src) and not any(f in src for f in FINISHERS):
            bad.append(f"cell {i}: figure() without finish()")
    assert not bad, (f"{path.name}: figures drawn outside minillm.course.plotting {bad}; make them with "
                     "figure() and label them with finish(ax, x, y, title)")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem[:2])
def test_title_cell_names_the_chapter_survey_section_and_prerequisites(path):
    title = _src(_cells(path)[0])
    assert title.startswith(f"# Chapter {path.stem[:2]} — "), (
        f"{path.name}: the title cell should open '# Chapter {path.stem[:2]} — Title'")
    assert "§" in title, f"{path.name}: the title cell should name the survey section (§)"
    assert "Prerequisites" in title, f"{path.name}: the title cell should list its prerequisites"
