"""The course's metric line: every model the course builds, in bits per byte on the same plays.

Bits per UTF-8 byte of the validation plays (*Macbeth*, *Much Ado About Nothing*, all 225,707
bytes) is the one axis on which a word 5-gram, a byte-level GPT, its SFT descendant and its
4-bit copy can be compared: the numerator is the information of the same text whatever the
tokens. The table ships as `data/lineage/lineage.json`; this module regenerates it
(`python -m minillm.course.lineage --write`), re-scores a row from its source (the tests do this for
every row whose source ships), and draws it (`plot_lineage`), the current chapter's models
highlighted and a chapter's live runs added as open markers. Every number is
`minillm.training.text_bits_per_byte` (the text prefixed by <|endoftext|>, windows of the
model's context advancing by half of it, every byte scored once) and every FLOP count
`minillm.scaling.training_flops`.

`plot_lineage` also prints the rows it drew, one per line (`lineage_lines`), so an executed
chapter keeps them as text: a test compares every chapter's stored lines with the table, and a
chapter executed before the table last changed fails it.

A row's `source` says how to rebuild its number:
- `checkpoint:<folder under data/>` — a shipped checkpoint (GPT, MLP or RNN LM), scored on the
  whole split;
- `quantized:<folder>:<scheme>` — that checkpoint quantized with `minillm.quantization`
  (RTN / NF4 need no calibration, so the number is deterministic);
- `ngram:<words|bytes>:<order>` — a modified Kneser-Ney n-gram model fitted on the training
  plays (counts: deterministic);
- `knnlm:<folder>:<key=value,...>` — that checkpoint as a kNN-LM (chapter 20,
  `minillm.retrieval.knn_lm`): a datastore of its final hidden states over `blocks` pieces of
  `block` bytes spaced evenly through the training plays, an IVF faiss index (`nlist` cells,
  `nprobe` scanned), and the whole validation split scored with `k` neighbours, temperature
  `T` and weight `lam`; its parameters and FLOPs are the checkpoint's (a datastore is memory,
  not weights). Deterministic up to float rounding in faiss's k-means (well below the table's
  4 places);
- `sweep:<run>` — a run of chapter 07's shipped sweep (`data/scaling/sweep.csv`); its number
  is the sweep's own validation estimate, not the whole split, and says so in `evaluation`.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from minillm.course.plotting import COLORS, figure, finish
from minillm.data import data_dir, load_corpus
from minillm.io import atomic_write_json, read_json
from minillm.tokenizers import ByteTokenizer

__all__ = ["LineageRow", "ROWS", "lineage_path", "load_lineage", "score_source", "build_lineage",
           "write_lineage", "lineage_lines", "plot_lineage"]

WHOLE_SPLIT = "whole validation split"


@dataclass(frozen=True)
class LineageRow:
    model: str
    chapter: str              # "06": the chapter that builds it
    tokens: str               # what the model predicts: "bytes", "words", ...
    params: int               # weights (neural) or distinct n-grams (count models)
    train_flops: float | None  # 6·N·D for the neural models; None for counts
    bits_per_byte: float
    made: str                 # how it was made, in a phrase
    source: str               # how to rebuild the number (see the module docstring)
    evaluation: str = WHOLE_SPLIT

    @classmethod
    def from_dict(cls, d: Mapping) -> LineageRow:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# chapter 20's kNN-LM: a datastore small enough that the row re-scores in about a minute
KNN_LM_SOURCE = ("knnlm:checkpoints/shakespeare_byte:blocks=32,block=2048,k=64,T=100,lam=0.25,"
                 "nlist=128,nprobe=2")


def _knn_params(spec: str) -> dict[str, float]:
    """`blocks=64,block=2048,...` -> {"blocks": 64, ...} (every key required)."""
    need = ("blocks", "block", "k", "T", "lam", "nlist", "nprobe")
    try:
        out = {key: float(value) for key, _, value in
               (item.partition("=") for item in spec.split(","))}
    except ValueError as err:
        raise ValueError(f"knnlm parameters {spec!r}: write key=value pairs, e.g. "
                         f"{KNN_LM_SOURCE.split(':', 2)[2]}") from err
    if sorted(out) != sorted(need):
        raise ValueError(f"knnlm parameters {spec!r} must name exactly {', '.join(need)}")
    return out


def _knn_lm_score(folder: str, spec: str, text: str) -> float:
    from minillm.retrieval import build_datastore, knn_lm_bits_per_byte, spaced_blocks

    p = _knn_params(spec)
    model, tok = _checkpoint(folder)
    model.eval()
    train = spaced_blocks(load_corpus("shakespeare", "train"), int(p["blocks"]), int(p["block"]))
    store = build_datastore(model, tok.encode(train), tok.eot_id, backend="faiss",
                            nlist=int(p["nlist"]), nprobe=int(p["nprobe"]))
    return knn_lm_bits_per_byte(model, text, store, tok, k=int(p["k"]), temperature=p["T"],
                                lam=p["lam"])


# (model, chapter, tokens, made, source): the rows the recipe builds, in chapter order
ROWS: list[tuple[str, str, str, str, str]] = [
    ("KN 3-gram (words)", "01", "words", "modified Kneser-Ney counts on the training plays",
     "ngram:words:3"),
    ("KN 5-gram (bytes)", "01", "bytes", "modified Kneser-Ney counts on the training plays",
     "ngram:bytes:5"),
    ("MLP LM (shakespeare_mlp)", "02", "bytes",
     "chapter 02's MLP (16-byte window), trained on as many bytes as shakespeare_byte "
     "(data/checkpoints/shakespeare_mlp)",
     "checkpoint:checkpoints/shakespeare_mlp"),
    ("LSTM LM (shakespeare_lstm)", "02", "bytes",
     "chapter 02's LSTM (256 units), trained on as many bytes as shakespeare_byte "
     "(data/checkpoints/shakespeare_lstm)",
     "checkpoint:checkpoints/shakespeare_lstm"),
    ("GPT d128 x 6 (shakespeare_byte_d128)", "04", "bytes",
     "the course's previous base: 2,500 AdamW steps x 16 x 256 bytes; the BPE model's byte twin "
     "and the SFT model's start (data/checkpoints/shakespeare_byte_d128)",
     "checkpoint:checkpoints/shakespeare_byte_d128"),
    ("GPT d128 x 6, BPE 2,048 (shakespeare_bpe)", "04", "BPE tokens (2,048)",
     "shakespeare_byte_d128's recipe (2,500 steps) on chapter 04's BPE tokens "
     "(data/checkpoints/shakespeare_bpe)",
     "checkpoint:checkpoints/shakespeare_bpe"),
    ("GPT d128 BPE, equal FLOPs (shakespeare_bpe_eqflops)", "04", "BPE tokens (2,048)",
     "shakespeare_bpe's recipe stopped at shakespeare_byte_d128's training FLOPs (2,152 steps) "
     "(data/checkpoints/shakespeare_bpe_eqflops)",
     "checkpoint:checkpoints/shakespeare_bpe_eqflops"),
    ("GPT d192 x 6 (shakespeare_byte)", "06", "bytes",
     "3,000 AdamW steps x 32 x 256 bytes, cosine schedule (data/checkpoints/shakespeare_byte)",
     "checkpoint:checkpoints/shakespeare_byte"),
    ("best sweep run at 3e12 FLOPs", "07", "bytes",
     "chapter 07's IsoFLOP sweep, lowest validation loss at the largest budget",
     "sweep:best@3e+12"),
    ("Switch MoE, 8 experts (switch_e8)", "08", "bytes",
     "3,000 steps, top-1 routing with the balance loss (data/moe/switch_e8)",
     "checkpoint:moe/switch_e8"),
    ("SFT (shakespeare_sft)", "11", "bytes",
     "shakespeare_byte tuned on the instruction set, plain text mixed in "
     "(data/checkpoints/shakespeare_sft)",
     "checkpoint:checkpoints/shakespeare_sft"),
    ("SFT d128 (shakespeare_sft_d128)", "11", "bytes",
     "the same recipe on shakespeare_byte_d128; chapters 12-13's start "
     "(data/checkpoints/shakespeare_sft_d128)",
     "checkpoint:checkpoints/shakespeare_sft_d128"),
    ("shakespeare_byte_d128, NF4", "15", "bytes", "NF4 weights, block 64, no calibration",
     "quantized:checkpoints/shakespeare_byte_d128:nf4"),
    ("shakespeare_byte_d128, int4 RTN g64", "15", "bytes",
     "round-to-nearest 4-bit, groups of 64, no calibration",
     "quantized:checkpoints/shakespeare_byte_d128:rtn4-g64"),
    ("GPT d128 x 6, chapter 18's recipe (recurrent_gpt)", "18", "bytes",
     "chapter 18's shared recipe: 1,000 AdamW steps x 16 x 128 bytes, d_model 128, about 1.2M weights besides the embedding; the Transformer beside the three below (data/checkpoints/recurrent_gpt)",
     "checkpoint:checkpoints/recurrent_gpt"),
    ("linear attention d128 x 6 (recurrent_linear)", "18", "bytes",
     "chapter 18's shared recipe: 1,000 AdamW steps x 16 x 128 bytes, d_model 128, about 1.2M weights besides the embedding; causal linear attention, phi = elu + 1 (data/checkpoints/recurrent_linear)",
     "checkpoint:checkpoints/recurrent_linear"),
    ("RWKV-4 d128 x 6 (recurrent_rwkv)", "18", "bytes",
     "chapter 18's shared recipe: 1,000 AdamW steps x 16 x 128 bytes, d_model 128, about 1.2M weights besides the embedding (data/checkpoints/recurrent_rwkv)",
     "checkpoint:checkpoints/recurrent_rwkv"),
    ("Mamba d128 x 10 (recurrent_mamba)", "18", "bytes",
     "chapter 18's shared recipe: 1,000 AdamW steps x 16 x 128 bytes, d_model 128, about 1.2M weights besides the embedding (data/checkpoints/recurrent_mamba)",
     "checkpoint:checkpoints/recurrent_mamba"),
    ("kNN-LM on shakespeare_byte", "20", "bytes",
     "shakespeare_byte unchanged, interpolated with a nearest-neighbour lookup over its hidden "
     "states on 32 x 2,048 training bytes (k = 64, λ = 0.25); no training",
     KNN_LM_SOURCE),
]


def lineage_path() -> Path:
    return data_dir() / "lineage" / "lineage.json"


def load_lineage(path: str | Path | None = None) -> list[LineageRow]:
    """The shipped table, in chapter order."""
    d = read_json(Path(path) if path else lineage_path(), "the lineage table")
    return [LineageRow.from_dict(r) for r in d["rows"]]


def _validation() -> str:
    return load_corpus("shakespeare", "validation")


def _checkpoint(folder: str):
    # lazy: the alignment layer loads a checkpoint with its own tokenizer
    from minillm.alignment.recipe import load_model_and_tokenizer
    from minillm.models import load_model

    path = data_dir() / folder
    if (path / "tokenizer.json").is_file():
        return load_model_and_tokenizer(path)
    return load_model(path), ByteTokenizer()


def _neural_compute(model, folder: str) -> tuple[int, float | None]:
    """(every parameter once, training FLOPs by `training_flops` for the tokens it trained on)."""
    from minillm.scaling import training_flops

    n = sum(p.numel() for p in model.parameters())
    path = data_dir() / folder
    for name in ("training.json", "run.json"):
        if (path / name).is_file():
            record = read_json(path / name, name)
            history = record.get("history") or []
            tokens = history[-1].get("tokens") if history else None
            if tokens:
                return n, training_flops(model, tokens)
    return n, None


def _sweep_row(spec: str) -> tuple[float, int, float]:
    """`best@<budget>`: the sweep run with the lowest val_loss at that FLOP budget."""
    kind, _, budget = spec.partition("@")
    if kind != "best" or not budget:
        raise ValueError(f"sweep source {spec!r}: write 'sweep:best@<budget>', e.g. best@3e+12")
    with open(data_dir() / "scaling" / "sweep.csv") as f:
        runs = [r for r in csv.DictReader(f) if float(r["budget"]) == float(budget)]
    if not runs:
        raise ValueError(f"no sweep run at budget {budget} in data/scaling/sweep.csv")
    best = min(runs, key=lambda r: float(r["val_loss"]))
    return float(best["val_loss"]) / math.log(2), int(best["n_params"]), float(best["flops"])


def score_source(source: str, text: str | None = None) -> tuple[float, int, float | None]:
    """(bits per byte, parameters, training FLOPs) of a row's source, rebuilt from scratch."""
    # lazy imports: the n-gram, quantization and training layers load only when needed
    from minillm.training import text_bits_per_byte

    kind, _, rest = source.partition(":")
    if kind == "sweep":
        return _sweep_row(rest)
    text = _validation() if text is None else text
    if kind == "ngram":
        from minillm.ngram import NGramLM

        unit, _, order = rest.partition(":")
        extra = {"min_count": 2} if unit == "words" else {}
        lm = NGramLM(int(order), "modified_kneser_ney", tokenizer=unit, **extra)
        lm.fit_text(load_corpus("shakespeare", "train"))
        n = sum(lm.num_ngrams(k) for k in range(1, lm.order + 1))
        return text_bits_per_byte(lm, text), n, None
    if kind == "knnlm":
        folder, _, spec = rest.partition(":")
        bpb = _knn_lm_score(folder, spec, text)
        model, _ = _checkpoint(folder)
        n, flops = _neural_compute(model, folder)
        return bpb, n, flops
    if kind in ("checkpoint", "quantized"):
        folder, _, scheme = rest.partition(":")
        model, tok = _checkpoint(folder)
        n, flops = _neural_compute(model, folder)
        if kind == "quantized":
            from minillm.quantization import quantize_model

            quantize_model(model, scheme)
        return text_bits_per_byte(model.eval(), text, tok), n, flops
    raise ValueError(f"unknown lineage source {source!r}: use checkpoint:, quantized:, ngram:, "
                     "knnlm: or sweep: (see minillm.course.lineage's docstring)")


