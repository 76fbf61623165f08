"""The course as a web book: the executed chapters rendered to static HTML with an index.

    python -m minillm.course.book [--output-dir build/book]       (make book)

Why nbconvert and not Jupyter Book or MyST: the chapters are already executed and their stored
outputs are what the tests check, so the book must show exactly those outputs without running
anything; nbconvert (part of the Jupyter stack the course installs) renders a notebook's stored
outputs as they are, needs no new dependency and no configuration tree, and builds the whole
book in seconds. What a book adds on top is written here: a chapter index with each chapter's
summary and prerequisites, the map of which chapter builds on which (read from each title
cell's "Prerequisites." paragraph), a navigation bar on every page, and links between chapters
(`NN_name.ipynb` in a notebook's Markdown becomes `NN_name.html`).

Equations are typeset when the book is built, not in the reader's browser: every `$...$`,
`$$...$$`, `\\begin{env}...\\end{env}` and `text/latex` output goes through KaTeX
(`minillm.course.katex`, on Node.js), and the pages link KaTeX's stylesheet and fonts from the
book's own `katex/` folder. A page loads nothing from the network: nbconvert's MathJax,
require.js and the widget renderer (which would draw controls no kernel can answer) are left out.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from minillm.course.katex import KaTeX, KaTeXUnavailable, copy_assets

__all__ = ["Chapter", "build_book", "read_chapters"]

_NAV_STYLE = ("font-family: sans-serif; padding: 8px 16px; background: #f3f3f3; "
              "border-bottom: 1px solid #ccc; display: flex; gap: 24px;")


@dataclass
class Chapter:
    """What the index says about one chapter notebook."""

    number: str                 # "03"
    stem: str                   # "03_transformer"
    title: str                  # from the first heading
    summary: str                # the first paragraph after the heading (plain text)
    prerequisites: list[str] = field(default_factory=list)  # chapter numbers it builds on

    @property
    def page(self) -> str:
        return f"{self.stem}.html"


# an equation in Markdown: $$display$$ or $inline$ (a \$ is a dollar sign)
_MATH = re.compile(r"(?<!\\)(\$\$.+?(?<!\\)\$\$|\$.+?(?<!\\)\$)", re.DOTALL)


def _plain(markdown: str) -> str:
    """Markdown without emphasis, code marks and link targets; equations are kept as they are."""
    parts = _MATH.split(markdown)
    for k in range(0, len(parts), 2):  # the prose between equations
        text = re.sub(r"\*\*|__|`|\*", "", parts[k])
        parts[k] = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    return " ".join("".join(parts).split())


def _html_with_math(text: str, tex: KaTeX) -> str:
    """Plain text as HTML, its equations typeset."""
    parts = _MATH.split(text)
    return "".join(html.escape(part) if k % 2 == 0 else
                   tex(part.strip("$"), display=part.startswith("$$"))
                   for k, part in enumerate(parts))


def read_chapters(folder: Path) -> list[Chapter]:
    """Each chapter's title, summary and prerequisites, from its first Markdown cell."""
    chapters = []
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        first = next(("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"),
                     "")
        lines = first.splitlines()
        heading = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("#")), path.stem)
        heading = re.sub(r"^Chapter \d\d\s*[—-]\s*", "", heading)
        paragraphs = [p.strip() for p in "\n".join(
            ln for ln in lines if not ln.startswith("#")).split("\n\n") if p.strip()]
        summary = _plain(re.sub(r"^\*\*What this chapter teaches\.\*\*\s*", "",
                                paragraphs[0])) if paragraphs else ""
        prereq = next((p for p in paragraphs if p.lstrip("*").startswith("Prerequisites")), "")
        number = path.stem[:2]
        prose = re.sub(r"`[^`]*`", "", prereq)  # not the digits of a path or a size
        chapters.append(Chapter(number, path.stem, heading, summary,
                                sorted(set(re.findall(r"\b\d\d\b", prose)) - {number})))
    known = {c.number for c in chapters}
    for c in chapters:
        c.prerequisites = [d for d in c.prerequisites if d in known and d < c.number]
    return chapters


def _dependency_map_png(chapters: list[Chapter]) -> bytes:
    """An arc diagram: chapters left to right, an arc from each prerequisite to the chapter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Arc

    x = {c.number: i for i, c in enumerate(chapters)}
    fig, ax = plt.subplots(figsize=(max(6, 0.75 * len(chapters)), 3.2), dpi=100)
    for c in chapters:
        for d in c.prerequisites:
            if d not in x:
                continue
            a, b = x[d], x[c.number]
            ax.add_patch(Arc(((a + b) / 2, 0), abs(b - a), abs(b - a) * 0.9, theta1=0,
                             theta2=180, color="C0", alpha=0.6, lw=1.2))
    for c in chapters:
        ax.plot(x[c.number], 0, "o", color="C1", ms=14, zorder=3)
        ax.text(x[c.number], 0, c.number, ha="center", va="center", fontsize=7, zorder=4)
    span = max(len(chapters) - 1, 1)
    ax.set(xlim=(-0.7, span + 0.7), ylim=(-0.6, span * 0.45 + 0.5),
           title="Which chapter builds on which (an arc from a prerequisite to the chapter)")
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _nav(chapters: list[Chapter], i: int | None) -> str:
    links = ['<a href="index.html">Contents</a>']
    if i is not None and i > 0:
        prev = chapters[i - 1]
        links.append(f'<a href="{prev.page}">&larr; {html.escape(prev.number)}</a>')
    if i is not None and i + 1 < len(chapters):
        nxt = chapters[i + 1]
        links.append(f'<a href="{nxt.page}">{html.escape(nxt.number)} &rarr;</a>')
    return f'<nav class="minillm-book-nav" style="{_NAV_STYLE}">{"".join(links)}</nav>'


# nbconvert's lab page with the stylesheet of KaTeX in place of MathJax, no require.js and no
# widget renderer (all three come from a CDN), and text/latex outputs typeset like Markdown's.
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}
<link rel="stylesheet" href="{{ resources.katex_stylesheet }}">
{%- endblock html_head_js_mathjax -%}
{% block data_latex scoped %}
<div class="jp-RenderedLatex jp-OutputArea-output {{ extra_class }}" data-mime-type="text/latex">
{{ output.data['text/latex'] | markdown2html }}
</div>
{%- endblock data_latex %}
"""


