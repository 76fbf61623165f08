"""Autoregressive decoding: run the model, turn its next-token scores into a choice, append.

    p(x_{t+1} | x_{<=t}) = softmax(processors(logits_t))

One call, `generate`, with Hugging Face's argument names, picks the strategy:

| arguments | strategy | module |
|---|---|---|
| `do_sample=False` (or temperature=0) | greedy: argmax | here |
| `do_sample=True` + temperature/top_k/top_p/min_p/typical_p | sampling | here, `logits_processors` |
| `num_beams > 1` | beam search with length penalty and early stopping | `beam_search` |
| `penalty_alpha > 0, top_k > 1` | contrastive search (Su et al. 2022, arXiv:2202.06417) | here |
| `assistant_model=draft` | speculative decoding (Leviathan et al. 2023, arXiv:2211.17192) | `speculative` |

Contrastive search picks, among the top-k candidates v of p,

    x_t = argmax_v (1 - α) p(v | x_<t) - α max_{j<t} cos(h_v, h_j)

where h are the model's final hidden states: a candidate whose representation copies an
earlier one (a repetition in the making) is penalised.

Every strategy uses a KV cache (`use_cache=True`, see `minillm.decoding`) and gives the same
tokens without it. `stream` yields tokens as they are chosen.

Departures from Hugging Face's `generate`:
- `do_sample=None` (the default) means "sample unless temperature == 0", minillm's behaviour
  before this module grew; pass `do_sample=False` for HF's greedy default.
- beyond the context window greedy/sampling continue with a sliding window (see
  `minillm.decoding`); beam, contrastive and speculative decoding raise instead.
- `top_k=0` is an error, not "no top-k".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from minillm.decoding import DecodeState, draw, eos_ids, left_pad
from minillm.logits_processors import apply_processors, build_processors

__all__ = ["generate", "left_pad", "sample_next", "stream"]


def sample_next(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose next tokens from (B, V) logits: greedy when temperature == 0, else sample from
    the temperature-scaled softmax over the top_k tokens. Returns (B, 1) ids."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if temperature == 0:
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k={top_k} must be a positive integer or None")
        return logits.argmax(dim=-1, keepdim=True)
    procs = build_processors(True, temperature=temperature, top_k=top_k)
    return draw(apply_processors(procs, None, logits.float()).softmax(dim=-1), generator)[:, None]


def _check_inputs(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int,
                  fits_context: bool) -> None:
    if input_ids.ndim != 2 or input_ids.size(1) == 0:
        raise ValueError(f"input_ids must be (batch, length>=1) token ids, got shape "
                         f"{tuple(input_ids.shape)}; an empty prompt has nothing to condition "
                         "on: start from a BOS/EOT token")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a non-negative integer")
    ctx = model.config.context_length
    if input_ids.size(1) > ctx:
        raise ValueError(f"the prompt has {input_ids.size(1)} tokens but context_length={ctx}; "
                         f"keep its last {ctx} tokens (input_ids[:, -{ctx}:])")
    if fits_context and input_ids.size(1) + max_new_tokens > ctx:
        raise ValueError(f"prompt ({input_ids.size(1)}) + max_new_tokens ({max_new_tokens}) "
                         f"exceeds context_length={ctx}; beam, contrastive and speculative "
                         "decoding need the whole sequence in the context: ask for fewer tokens")


def _resolve_do_sample(do_sample: bool | None, temperature: float, deterministic: bool) -> bool:
    """do_sample=None: sample iff temperature > 0, except in beam and contrastive search."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if do_sample is None:
        do_sample = temperature != 0 and not deterministic
    if do_sample and temperature == 0:
        raise ValueError(f"temperature={temperature} must be > 0 when sampling "
                         "(do_sample=False or temperature=0 gives greedy decoding)")
    return do_sample


