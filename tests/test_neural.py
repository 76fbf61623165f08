import math

import pytest
import torch
import torch.nn.functional as F

from minillm.models.neural import (
    MLPLM,
    RNNLM,
    MLPLMConfig,
    RNNLMConfig,
    gradient_norm_by_distance,
)
from minillm.ngram import NGramLM
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer, evaluate_loss, lm_nll_bits, text_bits_per_byte

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("cls,kwargs,message", [
    (MLPLMConfig, dict(n_context=0), "n_context=0 must be a positive integer"),
    (MLPLMConfig, dict(dropout=1.0), "dropout=1.0 must be in"),
    (RNNLMConfig, dict(cell="transformer"), "cell='transformer' is not supported"),
    (RNNLMConfig, dict(d_hidden=-1), "d_hidden=-1 must be a positive integer"),
])
def test_config_validation_names_field_and_value(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_config_round_trips_and_rejects_unknown_fields():
    c = RNNLMConfig(cell="gru", d_hidden=8)
    assert RNNLMConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown fields"):
        MLPLMConfig.from_dict({"n_embd": 3})


def small_models():
    torch.manual_seed(0)
    return [MLPLM(MLPLMConfig(vocab_size=11, context_length=12, n_context=3, d_embed=4,
                              d_hidden=16, direct=True)),
            *[RNNLM(RNNLMConfig(vocab_size=11, context_length=12, cell=c, d_embed=4, d_hidden=8))
              for c in ("rnn", "gru", "lstm")]]


@pytest.mark.parametrize("model", small_models(), ids=["mlp", "rnn", "gru", "lstm"])
def test_shapes_loss_and_causality(model):
    x = torch.randint(0, 11, (2, 12))
    output = model(x, x)
    logits, loss = output.logits, output.loss
    assert logits.shape == (2, 12, 11)
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1), x.flatten()))
    x2 = x.clone()
    x2[:, 6] = (x2[:, 6] + 1) % 11
    changed = (model(x2).logits - logits).abs().amax(dim=(0, 2)) > 0
    assert not changed[:6].any() and changed[6]          # no position sees the future
    if isinstance(model, MLPLM):                         # and the MLP sees only n-1 = 3 tokens
        assert changed.tolist() == [False] * 6 + [True] * 3 + [False] * 3
    with pytest.raises(ValueError, match="context_length=12"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_mlp_is_bengios_equation_written_out():
    model = small_models()[0]
    x = torch.randint(0, 11, (1, 12))
    C, H, U, W = model.embed.weight, model.hidden, model.out, model.direct.weight
    t = 7
    feats = torch.cat([C[x[0, t - 2]], C[x[0, t - 1]], C[x[0, t]]])    # oldest first
    y = U.bias + W @ feats + U.weight @ torch.tanh(H.bias + H.weight @ feats)
    torch.testing.assert_close(model(x).logits[0, t], y)
    pad = C[11]                                                          # before the start
    feats0 = torch.cat([pad, pad, C[x[0, 0]]])
    y0 = U.bias + W @ feats0 + U.weight @ torch.tanh(H.bias + H.weight @ feats0)
    torch.testing.assert_close(model(x).logits[0, 0], y0)


@pytest.mark.parametrize("which", [0, 3], ids=["mlp", "lstm"])
def test_trains_with_the_trainer_and_resumes_from_its_checkpoint(which, tmp_path):
    tokens = torch.arange(400) % 7                       # a periodic sequence: easy to learn
    cfg = dict(max_steps=60, batch_size=8, lr=3e-2, warmup_steps=5, eval_interval=30,
               eval_batches=2, log_interval=10, checkpoint_interval=30, progress=False)
    model = small_models()[which]
    trainer = Trainer(model, tokens, tokens, TrainConfig(**cfg, out_dir=str(tmp_path)))
    history = trainer.fit()
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    loaded = type(model).from_checkpoint(tmp_path / "checkpoints" / "step_000060")
    x = tokens[:12][None]
    torch.testing.assert_close(loaded(x).logits, model(x).logits)
    fresh = small_models()[which]                        # resume at step 30, finish, same weights
    resumed = Trainer(fresh, tokens, tokens, TrainConfig(**cfg, out_dir=str(tmp_path / "b")))
    resumed.resume(tmp_path / "checkpoints" / "step_000030")
    resumed.fit()
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_lm_nll_bits_scores_every_token_once():
    model = small_models()[2].eval()
    ids = torch.randint(0, 10, (30,))
    seq = torch.cat([torch.tensor([10]), ids])
    # one window of length <= context_length: the plain sum of cross-entropies
    logits = model(seq[:-1][None][:, :12]).logits[0]
    expected = F.cross_entropy(logits, seq[1:13], reduction="sum").item() / math.log(2)
    assert lm_nll_bits(model, ids[:12], bos_id=10) == pytest.approx(expected, rel=1e-5)
    # an MLP with n-1 = 3 sees the same context in any window that keeps >= 2 tokens of overlap
    mlp = small_models()[0].eval()
    full = [lm_nll_bits(mlp, ids, bos_id=10, stride=s) for s in (1, 5, 10)]
    assert full == pytest.approx([full[0]] * 3, rel=1e-5)
    with torch.no_grad():
        direct = F.cross_entropy(
            torch.cat([mlp(seq[i:i + 12][None]).logits[0, -1:] if i else mlp(seq[:12][None]).logits[0]
                       for i in range(0, 19)]), seq[1:], reduction="sum")
    assert full[0] == pytest.approx(direct.item() / math.log(2), rel=1e-5)


def test_evaluate_loss_is_consecutive_windows_in_nats_per_token():
    model = small_models()[3].eval()                     # an LSTM: every window restarts its state
    torch.manual_seed(1)
    tokens = torch.randint(0, 11, (3 * 12 + 1,))         # exactly three windows of 12
    with torch.no_grad():
        per_window = [model(tokens[s:s + 12][None], tokens[s + 1:s + 13][None]).loss.item()
                      for s in (0, 12, 24)]
    assert evaluate_loss(model, tokens) == pytest.approx(sum(per_window) / 3, rel=1e-5)
    # the same walk as lm_nll_bits with tokens[0] as the start and stride = the window
    nats = lm_nll_bits(model, tokens[1:], int(tokens[0]), stride=12) * math.log(2) / 36
    assert evaluate_loss(model, tokens) == pytest.approx(nats, rel=1e-6)
    # overlapping windows give every later window more context, so a different number
    assert abs(evaluate_loss(model, tokens, stride=6) - sum(per_window) / 3) > 1e-6


def test_text_bits_per_byte_is_one_function_for_ngram_and_neural_models():
    text = "to be or not to be"
    ngram = NGramLM(3, "kneser_ney", tokenizer="bytes").fit_text("to be, or not to be: that")
    assert text_bits_per_byte(ngram, text) == ngram.bits_per_byte(text)
    model = RNNLM(RNNLMConfig(vocab_size=257, context_length=8, d_embed=4, d_hidden=8))
    ids = ByteTokenizer().encode(text)
    bits = text_bits_per_byte(model, text)
    assert bits == pytest.approx(lm_nll_bits(model, ids, bos_id=256) / len(text))
    assert bits == pytest.approx(math.log2(257), rel=0.05)   # untrained: about uniform
    with pytest.raises(ValueError, match="start token"):
        text_bits_per_byte(small_models()[0], text)


def test_a_bpe_model_is_scored_per_byte_of_the_text_not_per_token():
    from minillm.data import data_dir
    from minillm.models import GPT, GPTConfig
    from minillm.tokenizers import BPETokenizer

    tok = BPETokenizer.load(data_dir() / "tokenizers" / "shakespeare_bpe_2048")
    text = "To be, or not to be \u2014 that is the question: whether \u2019tis nobler"
    ids = tok.encode(text)
    n_bytes = len(text.encode("utf-8"))
    assert len(ids) < n_bytes - 20 and len(text) < n_bytes       # tokens < chars < bytes
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=64, d_model=32, n_layer=1,
                          n_head=2)).eval()
    seq = torch.tensor([tok.eot_id, *ids])                      # one window, <|endoftext|> first
    with torch.no_grad():
        logits = model(seq[:-1][None]).logits[0]
    total_bits = F.cross_entropy(logits, seq[1:], reduction="sum").item() / math.log(2)
    bpb = text_bits_per_byte(model, text, tok)
    assert bpb == pytest.approx(total_bits / n_bytes, rel=1e-5)
    assert bpb == pytest.approx(lm_nll_bits(model, ids, bos_id=tok.eot_id) / n_bytes, rel=1e-5)
    # the per-token number (what a per-token scorer would report) is bytes/tokens times larger
    assert total_bits / len(ids) > 2 * bpb


