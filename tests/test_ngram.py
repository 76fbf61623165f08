import itertools
import math
from collections import Counter, defaultdict
from fractions import Fraction as Fr

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.ngram import (
    BOS,
    EOS,
    SMOOTHINGS,
    UNK,
    NGramLM,
    absolute_discount,
    count_of_counts,
    kneser_ney_discounts,
    tokenize_bytes,
    tokenize_words,
)

NORMALISED = [s for s in SMOOTHINGS if s != "stupid_backoff"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(order=0), "order=0 must be an integer >= 1"),
    (dict(smoothing="good_turing"), "smoothing='good_turing' is unknown"),
    (dict(k=0), "k=0 must be positive"),
    (dict(discount=1.5), "discount=1.5 must be in"),
    (dict(backoff=0), "backoff=0 must be in"),
    (dict(tokenizer="bpe"), "tokenizer='bpe'"),
])
def test_config_validation_names_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NGramLM(**kwargs)


def test_unfitted_model_and_empty_data_raise_clearly():
    with pytest.raises(ValueError, match="not fitted"):
        NGramLM(2).prob("a")
    with pytest.raises(ValueError, match="non-empty"):
        NGramLM(2).fit([[]])
    with pytest.raises(ValueError, match="no tokenizer"):
        NGramLM(2).fit([["a"]]).bits_per_byte("a")


# ---- the pure functions ------------------------------------------------------------------------
def test_count_of_counts():
    np.testing.assert_array_equal(count_of_counts([1, 1, 2, 3, 7, 4, 4, 4]), [2, 1, 1, 3])


def test_chen_goodman_discounts_by_hand():
    # n = (10, 4, 2, 1): Y = 10/18 = 5/9; D1 = 1 - 2(5/9)(4/10) = 5/9;
    # D2 = 2 - 3(5/9)(2/4) = 7/6; D3+ = 3 - 4(5/9)(1/2) = 17/9.
    d = kneser_ney_discounts([10, 4, 2, 1])
    np.testing.assert_allclose(d, [5 / 9, 7 / 6, 17 / 9], rtol=1e-12)
    assert absolute_discount([10, 4]) == pytest.approx(5 / 9)


def test_discounts_fall_back_and_clip_when_counts_of_counts_vanish():
    # n3 = n4 = 0: D2 = 2 - 3Y*0/n2 = 2 (in range), D3+ undefined -> Y.
    d = kneser_ney_discounts([5, 2, 0, 0])
    np.testing.assert_allclose(d, [5 / 9, 2.0, 5 / 9])
    assert absolute_discount([0, 0]) == absolute_discount([0, 3]) == 0.5
    assert kneser_ney_discounts([0, 0, 1, 3])[2] == 0.5         # 3 - 4(0.5)(3/1) < 0 -> Y
    for n in itertools.product(range(4), repeat=4):
        d1, d2, d3 = kneser_ney_discounts(n)
        assert 0 < d1 <= 1 and 0 < d2 <= 2 and 0 < d3 <= 3


# ---- a tiny corpus computed by hand ------------------------------------------------------------
TINY = [["a", "b"], ["a", "c"], ["b", "c"]]
# Bigram events (one <s> of padding): a|<s> x2, b|<s>, b|a, c|a, </s>|b, c|b, </s>|c x2.
# Bigram counts-of-counts: n1 = 5, n2 = 2 -> D = 5/(5 + 4) = 5/9.
# Unigram continuation counts N1+(. w): a 1 ({<s>}), b 2, c 2, </s> 2; total 7; n1 = 1, n2 = 3
# -> D = 1/7. Predictable vocabulary: </s>, <unk>, a, b, c (|V| = 5).


