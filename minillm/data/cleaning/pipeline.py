"""The cleaning pipeline of chapter 17: a crawl in, the three training corpora it compares out.

    stage      pages / text kept
    raw        every page, as crawled
    filtered   the pages no quality filter drops: Gopher's rules (`heuristics`), CCNet's
               language rule P(lang | page) > min_lang_prob (`langid`), and, when the caller
               passes them, any further drop decisions (e.g. the perplexity filter's, whose
               quality model lives above the data layer)
    deduped    the filtered pages minus exact duplicates (normalised hash, `dedup`) and MinHash
               near duplicates (`minhash`), then every substring of >= k characters already
               seen earlier cut out (`suffix_array.repeated_spans(keep_first=True)`), so each
               repeated passage or boilerplate block is kept once, where it first occurs

The order follows the pipelines of CCNet (Wenzek et al. 2019, arXiv:1911.00359) and RefinedWeb
(Penedo et al. 2023, arXiv:2306.01116, Fig. 2): cheap filters first, then document-level
dedup, then substring dedup (Lee et al. 2022, arXiv:2107.06499) on what is left.

Departures: Lee et al.'s ExactSubstr counts 50 GPT-2 tokens and (in the paper) removes the
repeats; here characters, and the first occurrence is kept, as document-level dedup keeps the
first page of a cluster. PII scrubbing (`pii`) is a separate step, not applied here.

`mixture_text` makes the two-source training texts of the mixture experiment: a fixed number of
characters, a given share from the second source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from minillm.data.cleaning.crawl import Page
from minillm.data.cleaning.dedup import exact_duplicates
from minillm.data.cleaning.heuristics import GopherConfig, gopher_keep
from minillm.data.cleaning.langid import ByteNGramLangID, keep_language
from minillm.data.cleaning.minhash import near_duplicates
from minillm.data.cleaning.suffix_array import remove_spans, repeated_spans

__all__ = ["STAGES", "CleanedCrawl", "PipelineConfig", "clean_crawl", "join_pages",
           "mixture_text"]

STAGES = ("raw", "filtered", "deduped")
PAGE_SEPARATOR = "\n\n"


@dataclass
class PipelineConfig:
    gopher: GopherConfig = field(default_factory=GopherConfig)  # the rules' thresholds
    lang: str = "en"                 # the language kept
    min_lang_prob: float = 0.5       # CCNet's rule: keep when P(lang | page) > this
    near_threshold: float = 0.5      # MinHash: estimated Jaccard of 5-word shingles (a near
                                     # duplicate on another site shares ~0.5-0.7)
    num_perm: int = 128              # MinHash signature length
    shingle_words: int = 5           # words per shingle
    substring_min_length: int = 100  # k: shortest repeated substring cut (characters)

    def __post_init__(self) -> None:
        if not 0 <= self.min_lang_prob < 1:
            raise ValueError(f"min_lang_prob={self.min_lang_prob} must be in [0, 1)")
        if not 0 < self.near_threshold <= 1:
            raise ValueError(f"near_threshold={self.near_threshold} must be in (0, 1]")
        for name in ("num_perm", "shingle_words", "substring_min_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


@dataclass
class CleanedCrawl:
    """Per-page decisions of `clean_crawl` (lists aligned with `pages`)."""

    pages: list[Page]
    flags: dict[str, list[bool]]      # "gopher", "langid", "extra", "exact", "near": dropped
    cut_spans: list[list[tuple[int, int]]]  # substring dedup's cuts (empty off `deduped`)

    @property
    def filtered(self) -> list[bool]:
        """True for the pages the quality filters keep."""
        return [not (g or lang or x) for g, lang, x in zip(
            self.flags["gopher"], self.flags["langid"], self.flags["extra"], strict=True)]

    @property
    def deduped(self) -> list[bool]:
        """True for the pages kept by the filters and by document-level dedup."""
        return [f and not (e or n) for f, e, n in zip(
            self.filtered, self.flags["exact"], self.flags["near"], strict=True)]

    def texts(self, stage: str) -> list[str]:
        """The page texts of a stage (`STAGES`), in crawl order."""
        if stage == "raw":
            return [p.text for p in self.pages]
        if stage == "filtered":
            return [p.text for p, k in zip(self.pages, self.filtered, strict=True) if k]
        if stage == "deduped":
            out = [remove_spans(p.text, cut) for p, k, cut in
                   zip(self.pages, self.deduped, self.cut_spans, strict=True) if k]
            return [t for t in out if t.strip()]
        raise ValueError(f"stage={stage!r} is unknown; choose one of {STAGES}")


def clean_crawl(pages: Sequence[Page], langid: ByteNGramLangID,
                config: PipelineConfig | None = None,
                extra_drop: Sequence[bool] | None = None) -> CleanedCrawl:
    """Run the pipeline of the module docstring on `pages`.

    Args:
        pages: the crawl, in order (the first copy of anything is the one kept).
        langid: a fitted language identifier.
        config: thresholds (default `PipelineConfig()`).
        extra_drop: per page, further drop decisions of the filtering stage (e.g. the
            perplexity filter's), or None.

    Returns:
        A `CleanedCrawl`; `.texts(stage)` gives each stage's page texts.

    Raises:
        ValueError: `extra_drop` of the wrong length.
    """
    c = config or PipelineConfig()
    pages = list(pages)
    if extra_drop is not None and len(extra_drop) != len(pages):
        raise ValueError(f"extra_drop has {len(extra_drop)} decisions for {len(pages)} pages")
    flags = {"gopher": [not gopher_keep(p.text, c.gopher) for p in pages],
             "langid": [not keep_language(langid, p.text, c.lang, c.min_lang_prob)
                        for p in pages],
             "extra": [bool(x) for x in extra_drop] if extra_drop is not None
             else [False] * len(pages)}
    kept = [i for i, p in enumerate(pages)
            if not (flags["gopher"][i] or flags["langid"][i] or flags["extra"][i])]
    texts = [pages[i].text for i in kept]
    exact = exact_duplicates(texts)
    # near duplicates among the pages exact dedup kept (an exact copy is a near one too)
    survivors = [j for j, e in enumerate(exact) if not e]
    near_of = near_duplicates([texts[j] for j in survivors], c.near_threshold, c.num_perm,
                              c.shingle_words)
    near = [False] * len(texts)
    for j, flag in zip(survivors, near_of, strict=True):
        near[j] = flag
    flags["exact"], flags["near"] = [False] * len(pages), [False] * len(pages)
    for j, i in enumerate(kept):
        flags["exact"][i], flags["near"][i] = exact[j], near[j]
    deduped = [i for i in kept if not (flags["exact"][i] or flags["near"][i])]
    cuts = repeated_spans([pages[i].text for i in deduped], c.substring_min_length,
                          keep_first=True)
    cut_spans: list[list[tuple[int, int]]] = [[] for _ in pages]
    for i, cut in zip(deduped, cuts, strict=True):
        cut_spans[i] = cut
    return CleanedCrawl(pages, flags, cut_spans)


def join_pages(texts: Sequence[str]) -> str:
    """One training text: the pages joined by a blank line."""
    return PAGE_SEPARATOR.join(t.strip("\n") for t in texts)


def mixture_text(first: str, second: str, share_second: float, total_chars: int) -> str:
    """`total_chars` characters: the first (1 − share) · total of `first`, then the first
    share · total of `second` (training samples random windows, so order does not matter).

    Raises:
        ValueError: share outside [0, 1], or a source shorter than its part.
    """
    if not 0 <= share_second <= 1:
        raise ValueError(f"share_second={share_second} must be in [0, 1]")
    n_second = round(share_second * total_chars)
    n_first = total_chars - n_second
    for name, text, n in (("first", first, n_first), ("second", second, n_second)):
        if len(text) < n:
            raise ValueError(f"the {name} source has {len(text):,} characters; the mixture "
                             f"needs {n:,}: lower total_chars")
    return first[:n_first] + (PAGE_SEPARATOR if n_first and n_second else "") + second[:n_second]
