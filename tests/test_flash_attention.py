"""FlashAttention backends against independent references: SDPA and the formula written out.

flash_torch runs everywhere; flash_triton runs on the CPU through Triton's interpreter (small
shapes: the interpreter is slow), and on CUDA where there is one. TRITON_INTERPRET is set here
before the kernels are first built (they are jitted lazily, on first call).
"""

import math
import os
import random

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from minillm.kernels import flash_triton  # noqa: E402
from minillm.kernels.flash_cost import flash_tile_visits  # noqa: E402
from minillm.kernels.flash_torch import (  # noqa: E402
    flash_torch_attention,
    flash_torch_attention_with_lse,
)
from minillm.kernels.flash_triton import (  # noqa: E402
    flash_triton_attention,
    flash_triton_attention_with_lse,
)

needs_triton = pytest.mark.skipif(not flash_triton.HAS_TRITON, reason="triton is not installed")
interp = pytest.mark.skipif(
    not flash_triton.HAS_TRITON or torch.cuda.is_available()
    or os.environ.get("TRITON_INTERPRET") != "1",
    reason="needs triton and TRITON_INTERPRET=1 (CPU)")

# bf16 tolerances (test_bf16_error_matches_sdpa; max |error| against the fp32 answer of the same
# bf16-rounded inputs, over the reference's max |value|), measured on 3 seeds, B=2 H=4 Hkv=2
# T=37 d=32 causal: flash_torch out <= 2.9e-3 (SDPA's own bf16 error: 2.4-2.9e-3), grads <= 4.8e-3;
# flash_triton (P and dS rounded to bf16 before their matmuls, as FA2 does) out <= 5.5e-3,
# grads <= 8.8e-3; the log-sum-exp (fp32) <= 1.6e-7. The tolerances leave about 2x headroom.
BF16_REL_TOL = {"out": 1e-2, "grad": 2e-2}


def causal_mask(t_q, t_k):
    """Bottom-right aligned: query i sees key j <= i + t_k - t_q."""
    return torch.ones(t_q, t_k, dtype=torch.bool).tril(t_k - t_q)


def reference(q, k, v, *, causal=False, mask=None, scale=None):
    """softmax(scale q kᵀ + mask) v and the log-sum-exp, written out (grouped heads copied)."""
    g = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    s = (q @ k.transpose(-2, -1)) * scale
    if causal:
        s = s.masked_fill(~causal_mask(q.size(2), k.size(2)), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    return s.softmax(-1) @ v, s.logsumexp(-1)


def sdpa(q, k, v, *, causal=False, mask=None, scale=None):
    if causal:
        mask = causal_mask(q.size(2), k.size(2))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                          enable_gqa=q.size(1) != k.size(1))


