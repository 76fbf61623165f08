"""Batches of random contiguous windows from a 1-D token tensor.

Every draw goes through an explicit `torch.Generator`, so the same seed gives the same
batches, and saving the generator's state is enough to resume the data stream exactly.
For data parallelism each rank draws the *global* batch and keeps its own slice, so N ranks
with batch B see exactly the windows one process with batch N*B sees.

A *batch source* is what the Trainer draws from (`BatchSource`): `next_batch(split)` gives a
dict of tensors, and its state travels in the checkpoint so that a resumed run continues the
same stream. `TokenStreamBatches` is the default, random windows of a token stream as
`{"input_ids", "labels"}`; instruction tuning (masked labels) and preference pairs bring their
own sources with their own keys, and the loss function that reads them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["BatchSource", "TokenStreamBatches", "check_tokens", "sample_batch",
           "scoring_windows", "window_starts"]


def check_tokens(data: torch.Tensor, context_length: int, what: str = "data",
                 vocab_size: int | None = None) -> None:
    """Raise a clear error if `data` cannot supply one window of `context_length` + 1 tokens
    (or, given `vocab_size`, holds ids the model has no embedding for).

    Args:
        data: 1-D token ids.
        context_length: the window the model trains on.
        what: how the message names `data`.
        vocab_size: the model's vocabulary, to check the ids against.

    Raises:
        ValueError: naming what is wrong and the fix.
    """
    if data.ndim != 1:
        raise ValueError(f"{what} must be a 1-D tensor of token ids, got shape {tuple(data.shape)}")
    if data.numel() == 0:
        raise ValueError(f"{what} is empty: there is no text to train or evaluate on")
    if vocab_size is not None:  # the model will embed these ids
        if data.dtype != torch.int64:
            raise ValueError(f"{what} has dtype {data.dtype}; token ids must be int64: "
                             "use tokens.long()")
        low, high = int(data.min()), int(data.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(f"{what} holds ids in [{low}, {high}] but the model's vocab_size is "
                             f"{vocab_size}: encode with the model's tokenizer or enlarge "
                             "vocab_size")
    if data.numel() < context_length + 1:
        raise ValueError(
            f"{what} has {data.numel()} tokens, fewer than context_length + 1 = "
            f"{context_length + 1}; use more text or a shorter context_length"
        )


def window_starts(n_tokens: int, batch_size: int, context_length: int,
                  generator: torch.Generator, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Where this rank's windows of `context_length` + 1 tokens start in a stream of `n_tokens`:
    one draw of `batch_size * world_size` starts, uniform in [0, n_tokens - context_length),
    of which rank r keeps the r-th slice of `batch_size`. Every batch source of token windows
    draws through this function, whether the tokens sit in a tensor or in files on disk.

    Returns:
        (batch_size,) int64 start positions.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    return torch.randint(
        0, n_tokens - context_length, (batch_size * world_size,), generator=generator
    )[rank * batch_size : (rank + 1) * batch_size]


def scoring_windows(n_targets: int, context_length: int, stride: int
                    ) -> list[tuple[int, int, int]]:
    """The windows that score every one of `n_targets` predictions exactly once, each with at
    least `context_length - stride` tokens of context after the first window.

    Windows of `context_length` end every `stride` tokens and at the end; each keeps only the
    targets the previous one did not score. The course's scorer (`minillm.training.lm_nll_bits`)
    and kNN-LM (`minillm.retrieval.knn_lm`) walk the text this way.

    Returns:
        (start, end, first kept offset) per window: inputs seq[start:end], targets
        seq[start + 1:end + 1], of which those at offsets >= the third value are scored.
    """
    T, S, L = context_length, stride, n_targets
    if not 0 < S <= T:
        raise ValueError(f"stride={S} must be in [1, context_length={T}]")
    ends = list(range(min(T, L), L, S)) + [L] if L > T else [L]
    jobs, prev = [], 0
    for e in ends:
        start = max(0, e - T)
        jobs.append((start, e, prev - start))
        prev = e
    return jobs


def sample_batch(
    data: torch.Tensor,
    batch_size: int,
    context_length: int,
    generator: torch.Generator,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `batch_size * world_size` windows; return this rank's (inputs, targets).

    Args:
        data: 1-D token ids.
        batch_size: windows per rank.
        context_length: tokens per window.
        generator: the stream's generator (advanced by one draw).
        rank, world_size: this process's slice of the global batch.

    Returns:
        x, y: (batch_size, context_length) int64; y is x shifted left by one token.
    """
    check_tokens(data, context_length)
    starts = window_starts(data.numel(), batch_size, context_length, generator, rank, world_size)
    offsets = torch.arange(context_length + 1)
    windows = data[starts[:, None] + offsets]  # (B, T+1)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


