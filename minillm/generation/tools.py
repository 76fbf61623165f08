"""Tool calls during decoding: the model writes `<calc>12*7</calc>`, decoding pauses, the tool
answers, its answer is spliced into the sequence (`=84`), and the model goes on from there.

Toolformer (Schick et al. 2023, arXiv:2302.04761) teaches a model to write API calls inline,
`[Calculator(400/1400) → 0.29]`; at inference "we perform regular decoding until the model
produces the → token ... then call the API and insert the response and the </API> token".
Here the call is delimited by an open and a close tag and the response comes after the close:

    prompt ... <calc>12*7</calc>=84 ... <calc>9**9**9</calc>=<error: exponent too large> ...
               \\_model writes_/\\_close ends the call; "={result}" is spliced in_/

The loop is `stream`'s (`minillm.generation.generate`) on one `DecodeState`: a model token
is chosen from the processed logits (greedy or sampled), appended, and the text since the last
call is searched for a completed call. When one closes, the tool's answer is encoded and
appended as a block; the next `next_logits()` runs the model over those tokens with the KV
cache, one forward for the whole block, so nothing before it is encoded again. The output
is therefore exactly what plain decoding gives on the sequence with the answer pasted in
(tested), for greedy decoding and for sampling with the same generator.

Works with any tokenizer with `encode(text) -> ids` and `decode(ids) -> text`: the byte
tokenizer (each tag is several byte tokens) or one with the tags as special tokens (each tag
is one id). Departures and choices:
- the result is written after the close tag, `spec.result_format` ("={}" by default), not
  inside the call as Toolformer's `→ result]`; the spliced tokens count towards
  `max_new_tokens` (a splice that does not fit is cut);
- a call ends at the token whose text completes the close tag (with a BPE token that merges
  the tag with the text after it, that text stays before the answer); a close tag with no open
  tag before it is ignored;
- a tool that raises is answered with `<error: tool failed (TypeName)>`, and calls beyond
  `max_calls` with `<error: too many tool calls>`: an exception never escapes decoding;
- one prompt at a time (batch size 1): rows would pause at different steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from minillm.generation.calculator import calculate
from minillm.generation.config import GenerationConfig
from minillm.generation.processors import apply_processors
from minillm.generation.state import DecodeState, draw

__all__ = ["ToolCall", "ToolOutput", "ToolSpec", "find_call", "generate_with_tools"]


class TextTokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class ToolSpec:
    open_tag: str = "<calc>"        # starts a call
    close_tag: str = "</calc>"      # ends it: the tool runs when this is written
    result_format: str = "={}"      # what is spliced after the close tag; {} is the answer

    def __post_init__(self) -> None:
        if not self.open_tag or not self.close_tag or self.open_tag == self.close_tag:
            raise ValueError(f"open_tag={self.open_tag!r} and close_tag={self.close_tag!r} must "
                             "be two different non-empty strings")
        if "{}" not in self.result_format:
            raise ValueError(f"result_format={self.result_format!r} has no '{{}}' for the "
                             "tool's answer: e.g. '={}'")


@dataclass
class ToolCall:
    expression: str   # what the model wrote between the tags
    result: str       # the tool's answer (before result_format)
    position: int     # index in the output sequence where the spliced tokens start


@dataclass
class ToolOutput:
    ids: torch.Tensor                           # (1, T + n) prompt and everything after it
    calls: list[ToolCall] = field(default_factory=list)


def find_call(text: str, spec: ToolSpec | None = None) -> tuple[str | None, bool]:
    """Look for a finished call in the text written since the last one.

    Args:
        text: the decoded text since the previous call (or the prompt).
        spec: the tags (default `ToolSpec()`).

    Returns:
        (expression, closed): closed is True when `text` holds a close tag; expression is
        the text between it and the last open tag before it, or None when there is none (a
        stray close tag).
    """
    spec = spec or ToolSpec()
    end = text.find(spec.close_tag)
    if end < 0:
        return None, False
    start = text.rfind(spec.open_tag, 0, end)
    if start < 0:
        return None, True
    return text[start + len(spec.open_tag):end], True


def _answer(tool: Callable[[str], str], expression: str, n_calls: int, max_calls: int) -> str:
    if n_calls >= max_calls:
        return "<error: too many tool calls>"
    try:
        return str(tool(expression))
    except Exception as err:  # any tool failure becomes text the model reads, never a crash
        return f"<error: tool failed ({type(err).__name__})>"


@torch.no_grad()
def generate_with_tools(
    model: nn.Module, input_ids: torch.Tensor, tokenizer: TextTokenizer,
    max_new_tokens: int | None = None, generation_config: GenerationConfig | None = None, *,
    tool: Callable[[str], str] = calculate, spec: ToolSpec | None = None, max_calls: int = 16,
    generator: torch.Generator | None = None, **kwargs: Any,
) -> ToolOutput:
    """Decode `input_ids` (1, T), running `tool` on every call the model writes and splicing
    its answer in.

    Args:
        model: a causal LM of the course.
        input_ids: (1, T) the prompt.
        tokenizer: turns generated ids into text (to find calls) and answers into ids.
        max_new_tokens: new tokens in all, the model's and the spliced ones (default the
            config's).
        generation_config: a `GenerationConfig`; keyword arguments override its fields
            (greedy or sampling with any warpers and penalties; eos_token_id stops).
        tool: expression -> answer text (default the safe `calculate`).
        spec: the tags and how the answer is written (default `ToolSpec()`).
        max_calls: calls answered by the tool; later ones get an error answer.
        generator: a seeded generator for sampling.

    Returns:
        `ToolOutput`: ids (1, T + n) and the calls made, in order.

    Raises:
        ValueError: a batch of several prompts, beam or contrastive search, a bad argument.
    """
    spec = spec or ToolSpec()
    config = (generation_config or GenerationConfig()).update(
        **({"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}), **kwargs)
    if input_ids.ndim != 2 or input_ids.size(0) != 1 or input_ids.size(1) == 0:
        raise ValueError(f"input_ids must be one prompt (1, T>=1), got shape "
                         f"{tuple(input_ids.shape)}: call generate_with_tools once per prompt")
    if config.num_beams > 1 or config.contrastive:
        raise ValueError("tool calls run with greedy or sampled decoding: drop num_beams and "
                         "penalty_alpha")
    if not isinstance(max_calls, int) or max_calls < 0:
        raise ValueError(f"max_calls={max_calls!r} must be an integer >= 0")
    prompt_len, n_new = input_ids.size(1), config.max_new_tokens
    end = prompt_len + n_new
    if prompt_len > model.config.context_length:
        raise ValueError(f"the prompt has {prompt_len} tokens but context_length="
                         f"{model.config.context_length}: keep its last tokens")
    procs = config.processors()
    stops = set(config.stop_ids)
    state = DecodeState(model, input_ids, None, end, config.use_cache)
    calls: list[ToolCall] = []
    pending: list[int] = []          # tokens since the last call (or the prompt)
    try:
        while state.length < end:
            logits = state.next_logits()[:, -1].float()              # (1, V)
            scores = apply_processors(procs, state.seq, logits)
            nxt = draw(scores.softmax(dim=-1), generator) if config.sampling \
                else scores.argmax(dim=-1)                             # (1,)
            state.append(nxt)
            token = int(nxt)
            if token in stops:
                break
            pending.append(token)
            expression, closed = find_call(tokenizer.decode(pending), spec)
            if not closed:
                continue
            pending = []
            if expression is None:
                continue
            result = _answer(tool, expression, len(calls), max_calls)
            calls.append(ToolCall(expression, result, state.length))
            splice = tokenizer.encode(spec.result_format.format(result))[:end - state.length]
            if splice:
                state.append(torch.tensor([splice], dtype=torch.long))
    finally:
        state.close()
    return ToolOutput(state.seq, calls)
