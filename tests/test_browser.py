"""The learner's path, in a real browser, without running every chapter a second time (nbval
already runs each one under `make test`):

- JupyterLab opens every stored chapter and, before anything runs, shows its title cell, draws
  every stored figure, and shows no error output;
- a chapter with widgets (`minillm.course.interact`) runs its widget cells and only the cells
  they need (tests/cell_slice.py), and every control, when moved, changes the figure or text it
  drives;
- the two chapters quickest to execute (RUN_ALL) run start to end ("Run All Cells") with no
  error and every cell run, then have their widgets turned.

The chapters alternate between this file and tests/test_browser_second_half.py (HALF), so that
pytest-xdist, which keeps a file on one worker (--dist loadfile), walks them on two workers.
Playwright drives the system Chromium (`make venv` installs Debian's `chromium` when missing; no
browser is downloaded). Screenshots go to build/browser/: each chapter's first figure, and each
widget cell before and after its controls move.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from browser import REPO, JupyterLab, Lab, chromium_path
from cell_slice import cells_to_run, widget_cells

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = chromium_path()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found (make venv installs Debian's chromium; or set "
                             "MINILLM_CHROMIUM to a Chromium binary)")]
SHOTS = REPO / "build" / "browser"
CHAPTERS = sorted(p.name for p in (REPO / "chapters").glob("[0-9][0-9]_*.ipynb"))
# the two quickest chapters to execute (README's seconds per chapter: 7 s and 13 s under nbval)
RUN_ALL = ["04_tokenization.ipynb", "09_flash_attention.ipynb"]
HALF = 0  # this file walks CHAPTERS[0::2]; test_browser_second_half.py CHAPTERS[1::2]


def _cells(notebook: str) -> list[dict]:
    return json.loads((REPO / "chapters" / notebook).read_text())["cells"]


def _kind(notebook: str) -> str:
    if notebook in RUN_ALL:
        return "run all"
    return "widgets" if widget_cells(_cells(notebook)) else "stored"


def pytest_generate_tests(metafunc):
    """Each test walks the chapters of its kind in its file's half (a test names its kind)."""
    if "notebook" in metafunc.fixturenames:
        kind = metafunc.function.kind
        metafunc.parametrize("notebook", [c for c in CHAPTERS[metafunc.module.HALF::2]
                                          if _kind(c) == kind])