@runtime_checkable
class BatchSource(Protocol):
    """What the Trainer draws batches from.

    `next_batch(split)` returns a dict of tensors for split "train" or "val" (the default loss
    reads "input_ids" and "labels"); `state_dict()` / `load_state_dict(d)` save and restore the
    stream (tensors and plain containers, as `torch.load(weights_only=True)` reads them);
    `tokens_in(batch)` is how many training tokens a batch counts for.

    Optional: `has_split(split) -> bool` (default: every split exists), and `start_eval()`,
    called before each evaluation so that every evaluation sees the same "val" batches.
    """

    def next_batch(self, split: str = "train") -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, d: dict) -> None: ...

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int: ...


class TokenStreamBatches:
    """Random windows of a token stream: `{"input_ids": (B, T), "labels": (B, T)}`, labels the
    inputs shifted left by one, drawn as `sample_batch` draws them.

    The training stream comes from one generator seeded `seed` (its state is the source's
    state); each evaluation restarts a fresh generator seeded `seed + 1` (`start_eval`), so
    estimates neither disturb nor depend on the training stream.

    Args:
        train_tokens: 1-D token ids to train on.
        val_tokens: optional 1-D held-out ids (split "val").
        batch_size: windows per rank.
        seq_len: tokens per window.
        seed: seeds the training stream.
        rank, world_size: this process's slice of each global batch.
    """

    def __init__(self, train_tokens: torch.Tensor, val_tokens: torch.Tensor | None,
                 batch_size: int, seq_len: int, seed: int, rank: int = 0, world_size: int = 1):
        self.tokens = {"train": train_tokens, "val": val_tokens}
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self.val_generator = torch.Generator().manual_seed(seed + 1)

    def has_split(self, split: str) -> bool:
        """Whether there are tokens for `split`."""
        return self.tokens.get(split) is not None

    def start_eval(self) -> None:
        """Restart the "val" stream (every evaluation draws the same windows)."""
        self.val_generator = torch.Generator().manual_seed(self.seed + 1)

    def next_batch(self, split: str = "train") -> dict[str, torch.Tensor]:
        """This rank's next batch of `split` ("train" or "val")."""
        if split not in self.tokens:
            raise ValueError(f"split={split!r}; choose 'train' or 'val'")
        if self.tokens[split] is None:
            raise ValueError(f"there are no {split} tokens: pass val_tokens to evaluate")
        gen = self.generator if split == "train" else self.val_generator
        x, y = self._windows(self.tokens[split], gen)
        return {"input_ids": x, "labels": y}

    def _windows(self, tokens: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (inputs, targets) of one draw from `tokens` (a subclass may keep its
        tokens elsewhere, e.g. on disk: `minillm.data.shard_reader.ShardBatches`)."""
        return sample_batch(tokens, self.batch_size, self.seq_len, generator, self.rank,
                            self.world_size)

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        """Every input position is a training token."""
        return batch["input_ids"].numel()

    def state_dict(self) -> dict:
        """The training stream's generator state."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, d: dict) -> None:
        """Continue the training stream from `state_dict()`'s state."""
        self.generator.set_state(d["generator"])
