"""Supervised fine-tuning (SFT): loss on the response only, padded or packed batches, exact match.

Instruction tuning (Wei et al. 2021, FLAN, arXiv:2109.01652; Ouyang et al. 2022, InstructGPT,
arXiv:2203.02155) is next-token prediction on formatted (prompt, response) pairs, with the loss
taken over the response only:

    L = - (1 / |R|) * sum_{t in R} log p(x_{t+1} | x_{<=t})         R = response positions

as Hugging Face does it: the labels of prompt positions are -100, which cross-entropy ignores.
(`train_on_prompt=True` gives the all-token loss, for the ablation.)

Two ways to batch examples of different lengths give *the same loss*:
- padded: one example per row, right-padded; causal attention never looks right, so the pads
  change nothing, and their labels are -100;
- packed: examples laid end to end in rows of `seq_len` (fewer wasted tokens), with a
  block-diagonal causal mask (B, 1, T, T) so that no example sees another, and positions that
  restart at 0 for each example (Krell et al. 2021, arXiv:2107.02027, "packing without
  cross-contamination").
Both average over the same response tokens, so the losses agree to float rounding (tested).

`SFTBatches` serves either kind to the `Trainer` (`batches=`), with `sft_loss_fn` as its
`loss_fn=`; evaluation decodes greedily through `minillm.generation` until the stop token and
scores exact match per task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from minillm.alignment.chat import ChatTemplate
from minillm.generation import generate, left_pad

__all__ = ["SFTBatches", "block_diagonal_mask", "decode_answers", "exact_match_by_task",
           "pack_batch", "pad_batch", "plain_prompt", "sft_loss_fn", "tokenize_example"]

IGNORE = -100
Sequence_ = tuple[list[int], list[int]]  # (input_ids, labels), labels already shifted


def tokenize_example(tokenizer, template: ChatTemplate, prompt: str, response: str,
                     context_length: int, train_on_prompt: bool = False) -> Sequence_:
    """Inputs and (already shifted) labels of one example; -100 where the target is prompt.

    Args:
        context_length: the model's; an example longer than it is an error, not cut.
        train_on_prompt: keep the prompt's labels too (the all-token loss).
    Returns:
        (input_ids, labels), each of length len(ids) - 1: labels[t] is the token after t.
    """
    ids, n_prompt = template.encode(tokenizer, prompt, response)
    if len(ids) - 1 > context_length:
        raise ValueError(f"the example {prompt[:40]!r}... has {len(ids)} tokens, more than "
                         f"context_length + 1 = {context_length + 1}: shorten it or drop it "
                         "(cutting would lose the response)")
    labels = list(ids[1:])
    if not train_on_prompt:
        labels[: n_prompt - 1] = [IGNORE] * (n_prompt - 1)
    return list(ids[:-1]), labels


def pad_batch(seqs: Sequence[Sequence_], pad_id: int = 0, length: int | None = None
              ) -> dict[str, torch.Tensor]:
    """Right-pad examples into one batch.

    Returns:
        input_ids (B, T), labels (B, T) with -100 on padding, attention_mask (B, T) 1 on real
        tokens; T = `length` or the longest example.
    """
    t = length or max(len(x) for x, _ in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), t), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, (x, y) in enumerate(seqs):
        ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = (
            torch.tensor(x), torch.tensor(y), 1)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def block_diagonal_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) boolean: query i may see key j iff j <= i and both are in one document.
    Padding (document -1) sees padding before it, so no row of the softmax is empty."""
    t = document_ids.size(1)
    causal = torch.ones(t, t, dtype=torch.bool, device=document_ids.device).tril()
    same = document_ids[:, :, None] == document_ids[:, None, :]          # (B, T, T)
    return (same & causal)[:, None]


