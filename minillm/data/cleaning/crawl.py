"""A web-like crawl made from the plays, with every injected item labelled.

Real pre-training corpora start as a crawl: pages wrapped in menus and cookie banners, spam,
machine-made text, other languages, the same page many times, a few passages copied everywhere,
and people's e-mail addresses (the survey's §4.1; Penedo et al. 2023, RefinedWeb, arXiv:
2306.01116, Fig. 2 shows how much each stage removes). The course has no crawl, so it makes one
from the *training* plays and knows the truth about every byte of it:

    kind             what the page is                                         truth it carries
    clean            a chunk of a training play (1-3 KB, cut at blank lines)  source play + offsets
    spam             keyword stuffing                                         low quality
    gibberish        machine-made text in four shapes (webtext.py)            low quality, no lang
    foreign          pseudo-French/German/Latin (languages.py)                lang
    exact_duplicate  a copy of a clean page (half of them + trailing blanks)  cluster
    near_duplicate   a clean page's content with ~3% of words edited and      cluster
                     another site's boilerplate
    repeated         a fresh chunk with one of a few passages inserted;       passage id, copies
                     passage p is carried by `repeat_copies[p]` pages

Every page may be wrapped in its site's boilerplate (spans labelled "boilerplate") and may
carry synthetic PII (spans "email", "phone", "ipv4": text[start:end] is the item). A content
span's `ref` is its offset in the source play, so `play[ref : ref + end - start]` equals it.
Pages are shuffled; `cluster` is the id of the first page (in crawl order) of the page's
duplicate cluster, its own id when it has no duplicate. `domain` is the play's genre in the
First Folio's grouping (comedy, history, tragedy; *Pericles*, absent from the Folio, counted as a
comedy), the second source for mixture experiments.

Only the training split is used, so the validation plays stay unseen (the course's metric line).
`build_crawl(CrawlConfig(seed=0))` is deterministic: `data/crawl/make_crawl.py` ships its output.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minillm.data.cleaning.languages import WORDS, foreign_text
from minillm.data.cleaning.webtext import (
    GIBBERISH_SHAPES,
    PII_KINDS,
    Site,
    gibberish_text,
    make_site,
    pii_sentence,
    spam_text,
)
from minillm.data.corpus import data_dir
from minillm.data.sft import play_texts
from minillm.io import atomic_write_bytes

__all__ = ["GENRES", "PAGE_KINDS", "SPAN_LABELS", "CrawlConfig", "Page", "Span", "build_crawl",
           "duplicate_labels", "load_crawl", "quality_labels", "read_crawl", "write_crawl"]

PAGE_KINDS = ("clean", "spam", "gibberish", "foreign", "exact_duplicate", "near_duplicate",
              "repeated")
SPAN_LABELS = ("content", "boilerplate", "repeat", *PII_KINDS)
_COMEDIES = ("alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors",
             "loves_labours_lost", "measure_for_measure", "merchant_of_venice",
             "merry_wives_of_windsor", "midsummer_nights_dream", "much_ado_about_nothing",
             "pericles", "taming_of_the_shrew", "tempest", "twelfth_night",
             "two_gentlemen_of_verona", "winters_tale")
_HISTORIES = ("henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1",
              "henry_vi_part_2", "henry_vi_part_3", "henry_viii", "john", "richard_ii",
              "richard_iii")
_TRAGEDIES = ("antony_and_cleopatra", "coriolanus", "cymbeline", "hamlet", "julius_caesar",
              "lear", "macbeth", "othello", "romeo_and_juliet", "timon_of_athens",
              "tragedy_of_titus_andronicus", "troilus_and_cressida")
GENRES = {**{p: "comedy" for p in _COMEDIES}, **{p: "history" for p in _HISTORIES},
          **{p: "tragedy" for p in _TRAGEDIES}}


@dataclass(frozen=True)
class Span:
    """A labelled stretch `text[start:end]` of a page (character offsets)."""

    start: int
    end: int
    label: str  # one of SPAN_LABELS
    ref: str = ""  # content: offset in the source play; repeat: passage id; else ""


@dataclass(frozen=True)
class Page:
    id: int
    kind: str           # one of PAGE_KINDS
    lang: str           # "en", "fr", "de", "la"; "" for gibberish
    domain: str         # the source play's genre; "" for pages not made from a play
    text: str
    source: str         # source play ("" if none)
    cluster: int        # id of the first page of its duplicate cluster (own id if none)
    passage: int        # id of the repeated passage it carries, -1 if none
    copies: int         # pages carrying that passage (0 if none)
    spans: tuple[Span, ...] = ()


@dataclass
class CrawlConfig:
    seed: int = 0
    n_clean: int = 400              # clean pages (the originals of the duplicates among them)
    n_spam: int = 50
    n_gibberish: int = 60           # spread over the four shapes
    n_foreign: int = 90             # spread over fr, de, la
    n_exact_duplicates: int = 60
    n_near_duplicates: int = 60
    repeat_copies: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)  # pages per repeated passage
    passage_chars: int = 400        # about this long, cut at a line end
    page_chars: tuple[int, int] = (1000, 3000)  # a clean chunk's length range
    boilerplate_share: float = 0.6  # pages wrapped in a site's boilerplate
    pii_share: float = 0.15         # play pages given 1-3 PII sentences
    edit_share: float = 0.03        # share of words edited in a near duplicate
    n_sites: int = 12

    def __post_init__(self) -> None:
        for name in ("n_clean", "n_spam", "n_gibberish", "n_foreign", "n_exact_duplicates",
                     "n_near_duplicates", "passage_chars", "n_sites"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.n_clean < 1 and self.n_exact_duplicates + self.n_near_duplicates > 0:
            raise ValueError("n_clean=0 leaves nothing to duplicate; set n_clean >= 1 or no "
                             "duplicates")
        if any(c < 1 for c in self.repeat_copies):
            raise ValueError(f"repeat_copies={self.repeat_copies} must all be >= 1")
        lo, hi = self.page_chars
        if not 0 < lo <= hi:
            raise ValueError(f"page_chars={self.page_chars} must be (lo, hi) with 0 < lo <= hi")
        for name in ("boilerplate_share", "pii_share", "edit_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.n_sites < 2:
            raise ValueError(f"n_sites={self.n_sites} must be >= 2 (a near duplicate moves to "
                             "another site)")


def _chunks(text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive chunks of `text`, cut at blank lines, each lo..hi chars
    when the paragraphs allow (a longer paragraph is cut at a line end)."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n\n", start + lo)
        if end == -1 or end - start > hi:
            end = text.rfind("\n", start + lo, start + hi)
        if end == -1 or len(text) - start <= hi:
            end = len(text) if len(text) - start <= hi else start + hi
        out.append((start, end))
        start = end
        while start < len(text) and text[start] == "\n":
            start += 1
    return [(s, e) for s, e in out if e - s >= lo // 2]


@dataclass
class _Draft:
    """A page being built: segments of (text, label, ref), joined by blank lines."""

    kind: str
    lang: str = "en"
    domain: str = ""
    source: str = ""
    key: int = -1        # duplicate cluster key (-1: none)
    passage: int = -1
    copies: int = 0
    segments: list[tuple[str, str, str]] = field(default_factory=list)
    trailing: str = ""

    def assemble(self) -> tuple[str, tuple[Span, ...]]:
        parts, spans, pos = [], [], 0
        for i, (text, label, ref) in enumerate(self.segments):
            if i:
                parts.append("\n\n")
                pos += 2
            if label:
                spans.append(Span(pos, pos + len(text), label, ref))
            parts.append(text)
            pos += len(text)
        return "".join(parts) + self.trailing, tuple(spans)


def _wrap(draft: _Draft, site: Site | None) -> _Draft:
    if site is not None:
        head = [(site.header, "boilerplate", "")]
        if site.cookie:
            head.append((site.cookie, "boilerplate", ""))
        draft.segments = head + draft.segments + [(site.footer, "boilerplate", "")]
    return draft


def _content(play: str, text: str, start: int, end: int, rng: random.Random, pii_share: float,
             ) -> list[tuple[str, str, str]]:
    """Content segments of play[start:end], with 1-3 PII sentences between paragraphs at
    probability `pii_share`."""
    segments = [(text[start:end], "content", str(start))]
    if rng.random() >= pii_share:
        return segments
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(segments))
        seg, label, ref = segments[i]
        if label != "content":
            continue
        cut = seg.find("\n\n", rng.randrange(len(seg)))
        if cut <= 0:
            continue
        kind = rng.choice(PII_KINDS)
        sentence, s, e = pii_sentence(rng, kind)
        after = cut + 2
        segments[i:i + 1] = [(seg[:cut], "content", ref),
                             (sentence, f"pii:{kind}:{s}:{e}", ""),
                             (seg[after:], "content", str(int(ref) + after))]
    return segments


def _edit_words(text: str, share: float, rng: random.Random) -> str:
    """Delete, repeat or replace about `share` of the words (keeping line breaks)."""
    lines = [line.split(" ") for line in text.split("\n")]
    vocab = [w for line in lines for w in line if w]
    for line in lines:
        for j in range(len(line)):
            if line[j] and rng.random() < share:
                op = rng.randrange(3)
                line[j] = "" if op == 0 else f"{line[j]} {line[j]}" if op == 1 else rng.choice(vocab)
    return "\n".join(" ".join(w for w in line if w) for line in lines)


def build_crawl(config: CrawlConfig | None = None) -> list[Page]:
    """Generate the labelled crawl (see the module docstring).

    Args:
        config: sizes, shares and seed; `CrawlConfig()` is the shipped crawl.

    Returns:
        The pages in crawl order, `page.id == index`.
    """
    config = config or CrawlConfig()
    rng = random.Random(config.seed)
    plays = play_texts("train")
    pool = [(p, s, e) for p, text in plays.items() for s, e in _chunks(text, *config.page_chars)]
    rng.shuffle(pool)
    need = config.n_clean + len(config.repeat_copies) + sum(config.repeat_copies)
    if need > len(pool):
        raise ValueError(f"the config needs {need} chunks of the training plays but there are "
                         f"{len(pool)}; lower n_clean or repeat_copies, or page_chars")
    sites = [make_site(rng) for _ in range(config.n_sites)]
    site = lambda: rng.choice(sites) if rng.random() < config.boilerplate_share else None  # noqa: E731

    drafts: list[_Draft] = []
    originals: list[tuple[_Draft, Site | None, tuple[str, int, int]]] = []
    for key, (play, s, e) in enumerate(pool[:config.n_clean]):
        d, where = _Draft("clean", domain=GENRES[play], source=play, key=key), site()
        d.segments = _content(play, plays[play], s, e, rng, config.pii_share)
        drafts.append(_wrap(d, where))
        originals.append((d, where, (play, s, e)))
    for _ in range(config.n_exact_duplicates):
        o, _, _ = rng.choice(originals)
        drafts.append(_Draft("exact_duplicate", domain=o.domain, source=o.source, key=o.key,
                             segments=list(o.segments),
                             trailing=rng.choice(["", "\n", "\n\n  \n"])))
    for _ in range(config.n_near_duplicates):
        o, where, (play, s, e) = rng.choice(originals)
        other = rng.choice([x for x in [*sites, None] if x is not where])
        edited = _edit_words(plays[play][s:e], config.edit_share, rng)
        d = _Draft("near_duplicate", domain=o.domain, source=play, key=o.key,
                   segments=[(edited, "content", "")])
        drafts.append(_wrap(d, other))
    used = config.n_clean
    for passage_id, copies in enumerate(config.repeat_copies):
        play, s, e = pool[used]
        used += 1
        text = plays[play]
        end = text.rfind("\n", s, min(e, s + config.passage_chars))
        end = end if end > s else min(e, s + config.passage_chars)
        passage = text[s:end]
        for _ in range(copies):
            hp, hs, he = pool[used]
            used += 1
            host = plays[hp]
            cut = host.find("\n\n", (hs + he) // 2, he)
            cut = cut if cut != -1 else he
            d = _Draft("repeated", domain=GENRES[hp], source=hp, passage=passage_id,
                       copies=copies)
            d.segments = [*_content(hp, host, hs, cut, rng, config.pii_share),
                          (passage, "repeat", str(passage_id))]
            after = cut + 2 if cut < he else he
            if after < he:
                d.segments.append((host[after:he], "content", str(after)))
            drafts.append(_wrap(d, site()))
    for _ in range(config.n_spam):
        d = _Draft("spam", segments=[(spam_text(rng, rng.randint(60, 300)), "", "")])
        drafts.append(_wrap(d, site()))
    for i in range(config.n_gibberish):
        shape = GIBBERISH_SHAPES[i % len(GIBBERISH_SHAPES)]
        d = _Draft("gibberish", lang="", segments=[(gibberish_text(rng, shape,
                                                                   rng.randint(12, 40)), "", "")])
        drafts.append(_wrap(d, site()))
    langs = sorted(WORDS)
    for i in range(config.n_foreign):
        lang = langs[i % len(langs)]
        d = _Draft("foreign", lang=lang,
                   segments=[(foreign_text(lang, rng.randint(150, 450), rng), "", "")])
        drafts.append(_wrap(d, site()))

    rng.shuffle(drafts)
    first: dict[int, int] = {}
    pages = []
    for i, d in enumerate(drafts):
        text, spans = d.assemble()
        spans = tuple(_pii_span(sp) for sp in spans)
        cluster = first.setdefault(d.key, i) if d.key >= 0 else i
        pages.append(Page(i, d.kind, d.lang, d.domain, text, d.source, cluster, d.passage,
                          d.copies, spans))
    return pages


def _pii_span(span: Span) -> Span:
    """A "pii:s:e" segment label becomes the span of the item inside the sentence."""
    if not span.label.startswith("pii:"):
        return span
    _, kind, s, e = span.label.split(":")
    return Span(span.start + int(s), span.start + int(e), kind, "")


def quality_labels(pages: list[Page]) -> list[bool]:
    """True for the pages a quality filter should drop: spam and gibberish."""
    return [p.kind in ("spam", "gibberish") for p in pages]


def duplicate_labels(pages: list[Page], near: bool = True) -> list[bool]:
    """True for the pages a deduplicator should drop: every member of a duplicate cluster after
    the first one in crawl order. With `near=False` only exact copies count (near duplicates
    are left out of the clusters, so a cluster is its clean page and its exact copies)."""
    kinds = ("clean", "exact_duplicate", "near_duplicate") if near else ("clean",
                                                                            "exact_duplicate")
    seen, out = set(), []
    for p in pages:
        member = p.kind in kinds
        out.append(member and p.cluster in seen)
        if member:
            seen.add(p.cluster)
    return out


def write_crawl(pages: list[Page], path: str | Path) -> None:
    """Write pages as JSON lines (spans as lists [start, end, label, ref]), atomically."""
    lines = []
    for p in pages:
        record = asdict(p)
        record["spans"] = [[s.start, s.end, s.label, s.ref] for s in p.spans]
        lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def read_crawl(path: str | Path) -> list[Page]:
    """Read a crawl written by `write_crawl`.

    Raises:
        ValueError: a line that is not a page (names the file, line and the problem).
    """
    pages = []
    names = [f for f in Page.__dataclass_fields__]
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if sorted(record) != sorted(names):
                raise ValueError(f"fields {sorted(record)}; a page has {names}")
            record["spans"] = tuple(Span(*s) for s in record["spans"])
            page = Page(**record)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}:{number}: not a crawl page ({e}); regenerate the file "
                             "with data/crawl/make_crawl.py") from None
        if page.kind not in PAGE_KINDS:
            raise ValueError(f"{path}:{number}: kind {page.kind!r} is not one of {PAGE_KINDS}")
        pages.append(page)
    return pages


def load_crawl() -> list[Page]:
    """The shipped crawl, data/crawl/crawl.jsonl (`CrawlConfig()`, seed 0)."""
    path = data_dir() / "crawl" / "crawl.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; regenerate it with "
                                "`python data/crawl/make_crawl.py`")
    return read_crawl(path)
