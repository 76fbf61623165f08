"""The SFT recipe end to end: a base checkpoint in, a chat model out, scored per task.

    model, tok = prepare_chat_model(GPT.from_checkpoint(base), base_tokenizer)   # new tokens
    batches = sft_batches(tok, load_sft("train"), load_sft("validation"), ...)  # packed
    Trainer(model, config=cfg, batches=batches, loss_fn=sft_loss_fn).fit()
    scores = exact_match_by_task(*score_chat(model, tok, load_sft("test")))

`minillm sft` runs exactly this; chapter 11 calls the same functions. The base model is
prompted without special tokens (`score_plain`: zero- or few-shot, "Answer:" format, stop at
the newline), the chat model through the template (`score_chat`: stop at <|end|>).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from minillm.alignment.chat import (
    CHAT_TOKENS,
    ChatTemplate,
    add_special_tokens,
    resize_token_embeddings,
)
from minillm.alignment.sft import SFTBatches, decode_answers, plain_prompt, tokenize_example
from minillm.data.sft import SFTExample
from minillm.generation import generate, left_pad
from minillm.io import read_json
from minillm.models import load_model
from minillm.tokenizers import tokenizer_from_dict

__all__ = ["load_model_and_tokenizer", "prepare_chat_model", "sample_chat", "sample_chat_ids",
           "score_chat", "score_plain", "sft_batches"]


def load_model_and_tokenizer(folder: str | Path, device: str = "cpu"):
    """A checkpoint folder's model (a GPT, or chapter 02's MLP / RNN LM) and the tokenizer its
    tokenizer.json describes."""
    folder = Path(folder)
    model = load_model(folder, map_location=device)
    tok = tokenizer_from_dict(read_json(folder / "tokenizer.json", "tokenizer.json"), folder)
    if tok.vocab_size != model.config.vocab_size:
        raise ValueError(f"{folder}: tokenizer.json has {tok.vocab_size} ids but the model "
                         f"{model.config.vocab_size}; the two files do not belong together")
    return model, tok


def prepare_chat_model(model: nn.Module, tokenizer, tokens: Sequence[str] = CHAT_TOKENS):
    """Add the chat template's special tokens to the tokenizer and grow the model to match.
    Returns (model, new tokenizer); the model is changed in place."""
    tok = add_special_tokens(tokenizer, tokens)
    resize_token_embeddings(model, tok.vocab_size)
    return model, tok


def sft_batches(tokenizer, train: Sequence[SFTExample], val: Sequence[SFTExample] | None,
                batch_size: int, seq_len: int, packing: bool = True,
                train_on_prompt: bool = False, seed: int = 0,
                template: ChatTemplate | None = None, rank: int = 0,
                world_size: int = 1) -> SFTBatches:
    """Tokenize examples through the template and serve them as an `SFTBatches`."""
    template = template or ChatTemplate()

    def encode(examples):
        return [tokenize_example(tokenizer, template, e.prompt, e.response, seq_len,
                                 train_on_prompt) for e in examples]
    return SFTBatches(encode(train), encode(val or []), batch_size, seq_len, packing, seed,
                      rank, world_size)


def score_chat(model: nn.Module, tokenizer, examples: Sequence[SFTExample],
               template: ChatTemplate | None = None, max_new_tokens: int = 56,
               batch_size: int = 64) -> tuple[list[str], list[str], list[str]]:
    """Greedy answers of a chat model. Returns (tasks, answers, references)."""
    template = template or ChatTemplate()
    prompts = [template.encode(tokenizer, e.prompt)[0] for e in examples]
    answers = decode_answers(model, tokenizer, prompts, [template.stop_id(tokenizer)],
                             max_new_tokens, batch_size)
    return [e.task for e in examples], answers, [e.response for e in examples]


def score_plain(model: nn.Module, tokenizer, examples: Sequence[SFTExample],
                demos: Sequence[SFTExample] = (), shots: int = 0, seed: int = 0,
                max_new_tokens: int = 56, batch_size: int = 64, max_demo_chars: int = 90,
                ) -> tuple[list[str], list[str], list[str]]:
    """Greedy answers of a base model prompted in plain text (`plain_prompt`): `shots`
    demonstrations of the same task (drawn from `demos`, short ones), stop at a newline.
    Returns (tasks, answers, references)."""
    if shots and not demos:
        raise ValueError(f"shots={shots} needs demos (e.g. the training examples)")
    rng = random.Random(seed)
    pool: dict[str, list[SFTExample]] = {}
    for d in demos:
        if len(d.prompt) + len(d.response) <= max_demo_chars:
            pool.setdefault(d.task, []).append(d)
    prompts = []
    for e in examples:
        chosen = rng.sample(pool.get(e.task, []), shots) if shots else []
        text = plain_prompt(e.prompt, [(d.prompt, d.response) for d in chosen])
        prompts.append(tokenizer.encode(text))
    newline = tokenizer.encode("\n")
    answers = decode_answers(model, tokenizer, prompts, newline[-1:], max_new_tokens,
                             batch_size, stop_text="\n")
    return [e.task for e in examples], answers, [e.response for e in examples]


def sample_chat_ids(model: nn.Module, tokenizer, prompts: Sequence[str], temperature: float = 1.0,
                    top_k: int | None = None, seed: int = 0, max_new_tokens: int = 64,
                    batch_size: int = 64, template: ChatTemplate | None = None
                    ) -> tuple[list[list[int]], list[list[int]]]:
    """Sampled responses as token ids: (prompt ids, response ids) per prompt, the response
    ending with the stop token when decoding reached it (cut after it), reproducible by `seed`."""
    template = template or ChatTemplate()
    stop = template.stop_id(tokenizer)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.eval()
    prompt_ids = [template.encode(tokenizer, p)[0] for p in prompts]
    responses: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompt_ids[start:start + batch_size])
        seqs = generate(model, ids.to(device), max_new_tokens, temperature=temperature,
                        top_k=top_k, generator=gen, eos_token_id=stop,
                        attention_mask=mask.to(device), pad_token_id=stop)
        for row in seqs[:, ids.size(1):].tolist():
            responses.append(row[:row.index(stop) + 1] if stop in row else row)
    return prompt_ids, responses


def sample_chat(model: nn.Module, tokenizer, prompts: Sequence[str], temperature: float = 1.0,
                top_k: int | None = None, seed: int = 0, max_new_tokens: int = 64,
                batch_size: int = 64, template: ChatTemplate | None = None) -> list[str]:
    """Sampled (not greedy) responses of a chat model, one per prompt, reproducible by `seed`."""
    template = template or ChatTemplate()
    stop = template.stop_id(tokenizer)
    _, responses = sample_chat_ids(model, tokenizer, prompts, temperature, top_k, seed,
                                   max_new_tokens, batch_size, template)
    return [tokenizer.decode([t for t in r if t != stop]).strip() for r in responses]
