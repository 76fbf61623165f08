"""The learner's path, in a real browser: JupyterLab opens each chapter, runs every cell with no
error, and every widget control, when moved, changes the figure or text it drives.

Playwright drives the system Chromium (`make venv` installs Debian's `chromium` when missing; no
browser is downloaded). Screenshots go to build/browser/: each chapter's first figure, and each
widget cell before and after its controls move.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser import REPO, JupyterLab, Lab, chromium_path

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = chromium_path()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found (make venv installs Debian's chromium; or set "
                             "MINILLM_CHROMIUM to a Chromium binary)")]
SHOTS = REPO / "build" / "browser"
CHAPTERS = sorted(p.name for p in (REPO / "chapters").glob("[0-9][0-9]_*.ipynb"))


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


@pytest.mark.parametrize("notebook", CHAPTERS[0::2])  # the others: test_browser_second_half.py
def test_chapter_runs_in_jupyterlab_and_its_widgets_drive_their_figures(lab, browser, notebook):
    walk(lab, browser, notebook)


def walk(lab, browser, notebook: str) -> None:
    """Open `notebook`, run it, check it and turn its widgets (see the module docstring)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    nb = None
    try:
        nb = Lab(lab, page, notebook)
        nb.run_all(timeout=900)
        assert nb.error_texts() == [], f"{notebook}: a cell raised in the page"
        saved = nb.save()
        errors = [c["source"][:80] for c in saved["cells"] if c["cell_type"] == "code"
                  and any(o["output_type"] == "error" for o in c.get("outputs", []))]
        assert errors == [], f"{notebook}: cells with errors: {errors}"
        unrun = [c["source"][:60] for c in saved["cells"]
                 if c["cell_type"] == "code" and c["execution_count"] is None and c["source"]]
        assert unrun == [], f"{notebook}: cells never ran: {unrun}"
        figure = page.locator(".jp-OutputArea-output img").first
        if figure.count():
            figure.scroll_into_view_if_needed()
            figure.screenshot(path=str(SHOTS / f"{Path(notebook).stem}_first_figure.png"))
        cells = nb.widget_cells()
        for w in range(cells.count()):
            cell = cells.nth(w)
            shown = cell.locator(".jp-Cell-outputWrapper").first  # controls and their figure
            shown.scroll_into_view_if_needed()
            shown.screenshot(path=str(SHOTS / f"{Path(notebook).stem}_widget{w}_before.png"))
            controls = cell.locator(".widget-box .widget-inline-hbox")
            assert controls.count() > 0, f"{notebook}: widget {w} shows no controls"
            for k in range(controls.count()):
                before = _settled(cell)
                assert before, f"{notebook}: widget {w} drives no output"
                what = _move(controls.nth(k), page)
                after = _settled(cell)
                assert after != before, (f"{notebook}: widget {w}, control {k} ({what}) "
                                         "changed nothing")
            shown.scroll_into_view_if_needed()
            shown.screenshot(path=str(SHOTS / f"{Path(notebook).stem}_widget{w}_after.png"))
    finally:
        if nb is not None:
            nb.shutdown()
        page.close()
