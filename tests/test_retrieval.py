"""`minillm.retrieval`: BM25 against bm25s, exact vector search against faiss, dense
retrieval, and the kNN-LM against its formula (Khandelwal et al. 2020)."""

import math
import sys

import bm25s
import numpy as np
import pytest
import torch

from minillm.models import GPT, GPTConfig
from minillm.retrieval import (
    BM25,
    BM25Config,
    DenseRetriever,
    Retriever,
    VectorIndex,
    build_datastore,
    exact_search,
    import_faiss,
    interpolate_logprobs,
    knn_lm_bits_per_byte,
    knn_lm_logprobs,
    knn_logprobs,
    mean_pooled_embedder,
    spaced_blocks,
    window_states,
    word_tokens,
)
from minillm.tokenizers import ByteTokenizer
from minillm.training.evaluate import text_bits_per_byte

CORPUS = [
    "To be, or not to be, that is the question",
    "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune",
    "Or to take arms against a sea of troubles and by opposing end them",
    "Now is the winter of our discontent made glorious summer by this sun of York",
    "The quality of mercy is not strained; it droppeth as the gentle rain from heaven",
    "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him",
    "All the world's a stage, and all the men and women merely players",
    "the the the question question of of mercy",
    "A horse! a horse! my kingdom for a horse!",
]
QUERIES = ["the question of mercy", "to be or not to be", "a horse for my kingdom",
           "sea of troubles", "the winter sun", "unknown words only zzz", "the the of"]


# ---- BM25 --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire"])
@pytest.mark.parametrize("k1, b", [(1.5, 0.75), (1.2, 0.3), (0.9, 1.0), (2.0, 0.0)])
def test_bm25_scores_equal_bm25s(method, k1, b):
    tokens = [word_tokens(d) for d in CORPUS]
    reference = bm25s.BM25(k1=k1, b=b, method=method)
    reference.index(tokens, show_progress=False)
    ours = BM25(CORPUS, BM25Config(k1=k1, b=b, method=method))
    for q in QUERIES:
        expected = reference.get_scores(word_tokens(q))
        np.testing.assert_allclose(ours.scores(q), expected, rtol=1e-5, atol=1e-6)
    assert ours.scores("the question of mercy").max() > 0


def test_bm25_equals_the_formula_by_hand():
    docs = [["a", "b", "a"], ["b", "c"], ["c", "c", "c", "d"]]
    k1, b = 1.2, 0.75
    avgdl = (3 + 2 + 4) / 3
    idf_a = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))             # "a" is in 1 of 3 documents
    idf_b = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    tf_part = 2 / (2 + k1 * (1 - b + b * 3 / avgdl))            # "a" twice in a 3-token doc
    expected0 = idf_a * tf_part + idf_b * 1 / (1 + k1 * (1 - b + b * 3 / avgdl))
    scores = BM25(docs, BM25Config(k1=k1, b=b)).scores(["a", "b"])
    assert scores[0] == pytest.approx(expected0, rel=1e-12)
    assert scores[2] == 0.0
    atire = BM25(docs, BM25Config(k1=k1, b=b, method="atire")).scores(["d"])
    assert atire[2] == pytest.approx(math.log(3) * (k1 + 1) / (1 + k1 * (1 - b + b * 4 / avgdl)))


def test_bm25_search_ranks_by_score_with_ties_to_the_lower_id():
    index = BM25(CORPUS)
    hits = index.search("a horse for my kingdom", k=3)
    assert hits[0][0] == 8 and isinstance(index, Retriever)
    scores = index.scores("a horse for my kingdom")
    assert [s for _, s in hits] == sorted(scores, reverse=True)[:3]
    tied = BM25(["xx yy", "yy xx", "zz"]).search("xx", k=3)
    assert [i for i, _ in tied] == [0, 1, 2] and tied[0][1] == tied[1][1] > tied[2][1] == 0
    assert len(index.search("horse", k=100)) == len(CORPUS)


def test_bm25_bad_input_raises():
    with pytest.raises(ValueError, match="k1=-1"):
        BM25Config(k1=-1)
    with pytest.raises(ValueError, match="b=2"):
        BM25Config(b=2)
    with pytest.raises(ValueError, match="method='okapi'"):
        BM25Config(method="okapi")
    with pytest.raises(ValueError, match="documents is empty"):
        BM25([])
    with pytest.raises(ValueError, match="every document is empty"):
        BM25(["!", "a"])
    with pytest.raises(ValueError, match="k=0"):
        BM25(CORPUS).search("x", 0)


