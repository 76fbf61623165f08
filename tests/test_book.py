"""The web book (`make book` = python -m minillm.course.book): it builds from the stored chapters, and in
a real browser the index links every chapter, each page shows its figures, no link is broken,
and with the network off every equation is typeset (no raw LaTeX left in the text a reader
sees)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import REPO, chromium_path

from minillm.course.book import build_book, read_chapters

CHAPTERS = REPO / "chapters"


def _images_stored(notebook: Path) -> int:
    nb = json.loads(notebook.read_text())
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] if c["cell_type"] == "code"
               for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    if shutil.which("node") is None:  # the equations are typeset by KaTeX on Node.js
        pytest.skip("no Node.js (make venv installs Debian's nodejs and npm where it can)")
    out = tmp_path_factory.mktemp("book")
    build_book(CHAPTERS, out)
    return out


def test_every_chapter_has_a_page_a_title_and_its_prerequisites_in_the_map(book):
    chapters = read_chapters(CHAPTERS)
    assert [c.stem for c in chapters] == sorted(p.stem for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
    for c in chapters:
        assert (book / c.page).is_file()
        assert c.title and not c.title.startswith("Chapter"), c.stem
        assert c.summary, c.stem
        if c.number != "01":  # every chapter after the first says what it builds on
            assert c.prerequisites, f"{c.stem}: no 'Prerequisites.' naming earlier chapters"
        assert all(d < c.number for d in c.prerequisites)


def test_prerequisites_are_read_from_the_title_cell(tmp_path):
    cell = {"cell_type": "markdown", "metadata": {}, "source": [
        "# Chapter 05 — Five\n\nWhat it does.\n\n**Prerequisites.** Chapter 03 (blocks) and 04 "
        "(`data/checkpoints/x_12`, 128 wide); chapter 09 comes later."]}
    for stem in ("03_three", "04_four", "05_five", "09_nine"):
        nb = {"cells": [dict(cell)], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        (tmp_path / f"{stem}.ipynb").write_text(json.dumps(nb))
    five = next(c for c in read_chapters(tmp_path) if c.number == "05")
    assert five.prerequisites == ["03", "04"]  # not 12 (a path), 128, or the later 09
    assert five.title == "Five" and five.summary == "What it does."


# The text a reader sees outside code: code and program output show their TeX as written (a
# matplotlib label), and KaTeX's MathML copy of each equation, which carries the TeX source for
# screen readers, is drawn nowhere.
PROSE = """() => {
    for (const e of document.querySelectorAll(".jp-InputArea-editor, pre, code, .katex-mathml"))
        e.style.display = "none";
    return document.body.innerText;
}"""


def _has_math(notebook: Path) -> bool:
    nb = json.loads(notebook.read_text())
    return any("$" in "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


@pytest.mark.browser
@pytest.mark.skipif(chromium_path() is None, reason="no Chromium (make venv installs it)")
def test_every_page_typesets_its_equations_with_the_network_off(book):
    playwright = pytest.importorskip("playwright.sync_api")
    pages = ["index.html"] + [c.page for c in read_chapters(CHAPTERS)]
    raw_latex = ("$$", "\\frac", "\\sqrt", "\\text{")
    asked = []  # every request that left the book's folder
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        context = browser.new_context()
        context.route("**/*", lambda route: route.continue_()
                      if route.request.url.startswith("file://")
                      else (asked.append(route.request.url), route.abort()))
        page = context.new_page()
        for name in pages:
            page.goto((book / name).as_uri())
            page.wait_for_load_state("load")
            text = page.evaluate(PROSE)
            left = [s for s in raw_latex if s in text]
            assert left == [], f"{name}: raw LaTeX in the page's prose: {left}"
            typeset = page.locator(".katex").count()
            stem = name.removesuffix(".html")
            if name == "index.html" or _has_math(CHAPTERS / f"{stem}.ipynb"):
                assert typeset > 0, f"{name}: no typeset equation"
                fonts = page.evaluate("document.fonts.ready.then(() => [...document.fonts]"
                                      ".filter(f => f.status == 'loaded').map(f => f.family))")
                assert "KaTeX_Main" in fonts, f"{name}: KaTeX's fonts did not load ({fonts})"
        browser.close()
    assert asked == [], f"the book asked the network for {sorted(set(asked))}"


@pytest.mark.browser
@pytest.mark.skipif(chromium_path() is None, reason="no Chromium (make venv installs it)")
def test_index_links_every_chapter_whose_page_shows_its_figures_and_no_broken_link(book):
    playwright = pytest.importorskip("playwright.sync_api")
    chapters = read_chapters(CHAPTERS)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto((book / "index.html").as_uri())
        assert page.locator("img[alt='chapter dependency map']").evaluate(
            "e => e.naturalWidth") > 0
        for c in chapters:
            page.goto((book / "index.html").as_uri())
            page.locator(f"a[href='{c.page}']").first.click()
            page.wait_for_load_state()
            assert page.url.endswith(c.page), (c.page, page.url)
            assert c.title.split(":")[0] in page.locator("h1").first.inner_text()
            widths = page.locator("img").evaluate_all("els => els.map(e => e.naturalWidth)")
            expected = _images_stored(CHAPTERS / f"{c.stem}.ipynb")
            assert len(widths) >= expected > 0 or expected == 0, (c.page, len(widths), expected)
            assert all(w > 0 for w in widths), f"{c.page}: an image does not load"
            assert "interactive(children=" not in page.content(), f"{c.page}: a widget repr"
            for href in page.locator("a[href]").evaluate_all(
                    "els => els.map(e => e.getAttribute('href'))"):
                url = urlparse(href)
                if url.scheme or href.startswith("#"):
                    continue  # external, or an anchor on the page
                target = book / unquote(url.path)
                assert target.is_file(), f"{c.page}: broken link {href}"
        browser.close()
