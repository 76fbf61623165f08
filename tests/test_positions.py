"""Position schemes, norms and MLPs against independent implementations (HF LLaMA, BLOOM)."""

import math

import pytest
import torch
from hf_reference import lazy_module
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.models.config import swiglu_hidden_size
from minillm.models.mlp import SwiGLU
from minillm.models.norms import RMSNorm
from minillm.models.positions import (
    RotaryEmbedding,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    rope_cos_sin,
    rope_inv_freq,
    sinusoidal_table,
)

transformers = lazy_module("transformers")
modeling_bloom = lazy_module("transformers.models.bloom.modeling_bloom")
modeling_llama = lazy_module("transformers.models.llama.modeling_llama")


def _llama_config(**kw):
    base = dict(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                rope_theta=10000.0, rms_norm_eps=1e-6)
    base.update(kw)
    return transformers.LlamaConfig(**base)


def test_sinusoidal_table_matches_the_formula():
    t = sinusoidal_table(50, 16)
    pos, i = 37, 3
    assert t[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 16)), abs=1e-6)
    assert t[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 16)), abs=1e-6)
    torch.testing.assert_close(sinusoidal_table(10, 16, offset=40), t[40:50])


def test_sinusoid_scale_sets_the_amplitude_of_the_position_signal():
    """The GPT adds sinusoid_scale * init_std * sqrt(2) * the table, so the added signal's rms
    is sinusoid_scale * init_std (the table's rms is 1/sqrt(2)); ~35 is Vaswani's amplitude."""
    from minillm.models import GPT, GPTConfig

    torch.manual_seed(0)
    idx = torch.randint(0, 32, (2, 24))
    pos = torch.arange(24).expand(2, 24)
    signals = {}
    for scale in (1.0, 35.0):
        model = GPT(GPTConfig(vocab_size=32, context_length=24, d_model=16, n_layer=1,
                              n_head=2, positions="sinusoidal", sinusoid_scale=scale))
        signal = model._embed(idx, pos, check_positions=True) - model.tok_emb(idx)
        expected = scale * 0.02 * math.sqrt(2) * sinusoidal_table(24, 16)
        torch.testing.assert_close(signal[0], expected, rtol=1e-5, atol=1e-7)
        signals[scale] = signal
    assert signals[35.0].pow(2).mean().sqrt().item() == pytest.approx(
        35 * 0.02 * sinusoidal_table(24, 16).pow(2).mean().sqrt().item() * math.sqrt(2), rel=1e-5)
    with pytest.raises(ValueError, match="sinusoid_scale"):
        GPTConfig(positions="sinusoidal", sinusoid_scale=0.0)


def test_rope_matches_llama_rotary_embedding_and_apply_rotary_pos_emb():
    cfg = _llama_config()
    rotary = modeling_llama.LlamaRotaryEmbedding(cfg)
    q, k = torch.randn(2, 2, 4, 20, 16).unbind(0)
    pos = torch.arange(20)[None]
    cos_ref, sin_ref = rotary(q, pos)
    cos, sin = rope_cos_sin(torch.arange(20), rope_inv_freq(16, 10000.0))
    torch.testing.assert_close(cos, cos_ref[0])
    torch.testing.assert_close(sin, sin_ref[0])
    q_ref, k_ref = modeling_llama.apply_rotary_pos_emb(q, k, cos_ref, sin_ref)
    q_ours, k_ours = RotaryEmbedding(16)(q, k, torch.arange(20))
    torch.testing.assert_close(q_ours, q_ref)
    torch.testing.assert_close(k_ours, k_ref)


def test_rope_offset_continues_the_positions():
    q, k = torch.randn(2, 1, 2, 10, 8).unbind(0)
    rope = RotaryEmbedding(8)
    full_q, _ = rope(q, k, torch.arange(10))
    tail_q, _ = rope(q[:, :, 6:], k[:, :, 6:], torch.arange(6, 10))
    torch.testing.assert_close(tail_q, full_q[:, :, 6:])
    # per-row positions (left padding): row 1 starts two tokens later
    both = torch.cat([q, q])
    rows, _ = rope(both, both, torch.stack([torch.arange(10), torch.arange(-2, 8)]))
    shifted, _ = rope(q[:, :, 2:], k[:, :, 2:], torch.arange(8))
    torch.testing.assert_close(rows[1:, :, 2:], shifted)
    torch.testing.assert_close(rows[:1], full_q)


def test_rope_linear_scaling_matches_llama_linear_rope():
    cfg = _llama_config(rope_scaling={"rope_type": "linear", "factor": 4.0})
    cos_ref, sin_ref = modeling_llama.LlamaRotaryEmbedding(cfg)(torch.zeros(1), torch.arange(30)[None])
    rope = RotaryEmbedding(16, scaling="linear", scale=4.0)
    cos, sin = rope_cos_sin(torch.arange(30), rope.inv_freq, interpolation=rope.interpolation)
    torch.testing.assert_close(cos, cos_ref[0])
    torch.testing.assert_close(sin, sin_ref[0])


