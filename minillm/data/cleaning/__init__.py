"""Cleaning a web-like crawl (chapter 17): the labelled crawl (`crawl`, made from the training
plays by `webtext` and `languages`), quality filters (`heuristics`: Gopher's rules;
`perplexity`: CCNet's filter given a scorer), language identification (`langid`), exact,
near-duplicate and exact-substring deduplication (`dedup`, `minhash`, `suffix_array`), PII
scrubbing (`pii`), scoring any filter against the labels (`metrics`), and the pipeline that
makes chapter 17's raw / filtered / deduplicated corpora (`pipeline`)."""

from minillm.data.cleaning.crawl import (
    GENRES,
    PAGE_KINDS,
    SPAN_LABELS,
    CrawlConfig,
    Page,
    Span,
    build_crawl,
    duplicate_labels,
    load_crawl,
    quality_labels,
    read_crawl,
    write_crawl,
)
from minillm.data.cleaning.dedup import exact_duplicates, normalize_text, text_key
from minillm.data.cleaning.heuristics import (
    GOPHER_RULES,
    GopherConfig,
    gopher_keep,
    gopher_rules,
    gopher_stats,
)
from minillm.data.cleaning.langid import (
    ByteNGramLangID,
    LangIDConfig,
    keep_language,
    langid_training_set,
)
from minillm.data.cleaning.languages import LANGUAGES, foreign_text
from minillm.data.cleaning.metrics import FilterScore, score_filter
from minillm.data.cleaning.minhash import (
    candidate_pairs,
    estimated_jaccard,
    jaccard,
    lsh_params,
    minhash_signature,
    minhash_signatures,
    near_duplicates,
    shingles,
)
from minillm.data.cleaning.perplexity import (
    ccnet_buckets,
    perplexity_keep,
    perplexity_scores,
    threshold_for_share,
)
from minillm.data.cleaning.pii import PII_TOKENS, find_pii, scrub_pii
from minillm.data.cleaning.pipeline import (
    STAGES,
    CleanedCrawl,
    PipelineConfig,
    clean_crawl,
    join_pages,
    mixture_text,
)
from minillm.data.cleaning.suffix_array import (
    lcp_array,
    remove_spans,
    repeated_spans,
    suffix_array,
)

__all__ = ["GENRES", "GOPHER_RULES", "LANGUAGES", "PAGE_KINDS", "PII_TOKENS", "SPAN_LABELS",
           "STAGES", "ByteNGramLangID", "CleanedCrawl", "CrawlConfig", "PipelineConfig",
           "FilterScore", "GopherConfig", "LangIDConfig", "Page", "Span", "build_crawl",
           "candidate_pairs", "ccnet_buckets", "clean_crawl", "duplicate_labels",
           "estimated_jaccard", "exact_duplicates", "find_pii", "foreign_text", "gopher_keep",
           "gopher_rules", "gopher_stats", "jaccard", "join_pages", "keep_language",
           "langid_training_set", "lcp_array", "load_crawl", "lsh_params", "minhash_signature",
           "minhash_signatures", "mixture_text", "near_duplicates", "normalize_text",
           "perplexity_keep", "perplexity_scores", "quality_labels", "read_crawl", "remove_spans",
           "repeated_spans", "score_filter", "scrub_pii", "shingles", "suffix_array", "text_key",
           "threshold_for_share", "write_crawl"]