def rel_err(a, b):
    """max |a - b| / max |b|: a relative error that near-zero entries cannot blow up. Where the
    reference is (near) zero everywhere (dQ, dK when one key is visible) it is an absolute
    error scaled by 0.1."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(0.1)).item()


def random_shapes(n, seed, max_t, dims):
    """(B, H, Hkv, Tq, Tk, D, causal) drawn at random; lengths include 1 and non-multiples of
    the tile, Tq < Tk (queries after a KV cache), and grouped-query heads."""
    rng = random.Random(seed)
    shapes = [(1, 2, 1, 1, 1, dims[0], True), (1, 2, 2, 1, max_t - 3, dims[-1], True)]
    while len(shapes) < n:
        hkv = rng.choice([1, 2])
        tk = rng.randint(2, max_t)
        tq = tk if rng.random() < 0.6 else rng.randint(1, tk)
        shapes.append((rng.randint(1, 2), hkv * rng.choice([1, 2]), hkv, tq, tk,
                       rng.choice(dims), rng.random() < 0.6))
    return shapes


def make_qkv(B, H, Hkv, Tq, Tk, D, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen).to(dtype).requires_grad_()
            for shape in ((B, H, Tq, D), (B, Hkv, Tk, D), (B, Hkv, Tk, D))]


def grads(out, lse, inputs, seed=1):
    """dQ, dK, dV of a random linear function of both outputs (so lse's gradient is tested)."""
    gen = torch.Generator().manual_seed(seed)
    g_out = torch.randn(out.shape, generator=gen).to(out.dtype)
    g_lse = torch.randn(lse.shape, generator=gen).to(lse.dtype)
    loss = (out.float() * g_out.float()).sum() + (lse.float() * g_lse.float()).sum()
    return torch.autograd.grad(loss, inputs, retain_graph=True)


def check_parity(fn, shape, **kw):
    q, k, v = make_qkv(*shape[:6])
    causal = shape[6]
    out, lse = fn(q, k, v, causal=causal, **kw)
    ref_out, ref_lse = reference(q, k, v, causal=causal)
    assert rel_err(out, ref_out) < 1e-5
    assert rel_err(out, sdpa(q, k, v, causal=causal)) < 1e-5
    assert rel_err(lse, ref_lse) < 1e-5
    for got, want in zip(grads(out, lse, (q, k, v)), grads(ref_out, ref_lse, (q, k, v)),
                         strict=True):
        assert rel_err(got, want) < 1e-5
    # SDPA's gradients of the output alone, as the second independent reference
    q2, k2, v2 = make_qkv(*shape[:6])
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    want = torch.autograd.grad((sdpa(q2, k2, v2, causal=causal) * g).sum(), (q2, k2, v2))
    got = torch.autograd.grad((out * g).sum(), (q, k, v))
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("shape", random_shapes(10, seed=0, max_t=150, dims=[16, 24, 64, 128]))
def test_flash_torch_matches_references_fp32(shape):
    check_parity(flash_torch_attention_with_lse, shape, block_q=32, block_k=16)


@interp
@pytest.mark.parametrize("shape", random_shapes(5, seed=1, max_t=40, dims=[16, 32]))
def test_flash_triton_matches_references_fp32(shape):
    check_parity(flash_triton_attention_with_lse, shape)


@interp
def test_flash_triton_head_dim_128_and_tiles_32():
    check_parity(flash_triton_attention_with_lse, (1, 2, 1, 33, 33, 128, True),
                 block_m=32, block_n=16)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=interp)])
@pytest.mark.parametrize("kind", ["bool", "alibi"])
def test_masks_match_reference(backend, kind):
    """A padding-style boolean mask and an ALiBi-style float bias, as GPT passes them."""
    fn = flash_torch_attention_with_lse if backend == "torch" else flash_triton_attention_with_lse
    q, k, v = make_qkv(2, 2, 2, 21, 21, 16)
    gen = torch.Generator().manual_seed(3)
    if kind == "bool":
        mask = (torch.rand(2, 1, 21, 21, generator=gen) > 0.4) & causal_mask(21, 21)
        mask |= torch.eye(21, dtype=torch.bool)
    else:
        dist = (torch.arange(21)[:, None] - torch.arange(21)[None, :]).float()
        mask = (-torch.tensor([0.5, 0.25])[:, None, None] * dist).masked_fill(
            ~causal_mask(21, 21), float("-inf"))
    out, lse = fn(q, k, v, mask=mask, causal=False)
    ref_out, ref_lse = reference(q, k, v, mask=mask)
    assert rel_err(out, ref_out) < 1e-5 and rel_err(lse, ref_lse) < 1e-5
    for got, want in zip(grads(out, lse, (q, k, v)), grads(ref_out, ref_lse, (q, k, v)),
                         strict=True):
        assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("causal", [True, False])
def test_flash_torch_gradcheck_float64(causal):
    q, k, v = make_qkv(1, 4, 2, 5, 7, 3, dtype=torch.float64)
    fn = lambda q, k, v: flash_torch_attention_with_lse(q, k, v, causal=causal, block_q=2,
                                                        block_k=3)
    assert torch.autograd.gradcheck(fn, (q, k, v))
    bias = torch.randn(1, 1, 5, 7, dtype=torch.float64)
    fn = lambda q, k, v: flash_torch_attention_with_lse(q, k, v, mask=bias, causal=causal,
                                                        block_q=4, block_k=2)
    assert torch.autograd.gradcheck(fn, (q, k, v))


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=interp)])
def test_bf16_error_matches_sdpa(backend):
    """bf16 inputs: the error against the fp32 answer (same rounded inputs) is of the order of
    SDPA's own bf16 error and within the stated tolerance."""
    fn = flash_torch_attention_with_lse if backend == "torch" else flash_triton_attention_with_lse
    q, k, v = make_qkv(2, 4, 2, 37, 37, 32, dtype=torch.bfloat16)
    out, lse = fn(q, k, v, causal=True)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref_out, ref_lse = reference(q32, k32, v32, causal=True)
    sdpa_out = sdpa(q.detach(), k.detach(), v.detach(), causal=True)
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    err = rel_err(out, ref_out)
    assert err < BF16_REL_TOL["out"]
    assert err < 2 * rel_err(sdpa_out, ref_out) + 4e-3
    assert rel_err(lse, ref_lse) < 1e-3  # lse is accumulated and returned in fp32
    for got, want in zip(grads(out, lse, (q, k, v)), grads(ref_out, ref_lse, (q32, k32, v32)),
                         strict=True):
        assert got.dtype == torch.bfloat16 and rel_err(got, want) < BF16_REL_TOL["grad"]


