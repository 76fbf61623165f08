"""Mixing plain pre-training text into SFT batches, to keep the alignment tax small.

Fine-tuning only on instruction data moves a small model away from the text it was trained on:
its loss on plain text (bits per byte on the held-out plays) rises, the *alignment tax*
(InstructGPT, Ouyang et al. 2022, arXiv:2203.02155, §3.5, counters it by mixing pre-training
gradients into PPO: "PPO-ptx"). The same remedy works for SFT: every batch carries, beside its
packed SFT rows, `text_rows` windows of the pre-training corpus, and the loss is

    L = L_sft + w * L_text

with L_sft the mean cross-entropy over the SFT rows' response tokens (as `sft_loss_fn`) and
L_text the mean next-token cross-entropy over the text rows' tokens. Each term is its own
mean, so `w` (default 1) weighs the two objectives, not their token counts (a 256-token text
row would otherwise outweigh a row's ~60 response tokens four to one).

The text rows go into the packed batch as one document each: positions 0..T-1 and a causal
block of the block-diagonal mask, so one forward serves both kinds of row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from minillm.alignment.sft import IGNORE, SFTBatches
from minillm.data.batching import check_tokens, sample_batch

__all__ = ["MixedBatches", "mixed_loss_fn"]


class MixedBatches:
    """A `BatchSource`: packed SFT batches with `text_rows` plain-text windows appended.

    Args:
        sft: a packed `SFTBatches` (its rows and validation stream are used as they are).
        text_tokens: 1-D token ids of the pre-training corpus (training split).
        text_rows: plain-text windows per batch (per rank), each `sft.seq_len` tokens.
        seed: seeds the text windows.
    Batches are the packed SFT keys plus "text_rows", a (B,) boolean marking the text rows.
    Validation batches are the SFT source's alone (no text rows).
    """

    def __init__(self, sft: SFTBatches, text_tokens: torch.Tensor, text_rows: int,
                 seed: int = 0):
        if not sft.packing:
            raise ValueError("MixedBatches needs a packed SFTBatches (packing=True): text rows "
                             "join the packed rows' block-diagonal mask")
        if text_rows < 0:
            raise ValueError(f"text_rows={text_rows} must be >= 0")
        check_tokens(text_tokens, sft.seq_len, "plain-text tokens")
        self.sft, self.text_tokens, self.text_rows = sft, text_tokens, text_rows
        self.generator = torch.Generator().manual_seed(seed)

    def _mark(self, batch: dict[str, torch.Tensor], n_text: int) -> dict[str, torch.Tensor]:
        rows = batch["input_ids"].size(0)
        batch["text_rows"] = torch.arange(rows + n_text) >= rows
        return batch

    def next_batch(self, split: str = "train") -> dict[str, torch.Tensor]:
        """SFT rows then text rows ("train"); SFT rows only ("val")."""
        batch = self.sft.next_batch(split)
        if split != "train" or self.text_rows == 0:
            return self._mark(batch, 0)
        t = self.sft.seq_len
        x, y = sample_batch(self.text_tokens, self.text_rows, t, self.generator,
                            self.sft.rank, self.sft.world_size)
        n = x.size(0)
        causal = torch.ones(t, t, dtype=torch.bool).tril().expand(n, 1, t, t)
        batch = self._mark(batch, n)
        batch["input_ids"] = torch.cat([batch["input_ids"], x])
        batch["labels"] = torch.cat([batch["labels"], y])
        batch["position_ids"] = torch.cat([batch["position_ids"], torch.arange(t).expand(n, t)])
        # each text row is one document, numbered after the SFT rows' examples
        first = int(batch["document_ids"].max()) + 1
        docs = (first + torch.arange(n))[:, None].expand(n, t)
        batch["document_ids"] = torch.cat([batch["document_ids"], docs])
        batch["attention_mask"] = torch.cat([batch["attention_mask"], causal])
        return batch

    def has_split(self, split: str) -> bool:
        return self.sft.has_split(split)

    def start_eval(self) -> None:
        self.sft.start_eval()

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        """Real tokens: the SFT rows' non-padding tokens and every text token."""
        return int((batch["document_ids"] >= 0).sum())

    def state_dict(self) -> dict:
        return {"sft": self.sft.state_dict(), "text_generator": self.generator.get_state()}

    def load_state_dict(self, d: dict) -> None:
        self.sft.load_state_dict(d["sft"])
        self.generator.set_state(d["text_generator"])


def mixed_loss_fn(text_weight: float = 1.0
                  ) -> Callable[[nn.Module, dict[str, torch.Tensor]],
                                tuple[torch.Tensor, dict[str, float]]]:
    """The Trainer's `loss_fn` for `MixedBatches`: L_sft + text_weight * L_text.

    Returns a function `(runner, batch) -> (loss, {"lm_loss": L_sft, "text_loss": L_text,
    "response_tokens": ...})`; "lm_loss" is the SFT loss, so the Trainer's validation (on SFT
    rows alone) reports the same quantity as `sft_loss_fn`. A batch without text rows gives
    exactly `sft_loss_fn`'s loss.
    """
    if text_weight < 0:
        raise ValueError(f"text_weight={text_weight} must be >= 0")

    def loss_fn(runner: nn.Module, batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = runner(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                        position_ids=batch.get("position_ids")).logits
        labels = batch["labels"]
        nll = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                              ignore_index=IGNORE, reduction="none").view_as(labels)
        text = batch["text_rows"].to(labels.device)
        sft_mask = (labels != IGNORE) & ~text[:, None]
        sft_loss = (nll * sft_mask).sum() / sft_mask.sum().clamp(min=1)
        metrics = {"lm_loss": sft_loss.item(), "response_tokens": float(sft_mask.sum())}
        loss = sft_loss
        if bool(text.any()):
            text_mask = (labels != IGNORE) & text[:, None]
            text_loss = (nll * text_mask).sum() / text_mask.sum()
            loss = loss + text_weight * text_loss
            metrics["text_loss"] = text_loss.item()
        return loss, metrics

    return loss_fn