def test_tiny_example_kneser_ney_by_hand():
    lm = NGramLM(2, "kneser_ney").fit(TINY)
    assert lm.vocab == [BOS, EOS, UNK, "a", "b", "c"]
    np.testing.assert_allclose([lm.discounts[0][0], lm.discounts[1][0]], [1 / 7, 5 / 9])
    # unigram: gamma = (1/7) * 4 / 7 = 4/49; P(a) = (1 - 1/7)/7 + (4/49)/5 = 34/245
    p1 = {"a": Fr(34, 245), "b": Fr(69, 245), "c": Fr(69, 245), EOS: Fr(69, 245), UNK: Fr(4, 245)}
    # P(c | a) = (1 - 5/9)/2 + gamma(a) P1(c), gamma(a) = (5/9) * 2 / 2
    # P(a | <s>) = (2 - 5/9)/3 + gamma(<s>) P1(a), gamma(<s>) = (5/9) * 2 / 3
    cases = {("c", "a"): Fr(4, 9) / 2 + Fr(5, 9) * p1["c"],
             ("a", BOS): Fr(13, 9) / 3 + Fr(10, 27) * p1["a"],
             (UNK, "a"): Fr(5, 9) * p1[UNK],
             ("a", "zebra"): p1["a"]}                      # unseen context: the unigram
    assert cases[("c", "a")] == Fr(167, 441) and cases[("a", BOS)] == Fr(235, 441)
    for (w, h), expected in cases.items():
        assert lm.prob(w, [h]) == pytest.approx(float(expected), abs=1e-12)
    for w, expected in p1.items():
        assert lm.prob(w, []) == pytest.approx(float(expected), abs=1e-12)
    assert lm.prob(BOS, ["a"]) == 0.0


def test_tiny_example_modified_kneser_ney_by_hand():
    lm = NGramLM(2, "modified_kneser_ney").fit(TINY)
    # unigram n = (1, 3, 0, 0): Y = 1/7, D1 = 1 - 2(1/7)(3) = 1/7, D2 = 2, D3+ -> Y = 1/7
    # bigram  n = (5, 2, 0, 0): Y = 5/9, D1 = 1 - 2(5/9)(2/5) = 5/9, D2 = 2, D3+ -> 5/9
    np.testing.assert_allclose(lm.discounts, [[1 / 7, 2, 1 / 7], [5 / 9, 2, 5 / 9]])
    # unigram gamma = (1/7 * 1 + 2 * 3) / 7 = 43/49; P(a) = (6/7)/7 + (43/49)/5 = 73/245,
    # P(b) = P(c) = P(</s>) = P(<unk>) = 43/245
    assert lm.prob("a", []) == pytest.approx(73 / 245, abs=1e-12)
    assert lm.prob("b", []) == pytest.approx(43 / 245, abs=1e-12)
    # P(c | a) = (1 - 5/9)/2 + (5/9 * 2 / 2) * 43/245 = 47/147
    assert lm.prob("c", ["a"]) == pytest.approx(47 / 147, abs=1e-12)
    # P(a | <s>) = max(2 - 2, 0)/3 + ((5/9 + 2)/3) * 73/245 = 1679/6615
    assert lm.prob("a", [BOS]) == pytest.approx(1679 / 6615, abs=1e-12)


def test_tiny_example_other_smoothings_by_hand():
    V = 5
    assert NGramLM(2, "mle").fit(TINY).prob("c", ["a"]) == 0.5
    assert NGramLM(2, "mle").fit(TINY).prob("a", ["c"]) == 0.0            # the zero problem
    assert NGramLM(2, "add_k", k=1).fit(TINY).prob("a", ["c"]) == pytest.approx(1 / (2 + V))
    sb = NGramLM(2, "stupid_backoff").fit(TINY)
    assert sb.prob("c", ["a"]) == pytest.approx(0.5)
    assert sb.prob("a", ["c"]) == pytest.approx(0.4 * 2 / 9)             # 0.4 * c(a)/N
    assert sb.next_distribution(["a"]).sum() > 1                          # not normalised


# ---- every smoothed model is a distribution, for any context -----------------------------------
corpora = st.lists(st.lists(st.integers(0, 6), max_size=12), min_size=1, max_size=6).filter(
    lambda seqs: any(seqs))
contexts = st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 99, BOS, EOS]), max_size=5)


@settings(max_examples=60, deadline=None)
@given(corpus=corpora, order=st.integers(1, 5), smoothing=st.sampled_from(NORMALISED),
       context_list=st.lists(contexts, min_size=1, max_size=4))
