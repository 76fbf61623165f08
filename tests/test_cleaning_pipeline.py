"""The cleaning pipeline (raw / filtered / deduped corpora), the mixture texts, the memorisation
measures and the two-source mixing law of chapter 17."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minillm.data import load_corpus
from minillm.data.cleaning import ByteNGramLangID, langid_training_set, load_crawl
from minillm.data.cleaning.pipeline import PipelineConfig, clean_crawl, join_pages, mixture_text
from minillm.models import GPT, GPTConfig
from minillm.scaling.mixing import fit_mixing_law
from minillm.training.memorization import (
    extraction_rate,
    extraction_windows,
    greedy_continuations,
    verbatim_share,
)


@pytest.fixture(scope="module")
def cleaned():
    pages = load_crawl()
    langid = ByteNGramLangID().fit(
        *langid_training_set(load_corpus("shakespeare", "train")[:200_000]))
    return pages, clean_crawl(pages, langid)


def test_filtered_drops_nearly_every_non_play_page_and_few_play_pages(cleaned):
    pages, c = cleaned
    kept = c.filtered
    junk = [p.kind in ("spam", "gibberish", "foreign") for p in pages]
    assert sum(k and j for k, j in zip(kept, junk, strict=True)) <= 0.05 * sum(junk)
    lost_plays = sum(not k and not j for k, j in zip(kept, junk, strict=True))
    assert lost_plays <= 0.05 * sum(not j for j in junk)


def test_deduped_keeps_each_planted_passage_once(cleaned):
    pages, c = cleaned
    planted = {}
    for p in pages:
        for s in p.spans:
            if s.label == "repeat":
                planted.setdefault(s.ref, (p.copies, p.text[s.start:s.end]))
    raw, deduped = join_pages(c.texts("raw")), join_pages(c.texts("deduped"))
    for copies, text in planted.values():
        assert raw.count(text) == copies
        assert deduped.count(text) == 1
    # at most one page of each exact-duplicate cluster survives document-level dedup
    clusters = [p.cluster for p, k in zip(pages, c.deduped, strict=True)
                if k and p.kind in ("clean", "exact_duplicate")]
    assert len(clusters) == len(set(clusters))
    assert len(deduped) < len(join_pages(c.texts("filtered"))) < len(raw)


def test_pipeline_config_and_stage_errors(cleaned):
    with pytest.raises(ValueError, match="near_threshold"):
        PipelineConfig(near_threshold=0)
    with pytest.raises(ValueError, match="stage"):
        cleaned[1].texts("clean")


def test_mixture_text_takes_the_share_from_each_source():
    a, b = "a" * 100, "b" * 100
    text = mixture_text(a, b, 0.25, 80)
    assert text.count("a") == 60 and text.count("b") == 20
    assert mixture_text(a, b, 0.0, 80) == "a" * 80
    with pytest.raises(ValueError, match="lower total_chars"):
        mixture_text(a, b, 1.0, 150)
    with pytest.raises(ValueError, match="share_second"):
        mixture_text(a, b, 1.5, 10)


def test_extraction_windows_slide_over_the_passage():
    w = extraction_windows(b"abcdefghij", prompt_bytes=3, target_bytes=2, stride=2)
    assert w == [(b"abc", b"de"), (b"cde", b"fg"), (b"efg", b"hi")]
    with pytest.raises(ValueError, match="one window"):
        extraction_windows(b"abc", 3, 2, 1)


def test_greedy_continuations_are_the_argmax_chain():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, context_length=32, d_model=16, n_layer=1, n_head=2))
    prompts = [b"to be or", b"not to b"]
    got = greedy_continuations(model, prompts, 5)
    for p, g in zip(prompts, got, strict=True):
        ids = list(p)
        with torch.no_grad():
            for _ in range(5):
                ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
        assert g == bytes(min(i, 255) for i in ids[len(p):])
    rate = extraction_rate(model, ["x" * 40], prompt_bytes=8, target_bytes=4, stride=8)
    assert rate["windows"] == 4 and 0 <= rate["extracted"] <= 1 and 0 <= rate["matched"] <= 4


def test_verbatim_share_counts_windows_found_in_the_reference():
    ref = "the quick brown fox jumps over the lazy dog"
    assert verbatim_share(["quick brown fox", "zzzzzzzzzzzzzzz"], ref, window=5, stride=5) == 0.5
    with pytest.raises(ValueError, match="sample longer"):
        verbatim_share(["abc"], ref, window=5)


def test_mixing_law_fit_recovers_its_parameters():
    r = np.linspace(0, 1, 6)
    y = 1.5 + 2.0 * np.exp(-3.0 * r)
    fit = fit_mixing_law(r, y)
    assert fit.t == pytest.approx(-3.0, abs=0.02)
    assert fit.c == pytest.approx(1.5, abs=0.02) and fit.k == pytest.approx(2.0, abs=0.02)
    assert fit.rmse < 1e-3
    with pytest.raises(ValueError, match="3 distinct"):
        fit_mixing_law([0, 1, 1], [1, 2, 2])
