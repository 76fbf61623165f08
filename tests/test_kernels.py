"""The attention-backend registry and its built-in backends, against attention written out here."""

import math

import pytest
import torch

from minillm.kernels import (
    attention,
    attention_backends,
    get_attention,
    naive_attention_with_weights,
    register_attention,
)
from minillm.kernels import registry as registry_module
from minillm.models import GPT, GPTConfig


def reference(q, k, v, allowed=None, bias=None):
    """softmax(q k^T / sqrt(D) + bias, hidden where not allowed) v, one head at a time."""
    B, H, Tq, D = q.shape
    group = H // k.size(1)
    out = torch.empty_like(q)
    for b in range(B):
        for h in range(H):
            s = q[b, h] @ k[b, h // group].T / math.sqrt(D)
            if bias is not None:
                s = s + bias[b if bias.size(0) > 1 else 0, h if bias.size(1) > 1 else 0]
            if allowed is not None:
                s = s.masked_fill(~(allowed[b] if allowed.ndim == 3 else allowed), float("-inf"))
            out[b, h] = torch.softmax(s, -1) @ v[b, h // group]
    return out


def qkv(B=2, H=4, Hkv=2, Tq=5, Tk=5, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, Tq, D, generator=g), torch.randn(B, Hkv, Tk, D, generator=g),
            torch.randn(B, Hkv, Tk, D, generator=g))


@pytest.mark.parametrize("name", ["naive", "sdpa"])
@pytest.mark.parametrize("tq,tk", [(5, 5), (3, 7), (1, 6)])
def test_causal_is_bottom_right_aligned_with_grouped_kv_heads(name, tq, tk):
    q, k, v = qkv(Tq=tq, Tk=tk)
    allowed = torch.arange(tk)[None, :] <= torch.arange(tq)[:, None] + (tk - tq)
    out = get_attention(name)(q, k, v, causal=True)
    torch.testing.assert_close(out, reference(q, k, v, allowed), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["naive", "sdpa"])
def test_boolean_masks_and_float_biases(name):
    q, k, v = qkv(Hkv=4)
    g = torch.Generator().manual_seed(1)
    allowed = torch.rand(2, 1, 5, 5, generator=g) > 0.3
    allowed |= torch.eye(5, dtype=torch.bool)                      # never a row of nothing
    got = get_attention(name)(q, k, v, mask=allowed, causal=False)
    torch.testing.assert_close(got, reference(q, k, v, allowed[:, 0]), rtol=1e-5, atol=1e-5)
    bias = torch.randn(1, 4, 5, 5, generator=g)
    got = get_attention(name)(q, k, v, mask=bias, causal=False)
    torch.testing.assert_close(got, reference(q, k, v, bias=bias), rtol=1e-5, atol=1e-5)


def test_scale_and_weights():
    q, k, v = qkv()
    out, w = naive_attention_with_weights(q, k, v, causal=True)
    assert w.shape == (2, 4, 5, 5) and torch.allclose(w.sum(-1), torch.ones(2, 4, 5))
    assert torch.all(w.triu(1) == 0)                                # causal: no future weight
    for name in ("naive", "sdpa"):
        a = get_attention(name)(q, k, v, causal=False, scale=0.5)
        b = get_attention(name)(q * (0.5 * math.sqrt(8)), k, v, causal=False)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_registry_lists_validates_and_plugs_into_the_model(monkeypatch):
    monkeypatch.setattr(registry_module, "_BACKENDS", dict(registry_module._BACKENDS))
    assert attention_backends() == ["flash_torch", "flash_triton", "naive", "sdpa"]
    with pytest.raises(ValueError, match=r"'flash' is not registered; choose one of \['flash_torch'"):
        get_attention("flash")
    with pytest.raises(ValueError, match="attn_impl='flash' is not supported"):
        GPTConfig(attn_impl="flash")
    with pytest.raises(ValueError, match="already registered"):
        register_attention("sdpa", lambda *a, **k: None)
    calls = []

    def counting(q, k, v, *, mask=None, causal, scale=None, dropout_p=0.0):
        calls.append((q.shape, causal, mask is None))
        return get_attention("naive")(q, k, v, mask=mask, causal=causal, scale=scale,
                                      dropout_p=dropout_p)

    register_attention("counting", counting)
    assert attention_backends() == ["counting", "flash_torch", "flash_triton", "naive", "sdpa"]
    cfg = dict(vocab_size=31, context_length=8, d_model=16, n_layer=2, n_head=4, n_kv_head=2)
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**cfg, attn_impl="counting")).eval()
    ref = GPT(GPTConfig(**cfg, attn_impl="sdpa")).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randint(0, 31, (2, 8))
    torch.testing.assert_close(ours(x).logits, ref(x).logits, rtol=1e-5, atol=1e-5)
    assert calls == [((2, 4, 8, 4), True, True)] * 2                 # one call per layer
    assert torch.equal(attention(*qkv(), causal=True, backend="naive"),
                       get_attention("naive")(*qkv(), causal=True))


def test_bad_shapes_are_named():
    q, k, v = qkv(H=3, Hkv=2)
    with pytest.raises(ValueError, match="not a multiple of 2 kv heads"):
        get_attention("sdpa")(q, k, v, causal=True)
