"""No chapter shows an unrendered template placeholder.

A closing "What we saw" cell renders Markdown from the run's variables with an f-string; a
missing `f` prefix (or a placeholder inside a plain string that is concatenated to an f-string)
leaves the literal `{gen_len}` in the page a reader sees. This checks every stored Markdown
output (display_data / execute_result with text/markdown) of every chapter.

LaTeX is not a placeholder: `$\\frac{a}{b}$`, `$x_{t}$` and `$$\\sum_{i} p_{i}$$` use braces for
groups. Math spans ($...$, $$...$$, \\(...\\), \\[...\\]) are removed before the search, and a
brace group right after `^`, `_` or a LaTeX command (`\\mathrm{loss}`) is not counted either, so
math written outside dollar signs passes too. Code spans (`...`, fenced blocks) and quoted string
literals shown as Python writes them ('...' or "..." opening after a space, a table bar or a
bracket: chapter 11 shows its prompt templates, slots and all, as repr()s) are not prose either.
What is left is a `{name}` or `{name:fmt}` in prose, which is what an f-string that was not
rendered looks like. (An apostrophe inside a word, "the model's", opens no quote, so a bug
between apostrophes is still seen.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "chapters").glob("[0-9][0-9]_*.ipynb"))

PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*(?::[^}]*)?\}")
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]", re.DOTALL)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
QUOTED = re.compile(r"(?<![\w])'(?:[^'\\\n]|\\.)*'|(?<![\w])\"(?:[^\"\\\n]|\\.)*\"")
LATEX_BEFORE = re.compile(r"(?:[\^_}]|\\[A-Za-z]+)$")  # x^{..}, x_{..}, \frac{a}{b}, \mathrm{..}


def unrendered_placeholders(markdown: str) -> list[str]:
    """The `{name}` / `{name:fmt}` placeholders left in rendered Markdown prose."""
    prose = QUOTED.sub(" ", CODE.sub(" ", MATH.sub(" ", markdown)))
    return [m.group() for m in PLACEHOLDER.finditer(prose)
            if not LATEX_BEFORE.search(prose[:m.start()])]


def markdown_outputs(path: Path) -> list[tuple[int, str]]:
    """(cell index, text) of every stored text/markdown output of a notebook."""
    cells = json.loads(path.read_text())["cells"]
    return [(i, "".join(out["data"]["text/markdown"]))
            for i, cell in enumerate(cells) if cell["cell_type"] == "code"
            for out in cell.get("outputs", [])
            if out.get("output_type") in ("display_data", "execute_result")
            and "text/markdown" in out.get("data", {})]


def test_there_are_chapters_with_rendered_markdown():
    assert len(CHAPTERS) == 21
    assert sum(bool(markdown_outputs(p)) for p in CHAPTERS) == len(CHAPTERS)


def test_the_detector_sees_the_bug_and_passes_math():
    # the chapter-16 bug: a string without the f prefix inside the closing summary
    assert unrendered_placeholders("a small model sampled for {gen_len} bytes does not") \
        == ["{gen_len}"]
    assert unrendered_placeholders("perplexity {ppl:.2f} and {n_prompts} prompts") \
        == ["{ppl:.2f}", "{n_prompts}"]
    assert unrendered_placeholders("ratio {pure_ratio:.2f}x, between $a$ and $b$") \
        == ["{pure_ratio:.2f}"]
    assert unrendered_placeholders("the model's {gen_len} bytes and the paper's 200 tokens") \
        == ["{gen_len}"]
    assert unrendered_placeholders("the 'greedy' run: {n_new} bytes") == ["{n_new}"]
    # legitimate math, code, quoted templates (chapter 11's table) and rendered text
    assert unrendered_placeholders(
        "| count_words | 1500 | 'Reckon the words in this line: {line}' |\n"
        "| speaker | 'HOT' | '{text}\\nSay who spoke these words: \"{line' |\n"
        "| modernise | \"Put this line into today's English: {lin\" |\n"
        "| arithmetic | 'Work out {expr} and give the number.' |") == []
    assert unrendered_placeholders("call `f'{x:.2f}'` or\n```\nprint(f'{y}')\n```") == []
    for ok in (r"$\frac{a}{b}$", r"$x_{t} + y^{n}$", r"$$\sum_{i} p_{i}$$",
               r"\(\mathrm{loss}\)", r"\frac{num}{den} outside dollars", r"$x_{\le t}$",
               "rendered: 128 bytes", "a set {1, 2, 3}", "a dict {'a': 1}", r"\mathrm{bpb}",
               "$$\n\\text{speed-up} = \\frac{alpha}{c}\n$$"):
        assert unrendered_placeholders(ok) == [], ok


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem[:2])
def test_no_unrendered_placeholder_in_rendered_markdown(path):
    found = {(i, ph) for i, text in markdown_outputs(path) for ph in unrendered_placeholders(text)}
    assert not found, (f"{path.name}: rendered Markdown shows unrendered placeholders "
                       f"(cell, text) {sorted(found)}; a string is missing its f prefix")
