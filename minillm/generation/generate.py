"""Autoregressive decoding: run the model, turn its next-token scores into a choice, append.

    p(x_{t+1} | x_{<=t}) = softmax(processors(logits_t))

One call, `generate`, with Hugging Face's argument names, picks the strategy:

| arguments | strategy | module |
|---|---|---|
| `do_sample=False` (or temperature=0) | greedy: argmax | here |
| `do_sample=True` + temperature/top_k/top_p/min_p/typical_p | sampling | here, `processors` |
| `num_beams > 1` | beam search with length penalty and early stopping | `beam_search` |
| `penalty_alpha > 0, top_k > 1` | contrastive search (Su et al. 2022, arXiv:2202.06417) | here |
| `assistant_model=draft` | speculative decoding (Leviathan et al. 2023, arXiv:2211.17192) | `speculative` |

Contrastive search picks, among the top-k candidates v of p,

    x_t = argmax_v (1 - α) p(v | x_<t) - α max_{j<t} cos(h_v, h_j)

where h are the model's final hidden states: a candidate whose representation copies an
earlier one (a repetition in the making) is penalised.

Every strategy uses a KV cache (`use_cache=True`, see `minillm.generation.state`) and gives
the same tokens without it. `stream` yields tokens as they are chosen. The arguments are the
fields of a `GenerationConfig` (`minillm.generation.config`), passed as keywords or as
`generation_config=`; the contrastive step asks the model for its final hidden states
(the forward output's `hidden_states`).

Departures from Hugging Face's `generate`:
- `do_sample=None` (the default) means "sample unless temperature == 0", minillm's behaviour
  before this module grew; pass `do_sample=False` for HF's greedy default.
- beyond the context window greedy/sampling continue with a sliding window (see
  `minillm.generation.state`); beam, contrastive and speculative decoding raise instead.
- `top_k=0` is an error, not "no top-k".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from minillm.generation.beam_search import beam_search
from minillm.generation.config import GenerationConfig
from minillm.generation.processors import apply_processors
from minillm.generation.speculative import speculative_generate
from minillm.generation.state import DecodeState, draw

__all__ = ["generate", "sample_next", "stream"]


def _config(generation_config: GenerationConfig | None, max_new_tokens: int | None,
            kwargs: dict[str, Any]) -> GenerationConfig:
    config = generation_config or GenerationConfig()
    if max_new_tokens is not None:
        kwargs = {"max_new_tokens": max_new_tokens, **kwargs}
    return config.update(**kwargs) if kwargs else config


def sample_next(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose next tokens from (B, V) logits: greedy when temperature == 0, else sample from
    the temperature-scaled softmax over the top_k tokens.

    Args:
        logits: (B, V) next-token scores.
        temperature: 0 = argmax.
        top_k: keep only the k most likely tokens (None = all).
        generator: a seeded generator for reproducible draws.

    Returns:
        (B, 1) ids.
    """
    config = GenerationConfig(temperature=temperature, top_k=top_k)
    if not config.sampling:
        return logits.argmax(dim=-1, keepdim=True)
    procs = config.processors()
    return draw(apply_processors(procs, None, logits.float()).softmax(dim=-1), generator)[:, None]


def _check_inputs(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int,
                  fits_context: bool) -> None:
    if input_ids.ndim != 2 or input_ids.size(1) == 0:
        raise ValueError(f"input_ids must be (batch, length>=1) token ids, got shape "
                         f"{tuple(input_ids.shape)}; an empty prompt has nothing to condition "
                         "on: start from a BOS/EOT token")
    ctx = model.config.context_length
    if input_ids.size(1) > ctx:
        raise ValueError(f"the prompt has {input_ids.size(1)} tokens but context_length={ctx}; "
                         f"keep its last {ctx} tokens (input_ids[:, -{ctx}:])")
    if fits_context and input_ids.size(1) + max_new_tokens > ctx:
        raise ValueError(f"prompt ({input_ids.size(1)}) + max_new_tokens ({max_new_tokens}) "
                         f"exceeds context_length={ctx}; beam, contrastive and speculative "
                         "decoding need the whole sequence in the context: ask for fewer tokens")


