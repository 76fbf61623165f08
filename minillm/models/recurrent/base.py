"""What the recurrent LMs (linear attention, RWKV, Mamba) share: config checks, the forward
that trains in parallel or continues a decoding state, and the FLOP count.

Every model here has two ways through the same function:

- *parallel* (`state=None`): the whole (B, T) window at once, for training; the model's
  `context_length` is the training window, as for the GPT;
- *recurrent* (`state=model.init_state(B)`): continue from the state, which the forward
  replaces with the state after the last token. Feeding a sequence in any split (all at once,
  or one token per call) gives the same logits: that is what `minillm.generation` decodes with
  instead of a KV cache.

Left padding (`attention_mask` with zeros, as `minillm.generation.left_pad` makes) is run one
token at a time and a padding token leaves its row's state untouched, so a padded row gets
the logits of its prompt alone.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from minillm.models.base import LanguageModel, LMOutput, lm_loss
from minillm.models.recurrent.state import RecurrentState
from minillm.utils import config_from_dict

__all__ = ["RecurrentConfig", "RecurrentLM", "SCANS", "parallel_scan"]

SCANS = ("auto", "chunked", "recurrent")


def parallel_scan(scan: str) -> bool:
    """Whether a model with `scan` (a config field) runs a window through its chunked parallel
    form: always for "chunked", never for "recurrent" (the token loop), and for "auto" only
    while autograd records (training). Without gradients the loop is the faster of the two on a
    CPU (a whole forward 5.0x faster for RWKV-4 and 2.9x for Mamba at d_model 128, 6 blocks,
    B = 16, T = 128, one thread: `benchmarks/recurrent.py`, part 4; no (B, L, L, C) or
    (B, L, Di, N) intermediates, no log-depth passes); the chunked form is the one a GPU
    parallelises and the one training differentiates. Both compute the same numbers up to
    float rounding (tests/test_recurrent.py)."""
    if scan not in SCANS:
        raise ValueError(f"scan={scan!r}; choose one of {SCANS}")
    return scan == "chunked" or (scan == "auto" and torch.is_grad_enabled())


class RecurrentConfig:
    """Shared by the recurrent configs: `arch` tells `load_model` the class; dict round trip."""

    ARCH = ""  # each config's fixed `arch` value

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict (what config.json holds)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Read a config back; unknown fields are an error naming them."""
        return config_from_dict(cls, d, "model config")

    def _check(self, positive: tuple[str, ...]) -> None:
        if self.arch != self.ARCH:
            raise ValueError(f"arch={self.arch!r} but this is a {type(self).__name__} "
                             f"(arch={self.ARCH!r}); leave arch at its default")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if getattr(self, "scan", "auto") not in SCANS:
            raise ValueError(f"scan={self.scan!r}; choose one of {SCANS} (auto: the chunked "
                             "form while training, the token loop without gradients)")


class RecurrentLM(LanguageModel):
    """Base of the recurrent LMs. Subclasses define `init_state`, `hidden(idx, state)` (the
    final, normed hidden states; `state=None` for the parallel path) and `matmul_weights`."""

    tied_embedding = "embed.weight"
    state_limit: int | None = None  # longest sequence a state may carry (None: unbounded)

    def init_state(self, batch_size: int) -> RecurrentState:
        """The state before any token, on the model's device and dtype."""
        raise NotImplementedError

    def hidden(self, idx: torch.Tensor, state: RecurrentState | None) -> torch.Tensor:
        raise NotImplementedError

    def matmul_weights(self) -> int:
        """Weights multiplied per token (the embedding is a lookup, not a matmul)."""
        raise NotImplementedError

    def mixing_flops(self) -> int:
        """Forward FLOPs per token of the token mixing beyond its weights (state updates)."""
        return 0

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None, training: bool = True) -> float:
        """FLOPs per token in `GPT.flops_per_token`'s convention: 2 per weight a token is
        multiplied by (output layer included, embedding not) plus the state update, which does
        not grow with the context (`seq_len` changes nothing); training is 3x the forward."""
        forward = 2 * self.matmul_weights() + self.mixing_flops()
        return 3 * forward if training else forward

    def _dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.parameters())
        return p.device, p.dtype

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                state: RecurrentState | None = None,
                attention_mask: torch.Tensor | None = None) -> LMOutput:
        """Args:
            idx: (B, T) token ids, T <= context_length.
            targets: optional (B, T) next-token ids (-100 = ignore).
            state: a decoding state to continue from (replaced by the state after idx); None
                runs the parallel (training) path from the empty state.
            attention_mask: optional (B, T), 0 on left padding.

        Returns:
            an `LMOutput`: logits (B, T, V), the loss (or None) and the final hidden states.
        """
        if idx.size(1) > self.config.context_length:
            raise ValueError(f"input has {idx.size(1)} tokens but context_length="
                             f"{self.config.context_length}; feed longer inputs in pieces "
                             "with a state (model.init_state) or keep the last context_length")
        if attention_mask is not None and not bool(attention_mask.all()):
            if attention_mask.shape != idx.shape:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} differs "
                                 f"from idx shape {tuple(idx.shape)}")
            state = state if state is not None else self.init_state(idx.size(0))
            h = []
            for t in range(idx.size(1)):   # padding tokens leave their row's state unchanged
                before = state.clone()
                h.append(self.hidden(idx[:, t:t + 1], state))
                state.blend(attention_mask[:, t].bool(), before)
            h = torch.cat(h, dim=1)
        else:
            h = self.hidden(idx, state)
        logits = self.lm_head(h)
        return LMOutput(logits, lm_loss(logits, targets), hidden_states=h)