def test_fp16_runs_with_fp32_accumulation():
    q, k, v = make_qkv(1, 2, 2, 40, 40, 16, dtype=torch.float16)
    out = flash_torch_attention(q, k, v, causal=True)
    ref, _ = reference(*(t.detach().float() for t in (q, k, v)), causal=True)
    assert out.dtype == torch.float16 and rel_err(out, ref) < 2e-3


@interp
def test_triton_backward_is_deterministic():
    q, k, v = make_qkv(1, 4, 1, 24, 24, 16)
    g1 = grads(*flash_triton_attention_with_lse(q, k, v, causal=True), (q, k, v))
    g2 = grads(*flash_triton_attention_with_lse(q, k, v, causal=True), (q, k, v))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))


def saved_bytes(fn, t, d=16):
    """Bytes autograd saves for the backward of fn at length t (distinct storages)."""
    q, k, v = make_qkv(1, 1, 1, t, t, d)
    storages = {}

    def pack(x):
        storages[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        fn(q, k, v)
    return sum(storages.values())


def growth_exponent(fn, lengths):
    import numpy as np
    sizes = [saved_bytes(fn, t) for t in lengths]
    return float(np.polyfit(np.log(lengths), np.log(sizes), 1)[0])


def test_saved_memory_grows_as_t_squared_for_naive_and_t_for_flash():
    lengths = [128, 256, 512, 1024]
    naive = lambda q, k, v: reference(q, k, v, causal=True)[0]
    assert growth_exponent(naive, lengths) > 1.8
    flash = lambda q, k, v: flash_torch_attention(q, k, v, causal=True)
    assert abs(growth_exponent(flash, lengths) - 1.0) < 0.02
    assert saved_bytes(flash, 1024) * 10 < saved_bytes(naive, 1024)


@interp
def test_triton_saved_memory_grows_as_t():
    flash = lambda q, k, v: flash_triton_attention_with_lse(q, k, v, causal=True, block_m=64,
                                                            block_n=64)[0]
    assert abs(growth_exponent(flash, [64, 128, 256]) - 1.0) < 0.02


def test_tile_visit_count_matches_the_loop(monkeypatch):
    """flash_cost.flash_tile_visits counts the tiles the forward loop really computes."""
    from minillm.kernels import flash_torch as ft
    calls = []
    real = ft._scores
    monkeypatch.setattr(ft, "_scores", lambda *a: calls.append(1) or real(*a))
    for t_q, t_k, bq, bk, causal in [(100, 100, 16, 32, True), (100, 100, 16, 32, False),
                                     (7, 50, 4, 8, True), (64, 64, 64, 64, True)]:
        calls.clear()
        q, k, v = make_qkv(1, 1, 1, t_q, t_k, 4)
        ft.flash_torch_forward(q, k, v, causal=causal, block_q=bq, block_k=bk)
        assert len(calls) == flash_tile_visits(t_q, t_k, bq, bk, causal)
    # causal skipping: about half the tiles of the full square (plus the diagonal)
    assert flash_tile_visits(1024, 1024, 64, 64, True) == 16 * 17 // 2


@pytest.mark.parametrize("fn", [flash_torch_attention,
                                pytest.param(flash_triton_attention, marks=needs_triton)])
def test_bad_input_gives_clear_errors(fn):
    q, k, v = make_qkv(1, 2, 2, 4, 4, 16)
    with pytest.raises(ValueError, match="dtypes differ"):
        fn(q, k.double(), v, causal=True)
    with pytest.raises(ValueError, match="different devices"):
        fn(q, k.to("meta"), v, causal=True)
    with pytest.raises(ValueError, match="dropout_p=0.1 is not supported"):
        fn(q, k, v, causal=True, dropout_p=0.1)
    with pytest.raises(ValueError, match="not a multiple of n_kv_head=3"):
        fn(q, *make_qkv(1, 3, 3, 4, 4, 16)[1:], causal=True)
    with pytest.raises(ValueError, match="head_dim=512 is not supported"):
        fn(*make_qkv(1, 1, 1, 2, 2, 512), causal=True)
    with pytest.raises(ValueError, match="does not broadcast"):
        fn(q, k, v, mask=torch.ones(3, 4, dtype=torch.bool), causal=False)


@needs_triton
def test_triton_head_dim_range_and_missing_triton(monkeypatch):
    with pytest.raises(ValueError, match="head_dim=8 is not supported.*16..128"):
        flash_triton_attention(*make_qkv(1, 1, 1, 2, 2, 8), causal=True)
    with pytest.raises(ValueError, match="dtype torch.float64 is not supported"):
        flash_triton_attention(*make_qkv(1, 1, 1, 2, 2, 16, dtype=torch.float64), causal=True)
    monkeypatch.setattr(flash_triton, "HAS_TRITON", False)
    with pytest.raises(RuntimeError, match="needs the `triton` package"):
        flash_triton_attention(*make_qkv(1, 1, 1, 2, 2, 16), causal=True)


@pytest.mark.skipif(not flash_triton.HAS_TRITON or torch.cuda.is_available(), reason="CPU only")
def test_triton_on_cpu_without_interpreter_says_so(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        flash_triton_attention(*make_qkv(1, 1, 1, 2, 2, 16), causal=True)


@pytest.mark.skipif(not (flash_triton.HAS_TRITON and torch.cuda.is_available()),
                    reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_on_gpu(dtype):
    """On a GPU: autotuned tiles, long lengths; fp32 with IEEE dots keeps 1e-5."""
    for shape in [(2, 8, 2, 1000, 1000, 64, True), (1, 4, 4, 1, 777, 128, True),
                  (2, 4, 4, 513, 513, 96, False)]:
        q, k, v = (t.detach().cuda().to(dtype).requires_grad_() for t in make_qkv(*shape[:6]))
        out, lse = flash_triton_attention_with_lse(q, k, v, causal=shape[6])
        qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
        ref_out, ref_lse = reference(qf, kf, vf, causal=shape[6])
        tol = 1e-5 if dtype == torch.float32 else BF16_REL_TOL["out"]
        assert rel_err(out, ref_out) < tol and rel_err(lse, ref_lse) < max(tol, 1e-5)
        gtol = 1e-5 if dtype == torch.float32 else BF16_REL_TOL["grad"]
        for got, want in zip(grads(out, lse, (q, k, v)), grads(ref_out, ref_lse, (qf, kf, vf)),
                             strict=True):
            assert rel_err(got, want) < gtol


# ---- through the registry and the GPT -------------------------------------------------------

GPT_BACKENDS = ["flash_torch", pytest.param("flash_triton", marks=interp)]


def test_backends_are_registered():
    from minillm.kernels import attention_backends, get_attention
    assert {"naive", "sdpa", "flash_torch", "flash_triton"} <= set(attention_backends())
    assert get_attention("flash_torch") is flash_torch_attention
    assert get_attention("flash_triton") is flash_triton_attention


def _gpt(attn_impl, positions="learned", n_kv_head=1):
    from minillm.models import GPT, GPTConfig
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=61, context_length=24, d_model=32, n_layer=2, n_head=2,
                         n_kv_head=n_kv_head, attn_impl=attn_impl, positions=positions))


@pytest.mark.parametrize("attn_impl", GPT_BACKENDS)
def test_gpt_trains_to_the_same_weights(attn_impl):
    """Four AdamW steps from the same init and data end at the same weights as naive and sdpa
    (within 1e-4: Adam divides by sqrt(v), so rounding-level gradient differences on
    near-zero gradients become step-size-level weight differences; the weights move by >1e-3)."""
    x = torch.randint(0, 61, (2, 19), generator=torch.Generator().manual_seed(0))
    finals = {}
    for impl in ("naive", "sdpa", attn_impl):
        model = _gpt(impl)
        init = torch.cat([p.detach().flatten() for p in model.parameters()])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(4):
            loss = model(x[:, :-1], x[:, 1:]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        finals[impl] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (finals["naive"] - init).abs().max() > 1e-3
    for impl in ("naive", "sdpa"):
        torch.testing.assert_close(finals[attn_impl], finals[impl], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("positions", ["learned", "rope", "alibi"])
@pytest.mark.parametrize("attn_impl", GPT_BACKENDS)
def test_kv_cache_decoding_with_bottom_right_causal_mask(attn_impl, positions):
    """Prefill, a chunk of 3 new queries over the cache (Tq < Tk), then single steps."""
    from minillm.models.kv_cache import KVCache
    model = _gpt(attn_impl, positions).eval()
    reference_model = _gpt("naive", positions).eval()
    x = torch.randint(0, 61, (2, 14), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = reference_model(x).logits
        cache = KVCache.for_model(model, batch_size=2)
        parts = [model(x[:, :6], cache=cache).logits, model(x[:, 6:9], cache=cache).logits]
        parts += [model(x[:, t:t + 1], cache=cache).logits for t in range(9, 14)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_gpt_config_rejects_unknown_backend():
    from minillm.models import GPTConfig
    with pytest.raises(ValueError, match="attn_impl='flash3' is not supported"):
        GPTConfig(attn_impl="flash3")


def test_registry_errors_and_builtin_backends_agree():
    from minillm.kernels import get_attention, register_attention
    with pytest.raises(ValueError, match="'nope' is not registered; choose one of"):
        get_attention("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_attention("naive", lambda *a, **k: None)
    q, k, v = make_qkv(2, 4, 2, 5, 13, 16)  # grouped heads, queries after a cache
    want, _ = reference(q, k, v, causal=True)
    for name in ("naive", "sdpa", "flash_torch"):
        assert rel_err(get_attention(name)(q, k, v, causal=True), want) < 1e-5, name


@interp
@pytest.mark.parametrize("t_q,t_k,block_m,block_n", [(37, 53, 16, 16), (33, 33, 16, 32),
                                                     (64, 64, 32, 16), (20, 90, 16, 32)])
def test_triton_causal_two_stages_match_the_reference(t_q, t_k, block_m, block_n):
    """The causal kernels run the tiles off the diagonal without the causal comparison and the
    diagonal tiles with it (the forward and dQ over key tiles, dK/dV over query tiles): partial
    tiles, Tq != Tk (bottom-right), grouped kv heads and B_r != B_c must give the reference's
    output and gradients."""
    q, k, v = make_qkv(1, 2, 1, t_q, t_k, 16)
    out, lse = flash_triton_attention_with_lse(q, k, v, causal=True, block_m=block_m,
                                               block_n=block_n)
    ref, ref_lse = reference(q, k, v, causal=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    got = torch.autograd.grad((out * g).sum(), (q, k, v))
    want = torch.autograd.grad((ref * g).sum(), (q, k, v))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_autotune_key_is_the_power_of_two_bucket():
    from minillm.kernels.flash_triton import length_bucket
    assert [length_bucket(t) for t in (1, 16, 17, 1000, 1024, 1025, 16384)] == \
        [16, 16, 32, 1024, 1024, 2048, 16384]


def test_hbm_counts_of_fa1_and_standard_attention():
    from minillm.kernels.flash_cost import (
        fa1_block_sizes,
        fa1_hbm_elements,
        standard_attention_hbm_elements,
    )
    # A100: 192 KiB of SRAM per SM = 98,304 fp16 elements; d = 64 gives B_c = 384, B_r = 64
    assert fa1_block_sizes(98_304, 64) == (64, 384)
    t, d = 1024, 64                                     # T_c = 3 key tiles
    assert fa1_hbm_elements(t, d, 98_304) == 2 * t * d + 3 * (3 * t * d + 4 * t)
    assert fa1_hbm_elements(t, d, 98_304, backward=True) == \
        2 * t * d + 3 * (3 * t * d + 4 * t) + 4 * t * d + 3 * (5 * t * d + 2 * t)
    assert standard_attention_hbm_elements(t, d, backward=True) == 11 * t * t + 12 * t * d
    # Θ(N² d² / M): four times the SRAM, about a quarter of the streamed traffic at large N
    big = 1 << 16
    ratio = fa1_hbm_elements(big, d, 4 * 98_304) / fa1_hbm_elements(big, d, 98_304)
    assert 0.25 < ratio < 0.3