@torch.no_grad()
def stream(
    model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
    top_k: int | None = None, generator: torch.Generator | None = None,
    eos_token_id: int | Sequence[int] | None = None, *, do_sample: bool | None = None,
    top_p: float | None = None, min_p: float | None = None, typical_p: float | None = None,
    repetition_penalty: float | None = None, no_repeat_ngram_size: int | None = None,
    penalty_alpha: float | None = None, attention_mask: torch.Tensor | None = None,
    pad_token_id: int | None = None, use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,), as soon as it is chosen (greedy, sampling or
    contrastive search; arguments as in `generate`). Rows that have produced an
    `eos_token_id` yield `pad_token_id` (default: the first eos id) until all have."""
    contrastive = penalty_alpha is not None and penalty_alpha > 0 and (top_k or 0) > 1
    do_sample = _resolve_do_sample(do_sample, temperature, deterministic=contrastive)
    if contrastive and do_sample:
        raise ValueError("contrastive search (penalty_alpha > 0) is deterministic: "
                         "pass do_sample=False")
    _check_inputs(model, input_ids, max_new_tokens, fits_context=contrastive)
    procs = build_processors(
        do_sample, temperature=temperature, top_k=None if contrastive else top_k, top_p=top_p,
        min_p=min_p, typical_p=typical_p, repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size, attention_mask=attention_mask)
    state = DecodeState(model, input_ids, attention_mask, input_ids.size(1) + max_new_tokens,
                        use_cache, capture_hidden=contrastive)
    stops = eos_ids(eos_token_id)
    eos = torch.tensor(stops, dtype=torch.long, device=state.seq.device) if stops else None
    pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if eos is not None else 0)
    done = torch.zeros(state.seq.size(0), dtype=torch.bool, device=state.seq.device)
    try:
        logits = state.next_logits()[:, -1].float()
        context_hidden = state.hidden
        for _ in range(max_new_tokens):
            scores = apply_processors(procs, state.seq, logits)
            if contrastive:
                nxt, logits, context_hidden = _contrastive_step(
                    state, scores, context_hidden, top_k, penalty_alpha)
            else:
                nxt = draw(scores.softmax(dim=-1), generator) if do_sample \
                    else scores.argmax(dim=-1)
            if eos is not None:
                nxt = nxt.masked_fill(done, pad)
                done |= torch.isin(nxt, eos)
            if not contrastive:
                state.append(nxt)
            yield nxt
            if eos is not None and bool(done.all()):
                break
            if not contrastive and state.length < input_ids.size(1) + max_new_tokens:
                logits = state.next_logits()[:, -1].float()
    finally:
        state.close()


def _contrastive_step(state: DecodeState, scores: torch.Tensor, context_hidden: torch.Tensor,
                      k: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of contrastive search: score the top-k candidates of every row by
    (1 - α) p(v) - α max_j cos(h_v, h_j); returns (chosen (B,), their next logits (B, V), the
    context hidden states with the chosen one's appended (B, T + 1, C))."""
    k = min(k, scores.size(-1))  # top_k beyond the vocabulary: every token is a candidate
    top_p, top_ids = scores.softmax(dim=-1).topk(k, dim=-1)         # (B, k)
    cand_logits, h = state.try_each(top_ids)                        # (B, k, V), (B, k, C)
    ctx = context_hidden / context_hidden.norm(dim=-1, keepdim=True)
    cos = (h / h.norm(dim=-1, keepdim=True)) @ ctx.transpose(1, 2)  # (B, k, T)
    cos = cos.masked_fill(state.mask[:, None, :] == 0, -1.0)        # never match padding
    best = ((1 - alpha) * top_p - alpha * cos.amax(dim=-1)).argmax(dim=-1)  # (B,)
    rows = torch.arange(scores.size(0), device=scores.device)
    chosen = state.commit(top_ids, best)
    return chosen, cand_logits[rows, best].float(), torch.cat(
        [context_hidden, h[rows, best][:, None]], dim=1)