def test_every_smoothed_distribution_sums_to_one(corpus, order, smoothing, context_list):
    lm = NGramLM(order, smoothing).fit(corpus)
    for context in context_list + [None, list(corpus[0])]:
        p = lm.next_distribution(context)
        assert p.shape == (lm.vocab_size,)
        assert abs(p.sum() - 1.0) < 1e-9
        assert (p >= 0).all() and p[lm.index[BOS]] == 0
        if smoothing != "mle":
            assert (p[1:] > 0).all()
        np.testing.assert_allclose([lm.prob(w, context) for w in lm.vocab], p, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(corpus=corpora, order=st.integers(1, 4))
def test_perplexity_is_exp_mean_nll_of_the_per_token_probabilities(corpus, order):
    lm = NGramLM(order, "modified_kneser_ney").fit(corpus)
    seq = corpus[0] + [3, 42]
    ctx = [BOS] * (order - 1)
    nll = []
    for tok in seq + [EOS]:
        nll.append(-math.log(lm.prob(tok, ctx)))
        ctx = ctx + [tok]
    assert lm.perplexity(seq) == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-9)


# ---- parity with a plain dictionary implementation ---------------------------------------------
def reference_kneser_ney(sequences, order, modified):
    """Interpolated (modified) Kneser-Ney written plainly with dicts, same conventions."""
    grams = [None] + [Counter() for _ in range(order)]   # grams[n][(h..., w)] raw counts
    for s in sequences:
        padded = [BOS] * (order - 1) + list(s) + [EOS]
        for i in range(order - 1, len(padded)):
            for n in range(1, order + 1):
                if n >= 3 and padded[i - n + 2] == BOS:   # never reach back past the first <s>
                    break
                grams[n][tuple(padded[i - n + 1:i + 1])] += 1
    counts = [None] + [dict(g) for g in grams[1:]]
    for n in range(1, order):                             # continuation counts
        cont = Counter(g[1:] for g in grams[n + 1])
        counts[n] = {g: (grams[n][g] if n >= 2 and g[0] == BOS else cont[g]) for g in grams[n]}
    discounts, ctx_total, ctx_nr = [None], [None], [None]
    for n in range(1, order + 1):
        coc = Counter(counts[n].values())
        n1, n2, n3, n4 = (coc[i] for i in range(1, 5))
        y = n1 / (n1 + 2 * n2) if n1 else 0.5
        if modified:
            d = [i - (i + 1) * y * nn / ni if ni else y
                 for i, ni, nn in ((1, n1, n2), (2, n2, n3), (3, n3, n4))]
            d = [x if x > 0 else y for x in d]
        else:
            d = [y] * 3
        discounts.append(d)
        tot, nr = defaultdict(int), defaultdict(lambda: [0, 0, 0])
        for g, c in counts[n].items():
            tot[g[:-1]] += c
            nr[g[:-1]][min(c, 3) - 1] += 1
        ctx_total.append(tot)
        ctx_nr.append(nr)
    vocab_pred = {w for g in grams[1] for w in g} | {UNK}

    def prob(w, h):
        p = 1 / len(vocab_pred)
        for n in range(1, len(h) + 2):
            ctx = tuple(h[len(h) - n + 1:]) if n > 1 else ()
            total = ctx_total[n].get(ctx, 0)
            if total == 0:
                continue
            c = counts[n].get(ctx + (w,), 0)
            d = discounts[n]
            dc = d[min(c, 3) - 1] if c else 0
            gamma = sum(di * ni for di, ni in zip(d, ctx_nr[n][ctx], strict=True)) / total
            p = max(c - dc, 0) / total + gamma * p
        return p
    return prob


@settings(max_examples=25, deadline=None)
@given(corpus=corpora, order=st.integers(1, 4), modified=st.booleans(), context=contexts)
def test_kneser_ney_matches_a_plain_dict_implementation(corpus, order, modified, context):
    lm = NGramLM(order, "modified_kneser_ney" if modified else "kneser_ney").fit(corpus)
    ref = reference_kneser_ney(corpus, order, modified)
    h = [t if t in lm.index else UNK for t in context][max(0, len(context) - order + 1):]
    h = h if order > 1 else []
    for w in [0, 1, 3, 6, EOS, UNK]:
        assert lm.prob(w, context) == pytest.approx(ref(w if w in lm.index else UNK, h), abs=1e-12)


def test_kneser_ney_uses_continuation_counts_san_francisco():
    # "francisco" is frequent but follows only "san"; "glasses" is rarer but follows many words
    seqs = [["san", "francisco"]] * 6 + [[w, "glasses"] for w in ["my", "his", "her", "reading"]]
    kn = NGramLM(2, "kneser_ney").fit(seqs)
    mle = NGramLM(1, "mle").fit(seqs)
    assert mle.prob("francisco") > mle.prob("glasses")
    assert kn.prob("francisco", ["the"]) < kn.prob("glasses", ["the"])    # unseen context


