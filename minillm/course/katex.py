r"""Equations typeset at build time: TeX to HTML with KaTeX, run by Node.js.

    with KaTeX() as tex:
        tex(r"\sqrt{d}")                    # '<span class="katex">…</span>'
        tex(r"\frac{a}{b}", display=True)  # centred on a line of its own

The web book (`minillm.course.book`) renders every `$...$` and `$$...$$` of the chapters with
this, so its pages show typeset math with no script and no network: a page needs only KaTeX's
stylesheet and fonts, which `copy_assets` puts beside it. KaTeX comes from npm at the version
`package.json` and `package-lock.json` pin, installed by `npm ci` into the repository's
`node_modules/` (the Makefile's `book` and `test` targets do it). One `node` process serves a
whole build, one line of JSON each way per equation (minillm/course/katex_render.js).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

__all__ = ["KaTeX", "KaTeXUnavailable", "copy_assets"]

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "node_modules" / "katex"
SCRIPT = Path(__file__).with_name("katex_render.js")


class KaTeXUnavailable(RuntimeError):
    """Node.js or the pinned KaTeX package is not installed."""


def _check_installed() -> str:
    node = shutil.which("node")
    if node is None:
        raise KaTeXUnavailable(
            "the web book typesets its equations with KaTeX, which runs on Node.js: install "
            "Node.js and npm (Debian/Ubuntu: apt-get install nodejs npm), then run "
            f"`npm ci` in {REPO} (`make book` runs it)")
    if not (PACKAGE / "package.json").is_file():
        raise KaTeXUnavailable(
            f"KaTeX is not installed in {PACKAGE.parent}: run `npm ci` in {REPO} (installs the "
            "version package-lock.json pins; `make book` runs it)")
    return node


class KaTeX:
    """A `node` process that turns TeX into HTML; call it, and close it (or use `with`)."""

    def __init__(self):
        node = _check_installed()
        self._proc = subprocess.Popen([node, str(SCRIPT), str(PACKAGE)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, encoding="utf-8")
        self._seen: dict[tuple[str, bool], str] = {}

    def __call__(self, tex: str, display: bool = False) -> str:
        """The HTML of `tex`, inline or (`display`) as a block; ValueError if KaTeX rejects it."""
        key = (tex, display)
        if key not in self._seen:
            self._proc.stdin.write(json.dumps({"tex": tex, "display": display}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
            if not line:
                raise KaTeXUnavailable(f"node {SCRIPT.name} stopped (exit {self._proc.poll()})")
            answer = json.loads(line)
            if "error" in answer:
                raise ValueError(f"KaTeX cannot typeset {tex!r}: {answer['error']}")
            self._seen[key] = answer["html"]
        return self._seen[key]

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=10)
        self._proc.stdout.close()

    def __enter__(self) -> KaTeX:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def copy_assets(output_dir: Path) -> str:
    """Copy KaTeX's stylesheet and fonts into `output_dir`/katex; returns the stylesheet's path
    relative to `output_dir` (what a page's <link> names)."""
    _check_installed()
    target = Path(output_dir) / "katex"
    shutil.copytree(PACKAGE / "dist" / "fonts", target / "fonts", dirs_exist_ok=True)
    shutil.copy2(PACKAGE / "dist" / "katex.min.css", target / "katex.min.css")
    return "katex/katex.min.css"
