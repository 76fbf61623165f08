"""minillm.evaluation's pure pieces against their formulas and independent references:
13-gram contamination (GPT-3 App. C), Min-K% Prob and ROC AUC (sklearn), ECE (a hand-computed
case), lm-eval's standard error of an accuracy."""

from __future__ import annotations

import math
import random

import pytest

from minillm.evaluation import (
    abstention_curve,
    bootstrap_stderr,
    contamination_rate,
    dirty_items,
    expected_calibration_error,
    mean_stderr,
    min_k_prob,
    ngrams,
    normalise,
    reliability_bins,
    roc_auc,
)

TRAIN = ["Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise "
         "him. The evil that men do lives after them."]


def test_normalise_and_ngrams():
    assert normalise("Lend ME your EARS; I come!") == ["lend", "me", "your", "ears", "i", "come"]
    words = list("abcdef")
    assert ngrams(words, 3) == {tuple("abc"), tuple("bcd"), tuple("cde"), tuple("def")}
    assert ngrams(words, 13) == {tuple(words)}
    with pytest.raises(ValueError, match="n=0"):
        ngrams(words, 0)


def test_an_item_is_dirty_iff_it_shares_a_13_gram():
    shared = "countrymen lend me your ears I come to bury Caesar not to praise him"  # 14 words
    near = "countrymen lend me your ears I come to bury Brutus not to praise him"   # 1 changed
    other = "What light through yonder window breaks it is the east and Juliet is the sun"
    assert dirty_items([shared, near, other], TRAIN) == [True, False, False]
    # punctuation and case do not hide an overlap
    assert dirty_items([shared.upper().replace(" ", ", ")], TRAIN) == [True]
    assert contamination_rate([shared, near, other, shared], TRAIN) == 0.5
    # with shorter n-grams the near miss shares one (e.g. "countrymen ... bury")
    assert dirty_items([near], TRAIN, n=8) == [True]


def test_short_items_are_matched_whole():
    assert dirty_items(["to bury Caesar", "to bury Brutus"], TRAIN) == [True, False]
    # whole words only, and never across two training documents
    assert dirty_items(["to bury Caes", "ury Caesar"], TRAIN) == [False, False]
    assert dirty_items(["one two", "two three"], ["zero one", "two three"]) == [False, True]


def test_min_k_prob_is_the_mean_of_the_lowest_k_percent():
    logps = [-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -2.0, -0.5, -0.6, -0.7]
    assert min_k_prob(logps, 0.2) == pytest.approx((-5.0 - 3.0) / 2)
    assert min_k_prob(logps, 0.25) == pytest.approx((-5.0 - 3.0 - 2.0) / 3)  # ceil(2.5) = 3
    assert min_k_prob(logps, 1.0) == pytest.approx(sum(logps) / len(logps))
    with pytest.raises(ValueError, match="k=0"):
        min_k_prob(logps, 0)
    with pytest.raises(ValueError, match="empty"):
        min_k_prob([], 0.2)


def test_roc_auc_matches_sklearn_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(5):
        labels = [rng.random() < 0.4 for _ in range(60)]
        labels[0], labels[1] = True, False
        scores = [round(rng.gauss(0.8 * y, 1.0), 1) for y in labels]  # rounding makes ties
        assert roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1]) == 1.0
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc([0.1, 0.2], [1, 1])


def test_ece_on_a_hand_computed_case():
    conf = [0.05, 0.15, 0.35, 0.38, 0.65, 0.95, 0.95, 1.0]
    right = [0, 0, 1, 0, 1, 1, 1, 0]
    # 5 bins of 0.2: (0,.2] {.05,.15} acc 0 conf .10; (.2,.4] {.35,.38} acc .5 conf .365;
    # (.6,.8] {.65} acc 1 conf .65; (.8,1] {.95,.95,1.0} acc 2/3 conf .9667
    expected = (2 * 0.10 + 2 * abs(0.5 - 0.365) + 1 * 0.35 + 3 * abs(2 / 3 - 2.9 / 3)) / 8
    assert expected_calibration_error(conf, right, n_bins=5) == pytest.approx(expected)
    bins = reliability_bins(conf, right, n_bins=5)
    assert [b.count for b in bins] == [2, 2, 0, 1, 3]
    assert math.isnan(bins[2].accuracy)
    assert bins[4].confidence == pytest.approx(2.9 / 3)
    # a perfectly calibrated set has ECE 0
    assert expected_calibration_error([0.5, 0.5, 1.0], [1, 0, 1], n_bins=2) == pytest.approx(0)
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error([1.2], [1])


def test_abstention_trades_coverage_for_accuracy():
    conf, right = [0.9, 0.8, 0.6, 0.3], [1, 1, 0, 0]
    rows = abstention_curve(conf, right, [0.0, 0.7, 0.95])
    assert [r["coverage"] for r in rows] == [1.0, 0.5, 0.0]
    assert rows[0]["accuracy"] == 0.5
    assert rows[1]["accuracy"] == 1.0
    assert [r["confident_wrong"] for r in rows] == [0.5, 0.0, 0.0]


def test_stderr_of_an_accuracy_is_lm_evals():
    lm_metrics = pytest.importorskip("lm_eval.api.metrics")
    scores = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0]
    p, n = sum(scores) / len(scores), len(scores)
    assert mean_stderr(scores) == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))
    assert mean_stderr(scores) == pytest.approx(lm_metrics.mean_stderr(scores))
    # the bootstrap estimate of the same thing is close (resampling noise ~ 1/sqrt(iters))
    boot = bootstrap_stderr(lambda xs: sum(xs) / len(xs), scores, iters=4000)
    assert boot == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        mean_stderr([1])