def test_jelinek_mercer_weights_maximise_heldout_likelihood():
    rng = np.random.default_rng(0)
    train = [list(rng.integers(0, 8, 30) // rng.integers(1, 3)) for _ in range(40)]
    held = [list(rng.integers(0, 8, 30) // rng.integers(1, 3)) for _ in range(10)]
    lm = NGramLM(3, "jelinek_mercer").fit(train, heldout=held)
    best = lm.log_probs(held).sum()
    lam = lm.lambdas.copy()
    for i in range(3):
        for delta in (-0.05, 0.05):
            lm.lambdas = lam.copy()
            lm.lambdas[i] = np.clip(lam[i] + delta, 1e-6, 1 - 1e-6)
            assert lm.log_probs(held).sum() <= best + 1e-2   # EM creeps to a boundary
    assert NGramLM(3, "jelinek_mercer").fit(train).lambdas is not None   # held out internally


def test_unknown_tokens_and_vocabulary_limits():
    lm = NGramLM(2, "kneser_ney", min_count=2).fit([["a", "a", "b", "c", "c"]])
    assert set(lm.vocab) == {BOS, EOS, UNK, "a", "c"}
    assert lm.prob("b", ["a"]) == lm.prob("zzz", ["a"]) == lm.prob(UNK, ["a"]) > 0
    assert NGramLM(1, max_vocab=1).fit([["a", "a", "b"]]).vocab == [BOS, EOS, UNK, "a"]


# ---- text, bytes and sampling ------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_word_tokenizer_is_lossless(text):
    assert "".join(tokenize_words(text)) == text


def test_word_tokenizer_attaches_spaces_like_gpt2():
    assert tokenize_words("Hi, you.\n  O'er") == ["Hi", ",", " you", ".", "\n", " ", " O'er"]


def test_bits_per_byte_is_total_bits_over_bytes_and_charges_unknown_words():
    lm = NGramLM(2, "kneser_ney", tokenizer="bytes").fit_text("abracadabra")
    text = "abra"
    bits = -sum(math.log2(lm.prob(t, [h])) for h, t in
                zip([BOS, *tokenize_bytes(text)], [*tokenize_bytes(text), EOS], strict=True))
    assert lm.bits_per_byte(text) == pytest.approx(bits / 4)
    words = NGramLM(2, "kneser_ney", tokenizer="words").fit_text("the cat sat on the mat")
    known = words.bits_per_byte(" the cat") * 8
    assert words.bits_per_byte(" the qzxv") * 9 > known + 4 * 2   # spelling costs >= 2 bits/byte


def test_sample_is_seeded_and_restarts_after_end_of_sequence():
    lm = NGramLM(3, "modified_kneser_ney").fit([list("abcab"), list("bca")])
    a, b = lm.sample(n=40, rng=0), lm.sample(n=40, rng=0)
    assert a == b and len(a) == 40 and set(a) <= set(lm.vocab) - {BOS}
    mle = NGramLM(2, "mle").fit([list("abc")])
    assert mle.sample(n=8, rng=1) == list("abc") + [EOS] + list("abc") + [EOS]


def test_real_corpus_orders_the_smoothings_as_the_textbook_says():
    from minillm.data import load_corpus

    train = tokenize_words(load_corpus("shakespeare", "train")[:1_000_000])
    valid = tokenize_words(load_corpus("shakespeare", "validation")[:100_000])
    ppl = {s: NGramLM(4, s).fit([train]).perplexity(valid)
           for s in ("add_k", "jelinek_mercer", "kneser_ney", "modified_kneser_ney")}
    assert ppl["modified_kneser_ney"] < ppl["kneser_ney"] < ppl["jelinek_mercer"] < ppl["add_k"]


def test_count_reports_raw_and_continuation_counts():
    seqs = [["san", "francisco"]] * 6 + [["my", "glasses"], ["his", "glasses"]]
    kn, mle = NGramLM(2, "kneser_ney").fit(seqs), NGramLM(2, "mle").fit(seqs)
    assert mle.count(["francisco"]) == 6 and kn.count(["francisco"]) == 1
    assert kn.count(["glasses"]) == 2 and kn.count(["san", "francisco"]) == 6
    assert kn.count(["never", "seen"]) == 0
    with pytest.raises(ValueError, match="outside orders"):
        kn.count(["a", "b", "c"])


def test_ptb_sentences():
    from minillm.ngram import ptb_sentences

    assert ptb_sentences("O'er the Hill,\n\nTWO  roads.") == [["o'er", "the", "hill"], ["two", "roads"]]


def test_num_ngrams_and_hit_rate():
    lm = NGramLM(2, "kneser_ney").fit([["a", "b"], ["a", "c"]])
    assert lm.num_ngrams(1) == 4 and lm.num_ngrams(2) == 5     # a b c </s>; <s>a ab b</s> ac c</s>
    # events a|<s>, c|a, b|c, </s>|b: only "c b" is new
    np.testing.assert_allclose(lm.hit_rate([["a", "c", "b"]]), [1.0, 0.75])


# ---- edge cases: the default held-out split, bad held-out text and discounts ------------
def test_jelinek_mercer_default_split_keeps_the_real_context():
    several = [["a", "b"] * 5] * 5          # fewer than 10 sequences: one is held out whole
    single = [["a", "b"] * 50]              # one sequence: its last tenth, scored in context
    explicit = NGramLM(3, "jelinek_mercer").fit(several, heldout=[["a", "b"] * 5])
    for corpus in (several, single):
        lm = NGramLM(3, "jelinek_mercer").fit(corpus)
        assert lm.prob("a", ["a", "b"]) > 0.75  # a near-uniform model gives 0.25
        assert lm.perplexity(corpus) < 1.5
    np.testing.assert_allclose(NGramLM(3, "jelinek_mercer").fit(several).lambdas,
                               explicit.lambdas)


def test_bad_held_out_text_and_discount_are_named():
    with pytest.raises(ValueError, match="heldout has no tokens"):
        NGramLM(2, "jelinek_mercer").fit([["a", "b"]], heldout=[])
    with pytest.raises(ValueError, match="text is empty"):
        NGramLM(2, tokenizer="bytes").fit_text("abc").bits_per_byte("")
    with pytest.raises(ValueError, match=r"discount=0 must be in \(0, 1\]"):
        NGramLM(2, "kneser_ney", discount=0)
    with pytest.raises(ValueError, match="applies to smoothing='kneser_ney' only"):
        NGramLM(2, "modified_kneser_ney", discount=0.5)


# ---- add-k tuned on held-out text, and the PTB's sentence unit --------------------------
def test_tune_add_k_curve_is_the_models_heldout_perplexity_and_its_minimum():
    from minillm.ngram import tune_add_k

    rng = np.random.default_rng(0)
    zipf = lambda n: list(np.minimum(rng.zipf(1.3, n), 60))  # noqa: E731
    train, held = [zipf(40) for _ in range(60)], [zipf(40) for _ in range(15)]
    lm, curve = tune_add_k(train, held, order=3)
    assert lm.config.k == min(curve, key=curve.get)
    assert lm.perplexity(held) == pytest.approx(curve[lm.config.k], rel=1e-9)
    for k in (1e-3, 0.1, 1.0):      # the formula equals a model refitted with that k
        refit = NGramLM(3, "add_k", k=k).fit(train).perplexity(held)
        assert curve[min(curve, key=lambda x: abs(math.log(x / k)))] == pytest.approx(refit,
                                                                                  rel=1e-9)
    assert curve[lm.config.k] < 0.9 * curve[1.0]   # tuning beats Laplace's k = 1 here
    with pytest.raises(ValueError, match="heldout has no tokens"):
        tune_add_k(train, [[]], order=2)
    with pytest.raises(ValueError, match="k_min=1, k_max=0.5"):
        tune_add_k(train, held, order=2, k_min=1, k_max=0.5)


def test_ptb_sentences_by_sentence_runs_across_lines():
    from minillm.ngram import ptb_sentences

    text = "O'er the Hill,\nand dale. Who?\n\nTWO  roads\nmeet"
    assert ptb_sentences(text, "sentence") == [["o'er", "the", "hill", "and", "dale"], ["who"],
                                               ["two", "roads", "meet"]]
    assert len(ptb_sentences(text)) == 4
    with pytest.raises(ValueError, match="unit='para'"):
        ptb_sentences(text, "para")
