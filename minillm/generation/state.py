"""The running state every decoding strategy shares: tokens so far, padding mask, KV cache.

`DecodeState.next_logits()` runs the model on the tokens it has not seen yet and returns their
logits. With a cache that is the prefill (the whole prompt) and then one token per step; without
one it is a forward over the last `context_length` tokens every time. Both give the same
numbers, so cached and uncached decoding choose the same tokens.

Batches of prompts of different lengths are *left*-padded (`left_pad`), so every row's next
token is in the last column; `attention_mask` (B, T) marks real tokens with 1. Positions count
real tokens only (`cumsum(mask) - 1`), as in Hugging Face, so a padded row gets the same logits
as the same prompt alone.

Decoding needs a model that does not look ahead: causal, or a prefix-LM (`attn_mask="prefix"`),
whose prefix is the prompt (every prompt token sees the whole prompt; each new token sees what
precedes it, so the cache stays exact). A prompt's padding must be on the left.
The model is put in eval mode for each forward and given back in the mode it was in, so two
decoders (e.g. two `stream`s) may interleave on one model.

Past the context: once the sequence is longer than `context_length`, the model sees the last
`context_length` tokens (a sliding window, positions restarting at 0). Absolute positions then
change at every step, so a cache cannot slide with them: those steps run without the cache.

Recurrent models (chapter 18: linear attention, RWKV, Mamba; anything with `init_state`) carry
a fixed-size state instead of a KV cache (`use_cache` keeps it): the prompt is folded into
the state, then each step feeds one token. The state does not slide; past the context RWKV and
Mamba carry it on (their strength; recomputation would slide a window and differ), while a
model whose state stops at a position table (`model.state_limit`) recomputes the window as a
GPT does. Rolling back (speculative decoding, contrastive candidates) restores a snapshot of
the state, or refolds the kept tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from minillm.models.kv_cache import KVCache

__all__ = ["DecodeState", "draw", "left_pad"]


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One sample per row of `probs` (B, V) -> (B,) (or (V,) -> ()). A generator on another
    device (a seeded CPU generator with a CUDA model) samples on its device.

    Args:
        probs: probabilities (rows need not be normalised).
        generator: a seeded generator, or None for torch's global one.

    Returns:
        The drawn ids.
    """
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device)[..., 0]
    return torch.multinomial(probs, 1, generator=generator)[..., 0]


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int = 0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists of different lengths, padding on the left.

    Args:
        sequences: token lists (none empty).
        pad_token_id: the id the padding holds (masked out, so any id will do).

    Returns:
        input_ids (B, T_max) and attention_mask (B, T_max), 1 on real tokens.
    """
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("left_pad needs at least one sequence and no empty ones")
    t = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), t), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), t), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, t - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, t - len(s):] = 1
    return ids, mask


class DecodeState:
    """Tokens `seq` (B, L), `mask` (B, L) and an optional KV cache, decoded with `model`.

    Args:
        model: a GPT (anything with `config.context_length` and the cache-aware forward), or
            a recurrent LM (`init_state`: decoded with its fixed-size state).
        input_ids: (B, T) prompt, left-padded if `attention_mask` has zeros.
        attention_mask: optional (B, T), 1 on real tokens.
        max_length: the longest the sequence will get (sizes the cache).
        use_cache: keep a KV cache (else recompute the window every step).
        capture_hidden: also keep the final (post-norm) hidden states of each forward in
            `self.hidden` (B, n, C), for contrastive search (the output's `hidden_states`).
    """

    def __init__(self, model: nn.Module, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None, max_length: int, use_cache: bool = True,
                 capture_hidden: bool = False):
        kind = getattr(model.config, "attn_mask", "causal")
        if kind not in ("causal", "prefix"):
            raise ValueError(f"decoding needs a causal or prefix-LM model; this one has "
                             f"attn_mask={kind!r} (an encoder sees the future): score with "
                             "forward(...) instead")
        self.model = model
        self.ctx = model.config.context_length
        device = next(model.parameters()).device
        self.seq = input_ids.to(device)
        if attention_mask is None:
            attention_mask = torch.ones_like(self.seq)
        if attention_mask.shape != self.seq.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} differs from "
                             f"input_ids shape {tuple(self.seq.shape)}")
        self.prefix = self.seq.size(1) if kind == "prefix" else None  # the prompt's columns
        self.mask = attention_mask.to(device=device, dtype=torch.long)
        self.padded = not bool(self.mask.all())
        if self.padded and not (bool((self.mask.diff(dim=1) >= 0).all())
                                and bool(self.mask[:, -1].all())):
            raise ValueError("attention_mask must be left padding (0s, then 1s up to the last "
                             "column): the next token is read from the last column. Pad with "
                             "minillm.generation.left_pad")
        cache_len = min(self.ctx, max_length)
        # a recurrent model's fixed-size state stands in for the cache
        self.state = model.init_state(self.seq.size(0)) \
            if use_cache and hasattr(model, "init_state") else None
        self.state_limit = getattr(model, "state_limit", None)
        self._snapshot: tuple[int, object] | None = None  # (n_seen, state) to roll back to
        # chapter 02's MLP and RNN LMs have no KV cache: they re-read the window every step
        use_cache = use_cache and hasattr(model.config, "n_kv_head")
        self.cache = KVCache.for_model(model, self.seq.size(0), cache_len) if use_cache else None
        self.n_seen = 0  # tokens of `seq` whose keys/values (or state) the model holds
        self.capture_hidden = capture_hidden
        self.hidden: torch.Tensor | None = None
        self._slots: list[tuple[torch.Tensor, torch.Tensor]] = []

    def close(self) -> None:
        """Nothing to release (kept so that callers may always close a state)."""

    @property
    def length(self) -> int:
        """Tokens in the sequence so far (prompt included)."""
        return self.seq.size(1)

    def _forward(self, idx: torch.Tensor, **kwargs) -> torch.Tensor:
        """The model's logits in eval mode (and, with capture_hidden, its final hidden states
        into `self.hidden`); a model in training mode is put back in it after (switching walks
        every module, ~0.3 ms here: skipped when already in eval mode)."""
        was_training = self.model.training
        if was_training:
            self.model.eval()
        try:   # an argument left at None is not passed: models without it (RNN LMs) work too
            out = self.model(idx, **{k: v for k, v in kwargs.items() if v is not None})
        finally:
            if was_training:
                self.model.train()
        if self.capture_hidden:
            self.hidden = out.hidden_states
        return out.logits

    def next_logits(self) -> torch.Tensor:
        """Logits (B, n, V) of the n tokens appended since the last call (all, at first)."""
        n_new = self.length - self.n_seen
        if self.state is not None and (self.state_limit is None
                                       or self.length <= self.state_limit):
            return self._state_logits()
        cached = self.cache is not None and self.length <= self.cache.max_length
        # the model counts positions over real tokens from the mask (no mask: 0, 1, ...)
        if cached:
            extra = {} if self.prefix is None else {"prefix_length": self.prefix}
            logits = self._forward(self.seq[:, self.n_seen:], cache=self.cache,
                                   attention_mask=self.mask if self.padded else None, **extra)
        else:  # no cache, or past the context: forward over the window
            window, wmask = self.seq[:, -self.ctx:], self.mask[:, -self.ctx:]
            extra = {} if self.prefix is None else {   # the part of the prompt still in view
                "prefix_length": max(0, self.prefix - (self.length - window.size(1)))}
            logits = self._forward(window, attention_mask=None if wmask.all() else wmask,
                                   **extra)
            logits = logits[:, -n_new:]
            if self.hidden is not None:
                self.hidden = self.hidden[:, -n_new:]
        self.n_seen = self.length
        return logits

    def _state_logits(self) -> torch.Tensor:
        """Fold the unseen tokens into the recurrent state (pieces of at most context_length,
        padding masked) and return their logits. The state before is kept as the snapshot a
        `crop` rolls back to."""
        self._snapshot = (self.n_seen, self.state.clone())
        logits, hidden = [], []
        for s in range(self.n_seen, self.length, self.ctx):
            piece, pmask = self.seq[:, s:s + self.ctx], self.mask[:, s:s + self.ctx]
            logits.append(self._forward(piece, state=self.state,
                                        attention_mask=None if pmask.all() else pmask))
            if self.hidden is not None:
                hidden.append(self.hidden)
        if hidden:
            self.hidden = torch.cat(hidden, dim=1)
        self.n_seen = self.length
        return torch.cat(logits, dim=1)

    def append(self, tokens: torch.Tensor) -> None:
        """Append (B,) or (B, n) tokens (all real: mask 1)."""
        tokens = tokens.view(self.seq.size(0), -1).to(self.seq.device)
        self.seq = torch.cat([self.seq, tokens], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(tokens)], dim=1)

    def crop(self, length: int) -> None:
        """Keep the first `length` tokens (and their cache entries)."""
        self.seq, self.mask = self.seq[:, :length], self.mask[:, :length]
        if self.state is not None and length < self.n_seen:
            if self._snapshot is not None and self._snapshot[0] <= length:
                self.n_seen, state = self._snapshot     # roll back, then refold the rest
                self.state = state.clone()
            else:                                       # no snapshot: refold from the start
                self.n_seen, self.state = 0, self.model.init_state(self.seq.size(0))
        self.n_seen = min(self.n_seen, length)
        if self.cache is not None and self.cache.length > self.n_seen:
            self.cache.crop(self.n_seen)

    def try_each(self, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the model on each of k candidate next tokens (B, k) without keeping any.

        Returns logits (B, k, V) and, with capture_hidden, final hidden states (B, k, C). The
        candidates' cache slots are remembered so that `commit` can keep the chosen ones; each
        candidate is a batch-B forward, so the cache is never copied k times."""
        start = self.length
        logits, hidden, self._slots = [], [], []
        if self.state is not None and self.n_seen < self.length:
            self.next_logits()       # fold what is pending once, not once per candidate
        for j in range(candidates.size(1)):
            self.append(candidates[:, j])
            logits.append(self.next_logits()[:, -1])
            if self.hidden is not None:
                hidden.append(self.hidden[:, -1])
            if self.cache is not None and self.cache.length > start:
                self._slots.append((self.cache.keys[:, :, :, start].clone(),
                                    self.cache.values[:, :, :, start].clone()))
            self.crop(start)
        return torch.stack(logits, 1), torch.stack(hidden, 1) if hidden else None

    def commit(self, candidates: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """Append candidate `choice` (B,) of each row after `try_each(candidates)`; returns the
        chosen tokens (B,)."""
        rows = torch.arange(candidates.size(0), device=candidates.device)
        tokens = candidates[rows, choice]
        start = self.length
        self.append(tokens)
        if self._slots:
            keys = torch.stack([k for k, _ in self._slots])    # (k, n_layer, B, H, D)
            values = torch.stack([v for _, v in self._slots])
            self.cache.keys[:, :, :, start] = keys[choice, :, rows].transpose(0, 1)
            self.cache.values[:, :, :, start] = values[choice, :, rows].transpose(0, 1)
            self.cache.advance(1)
            self.n_seen = self.length
        self._slots = []
        return tokens

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (B',) in that order (beam search parents, contrastive candidates)."""
        self.seq, self.mask = self.seq[index], self.mask[index]
        if self.cache is not None:
            self.cache.reorder(index)
        if self.state is not None:
            self.state.reorder(index)
        self._snapshot = None
