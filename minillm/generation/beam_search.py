"""Beam search: keep the `num_beams` most likely partial sequences instead of one.

Every step extends each of the K running beams by every token and keeps the best K of the
K * V continuations by total log-probability. A beam that emits an eos token (or reaches the
length limit) becomes a finished hypothesis, ranked by the length-normalised score

    score(y) = sum_t log p(y_t | y_<t) / |y| ** length_penalty           (|y|: generated tokens)

(Wu et al. 2016, arXiv:1609.08144 use a smoothed form; Hugging Face divides by |y|^α as here).
length_penalty > 0 favours longer hypotheses, < 0 shorter ones.

This follows Hugging Face's vectorised beam search exactly (its outputs are token-identical,
tested), including its quirks:
- 2K candidates are kept each step (K of them may finish, K continue); only candidates ranked in
  the top K may become finished hypotheses;
- stopping: `early_stopping=True` stops once K hypotheses are finished; `False` stops when the
  best running beam, scored at its current length, cannot beat the worst finished one;
  `"never"` scores it at the maximum length when length_penalty > 0 (the canonical rule);
- beams are scored with additive -1e9 masks, the same float arithmetic as theirs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from minillm.generation.config import eos_ids, pad_id
from minillm.generation.processors import LogitsProcessor, apply_processors
from minillm.generation.state import DecodeState

__all__ = ["beam_search"]

BIG = -1.0e9


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, ...) rows picked by index (B, M) along dim 1."""
    while index.ndim < x.ndim:
        index = index.unsqueeze(-1)
    return torch.take_along_dim(x, index, dim=1)


@torch.no_grad()
def beam_search(
    model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, num_beams: int,
    processors: Sequence[LogitsProcessor] = (), length_penalty: float = 1.0,
    early_stopping: bool | str = False, eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None, attention_mask: torch.Tensor | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """The best hypothesis of each row.

    Args:
        model: a GPT.
        input_ids: (B, T) prompts (left-padded with `attention_mask`).
        max_new_tokens: the most tokens a hypothesis gets.
        num_beams: K, beams kept per row.
        processors: logits processors applied to the log-probabilities (penalties).
        length_penalty, early_stopping: see the module docstring.
        eos_token_id: stop id(s); pad_token_id: fills shorter hypotheses (default the first
            eos id).
        attention_mask: (B, T) 1 on real tokens; use_cache: decode with a KV cache.

    Returns:
        (B, T + n) ids with n <= max_new_tokens.
    """
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping={early_stopping!r} must be True, False or 'never'")
    B, T = input_ids.shape
    K = num_beams
    if max_new_tokens == 0:
        return input_ids.clone()
    max_length = T + max_new_tokens
    stops = eos_ids(eos_token_id)
    eos = torch.tensor(stops, dtype=torch.long) if stops else None
    fill = pad_id(pad_token_id, stops)
    n_keep = max(2, 1 + (0 if eos is None else len(eos))) * K
    mask = None if attention_mask is None else attention_mask.repeat_interleave(K, dim=0)
    state = DecodeState(model, input_ids.repeat_interleave(K, dim=0), mask, max_length, use_cache)
    device = state.seq.device
    eos = None if eos is None else eos.to(device)
    top_k_mask = torch.arange(n_keep, device=device) < K          # the top K may finish
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = BIG  # only beam 0 expands at first (the beams are identical)
    done_seqs = torch.full((B, K, max_length), fill, dtype=torch.long, device=device)
    done_seqs[:, :, :T] = state.seq.view(B, K, T)
    done_scores = torch.full((B, K), BIG, device=device)
    done_flag = torch.zeros(B, K, dtype=torch.bool, device=device)
    done_len = torch.zeros(B, K, dtype=torch.long, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    cur = T
    while cur < max_length:
        logits = state.next_logits()[:, -1].float()
        logp = apply_processors(processors, state.seq, logits.log_softmax(dim=-1))
        V = logp.size(-1)
        logp = (logp.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)
        # c. the best n_keep continuations over all beams
        top_scores, top_idx = torch.topk(logp, n_keep)                   # (B, n_keep)
        parent, token = top_idx // V, top_idx % V
        seqs = state.seq.view(B, K, cur)
        cand = torch.cat([_gather(seqs, parent), token[..., None]], dim=2)  # (B, n_keep, cur+1)
        # d. which candidates end here
        hits = torch.zeros_like(token, dtype=torch.bool) if eos is None else torch.isin(
            token, eos)
        hits |= cur + 1 >= max_length
        # e. the K best unfinished continue
        cont_scores = top_scores + hits.to(torch.float32) * BIG
        nxt = torch.topk(cont_scores, K)[1]
        running_scores = _gather(cont_scores, nxt)
        new_parent = _gather(parent, nxt)
        # f. finished candidates compete with the finished hypotheses so far
        fin_scores = top_scores / ((cur + 1 - T) ** length_penalty)
        full = done_flag.all(dim=-1, keepdim=True) & (early_stopping is True)
        fin_scores = fin_scores + full.to(torch.float32) * BIG
        fin_scores = fin_scores + (~improvable).to(torch.float32) * BIG
        just_done = hits & top_k_mask[None, :]
        fin_scores = fin_scores + (~just_done) * BIG
        cand_full = torch.full((B, n_keep, max_length), fill, dtype=torch.long, device=device)
        cand_full[:, :, : cur + 1] = cand
        merged_scores = torch.cat([done_scores, fin_scores], dim=1)
        best = torch.topk(merged_scores, K)[1]
        done_seqs = _gather(torch.cat([done_seqs, cand_full], dim=1), best)
        done_scores = _gather(merged_scores, best)
        done_flag = _gather(torch.cat([done_flag, just_done], dim=1), best)
        done_len = _gather(torch.cat([done_len, torch.full_like(token, cur + 1 - T)], 1), best)
        # g. move the running beams (and their cache rows) forward
        rows = (new_parent + torch.arange(B, device=device)[:, None] * K).view(-1)
        state.reorder(rows)
        state.append(_gather(token, nxt).view(-1))
        cur += 1
        never = early_stopping == "never" and length_penalty > 0
        hyp_len = max_length - T if never else cur - T
        best_running = running_scores[:, :1] / (hyp_len ** length_penalty)
        worst_done = torch.where(done_flag, done_scores.min(dim=1, keepdim=True)[0], BIG)
        improvable = improvable & (best_running > worst_done).any(dim=-1, keepdim=True)
        all_done = bool(done_flag.all()) and early_stopping is True
        if not bool(improvable.any()) or all_done or bool(hits.all()):
            break
    out = done_seqs[:, 0]                                          # (B, max_length)
    return out[:, : T + int(done_len[:, 0].max())]
