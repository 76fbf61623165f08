"""Cleaning a web-like crawl (chapter 17): the labelled crawl, quality filters, language
identification, deduplication and PII scrubbing, and scoring a filter against the labels."""

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
from minillm.data.cleaning.languages import LANGUAGES, foreign_text

__all__ = ["GENRES", "LANGUAGES", "PAGE_KINDS", "SPAN_LABELS", "CrawlConfig", "Page", "Span",
           "build_crawl", "duplicate_labels", "foreign_text", "load_crawl", "quality_labels",
           "read_crawl", "write_crawl"]
