"""Measuring memorisation: does a byte-level model reproduce its training text verbatim?

Two measures, both on bytes (the course's tokenizer):

- **Extraction of a known passage** (Carlini et al. 2023, "Quantifying Memorization Across
  Neural Language Models", arXiv:2202.07646): prompt with `prompt_bytes` of a training passage
  and decode `target_bytes` greedily; the window counts as memorised when the continuation
  equals the passage's next `target_bytes` exactly. Windows slide over the passage by
  `stride`; `matched` is the mean length of the continuation's correct prefix, a graded
  version of the same test.

      extracted(passage) = (1/W) Σ_w [greedy(prompt_w) == target_w]

- **Verbatim share of generations** (Lee et al. 2022, arXiv:2107.06499, §6): sample text from
  the model without a passage prompt and count the share of its `window`-byte windows that
  occur verbatim in a reference text (the training data).

Departures: Lee et al. count 50 GPT-2 tokens and search the whole training set with a suffix
array; here 50 bytes and Python's substring search over a text of a few megabytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minillm.generation import generate
from minillm.tokenizers import ByteTokenizer

__all__ = ["extraction_rate", "extraction_windows", "greedy_continuations", "sample_texts",
           "verbatim_share"]


def extraction_windows(passage: bytes, prompt_bytes: int = 64, target_bytes: int = 50,
                       stride: int = 32) -> list[tuple[bytes, bytes]]:
    """(prompt, target) pairs: passage[s : s + P] and passage[s + P : s + P + N] for
    s = 0, stride, ... while the target fits.

    Raises:
        ValueError: a non-positive size, or a passage shorter than one window.
    """
    if min(prompt_bytes, target_bytes, stride) < 1:
        raise ValueError(f"prompt_bytes={prompt_bytes}, target_bytes={target_bytes} and "
                         f"stride={stride} must all be >= 1")
    if len(passage) < prompt_bytes + target_bytes:
        raise ValueError(f"the passage has {len(passage)} bytes; one window needs "
                         f"{prompt_bytes + target_bytes}")
    return [(passage[s:s + prompt_bytes], passage[s + prompt_bytes:s + prompt_bytes + target_bytes])
            for s in range(0, len(passage) - prompt_bytes - target_bytes + 1, stride)]


@torch.no_grad()
def greedy_continuations(model, prompts: Sequence[bytes], n_new: int,
                         batch_size: int = 32) -> list[bytes]:
    """Greedy byte continuations of equal-length prompts (a byte-level model: ids 0-255)."""
    if len({len(p) for p in prompts}) > 1:
        raise ValueError("prompts differ in length; give prompts of one length (no padding)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for lo in range(0, len(prompts), batch_size):
        ids = torch.tensor([list(p) for p in prompts[lo:lo + batch_size]], device=device)
        new = generate(model, ids, n_new, temperature=0.0)[:, ids.size(1):]
        out += [bytes(min(int(t), 255) for t in row) for row in new.tolist()]
    model.train(was_training)
    return out


def extraction_rate(model, passages: Sequence[str], prompt_bytes: int = 64,
                    target_bytes: int = 50, stride: int = 32) -> dict[str, float]:
    """The extraction test of the module docstring over all windows of `passages`.

    Returns:
        {"extracted": share of windows reproduced exactly, "matched": mean correct-prefix
        length in bytes, "windows": number of windows}.
    """
    pairs = [w for p in passages for w in extraction_windows(p.encode("utf-8"), prompt_bytes,
                                                             target_bytes, stride)]
    got = greedy_continuations(model, [p for p, _ in pairs], target_bytes)
    exact, matched = 0, 0
    for (_, target), cont in zip(pairs, got, strict=True):
        exact += cont == target
        k = 0
        while k < len(target) and cont[k] == target[k]:
            k += 1
        matched += k
    return {"extracted": exact / len(pairs), "matched": matched / len(pairs),
            "windows": len(pairs)}


def verbatim_share(samples: Sequence[str], reference: str, window: int = 50,
                   stride: int = 10) -> float:
    """Share of the `window`-byte windows of `samples` (every `stride` bytes) that occur in
    `reference` verbatim (compared as UTF-8 bytes).

    Raises:
        ValueError: no sample holds a whole window.
    """
    ref = reference.encode("utf-8")
    hits = total = 0
    for s in samples:
        data = s.encode("utf-8")
        for i in range(0, len(data) - window + 1, stride):
            total += 1
            hits += data[i:i + window] in ref
    if total == 0:
        raise ValueError(f"no sample has {window} bytes; sample longer texts")
    return hits / total


def sample_texts(model, n: int, length: int, seed: int, temperature: float = 1.0,
                 tokenizer: ByteTokenizer | None = None) -> list[str]:
    """`n` samples of `length` bytes, each started from <|endoftext|>, decoded as UTF-8
    (bytes that do not decode are replaced)."""
    tok = tokenizer or ByteTokenizer()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = torch.full((n, 1), tok.eot_id, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = generate(model, ids, length, temperature=temperature, generator=gen)[:, 1:]
    model.train(was_training)
    return [bytes(min(int(t), 255) for t in row).decode("utf-8", errors="replace")
            for row in out.tolist()]