def test_gradient_norm_by_distance():
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(vocab_size=11, context_length=20, cell="rnn", d_embed=4,
                              d_hidden=8))
    idx = torch.randint(0, 11, (3, 21))
    norms = gradient_norm_by_distance(model, idx)
    assert norms.shape == (20,) and (norms > 0).all()
    assert norms[-1] < 1e-2 * norms[0]                   # a small tanh RNN forgets fast
    e = model.embed(idx[:, :-1]).detach().requires_grad_(True)
    logits, _ = model.forward_embeddings(e)
    F.cross_entropy(logits[:, -1], idx[:, -1], reduction="sum").backward()
    torch.testing.assert_close(norms[5], e.grad[:, -6].norm(dim=-1).mean())


def test_load_model_reads_the_class_from_the_config(tmp_path):
    from minillm.models import GPT, GPTConfig, load_model

    models = [*small_models()[::3], GPT(GPTConfig(vocab_size=11, context_length=12, d_model=16,
                                                   n_layer=1, n_head=2))]
    x = torch.randint(0, 11, (1, 12))
    for i, model in enumerate(models):
        model.save(tmp_path / str(i))
        loaded = load_model(tmp_path / str(i))
        assert type(loaded) is type(model)
        torch.testing.assert_close(loaded.eval()(x).logits, model.eval()(x).logits)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"hidden_size": 3}')
    with pytest.raises(ValueError, match="none of the course's models"):
        load_model(tmp_path / "odd")


@pytest.mark.parametrize("index", [0, 3], ids=["mlp", "lstm"])
def test_generate_decodes_the_pre_transformer_models_without_a_cache(index):
    from minillm.generation import generate

    model = small_models()[index].eval()
    prompt = torch.tensor([[1, 2, 3]])
    out = generate(model, prompt, 15, do_sample=False)     # runs past the 12-token context
    seq = prompt
    with torch.no_grad():
        for _ in range(15):                               # greedy by hand over the last window
            nxt = model(seq[:, -12:]).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)
