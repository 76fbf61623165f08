"""The course's metric line: the shipped table agrees with its sources, and the figure draws it.

Every row is re-scored from what ships (checkpoints, a quantization of one, n-gram counts on the
training plays, chapter 07's sweep file); a retrained checkpoint without a regenerated table, or
a change in scoring, fails here."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from minillm.course.lineage import (
    ROWS,
    WHOLE_SPLIT,
    LineageRow,
    lineage_lines,
    load_lineage,
    plot_lineage,
    score_source,
)
from minillm.course.plotting import COLORS

CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "chapters").glob("[0-9][0-9]_*.ipynb"))

TABLE = load_lineage()


def test_the_table_holds_the_recipe_rows_in_chapter_order():
    assert [(r.model, r.chapter, r.source) for r in TABLE] == [(m, c, s) for m, c, _, _, s in ROWS]
    assert [r.chapter for r in TABLE] == sorted(r.chapter for r in TABLE)
    assert all(r.evaluation == WHOLE_SPLIT for r in TABLE if not r.source.startswith("sweep:"))


@pytest.mark.slow
@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.source)
def test_every_row_rescored_from_its_source_agrees(row: LineageRow):
    torch.set_num_threads(1)
    bpb, params, flops = score_source(row.source)
    assert bpb == pytest.approx(row.bits_per_byte, abs=2e-4)   # the table rounds to 4 places
    assert params == row.params
    assert flops == (None if row.train_flops is None else pytest.approx(row.train_flops))


def test_the_lineage_tells_the_course_story():
    bpb = {r.source: r.bits_per_byte for r in TABLE}
    base = bpb["checkpoint:checkpoints/shakespeare_byte"]
    # the base GPT beats every counting model, and clearly (issue: at most 2.15 bits/byte)
    assert base <= 2.15
    assert all(base < v for source, v in bpb.items() if source.startswith("ngram:"))
    # chapter 02's order, measured on checkpoints trained on as many bytes as the GPT: the LSTM
    # beats every n-gram, the MLP (a 16-byte window) only the word model
    mlp = bpb["checkpoint:checkpoints/shakespeare_mlp"]
    lstm = bpb["checkpoint:checkpoints/shakespeare_lstm"]
    assert base < lstm < bpb["ngram:bytes:5"] < mlp < bpb["ngram:words:3"]
    assert base < bpb["sweep:best@3e+12"]
    # the SFT models (text mixed into every batch) stay within 0.1 bits/byte of their bases
    assert abs(bpb["checkpoint:checkpoints/shakespeare_sft"] - base) < 0.1
    # the previous base, from which the previous SFT model and chapter 15's rows come
    d128 = bpb["checkpoint:checkpoints/shakespeare_byte_d128"]
    assert base < d128
    assert 0 < bpb["quantized:checkpoints/shakespeare_byte_d128:nf4"] - d128 < 0.05
    assert abs(bpb["checkpoint:checkpoints/shakespeare_sft_d128"] - d128) < 0.1
    # the BPE model: d128's recipe and steps, each token ~2.85 bytes; on the same line, per byte
    bpe = bpb["checkpoint:checkpoints/shakespeare_bpe"]
    assert bpe < d128                  # same steps, more text per step: lower per byte
    # ... and stopped at the byte model's training FLOPs (its 2,048-wide head costs more per token)
    rows = {r.source: r for r in TABLE}
    eq = rows["checkpoint:checkpoints/shakespeare_bpe_eqflops"]
    d128_flops = rows["checkpoint:checkpoints/shakespeare_byte_d128"].train_flops
    assert abs(eq.train_flops / d128_flops - 1) < 1e-3
    assert bpe < eq.bits_per_byte < d128  # fewer steps than bpe, still below the byte model
    # chapter 20: the base model plus a nearest-neighbour lookup, no training, lower on the line
    knn = [r for r in TABLE if r.source.startswith("knnlm:checkpoints/shakespeare_byte:")]
    assert len(knn) == 1 and knn[0].bits_per_byte < base
    assert knn[0].params == rows["checkpoint:checkpoints/shakespeare_byte"].params


def test_unknown_sources_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="checkpoint:, quantized:, ngram:, knnlm: or sweep:"):
        score_source("hub:gpt2")
    with pytest.raises(ValueError, match="best@"):
        score_source("sweep:worst")
    with pytest.raises(ValueError, match="must name exactly"):
        score_source("knnlm:checkpoints/shakespeare_byte:k=4")
    with pytest.raises(ValueError, match="key=value"):
        score_source("knnlm:checkpoints/shakespeare_byte:k=four")


def test_the_figure_highlights_the_chapter_and_adds_live_runs():
    ax = plot_lineage(highlight="11", extra={"live SFT (50 steps)": 3.1})
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(dots) == len(TABLE) + 1
    colours = [line.get_color() for line in dots[:len(TABLE)]]
    assert colours == [COLORS["highlight"] if r.chapter == "11" else COLORS["baseline"]
                       for r in TABLE]
    assert dots[-1].get_markerfacecolor() == "none"                  # the live run: open marker
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "this run: live SFT (50 steps)"
    assert "(bits/byte" in ax.get_xlabel()
    matplotlib.pyplot.close(ax.figure)


def _stored_lineage_lines(path: Path) -> list[list[str]]:
    """The `lineage ...` lines each stored plot_lineage cell of a chapter printed."""
    found = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code" or "plot_lineage(" not in "".join(cell["source"]):
            continue
        text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", [])
                       if o.get("output_type") == "stream")
        found.append([line for line in text.splitlines() if line.startswith("lineage ")])
    return found


@pytest.mark.parametrize("path", [p for p in CHAPTERS if "plot_lineage(" in p.read_text()],
                         ids=lambda p: p.stem[:2])
def test_every_stored_lineage_figure_lists_exactly_the_rows_of_the_table(path):
    """nbval does not compare images: a chapter executed before lineage.json last changed keeps
    a stale figure. plot_lineage prints the rows it drew; they must be today's table."""
    stored = _stored_lineage_lines(path)
    assert stored, f"{path.name}: no plot_lineage cell"
    for lines in stored:
        assert lines == lineage_lines(TABLE), (
            f"{path.name}: its stored lineage figure was drawn from another table than "
            "data/lineage/lineage.json; re-execute the chapter (minillm course run "
            f"{path.stem[:2]} --in-place)")
    # chapter 18: four architectures on one recipe (equal weights within 5%, equal steps): the
    # recurrent models with local mixing (RWKV's token shift, Mamba's convolution) below the GPT,
    # linear attention above it
    r18 = {r.source.rsplit("/", 1)[-1]: r for r in TABLE if r.chapter == "18"}
    assert set(r18) == {"recurrent_gpt", "recurrent_linear", "recurrent_rwkv", "recurrent_mamba"}
    assert max(r.params for r in r18.values()) / min(r.params for r in r18.values()) < 1.05
    gpt18 = r18["recurrent_gpt"].bits_per_byte
    assert r18["recurrent_rwkv"].bits_per_byte < gpt18 < r18["recurrent_linear"].bits_per_byte
    assert r18["recurrent_mamba"].bits_per_byte < gpt18