@torch.no_grad()
def stream(
    model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int | None = None,
    generation_config: GenerationConfig | None = None, *,
    generator: torch.Generator | None = None, attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,), as soon as it is chosen (greedy, sampling or
    contrastive search; arguments as in `generate`). Rows that have produced an
    `eos_token_id` yield `pad_token_id` (default: the first eos id) until all have."""
    config = _config(generation_config, max_new_tokens, kwargs)
    if config.num_beams > 1:
        raise ValueError("stream decodes one hypothesis per row: use generate(...) for beam "
                         "search")
    n_new = config.max_new_tokens
    contrastive = config.contrastive
    _check_inputs(model, input_ids, n_new, fits_context=contrastive)
    procs = config.processors(attention_mask)
    state = DecodeState(model, input_ids, attention_mask, input_ids.size(1) + n_new,
                        config.use_cache, capture_hidden=contrastive)
    stops = config.stop_ids
    eos = torch.tensor(stops, dtype=torch.long, device=state.seq.device) if stops else None
    pad = config.pad_id
    done = torch.zeros(state.seq.size(0), dtype=torch.bool, device=state.seq.device)
    try:
        logits = state.next_logits()[:, -1].float()
        context_hidden = state.hidden
        for _ in range(n_new):
            scores = apply_processors(procs, state.seq, logits)
            if contrastive:
                nxt, logits, context_hidden = _contrastive_step(
                    state, scores, context_hidden, config.top_k, config.penalty_alpha)
            else:
                nxt = draw(scores.softmax(dim=-1), generator) if config.sampling \
                    else scores.argmax(dim=-1)
            if eos is not None:
                nxt = nxt.masked_fill(done, pad)
                done |= torch.isin(nxt, eos)
            if not contrastive:
                state.append(nxt)
            yield nxt
            if eos is not None and bool(done.all()):
                break
            if not contrastive and state.length < input_ids.size(1) + n_new:
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
    model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int | None = None,
    generation_config: GenerationConfig | None = None, *,
    generator: torch.Generator | None = None, attention_mask: torch.Tensor | None = None,
    assistant_model: nn.Module | None = None, **kwargs: Any,
) -> torch.Tensor:
    """Extend `input_ids` (B, T) by up to `max_new_tokens` tokens; returns (B, T + new).

    Args:
        model: a GPT.
        input_ids: (B, T) prompt ids, T >= 1 and <= context_length; left-padded for a batch of
            different lengths (see `left_pad`), with `attention_mask`.
        max_new_tokens: how many tokens to add (fewer if every row hits an eos token);
            default the config's (20).
        generation_config: a `GenerationConfig`; keyword arguments override its fields.
        generator: a seeded `torch.Generator` for reproducible sampling.
        attention_mask: (B, T) 1 on real tokens, 0 on left padding.
        assistant_model: a draft model for speculative decoding (batch size 1), proposing
            `num_assistant_tokens` tokens per step.
        **kwargs: `GenerationConfig` fields, Hugging Face's names: do_sample, temperature,
            top_k, top_p, min_p, typical_p (sampling warpers; temperature=0 means greedy),
            repetition_penalty, no_repeat_ngram_size (every strategy), num_beams,
            length_penalty, early_stopping (beam search: score = sum log p /
            generated_length ** length_penalty), penalty_alpha (with top_k > 1: contrastive
            search), num_assistant_tokens, eos_token_id (one id or a list; finished rows are
            padded with pad_token_id, default the first eos id), use_cache.

    Returns:
        (B, T + n) token ids on the model's device.

    Raises:
        ValueError: an argument out of range (named), or a prompt that does not fit.
    """
    config = _config(generation_config, max_new_tokens, kwargs)
    n_new = config.max_new_tokens
    if config.num_beams > 1 or assistant_model is not None:
        _check_inputs(model, input_ids, n_new, fits_context=True)
        procs = config.processors(attention_mask)
    if config.num_beams > 1:
        return beam_search(model, input_ids, n_new, config.num_beams, procs,
                           length_penalty=config.length_penalty,
                           early_stopping=config.early_stopping,
                           eos_token_id=config.stop_ids, pad_token_id=config.pad_token_id,
                           attention_mask=attention_mask, use_cache=config.use_cache)
    if assistant_model is not None:
        if config.contrastive:
            raise ValueError("speculative decoding does not do contrastive search: drop "
                             "penalty_alpha or assistant_model")
        return speculative_generate(model, assistant_model, input_ids, n_new, procs,
                                    do_sample=config.sampling,
                                    num_assistant_tokens=config.num_assistant_tokens,
                                    generator=generator, eos_token_id=config.stop_ids,
                                    attention_mask=attention_mask)
    new = list(stream(model, input_ids, generation_config=config, generator=generator,
                      attention_mask=attention_mask))
    device = next(model.parameters()).device
    if not new:
        return input_ids.to(device)
    return torch.cat([input_ids.to(device), torch.stack(new, dim=1)], dim=1)
