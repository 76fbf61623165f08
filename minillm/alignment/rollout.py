"""Rollouts for RL on a language model: sample responses, then score their tokens again.

PPO and GRPO both (1) sample a response to every prompt from the current policy, (2) compute
the log-probability of each sampled token under the policy (with gradients later, during the
update) and under the frozen reference model. Step (1) goes through `minillm.generation`
(sampling with the KV cache, prompts left-padded); step (2) is one forward over the whole
sequence, prompt and response:

    sequences   = [pad .. pad prompt | response .. stop pad .. pad]      (B, P + R)
    logits_t    = model(sequences)[:, P - 1 + t]  predicts  response token t

The response mask is 1 up to and including the first stop token of each row (finished rows
are padded with the stop id, which is then masked out). With temperature tau the logits are
divided by tau before the log-softmax, so the recomputed log-probs are those of the
distribution the tokens were drawn from (as Hugging Face's trl does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from minillm.generation import generate, left_pad

__all__ = ["Rollout", "decode_responses", "response_forward", "response_mask", "sample_rollout"]


@dataclass
class Rollout:
    """Sampled sequences and the masks that find their parts."""

    sequences: torch.Tensor        # (B, P + R) prompt (left-padded) then response
    attention_mask: torch.Tensor   # (B, P + R) 1 on real tokens
    response_mask: torch.Tensor    # (B, R) 1 on response tokens up to and including the stop
    prompt_length: int             # P

    @property
    def responses(self) -> torch.Tensor:
        """(B, R) the sampled tokens."""
        return self.sequences[:, self.prompt_length:]

    def select(self, rows: torch.Tensor) -> Rollout:
        """The rollout of a subset of rows (a mini-batch)."""
        return Rollout(self.sequences[rows], self.attention_mask[rows], self.response_mask[rows],
                       self.prompt_length)


def response_mask(responses: torch.Tensor, stop_id: int) -> torch.Tensor:
    """(B, R) long: 1 up to and including each row's first `stop_id`, 0 after it."""
    is_stop = (responses == stop_id).long()
    before = is_stop.cumsum(-1) - is_stop  # stops strictly before t
    return (before == 0).long()


@torch.no_grad()
def sample_rollout(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   stop_id: int, generator: torch.Generator | None = None,
                   temperature: float = 1.0, top_k: int | None = None) -> Rollout:
    """Sample one response per tokenized prompt (left-padded batch, KV cache).

    Args:
        prompts: token ids of each prompt (e.g. the chat template's prompt part).
        max_new_tokens: response length cap R.
        stop_id: the token that ends a response (kept in it, masked after it).
        generator: a seeded generator (reproducible rollouts).
        temperature, top_k: the sampling distribution (temperature > 0).
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0: a rollout samples")
    longest, ctx = max(len(p) for p in prompts), model.config.context_length
    if longest + max_new_tokens > ctx:
        raise ValueError(f"a prompt of {longest} tokens + max_new_tokens={max_new_tokens} "
                         f"exceeds context_length={ctx}: the tokens could not be scored again; "
                         "drop long prompts or ask for fewer new tokens")
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_token_id=stop_id)
    was_training = model.training
    out = generate(model, ids.to(device), max_new_tokens, do_sample=True,
                   temperature=temperature, top_k=top_k, generator=generator,
                   eos_token_id=stop_id, pad_token_id=stop_id, attention_mask=mask.to(device))
    model.train(was_training)
    p = ids.size(1)
    resp_mask = response_mask(out[:, p:], stop_id)
    return Rollout(out, torch.cat([mask.to(device), resp_mask], dim=1), resp_mask, p)


def response_forward(model: nn.Module, rollout: Rollout, temperature: float = 1.0,
                     return_hidden: bool = False) -> tuple[torch.Tensor, ...]:
    """Logits (B, R, V) of the response tokens, divided by `temperature`; with return_hidden,
    also the final hidden states (B, R, C) at the positions that predict them."""
    p = rollout.prompt_length
    out = model(rollout.sequences, attention_mask=rollout.attention_mask)
    logits = out.logits[:, p - 1:-1] / temperature
    return (logits, out.hidden_states[:, p - 1:-1]) if return_hidden else (logits,)


def decode_responses(tokenizer, rollout: Rollout, stop_id: int) -> list[str]:
    """The text of each response, without its stop token, stripped."""
    out = []
    for row, n in zip(rollout.responses.tolist(), rollout.response_mask.sum(-1).tolist(),
                      strict=True):
        ids = row[:n]
        if ids and ids[-1] == stop_id:
            ids = ids[:-1]
        out.append(tokenizer.decode(ids).strip())
    return out