# ---- exact vector search: torch and faiss ------------------------------------------------


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_torch_exact_search_equals_faiss_and_brute_force(metric):
    g = torch.Generator().manual_seed(0)
    vectors, queries = torch.randn(500, 24, generator=g), torch.randn(40, 24, generator=g)
    d_t, i_t = VectorIndex(vectors, metric, "torch").search(queries, 7)
    d_f, i_f = VectorIndex(vectors, metric, "faiss").search(queries, 7)
    assert torch.equal(i_t, i_f)
    torch.testing.assert_close(d_t, d_f, rtol=1e-4, atol=1e-4)
    # brute force in float64 is the independent truth for both
    full = ((queries[:, None].double() - vectors[None].double()) ** 2).sum(-1) if metric == "l2" \
        else queries.double() @ vectors.double().T
    truth = full.topk(7, dim=-1, largest=metric == "ip")
    assert torch.equal(i_t, truth.indices)
    torch.testing.assert_close(d_t.double(), truth.values, rtol=1e-5, atol=1e-5)
    d_c, i_c = exact_search(queries, vectors, 7, metric, chunk=3)   # chunking changes nothing
    assert torch.equal(i_c, i_t)
    torch.testing.assert_close(d_c, d_t, rtol=1e-6, atol=1e-6)   # matmul blocking: last bits


def test_ivf_index_scanning_every_cell_is_exact_and_fewer_cells_approximate():
    g = torch.Generator().manual_seed(1)
    vectors, queries = torch.randn(2000, 16, generator=g), torch.randn(50, 16, generator=g)
    d_x, i_x = VectorIndex(vectors, "l2", "torch").search(queries, 5)
    d_all, i_all = VectorIndex(vectors, "l2", "faiss", nlist=16, nprobe=16).search(queries, 5)
    assert torch.equal(i_all, i_x)
    torch.testing.assert_close(d_all, d_x, rtol=1e-4, atol=1e-4)
    d_one, i_one = VectorIndex(vectors, "l2", "faiss", nlist=16, nprobe=1).search(queries, 5)
    found = (i_one[:, :, None] == i_x[:, None, :]).any(-1).float().mean().item()
    assert 0.2 < found < 1.0                      # scans 1/16 of the store: misses some
    assert (d_one >= d_x - 1e-4).all()            # never closer than the true neighbours
    # a cell with fewer than k vectors: the rest are filled with id 0 and an infinite distance
    d_few, i_few = VectorIndex(vectors[:40], "l2", "faiss", nlist=20, nprobe=1).search(
        queries, 30)
    assert torch.isinf(d_few).any() and (i_few[torch.isinf(d_few)] == 0).all()
    with pytest.raises(ValueError, match="nprobe=0"):
        VectorIndex(vectors, "l2", "faiss", nlist=4, nprobe=0)
    with pytest.raises(ValueError, match="needs backend='faiss'"):
        VectorIndex(vectors, "l2", "torch", nlist=4)
    with pytest.raises(ValueError, match="nlist=3000 exceeds"):
        VectorIndex(vectors, "l2", "faiss", nlist=3000)


def test_knn_distribution_of_a_query_with_no_neighbour_leaves_the_model_alone():
    lm = torch.log_softmax(torch.randn(2, 7), -1)
    dist = torch.tensor([[0.5, float("inf")], [float("inf"), float("inf")]])
    knn = knn_logprobs(dist, torch.tensor([[3, 0], [0, 0]]), 7)
    assert knn[0, 3] == 0 and torch.isinf(knn[1]).all()
    mixed = interpolate_logprobs(lm, knn, 0.25)
    torch.testing.assert_close(mixed[1], lm[1] + math.log(0.75))
    assert not torch.isnan(mixed).any()


def test_spaced_blocks_takes_even_pieces():
    assert spaced_blocks("aaaabbbbccccdddd", 4, 2) == "aabbccdd"
    with pytest.raises(ValueError, match="exceed"):
        spaced_blocks("abc", 2, 2)


def test_vector_index_bad_input_and_missing_faiss(monkeypatch):
    v = torch.randn(5, 3)
    with pytest.raises(ValueError, match="metric='cos'"):
        VectorIndex(v, "cos")
    with pytest.raises(ValueError, match="backend='gpu'"):
        VectorIndex(v, backend="gpu")
    with pytest.raises(ValueError, match="NaN"):
        VectorIndex(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="k=6 exceeds the 5"):
        VectorIndex(v, backend="torch").search(v, 6)
    monkeypatch.setitem(sys.modules, "faiss", None)      # as if faiss were not installed
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        import_faiss()
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        VectorIndex(v, backend="faiss")
    assert VectorIndex(v).backend == "torch"             # auto falls back


# ---- dense retrieval ---------------------------------------------------------------------


def _bag_of_letters(texts):
    """A transparent embedding: letter counts a-z."""
    out = torch.zeros(len(texts), 26)
    for i, t in enumerate(texts):
        for ch in t.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - 97] += 1
    return out