def _exporter(tex: KaTeX):
    """nbconvert's HTMLExporter whose Markdown renderer typesets equations with `tex`."""
    import jinja2
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class Renderer(IPythonRenderer):
        def block_math(self, body: str) -> str:
            return tex(body, display=True)

        def inline_math(self, body: str) -> str:
            return tex(body)

        def latex_environment(self, name: str, body: str) -> str:
            return tex(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)

    class Exporter(HTMLExporter):
        @jinja2.pass_context
        def markdown2html(self, context, source: str) -> str:
            # as HTMLExporter.markdown2html, with the Renderer above
            cell = context.get("cell", {})
            path = context.get("resources", {}).get("metadata", {}).get("path", "")
            renderer = Renderer(escape=False, attachments=cell.get("attachments", {}),
                                embed_images=self.embed_images, path=path,
                                anchor_link_text=self.anchor_link_text,
                                exclude_anchor_links=self.exclude_anchor_links,
                                **self.lexer_options)
            return MarkdownWithMath(renderer=renderer).render(source)

    return Exporter(template_name="lab", template_file="book.html.j2",
                    extra_loaders=[jinja2.DictLoader({"book.html.j2": _TEMPLATE})])


def _page(notebook: Path, chapters: list[Chapter], i: int, exporter, stylesheet: str) -> str:
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    body, _ = exporter.from_notebook_node(nb, resources={"katex_stylesheet": stylesheet})
    stems = {c.stem for c in chapters}
    # links between chapters: NN_name.ipynb (optionally #anchor) -> NN_name.html
    body = re.sub(r'href="(?:\.\./chapters/|\./)?(\d\d_[\w-]+)\.ipynb(#[^"]*)?"',
                  lambda m: (f'href="{m.group(1)}.html{m.group(2) or ""}"'
                             if m.group(1) in stems else m.group(0)), body)
    return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + _nav(chapters, i), body, count=1)


def _shorten(text: str, limit: int = 300) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    if cut.replace("$$", "$").count("$") % 2:  # the cut falls inside an equation: before it
        cut = cut[:cut.rindex("$")].rstrip("$")
    return cut.rstrip(",;:—- ") + " …"


def _index(chapters: list[Chapter], map_png: bytes, tex: KaTeX, stylesheet: str) -> str:
    rows = []
    for c in chapters:
        deps = ", ".join(f'<a href="{d.page}">{d.number}</a>' for d in chapters
                         if d.number in c.prerequisites) or "—"
        rows.append(f'<tr><td>{c.number}</td><td><a href="{c.page}">{html.escape(c.title)}</a>'
                    f'<br><small>{_html_with_math(_shorten(c.summary), tex)}</small></td>'
                    f'<td>{deps}</td></tr>')
    image = base64.b64encode(map_png).decode()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>minillm — the course</title>
<link rel="stylesheet" href="{stylesheet}">
<style>body {{ font-family: sans-serif; max-width: 1000px; margin: 0 auto; padding: 0 16px; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: 6px;
vertical-align: top; text-align: left; }}</style></head>
<body>{_nav(chapters, None)}
<h1>minillm — large language models, built and measured</h1>
<p>The executed chapters of the course, as they are stored in the repository (nothing here was
re-run to build this page). Each chapter runs in JupyterLab from the repository's
<code>chapters/</code> folder.</p>
<h2>Chapters</h2>
<table><tr><th>#</th><th>chapter</th><th>builds on</th></tr>
{"".join(rows)}
</table>
<h2>Dependency map</h2>
<img alt="chapter dependency map" src="data:image/png;base64,{image}">
</body></html>
"""


def build_book(chapters_folder: Path, output_dir: Path) -> list[Path]:
    """Render every chapter notebook of `chapters_folder` and the index into `output_dir`.

    Returns:
        The pages written, index first.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    chapters = read_chapters(chapters_folder)
    if not chapters:
        raise FileNotFoundError(f"no chapter notebooks (NN_name.ipynb) in {chapters_folder}")
    stylesheet = copy_assets(output_dir)
    pages = [output_dir / "index.html"]
    with KaTeX() as tex:
        pages[0].write_text(_index(chapters, _dependency_map_png(chapters), tex, stylesheet),
                            encoding="utf-8")
        exporter = _exporter(tex)
        for i, c in enumerate(chapters):
            page = output_dir / c.page
            page.write_text(_page(Path(chapters_folder) / f"{c.stem}.ipynb", chapters, i,
                                  exporter, stylesheet), encoding="utf-8")
            pages.append(page)
    return pages


def main(argv: list[str] | None = None) -> int:
    import argparse

    from minillm.course import chapters_dir

    p = argparse.ArgumentParser(prog="python -m minillm.course.book", description=__doc__.splitlines()[0])
    p.add_argument("--chapters", default=None, help="folder of chapter notebooks (default: the "
                   "repository's chapters/)")
    p.add_argument("--output-dir", default="build/book")
    a = p.parse_args(argv)
    try:
        pages = build_book(Path(a.chapters) if a.chapters else chapters_dir(), Path(a.output_dir))
    except KaTeXUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(pages)} pages; open {pages[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
