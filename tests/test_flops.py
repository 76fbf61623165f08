"""The one FLOP count (`minillm.scaling.flops`) against torch's own FLOP counter.

`torch.utils.flop_counter.FlopCounterMode` counts the FLOPs of every matmul a forward actually
dispatches; the course's per-token counts must agree with it term by term, so a count that
drops the output head (or counts the embedding lookup) fails here."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from minillm.models import GPT, GPTConfig
from minillm.models.neural import MLPLM, RNNLM, MLPLMConfig, RNNLMConfig
from minillm.scaling import mfu, peak_flops, training_flops
from minillm.scaling.flops import DATASHEET_PEAKS, measure_matmul_flops

pytestmark = pytest.mark.usefixtures("one_thread")
B, T, V = 2, 16, 11


def counted_forward_flops(model, x) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def linear_weights(model) -> int:
    """Weights of every matmul: 2-D parameters that are not an embedding table."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return sum(p.numel() for p in model.parameters() if p.dim() == 2 and id(p) not in embeddings)


@pytest.mark.parametrize("model", [
    MLPLM(MLPLMConfig(vocab_size=V, context_length=T, n_context=3, d_embed=4, d_hidden=16,
                      direct=True)),
    RNNLM(RNNLMConfig(vocab_size=V, context_length=T, cell="gru", d_embed=4, d_hidden=8,
                      n_layer=2)),
    RNNLM(RNNLMConfig(vocab_size=V, context_length=T, cell="rnn", d_embed=4, d_hidden=8)),
], ids=["mlp", "gru", "rnn"])
def test_pre_transformer_models_count_exactly_what_torch_counts(model):
    x = torch.randint(0, V, (B, T))
    assert model.flops_per_token(training=False) * B * T == counted_forward_flops(model, x)
    assert model.flops_per_token() == 3 * model.flops_per_token(training=False)


@pytest.mark.parametrize("cell,layers", [("lstm", 1), ("lstm", 2), ("gru", 3)])
def test_recurrent_counts_are_the_weights_of_their_matmuls(cell, layers):
    # torch's CPU LSTM runs a fused cell the counter does not see, so count the weights instead
    model = RNNLM(RNNLMConfig(vocab_size=V, context_length=T, cell=cell, d_embed=4, d_hidden=8,
                              n_layer=layers))
    assert model.matmul_weights() == linear_weights(model)


def test_gpt_counts_the_head_and_kaplans_attention_term():
    c = GPTConfig(vocab_size=V, context_length=T, d_model=32, n_layer=2, n_head=4,
                  attn_impl="naive")                  # attention as plain matmuls the counter sees
    model = GPT(c)
    x = torch.randint(0, V, (B, T))
    counted = counted_forward_flops(model, x)
    assert c.tie_embeddings                            # the head shares the embedding's tensor,
    head = 2 * B * T * c.d_model * V                   # yet it is a matmul, and counted
    weights = 2 * B * T * linear_weights(model) + head
    attention = 2 * c.n_layer * 2 * B * c.n_head * T * T * (c.d_model // c.n_head)  # QK^T, AV
    assert counted == weights + attention
    assert linear_weights(model) == model.num_params(non_embedding=True) - sum(
        p.numel() for p in model.parameters() if p.dim() == 1)       # biases and norms: not matmuls
    # Kaplan's 2·L·T·d per token is half of the full T x T matmuls a non-causal count sees
    ours = model.flops_per_token(training=False) * B * T
    vectors = 2 * B * T * sum(p.numel() for p in model.parameters() if p.dim() == 1)
    assert ours == weights + vectors + attention // 2
    assert training_flops(model, 1000) == 1000 * model.flops_per_token()


def test_mfu_divides_by_the_peak_of_the_precision_used():
    assert mfu(6e6, 1e4, 6e11) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="must be positive"):
        mfu(1.0, 1.0, 0.0)
    peak, source = peak_flops("cpu", torch.float32)
    assert peak > 0 and source == "measured matmul peak, cpu, float32"
    assert measure_matmul_flops(n=64, repeats=2) > 0
    assert DATASHEET_PEAKS["H100"][torch.bfloat16] > 10 * DATASHEET_PEAKS["H100"][torch.float32]