def build_lineage(rows: Iterable[tuple[str, str, str, str, str]] = ROWS, verbose: bool = False
                  ) -> list[LineageRow]:
    """Every row scored from its source (minutes on a CPU: the n-gram fits dominate)."""
    text = _validation()
    out = []
    for model, chapter, tokens, made, source in rows:
        bpb, n, flops = score_source(source, text)
        evaluation = "sweep's validation estimate" if source.startswith("sweep:") else WHOLE_SPLIT
        out.append(LineageRow(model, chapter, tokens, n, flops, round(bpb, 4), made, source,
                              evaluation))
        if verbose:
            print(f"{chapter}  {model:36s} {bpb:.4f} bits/byte")
    return out


def write_lineage(rows: list[LineageRow], path: str | Path | None = None) -> Path:
    path = Path(path) if path else lineage_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"metric": "bits per UTF-8 byte of the validation plays (Macbeth, Much Ado About "
                      "Nothing)",
            "recipe": "python -m minillm.course.lineage --write",
            "rows": [asdict(r) for r in rows]}
    atomic_write_json(path, body)
    return path


def lineage_lines(rows: list[LineageRow] | None = None) -> list[str]:
    """The rows as text, one line each: "lineage <chapter> <bits per byte> <model>"."""
    rows = load_lineage() if rows is None else rows
    return [f"lineage {r.chapter} {r.bits_per_byte:.4f} {r.model}" for r in rows]


