"""Few-shot prompts: k solved examples (demonstrations), then the query, under one template.

In-context learning (Brown et al. 2020, arXiv:2005.14165) conditions a frozen model on a
prompt

    prompt = wrap( render(x_1, y_1) + sep + ... + render(x_k, y_k) + sep + render(x_q, ·) )

and reads the answer y_q off the model's continuation. The template `render` and the choice
of the k demonstrations matter (Min et al. 2022, arXiv:2202.12837, find the format and the
input and label distributions matter more than whether each label is right; `shuffle_labels`
builds their random-label control).

Choices: a string template has the placeholders `{input}` and `{output}`, and the query is the
template cut just before `{output}`, so the prompt ends exactly where the answer begins
("Q: 2+2\nA: "); a callable template gets (input, output or None) and decides itself.
Demonstrations are drawn without replacement by `random.Random(seed)`: the same seed gives
the same prompt on every machine. A chat template, from a higher layer, comes in as `wrap`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

__all__ = ["FewShotPrompt", "exact_match", "select_demonstrations", "shuffle_labels"]

Example = tuple[str, str]     # (input, output)


def select_demonstrations(pool: Sequence[Example], k: int, seed: int,
                          exclude: str | None = None) -> list[Example]:
    """k examples of `pool` drawn without replacement, in the drawn order.

    Args:
        pool: (input, output) pairs.
        k: how many (0 <= k <= usable pool size).
        seed: seeds `random.Random` (deterministic everywhere).
        exclude: an input never to use (the query itself, so it is not its own demonstration).

    Returns:
        The chosen pairs.
    """
    usable = [ex for ex in pool if exclude is None or ex[0] != exclude]
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(usable):
        raise ValueError(f"k={k!r} must be an integer in [0, {len(usable)}] (the pool has "
                         f"{len(usable)} usable examples)")
    return random.Random(seed).sample(usable, k)


def shuffle_labels(demos: Sequence[Example], labels: Sequence[str], seed: int) -> list[Example]:
    """Min et al.'s control: each demonstration keeps its input and gets a label drawn
    uniformly at random from `labels` (so some are wrong).

    Args:
        demos: (input, output) pairs.
        labels: the label space to draw from.
        seed: seeds `random.Random`.

    Returns:
        (input, random label) pairs.
    """
    if not labels:
        raise ValueError("labels is empty: give the label space to draw random labels from")
    rng = random.Random(seed)
    return [(x, rng.choice(list(labels))) for x, _ in demos]


@dataclass(frozen=True)
class FewShotPrompt:
    template: str | Callable[[str, str | None], str] = "Q: {input}\nA: {output}"
    separator: str = "\n\n"                              # between rendered examples
    instruction: str = ""                                # put before the demonstrations
    wrap: Callable[[str], str] | None = None             # e.g. a chat template, applied last

    def __post_init__(self) -> None:
        if isinstance(self.template, str):
            for name in ("{input}", "{output}"):
                if self.template.count(name) != 1:
                    raise ValueError(f"template={self.template!r} must hold {name} exactly "
                                     "once (the query is the template cut before {output})")
            if self.template.index("{input}") > self.template.index("{output}"):
                raise ValueError(f"template={self.template!r}: {{input}} must come before "
                                 "{output}")
        elif not callable(self.template):
            raise ValueError(f"template={self.template!r} must be a format string or a "
                             "callable (input, output or None) -> text")

    def render(self, x: str, y: str | None) -> str:
        """One example (`y` given) or the query (`y=None`)."""
        if callable(self.template):
            return self.template(x, y)
        # cut the template around its placeholders (not str.replace: an input may hold
        # "{output}" itself)
        before, rest = self.template.split("{input}")
        middle, after = rest.split("{output}")
        return before + x + middle if y is None else before + x + middle + y + after

    def __call__(self, query: str, demos: Sequence[Example] = ()) -> str:
        """The prompt for `query` after the demonstrations `demos`.

        Args:
            query: the input to answer.
            demos: (input, output) pairs, in order (see `select_demonstrations`).

        Returns:
            The prompt text, ending where the model's answer should begin.
        """
        parts = [self.render(x, y) for x, y in demos] + [self.render(query, None)]
        text = self.separator.join(parts)
        if self.instruction:
            text = self.instruction + self.separator + text
        return self.wrap(text) if self.wrap is not None else text

    def build(self, query: str, pool: Sequence[Example], k: int, seed: int) -> str:
        """The prompt for `query` with k demonstrations drawn from `pool` by `seed` (never the
        query itself).

        Args:
            query: the input to answer.
            pool: (input, output) pairs to draw from.
            k: demonstrations.
            seed: which ones (deterministic).

        Returns:
            The prompt text.
        """
        return self(query, select_demonstrations(pool, k, seed, exclude=query))


def exact_match(prediction: str, answer: Hashable) -> bool:
    """Whether the first line of `prediction`, stripped, equals `answer` (as text)."""
    lines = prediction.strip().splitlines()
    return bool(lines) and lines[0].strip() == str(answer).strip()