def pack_rows(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
    """Lay examples end to end, in order, starting a new row when the next one does not fit
    (next-fit). Returns the example indices of each row."""
    rows: list[list[int]] = []
    used = seq_len + 1
    for i, n in enumerate(lengths):
        if n > seq_len:
            raise ValueError(f"example {i} has {n} tokens, more than seq_len={seq_len}")
        if used + n > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def pack_batch(seqs: Sequence[Sequence_], seq_len: int, pad_id: int = 0,
               rows: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    """Pack examples into rows of `seq_len` (see `pack_rows`).

    Returns:
        input_ids, labels (-100 on padding), position_ids (restarting at 0 in each example),
        document_ids (example index, -1 on padding), all (R, seq_len), and attention_mask,
        the (R, 1, seq_len, seq_len) block-diagonal causal mask.
    """
    rows = rows if rows is not None else pack_rows([len(x) for x, _ in seqs], seq_len)
    shape = (len(rows), seq_len)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    docs = torch.full(shape, -1, dtype=torch.long)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            x, y = seqs[i]
            n = len(x)
            if at + n > seq_len:
                raise ValueError(f"row {r} holds more than seq_len={seq_len} tokens")
            ids[r, at:at + n], labels[r, at:at + n] = torch.tensor(x), torch.tensor(y)
            positions[r, at:at + n] = torch.arange(n)
            docs[r, at:at + n] = i
            at += n
    return {"input_ids": ids, "labels": labels, "position_ids": positions,
            "document_ids": docs, "attention_mask": block_diagonal_mask(docs)}


def sft_loss_fn(runner: nn.Module, batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """The Trainer's `loss_fn` for SFT: mean cross-entropy over the labelled (response) tokens
    of a padded or packed batch. Returns (loss, {"lm_loss", "response_tokens"})."""
    loss = runner(batch["input_ids"], batch["labels"],
                  attention_mask=batch.get("attention_mask"),
                  position_ids=batch.get("position_ids")).loss
    return loss, {"lm_loss": loss.item(),
                  "response_tokens": float((batch["labels"] != IGNORE).sum())}


class ShuffledSource:
    """What batch sources that shuffle examples each epoch share: the shuffle's state (its
    generator, the epoch's order and cursor) and the validation cursor, saved with checkpoints.
    Subclasses set `generator`, `order`, `cursor`, `epoch` and `val_cursor`."""

    generator: torch.Generator
    order: list[int]
    cursor: int
    epoch: int
    val_cursor: int

    def _init_shuffle(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.cursor = self.epoch = self.val_cursor = 0

    def _peek(self, n_train: int) -> int:
        """The next training index (not consumed: advance `cursor` to take it), starting a fresh
        shuffle of the `n_train` examples when the epoch's order is used up."""
        if self.cursor >= len(self.order):
            self.order = torch.randperm(n_train, generator=self.generator).tolist()
            self.cursor = 0
            self.epoch += 1
        return self.order[self.cursor]

    def _take(self, n: int, n_train: int) -> list[int]:
        """The next `n` training indices, crossing into fresh shuffles as needed."""
        taken = []
        for _ in range(n):
            taken.append(self._peek(n_train))
            self.cursor += 1
        return taken

    def _val_indices(self, n: int, n_val: int) -> list[int]:
        """The next `n` validation indices, in order, cycling through `n_val` examples."""
        idx = [(self.val_cursor + k) % n_val for k in range(n)]
        self.val_cursor = (self.val_cursor + n) % n_val
        return idx

    def start_eval(self) -> None:
        """Start the validation stream over (the Trainer does, before each evaluation)."""
        self.val_cursor = 0

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": torch.tensor(self.order),
                "cursor": self.cursor, "epoch": self.epoch, "val_cursor": self.val_cursor}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = [int(i) for i in state["order"]]
        self.cursor, self.epoch = int(state["cursor"]), int(state["epoch"])
        self.val_cursor = int(state["val_cursor"])


class SFTBatches(ShuffledSource):
    """A `BatchSource` of SFT examples: shuffled each epoch, padded or packed.

    Args:
        train, val: tokenized examples, (input_ids, labels) pairs.
        batch_size: padded: examples per batch; packed: rows of `seq_len` per batch.
        seq_len: packed row length (the model's context length, typically).
        packing: pack (True) or pad (False).
        seed: seeds the epoch shuffles.
        rank, world_size: data parallelism: every rank builds the global batch of
            batch_size * world_size rows and keeps its own slice.
    """

    def __init__(self, train: Sequence[Sequence_], val: Sequence[Sequence_] | None,
                 batch_size: int, seq_len: int, packing: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, pad_id: int = 0):
        if not train:
            raise ValueError("SFTBatches needs at least one training example")
        if batch_size <= 0 or seq_len <= 0:
            raise ValueError(f"batch_size={batch_size} and seq_len={seq_len} must be positive")
        too_long = [i for i, (x, _) in enumerate(train) if len(x) > seq_len]
        if too_long:
            raise ValueError(f"{len(too_long)} training examples (e.g. #{too_long[0]}) are longer "
                             f"than seq_len={seq_len}; drop them or raise seq_len")
        self.train, self.val = list(train), list(val or [])
        self.batch_size, self.seq_len, self.packing = batch_size, seq_len, packing
        self.rank, self.world_size, self.pad_id = rank, world_size, pad_id
        self._init_shuffle(seed)

    def _take_train(self) -> list[int]:
        """Indices of the next global batch, crossing into a fresh shuffle when needed."""
        rows = self.batch_size * self.world_size
        taken: list[int] = []
        used, n_rows = self.seq_len + 1, 0
        while True:
            i = self._peek(len(self.train))
            if not self.packing:
                if len(taken) == rows:
                    return taken
            else:  # next-fit: does example i start a new row, and is there room for one?
                n = len(self.train[i][0])
                if used + n > self.seq_len:
                    if n_rows == rows:
                        return taken
                    n_rows, used = n_rows + 1, 0
                used += n
            taken.append(i)
            self.cursor += 1

    def _collate(self, seqs: list[Sequence_]) -> dict[str, torch.Tensor]:
        if self.packing:
            rows = pack_rows([len(x) for x, _ in seqs], self.seq_len)
            rows += [[] for _ in range(self.batch_size * self.world_size - len(rows))]
            batch = pack_batch(seqs, self.seq_len, self.pad_id, rows)
            lo = self.rank * self.batch_size
            return {k: v[lo:lo + self.batch_size] for k, v in batch.items()}
        per = len(seqs) // self.world_size
        mine = seqs[self.rank * per:(self.rank + 1) * per]
        return pad_batch(mine, self.pad_id, length=max(len(x) for x, _ in seqs))

    def next_batch(self, split: str = "train") -> dict[str, torch.Tensor]:
        """The next batch of `split` ("train": shuffled; "val": in order, cycling)."""
        if split == "train":
            return self._collate([self.train[i] for i in self._take_train()])
        if split != "val":
            raise ValueError(f"split={split!r}; use 'train' or 'val'")
        if not self.val:
            raise ValueError("SFTBatches has no validation examples")
        n = self.batch_size * self.world_size * (4 if self.packing else 1)  # ~ rows' worth
        seqs = [self.val[i] for i in self._val_indices(n, len(self.val))]
        if self.packing:  # keep whole rows only
            rows = pack_rows([len(x) for x, _ in seqs], self.seq_len)[: self.batch_size * self.world_size]
            seqs = [seqs[i] for r in rows for i in r]
        return self._collate(seqs)

    def has_split(self, split: str) -> bool:
        """Whether there are examples for `split` ("train" always; "val" if any were given)."""
        return split == "train" or (split == "val" and bool(self.val))

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        """Real (non-padding) tokens in this rank's batch."""
        if "document_ids" in batch:
            return int((batch["document_ids"] >= 0).sum())
        return int(batch["attention_mask"].sum())


# ---- evaluation ----------------------------------------------------------------------------
def plain_prompt(prompt: str, shots: Sequence[tuple[str, str]] = ()) -> str:
    """The base model's format (no special tokens): k demonstrations, then the question.

        {prompt_1}\\nAnswer: {response_1}\\n\\n ... {prompt}\\nAnswer:
    """
    demos = "".join(f"{p}\nAnswer: {r}\n\n" for p, r in shots)
    return f"{demos}{prompt}\nAnswer: "


@torch.no_grad()
def decode_answers(model: nn.Module, tokenizer, prompts: Sequence[Sequence[int]],
                   stop_ids: Sequence[int], max_new_tokens: int = 56, batch_size: int = 64,
                   stop_text: str | None = None) -> list[str]:
    """Greedy answers to tokenized prompts, batched (left-padded, sorted by length).

    A prompt longer than `context_length - max_new_tokens` loses its first tokens, so that
    prompt and answer fit the context and decoding keeps its KV cache (past the context,
    `generate` would recompute the whole window for every new token: ~40x slower for a
    few-shot prompt that fills the window).

    Args:
        prompts: token ids of each prompt (the chat template's prompt part, or a plain one).
        stop_ids: decoding of a row ends at any of these tokens (excluded from the answer).
        stop_text: also cut the decoded answer at this text (e.g. "\\n" for plain prompts).
    Returns:
        One answer per prompt, stripped of surrounding whitespace.
    """
    model.eval()
    device = next(model.parameters()).device
    room = model.config.context_length - max_new_tokens  # what the prompt may keep
    if room < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                         f"context_length={model.config.context_length}: lower it")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    stops = set(stop_ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        seqs = [list(prompts[i])[-room:] for i in chunk]
        ids, mask = left_pad(seqs)
        out = generate(model, ids.to(device), max_new_tokens, temperature=0.0,
                       eos_token_id=list(stop_ids), attention_mask=mask.to(device),
                       pad_token_id=list(stop_ids)[0])
        for row, i in enumerate(chunk):
            new = out[row, ids.size(1):].tolist()
            cut = next((k for k, t in enumerate(new) if t in stops), len(new))
            text = tokenizer.decode(new[:cut])
            if stop_text is not None:
                text = text.split(stop_text)[0]
            answers[i] = text.strip()
    return answers


def exact_match_by_task(tasks: Sequence[str], answers: Sequence[str],
                        references: Sequence[str]) -> dict[str, float]:
    """Share of exact (whitespace-stripped) matches per task, and "mean" over tasks."""
    if not len(tasks) == len(answers) == len(references):
        raise ValueError("tasks, answers and references must have the same length")
    hits: dict[str, list[bool]] = {}
    for t, a, r in zip(tasks, answers, references, strict=True):
        hits.setdefault(t, []).append(a.strip() == r.strip())
    scores = {t: sum(h) / len(h) for t, h in hits.items()}
    if scores:
        scores["mean"] = sum(scores.values()) / len(scores)
    return scores