def _of_kind(kind: str):
    """Marks a test as walking the chapters of `kind` (see pytest_generate_tests)."""
    def mark(test):
        test.kind = kind
        return test
    return mark


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = JupyterLab(tmp_path_factory.mktemp("lab"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _move(control, page) -> str:
    """Turn one control the way a learner would; returns what was done."""
    kind = control.get_attribute("class") or ""
    if "widget-slider" in kind or "widget-hslider" in kind:
        handle = control.locator(".noUi-handle").first
        handle.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        return "slider +3 steps"
    if "widget-dropdown" in kind:
        select = control.locator("select")
        options = select.locator("option").all_inner_texts()
        current = select.input_value()
        other = next(o for o in options if o != current)
        select.select_option(label=other)
        return f"dropdown -> {other}"
    if "widget-checkbox" in kind:
        control.locator("input[type=checkbox]").click()
        return "checkbox toggled"
    if "widget-textarea" in kind or "widget-text" in kind:
        box = control.locator("textarea, input").first
        box.fill(box.input_value() + " Good night")
        box.press("Tab")  # the value is sent when the box loses focus
        return "text edited"
    raise AssertionError(f"no way to move a control of class {kind!r}")


def _settled(cell, quiet: float = 3.0, timeout: float = 120) -> list[str]:
    """The cell's outputs once they have stopped changing for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = Lab.outputs_of(cell), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = Lab.outputs_of(cell)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > quiet:
            return now
    raise TimeoutError("the widget's outputs kept changing")


@_of_kind("stored")
def test_stored_chapter_shows_its_title_and_figures_and_no_error(lab, browser, notebook):
    with _opened(lab, browser, notebook) as nb:
        _check_stored_outputs(nb, notebook)


@_of_kind("widgets")
def test_stored_chapter_renders_and_its_widgets_drive_their_figures(lab, browser, notebook):
    with _opened(lab, browser, notebook) as nb:
        _check_stored_outputs(nb, notebook)
        cells = _cells(notebook)
        run = cells_to_run(cells, widget_cells(cells))
        nb.run_cells(run, timeout=600)
        _check_ran(nb, notebook, run)
        _drive_widgets(nb, notebook)


@_of_kind("run all")
def test_chapter_runs_start_to_end_in_jupyterlab_and_its_widgets_drive_their_figures(
        lab, browser, notebook):
    with _opened(lab, browser, notebook) as nb:
        _check_stored_outputs(nb, notebook)
        nb.run_all(timeout=900)
        cells = _cells(notebook)
        _check_ran(nb, notebook, [i for i, c in enumerate(cells)
                                  if c["cell_type"] == "code" and "".join(c["source"]).strip()])
        _drive_widgets(nb, notebook)


@contextmanager
def _opened(lab, browser, notebook: str):
    """`notebook` open in a page of its own; its kernel is stopped afterwards."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    nb = None
    try:
        nb = Lab(lab, page, notebook)
        yield nb
    finally:
        if nb is not None:
            nb.shutdown()
        page.close()


def _check_stored_outputs(nb: Lab, notebook: str) -> None:
    """Before anything runs: the title cell shows, every stored figure is drawn, no error."""
    cells = _cells(notebook)
    title = next(ln.lstrip("# ").strip() for ln in "".join(cells[0]["source"]).splitlines()
                 if ln.startswith("#"))
    heading = nb.page.locator(".jp-MarkdownCell h1").first
    assert heading.is_visible(), f"{notebook}: the title cell is not shown"
    assert title in heading.inner_text(), (notebook, heading.inner_text())
    stored = sum(any(k in o.get("data", {}) for k in ("image/png", "image/jpeg"))
                 for c in cells for o in c.get("outputs", []))
    figures = nb.page.locator(".jp-OutputArea-output img")
    deadline = time.monotonic() + 30
    while not figures.evaluate_all("els => els.every(e => e.complete)"):
        assert time.monotonic() < deadline, f"{notebook}: figures still loading after 30 s"
        time.sleep(0.5)
    widths = figures.evaluate_all("els => els.map(e => e.naturalWidth)")
    assert len(widths) >= stored, f"{notebook}: {len(widths)} figures shown, {stored} stored"
    assert all(w > 0 for w in widths), f"{notebook}: a stored figure is not drawn"
    assert nb.error_texts() == [], f"{notebook}: a stored output is an error"
    errors = [c["source"][:80] for c in cells if c["cell_type"] == "code"
              and any(o["output_type"] == "error" for o in c.get("outputs", []))]
    assert errors == [], f"{notebook}: stored with errors: {errors}"
    if widths:
        figures.first.scroll_into_view_if_needed()
        figures.first.screenshot(path=str(SHOTS / f"{Path(notebook).stem}_first_figure.png"))


def _check_ran(nb: Lab, notebook: str, positions: list[int]) -> None:
    """The cells at `positions` ran, in the page and in the notebook saved from it, with no
    error."""
    assert nb.error_texts() == [], f"{notebook}: a cell raised in the page"
    saved = nb.save()["cells"]
    errors = [saved[i]["source"][:80] for i in positions
              if any(o["output_type"] == "error" for o in saved[i].get("outputs", []))]
    assert errors == [], f"{notebook}: cells with errors: {errors}"
    unrun = [saved[i]["source"][:60] for i in positions if saved[i]["execution_count"] is None]
    assert unrun == [], f"{notebook}: cells never ran: {unrun}"


def _drive_widgets(nb: Lab, notebook: str) -> None:
    """Move every control of every widget; each must change the output it drives."""
    cells = nb.widget_cells()
    assert cells.count() == len(widget_cells(_cells(notebook))), f"{notebook}: widgets missing"
    for w in range(cells.count()):
        cell = cells.nth(w)
        shown = cell.locator(".jp-Cell-outputWrapper").first  # controls and their figure
        shown.scroll_into_view_if_needed()
        shown.screenshot(path=str(SHOTS / f"{Path(notebook).stem}_widget{w}_before.png"))
        controls = cell.locator(".widget-box .widget-inline-hbox")
        assert controls.count() > 0, f"{notebook}: widget {w} shows no controls"
        before = _settled(cell)
        assert before, f"{notebook}: widget {w} drives no output"
        for k in range(controls.count()):
            what = _move(controls.nth(k), nb.page)
            after = _settled(cell)
            assert after != before, (f"{notebook}: widget {w}, control {k} ({what}) "
                                     "changed nothing")
            before = after  # what the next control starts from
        shown.scroll_into_view_if_needed()
        shown.screenshot(path=str(SHOTS / f"{Path(notebook).stem}_widget{w}_after.png"))
