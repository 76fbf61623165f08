"""Training on prepared token shards (`minillm.data.shards`): the folder checked, then windows
streamed from disk.

    data = load_token_data("data/mine")                 # manifest, sizes, checksums, tokenizer
    batches = ShardBatches(data, batch_size=16, seq_len=256, seed=1337)
    Trainer(model, config=cfg, batches=batches, tokenizer=data.tokenizer.to_dict())

Each split's shards are one token stream. A batch draws its window starts exactly as
`sample_batch` does on a tensor (`window_starts`: one generator, the global batch drawn, rank r
keeping the r-th slice), so a run on shards sees the same windows as a run on the same tokens
in memory, N ranks with batch B see what one process with N*B sees, and the generator's state
is the whole data position a checkpoint needs. Each rank reads only its own windows: a batch of
B windows of T + 1 tokens reads B * (T + 1) ids from disk, whatever the corpus size.

The shards are opened with `np.memmap` for each batch and let go after it, as nanoGPT's
`train.py` does: pages of a mapping that stays open count as the process's resident memory once
touched, so a long run over one open mapping would grow towards the corpus size.

A folder is refused, in one line naming the file and the fix, when it has no manifest.json (a
prepare that did not finish), a shard is missing or has another size than the manifest says,
or (with `verify=True`) a shard's SHA-256 differs.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minillm.data.batching import TokenStreamBatches, window_starts
from minillm.data.shards import FORMAT, MANIFEST
from minillm.io import read_json
from minillm.tokenizers import BPETokenizer, ByteTokenizer, load_tokenizer_folder

__all__ = ["ShardBatches", "TokenData", "TokenShards", "load_token_data"]

SPLITS = ("train", "val")
_PREPARE_AGAIN = "run `minillm data prepare` again"


class TokenShards:
    """One split's shard files as one stream of `n_tokens` ids.

    Args:
        folder: the prepared folder.
        shards: the manifest's [{"file", "tokens", "sha256"}, ...] of the split.
        dtype: the ids' numpy dtype.
    """

    def __init__(self, folder: Path, shards: list[dict], dtype: np.dtype):
        self.paths = [folder / s["file"] for s in shards]
        self.sizes = [int(s["tokens"]) for s in shards]
        self.ends = np.cumsum(self.sizes).tolist()  # where each shard ends in the stream
        self.dtype = dtype
        self.n_tokens = self.ends[-1] if self.ends else 0

    def read(self, starts, length: int) -> np.ndarray:
        """(len(starts), length) int64: the ids at starts[i] .. starts[i] + length - 1 (a
        window may cross from one shard into the next)."""
        out = np.empty((len(starts), length), dtype=np.int64)
        maps: dict[int, np.memmap] = {}  # opened for this call only
        for row, start in enumerate(int(s) for s in starts):
            if not 0 <= start <= self.n_tokens - length:
                raise ValueError(f"window [{start}, {start + length}) is outside the "
                                 f"{self.n_tokens} tokens")
            k, filled = bisect_right(self.ends, start), 0
            while filled < length:
                if k not in maps:
                    maps[k] = np.memmap(self.paths[k], dtype=self.dtype, mode="r")
                lo = start + filled - (self.ends[k] - self.sizes[k])
                take = min(length - filled, self.sizes[k] - lo)
                out[row, filled:filled + take] = maps[k][lo:lo + take]
                filled, k = filled + take, k + 1
        return out

    def all(self) -> np.ndarray:
        """The whole split as int64 (for scoring a validation split: it is loaded)."""
        return self.read([0], self.n_tokens)[0] if self.n_tokens else np.empty(0, np.int64)


@dataclass
class TokenData:
    """A prepared folder, checked: its manifest, tokenizer and splits ("val" may be absent)."""

    folder: Path
    manifest: dict
    tokenizer: ByteTokenizer | BPETokenizer
    splits: dict[str, TokenShards]

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the shards' checksums: names the data a checkpoint was trained on."""
        sums = [s["sha256"] for split in SPLITS
                for s in self.manifest["splits"].get(split, {}).get("shards", [])]
        return hashlib.sha256(" ".join(sums).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_token_data(folder: str | Path, verify: bool = True) -> TokenData:
    """Open a folder written by `prepare_shards`, checking it first.

    Args:
        folder: the prepared folder (`minillm data prepare --output-dir`).
        verify: also compare every shard's SHA-256 with the manifest's (reads every shard
            once, sequentially; sizes are always checked).

    Raises:
        ValueError: no such folder, no manifest, a manifest of another format, a missing shard,
            a shard of the wrong size or checksum, or a tokenizer that disagrees.
        CheckpointError: manifest.json or tokenizer.json is not valid JSON.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--data {folder}: no such folder; prepare one with `minillm data "
                         "prepare --input ... --output-dir DIR`")
    if not (folder / MANIFEST).is_file():
        raise ValueError(f"{folder / MANIFEST} is missing: {folder} is not prepared data (or its "
                         f"prepare did not finish); {_PREPARE_AGAIN}")
    manifest = read_json(folder / MANIFEST, MANIFEST, folder="token data folder")
    if manifest.get("format") != FORMAT or manifest.get("dtype") not in ("uint16", "uint32"):
        raise ValueError(f"{folder / MANIFEST} is not a minillm token manifest (format "
                         f"{manifest.get('format')!r}); {_PREPARE_AGAIN}")
    dtype = np.dtype(manifest["dtype"])
    splits = {}
    for split in SPLITS:
        shards = manifest["splits"].get(split, {}).get("shards", [])
        for shard in shards:
            path, size = folder / shard["file"], shard["tokens"] * dtype.itemsize
            if not path.is_file():
                raise ValueError(f"{path} is missing ({MANIFEST} lists it); {_PREPARE_AGAIN}")
            if path.stat().st_size != size:
                raise ValueError(f"{path} has {path.stat().st_size} bytes, {MANIFEST} says "
                                 f"{size} ({shard['tokens']} {dtype.name} ids): the shard is "
                                 f"truncated or replaced; {_PREPARE_AGAIN}")
            if verify and _sha256(path) != shard["sha256"]:
                raise ValueError(f"{path}: its SHA-256 differs from {MANIFEST}'s: the shard is "
                                 f"corrupt or was changed; {_PREPARE_AGAIN}")
        if shards:
            splits[split] = TokenShards(folder, shards, dtype)
    if "train" not in splits:
        raise ValueError(f"{folder / MANIFEST} lists no training shards; {_PREPARE_AGAIN}")
    tokenizer = load_tokenizer_folder(folder)
    expected = manifest["tokenizer"]["vocab_size"]
    if tokenizer.vocab_size != expected or np.iinfo(dtype).max < expected - 1:
        raise ValueError(f"{folder / 'tokenizer.json'} has {tokenizer.vocab_size} tokens but "
                         f"{MANIFEST} says {expected} ({dtype.name}): the folder is mixed up; "
                         f"{_PREPARE_AGAIN}")
    return TokenData(folder, manifest, tokenizer, splits)


class ShardBatches(TokenStreamBatches):
    """A `BatchSource` of random windows from prepared shards: `{"input_ids", "labels"}`,
    drawn as `TokenStreamBatches` draws them from a tensor (see the module docstring); the
    evaluation stream, `start_eval` and `tokens_in` are that class's.

    Args:
        data: a `TokenData` or a prepared folder (loaded with `load_token_data`).
        batch_size: windows per rank.
        seq_len: tokens per window.
        seed: seeds the training stream; each evaluation restarts "val" from `seed + 1`.
        rank, world_size: this process's slice of each global batch.

    Raises:
        ValueError: a split has fewer than seq_len + 1 tokens.
    """

    def __init__(self, data: TokenData | str | Path, batch_size: int, seq_len: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.data = data if isinstance(data, TokenData) else load_token_data(data)
        for split, shards in self.data.splits.items():
            if shards.n_tokens < seq_len + 1:
                raise ValueError(f"{self.data.folder}: the {split} split has {shards.n_tokens} "
                                 f"tokens, fewer than seq_len + 1 = {seq_len + 1}; prepare more "
                                 "text (or a larger --val-fraction) or use a shorter --seq-len")
        super().__init__(None, None, batch_size, seq_len, seed, rank, world_size)
        self.tokens = {split: self.data.splits.get(split) for split in SPLITS}

    def _windows(self, tokens: TokenShards, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same draw as `sample_batch`'s; only this rank's windows are read from disk."""
        starts = window_starts(tokens.n_tokens, self.batch_size, self.seq_len, generator,
                               self.rank, self.world_size)
        windows = torch.from_numpy(tokens.read(starts.tolist(), self.seq_len + 1))  # (B, T+1)
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def state_dict(self) -> dict:
        """The training stream's generator state, and which data it walks."""
        return {**super().state_dict(), "data": self.data.fingerprint}

    def load_state_dict(self, d: dict) -> None:
        """Continue the training stream from `state_dict()`'s state.

        Raises:
            ValueError: the state was saved on other data.
        """
        if d.get("data", self.data.fingerprint) != self.data.fingerprint:
            raise ValueError(f"the checkpoint was trained on other data than {self.data.folder} "
                             "(its shards' checksums differ): resume with the --data it was "
                             "trained on")
        super().load_state_dict(d)