@pytest.mark.parametrize("similarity", ["cosine", "ip", "l2"])
def test_dense_retrieval_ranks_by_the_similarity_and_backends_agree(similarity):
    faiss_r = DenseRetriever(CORPUS, _bag_of_letters, similarity, backend="faiss")
    torch_r = DenseRetriever(CORPUS, _bag_of_letters, similarity, backend="torch")
    for q in QUERIES:
        a, b = faiss_r.search(q, 4), torch_r.search(q, 4)   # (letter counts tie: ids may swap)
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=1e-4, atol=1e-4)
        e, d = _bag_of_letters([q])[0], _bag_of_letters(CORPUS)
        expected = {"cosine": torch.nn.functional.cosine_similarity(d, e[None], dim=-1),
                    "ip": d @ e, "l2": -((d - e) ** 2).sum(-1)}[similarity]
        top = sorted(range(len(CORPUS)), key=lambda i: (-float(expected[i]), i))[:4]
        np.testing.assert_allclose([s for _, s in b], expected[top].numpy(), rtol=1e-5, atol=1e-4)
    assert isinstance(torch_r, Retriever)


def test_mean_pooled_embedder_averages_the_final_hidden_states():
    tok = ByteTokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, context_length=16, d_model=32, n_layer=1, n_head=2))
    embed = mean_pooled_embedder(model, tok)
    vecs = embed(["hello", "a much longer text than the context"])
    assert vecs.shape == (2, 32)
    with torch.no_grad():
        h = model(torch.tensor([tok.encode("hello")])).hidden_states[0]
        h_long = model(torch.tensor([tok.encode("a much longer text than the context")[:16]]))
    torch.testing.assert_close(vecs[0], h.mean(0))
    torch.testing.assert_close(vecs[1], h_long.hidden_states[0].mean(0))
    retriever = DenseRetriever(CORPUS, embed, backend="torch")
    assert retriever.search(CORPUS[3], 1)[0][0] == 3        # a document finds itself
    with pytest.raises(ValueError, match="no tokens"):
        embed([""])


def test_dense_bad_input_raises():
    with pytest.raises(ValueError, match="similarity='dot'"):
        DenseRetriever(CORPUS, _bag_of_letters, "dot")
    with pytest.raises(ValueError, match="one row per text"):
        DenseRetriever(CORPUS, lambda texts: torch.zeros(2, 3))
    with pytest.raises(ValueError, match="documents is empty"):
        DenseRetriever([], _bag_of_letters)


# ---- kNN-LM ------------------------------------------------------------------------------

TEXT = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to "
        "suffer the slings and arrows of outrageous fortune, or to take arms against a sea.")


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, context_length=32, d_model=32, n_layer=2, n_head=4))
    return model.eval()


def test_knn_distribution_is_the_papers_formula():
    d = torch.tensor([[0.5, 1.0, 2.0, 0.7]])
    tokens = torch.tensor([[3, 1, 3, 0]])
    logp = knn_logprobs(d, tokens, 5, temperature=2.0)
    w = torch.exp(-d[0].double() / 2.0)
    expected = torch.zeros(5, dtype=torch.float64)
    for wi, ti in zip(w, tokens[0], strict=True):
        expected[ti] += wi
    expected /= w.sum()
    torch.testing.assert_close(logp[0].exp().double(), expected)
    assert logp[0, 2] == -math.inf and logp[0, 4] == -math.inf     # nobody's next token
    # large distances (no underflow to 0/0): still a distribution
    far = knn_logprobs(d + 1e4, tokens, 5)
    torch.testing.assert_close(far.exp().sum(-1), torch.ones(1))


def test_interpolation_in_log_space():
    g = torch.Generator().manual_seed(1)
    lm_lp = torch.log_softmax(torch.randn(4, 7, generator=g), -1)
    knn = knn_logprobs(torch.rand(4, 3, generator=g), torch.randint(0, 7, (4, 3), generator=g), 7)
    for lam in (0.0, 0.25, 0.9, 1.0):
        mixed = interpolate_logprobs(lm_lp, knn, lam)
        expected = lam * knn.double().exp() + (1 - lam) * lm_lp.double().exp()
        torch.testing.assert_close(mixed.double().exp(), expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(interpolate_logprobs(lm_lp, knn, 0.0), lm_lp)


@pytest.fixture(scope="module")
def datastore(lm):
    tok = ByteTokenizer()
    return build_datastore(lm, tok.encode(TEXT), tok.eot_id, backend="torch")


def test_datastore_holds_every_prediction_once(lm, datastore):
    tok = ByteTokenizer()
    ids = tok.encode(TEXT)
    assert len(datastore) == len(ids) and sorted(datastore.values.tolist()) == sorted(ids)
    # the key of the first prediction is the hidden state of <|endoftext|> alone
    with torch.no_grad():
        h = lm(torch.tensor([[tok.eot_id]])).hidden_states[0, 0]
    assert datastore.values[0] == ids[0]
    torch.testing.assert_close(datastore.keys[0], h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.25, 1.0])