def plot_lineage(highlight: str | Iterable[str] = (), extra: Mapping[str, float] | None = None,
                 rows: list[LineageRow] | None = None, ax=None, title: str | None = None):
    """The lineage as one dot per model (bits per byte, lower is better), in chapter order.

    highlight: chapter numbers ("11" or ["06", "11"]) whose rows are drawn in colour.
    extra: {label: bits per byte} of the chapter's own live runs, drawn as open markers at the
        bottom (their labels should say what text they were scored on if it is not the whole
        split). Prints the table's rows (`lineage_lines`), so the executed chapter keeps them
        as text. Returns the axes."""
    rows = load_lineage() if rows is None else rows
    print("\n".join(lineage_lines(rows)))
    marked = {highlight} if isinstance(highlight, str) else set(highlight)
    extra = dict(extra or {})
    if ax is None:
        _, ax = figure(width=7.5, height=0.32 * (len(rows) + len(extra)) + 1.4)
    labels = [f"{r.chapter}  {r.model}" + (" *" if r.evaluation != WHOLE_SPLIT else "")
              for r in rows]
    for i, r in enumerate(rows):
        on = r.chapter in marked
        ax.plot(r.bits_per_byte, i, "o", ms=8 if on else 6,
                color=COLORS["highlight"] if on else COLORS["baseline"], zorder=3)
        ax.annotate(f"{r.bits_per_byte:.3f}", (r.bits_per_byte, i), xytext=(7, -3),
                    textcoords="offset points", fontsize=8)
    for j, (name, value) in enumerate(extra.items()):
        i = len(rows) + j
        labels.append(f"this run: {name}")
        ax.plot(value, i, "o", ms=8, mfc="none", mew=1.8, color=COLORS["ours"], zorder=3)
        ax.annotate(f"{value:.3f}", (value, i), xytext=(7, -3), textcoords="offset points",
                    fontsize=8)
    values = [r.bits_per_byte for r in rows] + list(extra.values())
    lo, hi = min(values), max(values)
    ax.set_xlim(max(0.0, lo - 0.15), hi + 0.35)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    note = "  (* sweep estimate)" if any(r.evaluation != WHOLE_SPLIT for r in rows) else ""
    finish(ax, x="bits per byte on the validation plays (bits/byte, lower is better)", y=None,
           title=title or "The course's metric line" + note, legend=False)
    return ax


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help="write data/lineage/lineage.json")
    p.add_argument("--figure", help="also draw the table to this PNG (e.g. docs/lineage.png)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    rows = build_lineage(verbose=True)
    if a.write:
        print("wrote", write_lineage(rows))
    if a.figure:
        ax = plot_lineage(rows=rows)
        ax.figure.savefig(a.figure, dpi=100)
        print("drew", a.figure)


if __name__ == "__main__":
    main()
