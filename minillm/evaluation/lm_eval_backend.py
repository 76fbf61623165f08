"""minillm as a model of EleutherAI's lm-evaluation-harness (Gao et al., "The Language Model
Evaluation Harness", arXiv:2405.14782): `lm_eval --model minillm --model_args checkpoint=DIR`.

lm-eval asks a model three things, each a list of requests whose `.args` hold the inputs:

- `loglikelihood((context, continuation))` -> (log P(continuation | context), is_greedy):

      log P(c | x) = sum_i log softmax(f(x, c_<i))[c_i]

  is_greedy is True when every c_i is the argmax at its position. Multiple-choice tasks
  (acc, acc_norm) are this call over the choices.
- `loglikelihood_rolling((text,))` -> log P(text | <|endoftext|>), the text cut into disjoint
  windows of the model's context (lm-eval's `get_rolling_token_windows` with context_len=1):
  every token scored once, each window predicting from the start of its own window, the last
  window ending at the last token with a full context. This equals the course's scorer
  `minillm.training.lm_nll_bits` with stride = context_length (tested).
- `generate_until((context, gen_kwargs))` -> the greedy continuation, cut at the first of
  `gen_kwargs["until"]` (and <|endoftext|>), at most `max_gen_toks` tokens: decoded by
  `minillm.generation.stream` (KV cache, left-padded batches), stopping when every row of the
  batch holds a stop string. A model whose forward takes no attention mask (the RNN and MLP
  LMs) decodes prompts of equal length together instead of padding them.

The model is any folder `minillm.models.load_model` reads (GPT, RNN LM, MLP LM) with its
tokenizer (`tokenizer_for_model`), or a model and tokenizer object passed in Python.

Departures from lm-eval's Hugging Face backend (`HFLM`), which it otherwise mirrors (left
truncation to the context, right-padded scoring batches, the same rolling windows):
- text is encoded with its special tokens matched (`allowed_special="all"`), as a Hugging Face
  tokenizer does, so a task can write a chat model's markers (<|user|>, <|end|>) in its prompt.
- `batch_size="auto"` means a fixed 32: the course's models are small.
- Sampling in generate_until (`do_sample=True`) uses a generator seeded by `seed` (default 0).

Importing this module imports lm-eval and registers the model as "minillm"; the rest of
minillm never imports it at import time (lm-eval is a dev/optional dependency).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

import torch

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import model_registry
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as e:  # pragma: no cover - exercised only without lm-eval
    raise ImportError("minillm's lm-eval backend needs lm-evaluation-harness: "
                      "pip install lm-eval") from e

from minillm.generation import GenerationConfig, left_pad, stream
from minillm.models import load_model
from minillm.tokenizers import tokenizer_for_model
from minillm.utils import choose_device

__all__ = ["MiniLLMLM", "continuation_logprobs", "register", "stop_at"]

AUTO_BATCH_SIZE = 32
DEFAULT_MAX_GEN_TOKS = 256


@torch.no_grad()
def continuation_logprobs(model: torch.nn.Module, pairs: Sequence[tuple[list[int], list[int]]],
                          max_length: int, batch_size: int = 16) -> list[tuple[float, bool]]:
    """log P(continuation | context) and is_greedy for token-id pairs, batched.

    Each (context, continuation) is joined and cut to its last max_length + 1 tokens (the
    context loses tokens on the left, as lm-eval's HF backend does); the model reads all but
    the last and the final len(continuation) positions are scored. Rows are sorted by length
    (longest first) and right-padded: a causal model's positions before the padding do not
    see it.

    Args:
        model: a causal LM, `model(x).logits` (B, T, V).
        pairs: (context ids, continuation ids); context non-empty, continuation non-empty and
            at most max_length long.
        max_length: the model's context.
        batch_size: rows per forward.

    Returns:
        One (sum of log-probabilities in nats, every token greedy) per pair, in input order.
    """
    device = next(model.parameters()).device
    rows = []
    for i, (ctx, cont) in enumerate(pairs):
        if not ctx or not cont:
            raise ValueError(f"request {i}: context ({len(ctx)} tokens) and continuation "
                             f"({len(cont)} tokens) must both be non-empty")
        if len(cont) > max_length:
            raise ValueError(f"request {i}: the continuation has {len(cont)} tokens but the "
                             f"model reads {max_length}: it cannot be scored in one window")
        rows.append((i, (list(ctx) + list(cont))[-(max_length + 1):][:-1], list(cont)))
    rows.sort(key=lambda r: -len(r[1]))
    out: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
    was_training = model.training
    model.eval()
    for b in range(0, len(rows), batch_size):
        chunk = rows[b:b + batch_size]
        width = len(chunk[0][1])
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, (_, inp, _) in enumerate(chunk):
            x[r, :len(inp)] = torch.tensor(inp)
        logp = torch.log_softmax(model(x.to(device)).logits.float(), dim=-1)  # (B, T, V)
        for r, (i, inp, cont) in enumerate(chunk):
            rows_logp = logp[r, len(inp) - len(cont):len(inp)]              # (n_cont, V)
            target = torch.tensor(cont, device=device)
            score = rows_logp.gather(-1, target[:, None])[:, 0].sum().item()
            greedy = bool((rows_logp.argmax(-1) == target).all())
            out[i] = (score, greedy)
    model.train(was_training)
    return out


def stop_at(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first occurrence of any non-empty stop string (lm-eval's cut: each
    stop in turn keeps what precedes it)."""
    for stop in stops:
        if stop:
            text = text.split(stop)[0]
    return text


def _reads_padding(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes an attention mask (left-padded batches)."""
    return "attention_mask" in inspect.signature(model.forward).parameters


def _first_stop(text: str, stops: Sequence[str]) -> bool:
    return any(stop and stop in text for stop in stops)


def _model_folder(checkpoint: str) -> Path:
    """A model folder, or the name of one shipped in data/checkpoints."""
    path = Path(checkpoint)
    if not path.exists() and len(path.parts) == 1:
        from minillm.data import data_dir

        shipped = data_dir() / "checkpoints" / checkpoint
        if shipped.is_dir():
            return shipped
    if not (path / "config.json").is_file():
        raise ValueError(f"checkpoint={checkpoint!r} is no model folder (no config.json there): "
                         "pass a folder with config.json and model.safetensors, or a shipped "
                         "checkpoint's name (shakespeare_byte, shakespeare_sft, ...)")
    return path


class MiniLLMLM(TemplateLM):
    """A minillm model behind lm-eval's `LM` interface (see the module docstring).

    Args:
        checkpoint: a model folder (config.json + model.safetensors [+ tokenizer.json]) or a
            shipped checkpoint's name; or None with `model` and `tokenizer`.
        model: a loaded minillm model (instead of `checkpoint`).
        tokenizer: its tokenizer (with `model`).
        batch_size: rows per forward; "auto" means 32.
        device: "auto" (cuda > mps > cpu), "cpu", "cuda", ...
        max_length: the window scored at once (default: the model's context_length).
        max_gen_toks: generate_until's default token budget when a task names none.
        seed: seeds sampling when a task asks for do_sample.
    """

    def __init__(self, checkpoint: str | None = None, model: torch.nn.Module | None = None,
                 tokenizer=None, batch_size: int | str = 16, device: str | None = "auto",
                 max_length: int | None = None, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
                 seed: int = 0, **kwargs) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"the minillm model takes no arguments {sorted(kwargs)}: pass "
                             "checkpoint=DIR (and batch_size, device, max_length, max_gen_toks)")
        dev = choose_device(device or "auto")
        if (checkpoint is None) == (model is None):
            raise ValueError("pass exactly one of checkpoint=DIR (lm_eval --model_args "
                             "checkpoint=DIR) or model=... with tokenizer=...")
        if checkpoint is not None:
            folder = _model_folder(str(checkpoint))
            model = load_model(folder, map_location=dev)
            tokenizer = tokenizer_for_model(folder, model.config.vocab_size)
        elif tokenizer is None:
            raise ValueError("model=... needs its tokenizer=...")
        self.model = model.to(dev).eval()
        self.tok = tokenizer
        self._device = dev
        if tokenizer.eot_id is None:
            raise ValueError("the tokenizer has no <|endoftext|> id: lm-eval scores an empty "
                             "context and the first window of a text after it")
        self._batch_size = AUTO_BATCH_SIZE if str(batch_size).startswith("auto") \
            else int(batch_size)
        context = int(self.model.config.context_length)
        self._max_length = int(max_length) if max_length else context
        if not 0 < self._max_length <= context:
            raise ValueError(f"max_length={max_length} must be in [1, the model's "
                             f"context_length={context}]")
        self.max_gen_toks = int(max_gen_toks)
        self.seed = int(seed)
        if self._batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1 (or 'auto')")

    # ---- what lm-eval reads -------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return int(self.tok.eot_id)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return f"minillm-{type(self.tok).__name__}-{self.tok.vocab_size}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs) -> list[int]:
        return self.tok.encode(string, allowed_special="all")

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tok.decode(list(tokens))

    # ---- the three requests -------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs
                              ) -> list[tuple[float, bool]]:
        results = continuation_logprobs(self.model, [(ctx, cont) for _, ctx, cont in requests],
                                        self.max_length, self.batch_size)
        for (key, _, _), result in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for n, (text,) in enumerate(req.args for req in requests):
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.eot_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((ctx, cont))
                owner.append(n)
        scores = continuation_logprobs(self.model, windows, self.max_length, self.batch_size)
        totals = [0.0] * len(requests)
        for n, (score, _) in zip(owner, scores, strict=True):
            totals[n] += score
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def _generation_config(self, gen_kwargs: dict) -> tuple[GenerationConfig, list[str]]:
        """(decoding settings, stop strings) from a request's gen_kwargs."""
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        eot = self.tok_decode([self.eot_token_id])
        if eot not in until:
            until.append(eot)
        budget = self.max_gen_toks
        for name in ("max_gen_toks", "max_new_tokens", "max_tokens"):
            if name in kwargs:
                budget = int(kwargs.pop(name))
                break
        temperature = float(kwargs.pop("temperature", 0.0))
        do_sample = bool(kwargs.pop("do_sample", False)) and temperature > 0
        # single-token stops end a row inside the decoder; longer ones are checked as text
        stop_ids = {self.eot_token_id}
        for stop in until:
            ids = self.tok_encode(stop)
            if len(ids) == 1:
                stop_ids.add(ids[0])
        config = GenerationConfig(max_new_tokens=budget, do_sample=do_sample,
                                  temperature=temperature if do_sample else 1.0,
                                  top_p=kwargs.pop("top_p", None),
                                  top_k=kwargs.pop("top_k", None),
                                  eos_token_id=sorted(stop_ids))
        return config, until

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for n, req in enumerate(requests):  # one decoding setting per batch
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(n)
        for indices in groups.values():
            config, until = self._generation_config(requests[indices[0]].args[1])
            room = self.max_length - config.max_new_tokens
            if room < 1:
                raise ValueError(f"max_gen_toks={config.max_new_tokens} leaves no room for the "
                                 f"context in the model's {self.max_length} tokens: ask for "
                                 "fewer tokens")
            encoded = {n: self.tok_encode(requests[n].args[0])[-room:] for n in indices}
            order = sorted(indices, key=lambda n: -len(encoded[n]))
            for b in range(0, len(order), self.batch_size):
                chunk = order[b:b + self.batch_size]
                texts = self._generate([encoded[n] for n in chunk], config, until)
                for n, text in zip(chunk, texts, strict=True):
                    results[n] = text
                    self.cache_hook.add_partial("generate_until", requests[n].args, text)
        return results

    @torch.no_grad()
    def _generate(self, prompts: list[list[int]], config: GenerationConfig,
                  until: list[str]) -> list[str]:
        """Decode a batch of prompts; each row's text cut at its first stop string."""
        # an empty context starts from <|endoftext|>, as lm-eval's scoring does
        prompts = [p or [self.eot_token_id] for p in prompts]
        if len({len(p) for p in prompts}) > 1 and not _reads_padding(self.model):
            # a model without an attention mask (RNN, MLP LM) decodes equal lengths together
            by_length: dict[int, list[int]] = {}
            for r, p in enumerate(prompts):
                by_length.setdefault(len(p), []).append(r)
            texts: list[str] = [""] * len(prompts)
            for rows in by_length.values():
                for r, text in zip(rows, self._generate([prompts[r] for r in rows], config,
                                                        until), strict=True):
                    texts[r] = text
            return texts
        ids, mask = left_pad(prompts, pad_token_id=self.eot_token_id)
        generator = torch.Generator(device=self._device).manual_seed(self.seed) \
            if config.sampling else None
        new: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        for step in stream(self.model, ids.to(self._device), generation_config=config,
                           generator=generator, attention_mask=mask.to(self._device)):
            for r, token in enumerate(step.tolist()):
                if not done[r]:
                    new[r].append(token)
                    done[r] = token in config.stop_ids or _first_stop(
                        self.tok_decode(new[r]), until)
            if all(done):
                break
        return [stop_at(self.tok_decode(tokens), until) for tokens in new]


def register() -> None:
    """Register `MiniLLMLM` with lm-eval as "minillm" (idempotent)."""
    if model_registry.get("minillm", None) is None:
        model_registry.register("minillm", target=MiniLLMLM)


register()