def test_knn_lm_probabilities_sum_to_one_and_lambda_ends(lm, datastore, lam):
    tok = ByteTokenizer()
    query = tok.encode("not to be, that is")
    hidden, lm_lp, _ = next(window_states(lm, query, tok.eot_id))
    with torch.no_grad():   # the base model's log-probs, computed independently
        base = torch.log_softmax(lm(torch.tensor([[tok.eot_id] + query])).logits[0, :-1].float(),
                                 -1)
    torch.testing.assert_close(lm_lp, base, rtol=1e-5, atol=1e-5)
    logp = knn_lm_logprobs(lm_lp, hidden, datastore, k=8, lam=lam)
    torch.testing.assert_close(logp.double().exp().sum(-1), torch.ones(len(query),
                               dtype=torch.float64), rtol=1e-5, atol=1e-5)
    if lam == 0.0:
        assert torch.equal(logp, lm_lp)                         # exactly the base model
    if lam == 1.0:
        _, ids = datastore.index.search(hidden, 8)
        named = torch.zeros_like(logp, dtype=torch.bool).scatter_(1, datastore.values[ids], True)
        assert torch.isinf(logp[~named]).all()                  # all mass on the neighbours'
        torch.testing.assert_close(logp.exp().masked_fill(~named, 0).sum(-1),
                                   torch.ones(len(query)))


def test_faiss_and_torch_datastores_agree(lm, datastore):
    tok = ByteTokenizer()
    faiss_store = build_datastore(lm, tok.encode(TEXT), tok.eot_id, backend="faiss")
    assert faiss_store.index.backend == "faiss"
    hidden, lm_lp, _ = next(window_states(lm, tok.encode("the slings and arrows"), tok.eot_id))
    d_f, i_f = faiss_store.index.search(hidden, 5)
    d_t, i_t = datastore.index.search(hidden, 5)
    assert torch.equal(i_f, i_t)
    torch.testing.assert_close(d_f, d_t, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(knn_lm_logprobs(lm_lp, hidden, faiss_store, k=5),
                               knn_lm_logprobs(lm_lp, hidden, datastore, k=5),
                               rtol=1e-4, atol=1e-4)


def test_bits_per_byte_at_lambda_zero_is_the_course_metric_and_memory_helps(lm, datastore):
    text = TEXT[:120]
    base = text_bits_per_byte(lm, text)
    for stride in (None, 8):            # two window walks: the default (half) and a short one
        ours = knn_lm_bits_per_byte(lm, text, datastore, lam=0.0, stride=stride)
        assert ours == pytest.approx(text_bits_per_byte(lm, text, stride=stride), rel=1e-5)
    assert knn_lm_bits_per_byte(lm, text, datastore, lam=0.0) == pytest.approx(base, rel=1e-5)
    # the datastore holds this very text: the nearest key is the query itself, whose value is
    # the true next token, so mixing it in lowers the loss (the paper's memorisation effect)
    remembered = knn_lm_bits_per_byte(lm, TEXT, datastore, k=1, lam=0.25)
    assert remembered < text_bits_per_byte(lm, TEXT) - 0.2
    # and the exact value: log2 of (λ + (1 - λ) p_LM(true)) per token, as the formula says
    tok = ByteTokenizer()
    ids = tok.encode(TEXT)
    with torch.no_grad():
        lp = torch.cat([lp.gather(-1, y[:, None])[:, 0]
                        for _, lp, y in window_states(lm, ids, tok.eot_id)])
    expected = -torch.log2(0.25 + 0.75 * lp.double().exp()).sum().item() / len(ids)
    assert remembered == pytest.approx(expected, rel=1e-4)


def test_knn_lm_bad_input_raises(lm, datastore):
    tok = ByteTokenizer()
    hidden, lm_lp, _ = next(window_states(lm, tok.encode("abc"), tok.eot_id))
    with pytest.raises(ValueError, match="lam=1.5"):
        knn_lm_logprobs(lm_lp, hidden, datastore, lam=1.5)
    with pytest.raises(ValueError, match="k=0"):
        knn_lm_logprobs(lm_lp, hidden, datastore, k=0)
    with pytest.raises(ValueError, match="temperature=0"):
        knn_lm_logprobs(lm_lp, hidden, datastore, temperature=0)
    with pytest.raises(ValueError, match="vocabulary"):
        knn_lm_logprobs(lm_lp[:, :100], hidden, datastore)
    with pytest.raises(ValueError, match="empty"):
        knn_lm_bits_per_byte(lm, "", datastore)
    with pytest.raises(ValueError, match="stride=40"):
        knn_lm_bits_per_byte(lm, "abc", datastore, stride=40)