@torch.no_grad()
def generate(
    model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
    top_k: int | None = None, generator: torch.Generator | None = None,
    eos_token_id: int | Sequence[int] | None = None, *, do_sample: bool | None = None,
    top_p: float | None = None, min_p: float | None = None, typical_p: float | None = None,
    repetition_penalty: float | None = None, no_repeat_ngram_size: int | None = None,
    num_beams: int = 1, length_penalty: float = 1.0, early_stopping: bool | str = False,
    penalty_alpha: float | None = None, assistant_model: nn.Module | None = None,
    num_assistant_tokens: int = 5, attention_mask: torch.Tensor | None = None,
    pad_token_id: int | None = None, use_cache: bool = True,
) -> torch.Tensor:
    """Extend `input_ids` (B, T) by up to `max_new_tokens` tokens; returns (B, T + new).

    Args:
        model: a GPT.
        input_ids: (B, T) prompt ids, T >= 1 and <= context_length; left-padded for a batch of
            different lengths (see `left_pad`), with `attention_mask`.
        max_new_tokens: how many tokens to add (fewer if every row hits an eos token).
        temperature, top_k, top_p, min_p, typical_p: sampling warpers (see
            `minillm.logits_processors`); temperature=0 means greedy.
        generator: a seeded `torch.Generator` for reproducible sampling.
        eos_token_id: one id or a list of stop ids; finished rows are padded with
            `pad_token_id` (default: the first eos id).
        do_sample: sample (True) or take the argmax (False); None: sample iff temperature > 0.
        repetition_penalty, no_repeat_ngram_size: penalties applied in every strategy.
        num_beams, length_penalty, early_stopping: beam search (Hugging Face's semantics:
            score = sum log p / generated_length ** length_penalty).
        penalty_alpha: with top_k > 1, contrastive search's degeneration penalty α.
        assistant_model, num_assistant_tokens: speculative decoding with this draft model
            proposing that many tokens per step (batch size 1).
        use_cache: use a KV cache (same tokens either way, much faster).
    """
    if num_beams < 1:
        raise ValueError(f"num_beams={num_beams} must be >= 1")
    if num_beams > 1 or assistant_model is not None:
        do_sample = _resolve_do_sample(do_sample, temperature, deterministic=num_beams > 1)
        _check_inputs(model, input_ids, max_new_tokens, fits_context=True)
        procs = build_processors(do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                                 min_p=min_p, typical_p=typical_p,
                                 repetition_penalty=repetition_penalty,
                                 no_repeat_ngram_size=no_repeat_ngram_size,
                                 attention_mask=attention_mask)
    if num_beams > 1:
        from minillm.beam_search import beam_search

        if do_sample:
            raise ValueError("beam sampling is not supported: pass do_sample=False with "
                             "num_beams > 1")
        return beam_search(model, input_ids, max_new_tokens, num_beams, procs,
                           length_penalty=length_penalty, early_stopping=early_stopping,
                           eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                           attention_mask=attention_mask, use_cache=use_cache)
    if assistant_model is not None:
        from minillm.speculative import speculative_generate

        return speculative_generate(model, assistant_model, input_ids, max_new_tokens, procs,
                                    do_sample=do_sample, num_assistant_tokens=num_assistant_tokens,
                                    generator=generator, eos_token_id=eos_token_id,
                                    attention_mask=attention_mask)
    steps = stream(model, input_ids, max_new_tokens, temperature, top_k, generator, eos_token_id,
                   do_sample=do_sample, top_p=top_p, min_p=min_p, typical_p=typical_p,
                   repetition_penalty=repetition_penalty,
                   no_repeat_ngram_size=no_repeat_ngram_size, penalty_alpha=penalty_alpha,
                   attention_mask=attention_mask, pad_token_id=pad_token_id, use_cache=use_cache)
    new = list(steps)
    device = next(model.parameters()).device
    if not new:
        return input_ids.to(device)
    return torch.cat([input_ids.to(device), torch.stack(new, dim=1)], dim=1)
