"""Language identification with a byte n-gram naive Bayes classifier, trained here.

CCNet (Wenzek et al. 2019, arXiv:1911.00359, §3.2) labels each crawl document with fastText's
language identifier (Joulin et al. 2016, arXiv:1607.01759: character n-gram features, a linear
classifier) and keeps documents whose top language score exceeds 0.5. This is the same idea at
its simplest: the features are the document's byte n-grams (n = 1-3 by default), the model is
multinomial naive Bayes with additive smoothing α:

    log P(c | d) ∝ log π_c + Σ_g count_d(g) · log θ_cg,     θ_cg = (N_cg + α) / (N_c + α |V|)

where N_cg counts n-gram g in class c's training text, N_c = Σ_g N_cg, V is the set of n-grams
seen in training (unseen ones are ignored), and π_c is the share of training documents in
class c. Whitespace runs are collapsed to one space first (so layout is not a feature).
The posterior is the softmax of the joint log-likelihoods; `keep_language` applies CCNet's
rule. The training set (`langid_training_set`) is generated: English from the training plays,
French, German and Latin from `languages.foreign_text` with a seed of its own.

Departures from fastText: no learned embeddings or hierarchical softmax; bytes, not characters
with word boundaries.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from minillm.data.cleaning.languages import WORDS, foreign_text

__all__ = ["ByteNGramLangID", "LangIDConfig", "byte_ngrams", "keep_language",
           "langid_training_set"]

_SPACE = re.compile(r"\s+")


@dataclass
class LangIDConfig:
    orders: tuple[int, ...] = (1, 2, 3)  # n-gram lengths in bytes
    alpha: float = 1.0                   # additive smoothing (1 = Laplace)

    def __post_init__(self) -> None:
        if not self.orders or any(not 1 <= n <= 7 for n in self.orders):
            raise ValueError(f"orders={self.orders} must be a non-empty tuple of n in 1..7 "
                             "(longer n-grams do not fit the int64 keys)")
        if self.alpha <= 0:
            raise ValueError(f"alpha={self.alpha} must be > 0 (0 gives log 0 for an n-gram "
                             "unseen in one language)")


def byte_ngrams(text: str, orders: Sequence[int] = (1, 2, 3)) -> Counter:
    """Counts of the byte n-grams of `text` (whitespace runs collapsed to one space)."""
    data = _SPACE.sub(" ", text).encode("utf-8")
    counts: Counter = Counter()
    for n in orders:
        counts.update(data[i:i + n] for i in range(len(data) - n + 1))
    return counts


def _ngram_keys(text: str, orders: Sequence[int]) -> np.ndarray:
    """Every byte n-gram of `text` (whitespace collapsed) as one int64: its bytes read as a
    base-256 number, plus 256^8 · n so that n-grams of different lengths never share a key."""
    data = np.frombuffer(_SPACE.sub(" ", text).encode("utf-8"), np.uint8).astype(np.int64)
    out = []
    for n in orders:
        if len(data) < n:
            continue
        key = np.zeros(len(data) - n + 1, np.int64)
        for i in range(n):
            key = key * 256 + data[i:len(data) - n + 1 + i]
        out.append(key + (n << 56))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class ByteNGramLangID:
    """Multinomial naive Bayes over byte n-grams (see the module docstring).

    >>> model = ByteNGramLangID().fit(["the cat and the dog", "le chat et le chien"], ["en", "fr"])
    >>> model.predict("the dog and the cat")
    'en'
    """

    def __init__(self, config: LangIDConfig | None = None):
        self.config = config or LangIDConfig()
        self.labels: list[str] = []
        self.vocab = np.zeros(0, np.int64)         # (V,) sorted n-gram keys (see _ngram_keys)
        self.log_prior: np.ndarray | None = None   # (C,)
        self.log_theta: np.ndarray | None = None   # (C, V)

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> ByteNGramLangID:
        """Count n-grams per label and set the smoothed log-probabilities.

        Raises:
            ValueError: texts and labels differ in length, or there is no text.
        """
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels: give one label "
                             "per text")
        if not texts:
            raise ValueError("no training texts: give at least one text per language")
        self.labels = sorted(set(labels))
        keys = {c: [] for c in self.labels}
        for t, c in zip(texts, labels, strict=True):
            keys[c].append(_ngram_keys(t, self.config.orders))
        per_class = [np.unique(np.concatenate(keys[c]), return_counts=True) for c in self.labels]
        self.vocab = np.unique(np.concatenate([k for k, _ in per_class]))   # (V,) sorted keys
        counts = np.zeros((len(self.labels), len(self.vocab)))             # (C, V)
        for ci, (k, n) in enumerate(per_class):
            counts[ci, np.searchsorted(self.vocab, k)] = n
        smoothed = counts + self.config.alpha
        self.log_theta = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        docs = Counter(labels)
        self.log_prior = np.log(np.array([docs[c] for c in self.labels]) / len(labels))
        return self

    def joint_log_likelihood(self, text: str) -> np.ndarray:
        """(C,) log π_c + Σ_g count(g) log θ_cg over the n-grams of `text` seen in training."""
        if self.log_theta is None:
            raise ValueError("the model is not fitted: call fit(texts, labels) first")
        keys, k = np.unique(_ngram_keys(text, self.config.orders), return_counts=True)
        cols = np.minimum(np.searchsorted(self.vocab, keys), len(self.vocab) - 1)
        seen = self.vocab[cols] == keys                                     # unseen: ignored
        return self.log_prior + self.log_theta[:, cols[seen]] @ k[seen]

    def predict_proba(self, text: str) -> dict[str, float]:
        """The posterior P(language | text), the softmax of the joint log-likelihoods."""
        jll = self.joint_log_likelihood(text)
        p = np.exp(jll - jll.max())
        p /= p.sum()
        return dict(zip(self.labels, p.tolist(), strict=True))

    def predict(self, text: str) -> str:
        """The most probable language."""
        return self.labels[int(np.argmax(self.joint_log_likelihood(text)))]


def keep_language(model: ByteNGramLangID, text: str, lang: str = "en",
                  min_prob: float = 0.5) -> bool:
    """CCNet's rule: keep `text` when P(lang | text) > min_prob."""
    if lang not in model.labels:
        raise ValueError(f"lang={lang!r} is not one the model knows ({model.labels})")
    return model.predict_proba(text)[lang] > min_prob


def langid_training_set(english: str, docs_per_language: int = 20, words_per_doc: int = 150,
                        seed: int = 12345) -> tuple[list[str], list[str]]:
    """A generated training set: `docs_per_language` documents of each language.

    Args:
        english: English text to cut the "en" documents from (e.g. part of the training plays;
            cut into consecutive pieces of `words_per_doc` words).
        docs_per_language: documents per language.
        words_per_doc: about this many words each.
        seed: seeds the foreign text (pick one the crawl does not use).

    Returns:
        (texts, labels).

    Raises:
        ValueError: `english` has too few words for the documents asked.
    """
    words = english.split()
    if len(words) < docs_per_language * words_per_doc:
        raise ValueError(f"english has {len(words)} words; {docs_per_language} documents of "
                         f"{words_per_doc} need {docs_per_language * words_per_doc}")
    texts = [" ".join(words[i * words_per_doc:(i + 1) * words_per_doc])
             for i in range(docs_per_language)]
    labels = ["en"] * docs_per_language
    rng = random.Random(seed)
    for lang in sorted(WORDS):
        texts += [foreign_text(lang, words_per_doc, rng) for _ in range(docs_per_language)]
        labels += [lang] * docs_per_language
    return texts, labels