@pytest.mark.parametrize("dim,base,factor,original", [
    (16, 10000.0, 4.0, 64), (32, 10000.0, 8.0, 2048), (64, 500000.0, 2.0, 4096), (8, 10000.0, 16.0, 16)])
def test_yarn_frequencies_and_attention_factor_match_transformers(dim, base, factor, original):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = _llama_config(rope_scaling={"rope_type": "yarn", "factor": factor,
                                      "original_max_position_embeddings": original},
                        head_dim=dim, rope_theta=base)
    want, want_factor = ROPE_INIT_FUNCTIONS["yarn"](cfg, "cpu")
    rope = RotaryEmbedding(dim, base, scaling="yarn", scale=factor, original_context=original)
    torch.testing.assert_close(rope.inv_freq.float(), want, rtol=1e-6, atol=0)
    assert rope.attention_factor == pytest.approx(want_factor)
    # the fastest pair extrapolates (theta unchanged), the slowest interpolates (theta / factor)
    plain = rope_inv_freq(dim, base)
    assert rope.inv_freq[0] == plain[0]
    if original / (2 * math.pi / plain[-1]) < 1:       # the slowest pair turns < once
        torch.testing.assert_close(rope.inv_freq[-1], plain[-1] / factor)
    cos, _ = rope.tables(torch.arange(3))
    assert cos[0, 0].item() == pytest.approx(want_factor)   # cos(0) times the factor


def test_ntk_scaling_raises_the_base():
    torch.testing.assert_close(rope_inv_freq(16, 10000.0, ntk_scale=4.0),
                               rope_inv_freq(16, 10000.0 * 4.0 ** (16 / 14)))


def test_partial_rotary_leaves_the_tail_alone():
    q = torch.randn(1, 1, 5, 16)
    out, _ = RotaryEmbedding(16, fraction=0.5)(q, q, torch.arange(5))
    torch.testing.assert_close(out[..., 8:], q[..., 8:])
    assert not torch.allclose(out[..., 1:, :8], q[..., 1:, :8])


@settings(max_examples=30, deadline=None)
@given(m=st.integers(0, 500), n=st.integers(0, 500), shift=st.integers(0, 1000))
def test_rope_scores_depend_only_on_the_relative_offset(m, n, shift):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 16, generator=g, dtype=torch.float64).unbind(0)
    inv = rope_inv_freq(16)

    def rotated(x, pos):
        cos, sin = rope_cos_sin(torch.tensor([pos]), inv)
        return apply_rope(x[None].float(), cos, sin)[0].double()

    a = rotated(q, m) @ rotated(k, n)
    b = rotated(q, m + shift) @ rotated(k, n + shift)
    assert a.item() == pytest.approx(b.item(), abs=1e-3)


@pytest.mark.parametrize("n_head", [1, 2, 4, 6, 8, 12, 16, 20, 32])
def test_alibi_matches_bloom(n_head):
    T = 9
    mask = torch.ones(1, T)
    bloom = modeling_bloom.build_alibi_tensor(mask, n_head, torch.float32).view(n_head, 1, T)  # slope_h * j
    slopes = bloom[:, 0, 1]
    torch.testing.assert_close(alibi_slopes(n_head), slopes)
    ours = alibi_bias(n_head, torch.arange(T), torch.arange(T))
    # BLOOM adds m*j; we add -m*(i-j) = m*j - m*i: the same softmax, row by row
    causal = torch.ones(T, T).tril().bool()
    ref = bloom.expand(n_head, T, T).masked_fill(~causal, float("-inf")).softmax(-1)
    got = ours.masked_fill(~causal, float("-inf")).softmax(-1)
    torch.testing.assert_close(got, ref)


def test_alibi_slopes_power_of_two_are_geometric():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** (-(h + 1)) for h in range(8)]))


def test_rmsnorm_matches_llama():
    ref = modeling_llama.LlamaRMSNorm(32, eps=1e-6)
    ours = RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ours.weight.copy_(ref.weight)
    x = torch.randn(3, 7, 32)
    torch.testing.assert_close(ours(x), ref(x))


def test_swiglu_matches_llama_mlp():
    cfg = _llama_config(hidden_size=32, intermediate_size=96)
    ref = modeling_llama.LlamaMLP(cfg)
    ours = SwiGLU(32, 96)
    ours.gate.weight.data.copy_(ref.gate_proj.weight)
    ours.up.weight.data.copy_(ref.up_proj.weight)
    ours.proj.weight.data.copy_(ref.down_proj.weight)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(ours(x), ref(x))
    assert swiglu_hidden_size(4096, 256) == 11008  # LLaMA-7B
