"""Chapter 18's recurrent LMs: linear attention, RWKV-4, Mamba.

References: the papers' equations written out naively here (float64), Hugging Face's
`RwkvForCausalLM` / `MambaForCausalLM` (tiny, random, CPU slow path), and the models' own
parallel forward (recurrent decoding must equal recomputing the prefix).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hf_reference import lazy_module
from torch import nn

from minillm.generation import generate
from minillm.generation.speculative import speculative_generate
from minillm.generation.state import DecodeState, left_pad
from minillm.models import GPT, GPTConfig, KVCache, kv_cache_nbytes, load_model
from minillm.models.convert import from_hf_mamba, from_hf_rwkv
from minillm.models.loading import model_class
from minillm.models.recurrent import (
    RWKV,
    LinearAttentionConfig,
    LinearAttentionLM,
    Mamba,
    MambaConfig,
    RWKVConfig,
    decoding_state_nbytes,
    linear_attention_parallel,
    linear_attention_recurrent,
    selective_scan_chunked,
    selective_scan_recurrent,
    wkv_chunked,
    wkv_recurrent,
)
from minillm.training import TrainConfig, Trainer

transformers = lazy_module("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

V, CTX = 53, 24


def small(kind: str, **kw):
    torch.manual_seed(0)
    if kind == "linear":
        return LinearAttentionLM(LinearAttentionConfig(vocab_size=V, context_length=CTX,
                                                       d_model=32, n_head=4, **kw))
    if kind == "rwkv":
        model = RWKV(RWKVConfig(vocab_size=V, context_length=CTX, d_model=32, chunk=5, **kw))
    else:
        model = Mamba(MambaConfig(vocab_size=V, context_length=CTX, d_model=16, d_state=4,
                                  chunk=5, **kw))
    with torch.no_grad():  # move the mixing parameters off their tidy init
        for name, p in model.named_parameters():
            if any(s in name for s in ("time_", "mix_", "A_log", "dt_proj.bias", "D")):
                p.add_(0.3 * torch.randn_like(p))
    return model


KINDS = ["linear", "rwkv", "mamba"]


# ---- configs -----------------------------------------------------------------------------
@pytest.mark.parametrize("cls,kwargs,message", [
    (LinearAttentionConfig, dict(d_model=30, n_head=4), "d_model=30 is not divisible by n_head=4"),
    (LinearAttentionConfig, dict(positions="rope"), "positions='rope'"),
    (LinearAttentionConfig, dict(eps=0.0), "eps=0.0 must be > 0"),
    (RWKVConfig, dict(chunk=0), "chunk=0 must be a positive integer"),
    (RWKVConfig, dict(d_ff=-1), "d_ff=-1 must be >= 0"),
    (RWKVConfig, dict(arch="mamba"), "arch='mamba' but this is a RWKVConfig"),
    (MambaConfig, dict(d_state=0), "d_state=0 must be a positive integer"),
    (MambaConfig, dict(dropout=1.0), r"dropout=1.0 must be in \[0, 1\)"),
    (MambaConfig, dict(dt_rank=-2), "dt_rank=-2 must be >= 0"),
])
def test_config_errors_name_field_value_and_fix(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_configs_round_trip_and_load_model_tells_them_by_arch():
    for cfg, cls in ((LinearAttentionConfig(), LinearAttentionLM), (RWKVConfig(), RWKV),
                     (MambaConfig(), Mamba)):
        d = cfg.to_dict()
        assert type(cfg).from_dict(d) == cfg and "d_model" in d
        assert model_class(d) is cls
    assert model_class(GPTConfig().to_dict()) is GPT     # old checkpoints: no arch, d_model
    with pytest.raises(ValueError, match="arch='s4'"):
        model_class({"arch": "s4", "d_model": 8})
    with pytest.raises(ValueError, match="unknown fields"):
        RWKVConfig.from_dict({"arch": "rwkv", "n_head": 4})


# ---- the math, against the papers' equations ---------------------------------------------
def test_linear_attention_parallel_equals_recurrent_and_the_kernel_formula():
    g = torch.Generator().manual_seed(0)
    q, k = (F.elu(torch.randn(2, 3, 9, 4, generator=g, dtype=torch.float64)) + 1
            for _ in range(2))
    v = torch.randn(2, 3, 9, 5, generator=g, dtype=torch.float64)
    y, S, z = linear_attention_parallel(q, k, v)
    y2, S2, z2 = linear_attention_recurrent(q, k, v)
    for a, b in ((y, y2), (S, S2), (z, z2)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # eq. 2 with sim(q, k) = phi(q)^T phi(k): a normalised weighted sum over j <= i
    i = 6
    w = (q[..., i, None, :] * k[..., :i + 1, :]).sum(-1)              # (B, H, i+1)
    ref = (w[..., None] * v[..., :i + 1, :]).sum(-2) / (w.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(y[..., i, :], ref)
    # a split window with the state carried equals the whole window
    ya, Sa, za = linear_attention_parallel(q[:, :, :4], k[:, :, :4], v[:, :, :4])
    yb, Sb, zb = linear_attention_parallel(q[:, :, 4:], k[:, :, 4:], v[:, :, 4:], Sa, za)
    torch.testing.assert_close(torch.cat([ya, yb], 2), y, rtol=0, atol=1e-6)


def _wkv_naive(w, u, k, v):
    """The paper's eq. 16 as written: exponentials, no max trick (float64, moderate k)."""
    T = k.size(1)
    out = []
    for t in range(T):
        i = torch.arange(t, dtype=k.dtype)
        e = torch.exp(-(t - 1 - i)[:, None] * w + k[:, :t])           # (B, t, C)
        cur = torch.exp(u + k[:, t])
        out.append(((e * v[:, :t]).sum(1) + cur * v[:, t]) / (e.sum(1) + cur))
    return torch.stack(out, 1)


def test_wkv_stable_recurrence_and_chunks_equal_the_papers_formula():
    g = torch.Generator().manual_seed(1)
    B, T, C = 2, 13, 6
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.05
    u = torch.randn(C, generator=g, dtype=torch.float64)
    k = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    empty = (torch.zeros(B, C, dtype=torch.float64),) * 2 + (
        torch.full((B, C), -1e38, dtype=torch.float64),)
    ref = _wkv_naive(w, u, k, v)
    rec = wkv_recurrent(w, u, k, v, *empty)
    torch.testing.assert_close(rec[0], ref, rtol=0, atol=1e-10)
    for chunk in (1, 4, 13, 32):
        out = wkv_chunked(w, u, k, v, *empty, chunk=chunk)
        for a, b in zip(out, rec, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # keys of ~±200 overflow e^k in float32; the running max keeps the float32 wkv finite
    big = 200 * k.float()
    naive = torch.exp(big[:, :1] + u.float())
    assert not torch.isfinite(naive).all()
    out32 = wkv_chunked(w.float(), u.float(), big, v.float(),
                        *(t.float() for t in empty), chunk=4)[0]
    ref64 = wkv_recurrent(w, u, 200 * k, v, *empty)[0]
    torch.testing.assert_close(out32.double(), ref64, rtol=1e-4, atol=1e-4)


def test_selective_scan_chunks_equal_the_recurrence_and_an_lti_scan_is_a_convolution():
    g = torch.Generator().manual_seed(2)
    B, T, Di, N = 2, 11, 3, 4
    f64 = dict(generator=g, dtype=torch.float64)
    u, dt = torch.randn(B, T, Di, **f64), F.softplus(torch.randn(B, T, Di, **f64))
    A = -torch.rand(Di, N, **f64) * 3
    Bm, Cm, D = torch.randn(B, T, N, **f64), torch.randn(B, T, N, **f64), torch.randn(Di, **f64)
    h0 = torch.randn(B, Di, N, **f64)
    y, h = selective_scan_recurrent(u, dt, A, Bm, Cm, D, h0)
    for chunk in (1, 3, 11, 16):
        y2, h2 = selective_scan_chunked(u, dt, A, Bm, Cm, D, h0, chunk)
        torch.testing.assert_close(y2, y, rtol=0, atol=1e-6)
        torch.testing.assert_close(h2, h, rtol=0, atol=1e-6)
    # with Delta, B, C constant in time (S4's LTI case) y = K * u + D u,
    # K_j = C . (exp(Delta A)^j Delta B): the convolution the selective scan gives up
    dt0, B0, C0 = dt[:, 0], Bm[:, 0], Cm[:, 0]                          # (B, Di), (B, N)
    y_lti, _ = selective_scan_chunked(u, dt0[:, None].expand(B, T, Di), A,
                                      B0[:, None].expand(B, T, N), C0[:, None].expand(B, T, N),
                                      D, torch.zeros_like(h0), 4)
    j = torch.arange(T, dtype=torch.float64)[:, None, None, None]
    kernel = (torch.exp(j * dt0[None, :, :, None] * A) * dt0[None, :, :, None]
              * B0[None, :, None, :] * C0[None, :, None, :]).sum(-1)   # (T, B, Di)
    conv = torch.stack([sum(kernel[s, :] * u[:, t - s] for s in range(t + 1))
                        for t in range(T)], 1)
    torch.testing.assert_close(y_lti, conv + D * u, rtol=0, atol=1e-10)


# ---- the models: recurrent = parallel ---------------------------------------------------
def _set_scan(model, scan: str) -> None:
    """Force RWKV's / Mamba's window path: "chunked" (parallel) or "recurrent" (token loop)."""
    model.config.scan = scan


@pytest.mark.parametrize("kind", ["rwkv", "mamba"])
def test_auto_scan_is_chunked_while_training_and_the_loop_without_gradients(kind, monkeypatch):
    import minillm.models.recurrent.mamba as mamba_module
    import minillm.models.recurrent.rwkv as rwkv_module

    module, name = ((rwkv_module, "wkv_chunked") if kind == "rwkv"
                    else (mamba_module, "selective_scan_chunked"))
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    model = small(kind).double().eval()
    x = torch.randint(0, V, (2, CTX), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        auto = model(x).logits
        assert not calls                                   # no gradients: the token loop
        _set_scan(model, "chunked")
        chunked = model(x).logits
        assert calls
    torch.testing.assert_close(chunked, auto, rtol=0, atol=1e-9)
    _set_scan(model, "auto")
    calls.clear()
    with_grad = model(x).logits                            # autograd records: training's path
    assert calls and torch.equal(with_grad.detach(), chunked)
    with pytest.raises(ValueError, match="scan='fast'"):
        type(model.config)(**{**model.config.to_dict(), "scan": "fast"})


@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_state_equals_the_parallel_forward(kind):
    model = small(kind).double().eval()
    if kind != "linear":
        _set_scan(model, "chunked")      # the parallel form, not the loop "auto" picks here
    x = torch.randint(0, V, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(x).logits
        for splits in ([1] * 20, [7, 1, 12], [3, 9, 8]):
            state, outs, s = model.init_state(2), [], 0
            for n in splits:
                outs.append(model(x[:, s:s + n], state=state).logits)
                s += n
            torch.testing.assert_close(torch.cat(outs, 1), full, rtol=0, atol=1e-6)
    # causal: changing token 8 changes nothing before it
    x2 = x.clone()
    x2[:, 8] = (x2[:, 8] + 1) % V
    with torch.no_grad():
        changed = (model(x2).logits - full).abs().amax(dim=(0, 2)) > 0
    assert not changed[:8].any() and changed[8:].all()


@pytest.mark.parametrize("kind", KINDS)
def test_left_padding_leaves_the_state_as_the_prompt_alone(kind):
    model = small(kind).eval()
    prompts = [[5, 9, 2, 7, 7, 1], [3, 4]]
    ids, mask = left_pad(prompts)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits
        for row, p in enumerate(prompts):
            alone = model(torch.tensor([p])).logits
            torch.testing.assert_close(padded[row, -len(p):], alone[0], rtol=1e-5, atol=1e-5)
    out = generate(model, ids, 6, do_sample=False, attention_mask=mask)
    for row, p in enumerate(prompts):
        assert torch.equal(out[row, -6:], generate(model, torch.tensor([p]), 6,
                                                   do_sample=False)[0, -6:])


# ---- decoding with the state = recomputing the prefix ------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_state_decoding_equals_recomputation_logit_by_logit(kind):
    model = small(kind).eval()
    x = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(4))
    with_state = DecodeState(model, x, None, CTX, use_cache=True)
    recompute = DecodeState(model, x, None, CTX, use_cache=False)
    assert with_state.state is not None and recompute.state is None
    with torch.no_grad():
        for _ in range(CTX - 5):
            a, b = with_state.next_logits()[:, -1], recompute.next_logits()[:, -1]
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            nxt = a.argmax(-1)
            with_state.append(nxt)
            recompute.append(nxt)
    assert with_state.state.nbytes == model.init_state(2).nbytes   # fixed size, 19 tokens later
    assert torch.equal(generate(model, x, CTX - 5, do_sample=False),
                       generate(model, x, CTX - 5, do_sample=False, use_cache=False))


@pytest.mark.parametrize("kind", KINDS)
def test_beam_contrastive_and_speculative_decoding_with_a_state(kind):
    model = small(kind).eval()
    x = torch.randint(0, V, (1, 4), generator=torch.Generator().manual_seed(5))
    for kw in (dict(num_beams=3), dict(penalty_alpha=0.6, top_k=4)):
        assert torch.equal(generate(model, x, 10, do_sample=False, **kw),
                           generate(model, x, 10, do_sample=False, use_cache=False, **kw))
    draft = small("linear" if kind != "linear" else "rwkv").eval()
    expected = generate(model, x, 12, do_sample=False)
    assert torch.equal(speculative_generate(model, draft, x, 12, num_assistant_tokens=3), expected)


def test_past_the_context_a_position_table_slides_and_rwkv_carries_its_state():
    lin = small("linear").eval()
    x = torch.randint(0, V, (1, 6), generator=torch.Generator().manual_seed(6))
    n = CTX + 10                                # past the learned positions: the window slides
    assert torch.equal(generate(lin, x, n, do_sample=False),
                       generate(lin, x, n, do_sample=False, use_cache=False))
    rwkv = small("rwkv").eval()
    out = generate(rwkv, x, n, do_sample=False)
    with torch.no_grad():                       # the state saw everything: feed it in pieces
        state = rwkv.init_state(1)
        logits = torch.cat([rwkv(out[:, s:s + CTX], state=state).logits
                            for s in range(0, out.size(1) - 1, CTX)], 1)
    assert torch.equal(logits[0, 5:out.size(1) - 1].argmax(-1), out[0, 6:])


def test_decoding_state_bytes_are_constant_and_the_kv_cache_grows():
    gpt = GPTConfig(vocab_size=V, context_length=64, d_model=32, n_layer=2, n_head=4)
    model = GPT(gpt)
    for T in (1, 17, 64):
        assert decoding_state_nbytes(gpt, T, 3, 4) == kv_cache_nbytes(2, 4, 8, T, 3, 4) \
            == KVCache.for_model(model, 3, T).nbytes
    for kind in KINDS:
        m = small(kind)
        sizes = {decoding_state_nbytes(m.config, T, 3, 4) for T in (1, 100, 10_000)}
        assert sizes == {m.init_state(3).nbytes}           # float32: 4 bytes a number
    with pytest.raises(ValueError, match="neither a GPT config"):
        decoding_state_nbytes(object(), 5)


@pytest.mark.parametrize("kind", KINDS)
def test_matmul_weights_count_every_weight_matrix(kind):
    model = small(kind)
    weights = sum(m.weight.numel() for m in model.modules()
                  if isinstance(m, nn.Linear | nn.Conv1d))
    assert model.matmul_weights() == weights
    assert model.flops_per_token(training=True) == 3 * model.flops_per_token(training=False) \
        > 2 * weights
    assert model.flops_per_token(seq_len=10) == model.flops_per_token(seq_len=1000)


# ---- exact against Hugging Face -----------------------------------------------------------
def _hf_rwkv():
    torch.manual_seed(0)
    cfg = transformers.RwkvConfig(vocab_size=61, context_length=32, hidden_size=32,
                                  num_hidden_layers=2, bos_token_id=0, eos_token_id=0)
    hf = transformers.RwkvForCausalLM(cfg).eval()
    with torch.no_grad():  # HF's init is nearly degenerate (embeddings ~1e-4, equal decays)
        for name, p in hf.named_parameters():
            p.add_((1.0 if "embeddings" in name else 0.3) * torch.randn_like(p))
    return hf


def _hf_mamba():
    torch.manual_seed(0)
    cfg = transformers.MambaConfig(vocab_size=61, hidden_size=32, num_hidden_layers=2,
                                   state_size=8, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = transformers.MambaForCausalLM(cfg).eval()
    with torch.no_grad():  # off the tidy init (A = -(1..N), D = 1), and varied embeddings
        for name, p in hf.named_parameters():
            p.add_((0.5 if "embeddings" in name else 0.3) * torch.randn_like(p))
    return hf


@pytest.mark.parametrize("which", ["rwkv", "mamba"])
def test_hugging_face_weights_give_the_same_logits_and_greedy_tokens(which):
    hf = _hf_rwkv() if which == "rwkv" else _hf_mamba()
    ours = from_hf_rwkv(hf) if which == "rwkv" else from_hf_mamba(hf, context_length=32)
    x = torch.randint(1, 61, (2, 19), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = hf(x).logits
        torch.testing.assert_close(ours(x).logits, ref, rtol=0, atol=1e-5)
        state = ours.init_state(2)   # prefill 12, then one token at a time
        stepped = torch.cat([ours(x[:, :12], state=state).logits]
                            + [ours(x[:, t:t + 1], state=state).logits for t in range(12, 19)], 1)
        torch.testing.assert_close(stepped, ref, rtol=0, atol=1e-5)
    # greedy through generate, one prompt at a time: transformers' RWKV decodes a batch > 1
    # wrongly with its state (its (B, C) shifted token broadcasts against (B, 1, C) hidden)
    for row in range(2):
        prompt = x[row:row + 1, :5]
        expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                               max_new_tokens=12, eos_token_id=None, pad_token_id=0)
        assert torch.equal(generate(ours, prompt, 12, do_sample=False), expected)
        assert len(set(expected[0, 5:].tolist())) > 3   # not one token repeated


def test_conversion_refuses_what_it_does_not_reproduce():
    cfg = transformers.RwkvConfig(vocab_size=61, context_length=32, hidden_size=32,
                                  num_hidden_layers=4, rescale_every=2)
    with pytest.raises(ValueError, match="rescale_every=2"):
        from_hf_rwkv(transformers.RwkvForCausalLM(cfg))
    cfg = transformers.MambaConfig(vocab_size=61, hidden_size=32, num_hidden_layers=1,
                                   hidden_act="gelu")
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        from_hf_mamba(transformers.MambaForCausalLM(cfg))


# ---- training and checkpoints -------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_trains_with_the_trainer_and_round_trips_through_load_model(kind, tmp_path):
    model = small(kind)
    tokens = torch.arange(600) % 7                       # periodic: easy to learn
    cfg = TrainConfig(max_steps=30, batch_size=8, lr=1e-2, warmup_steps=3, eval_interval=30,
                      eval_batches=1, log_interval=10, checkpoint_interval=30, progress=False,
                      out_dir=str(tmp_path))
    history = Trainer(model, tokens, tokens, cfg).fit()
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert math.isfinite(history[-1]["loss"])
    loaded = load_model(tmp_path / "checkpoints" / "step_000030")
    assert type(loaded) is type(model) and loaded.config == model.config
    model.eval()
    x = tokens[:CTX][None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
    model.save(tmp_path / "export")
    again = load_model(tmp_path / "export")
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, model(x).logits)


def test_a_tied_head_is_saved_once_and_a_long_input_is_refused(tmp_path):
    model = small("mamba")
    assert model.lm_head.weight is model.embed.weight
    assert "lm_head.weight" not in model.weights_state_dict()
    with pytest.raises(ValueError, match="context_length=24"):
        model(torch.zeros(1, CTX + 1, dtype=torch.long))
    lin = small("linear").eval()
    state = lin.init_state(1)
    lin(torch.zeros(1, CTX, dtype=torch.long), state=state)
    with pytest.raises(ValueError, match="past the learned table"):
        lin(torch.zeros(1, 1, dtype=torch.long), state=state)


# ---- the LTI ablation (chapter 18's selective copying) ------------------------------------
def test_mamba_without_selection_is_a_convolution_and_still_decodes_with_its_state():
    torch.manual_seed(0)
    model = Mamba(MambaConfig(vocab_size=V, context_length=CTX, d_model=8, d_state=4, n_layer=1,
                              chunk=5, selective=False)).double().eval()
    mix = model.blocks[0].mixer
    assert not hasattr(mix, "x_proj") and not hasattr(mix, "dt_proj")
    with torch.no_grad():
        for p in (mix.dt_bias, mix.B_lti, mix.C_lti, mix.A_log):
            p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(2, 13, 8, dtype=torch.float64)
        got = mix(x, {})
        xs, z = mix.in_proj(x).chunk(2, dim=-1)
        u = F.silu(mix.conv1d(F.pad(xs.transpose(1, 2), (3, 0)))).transpose(1, 2)  # (B, T, Di)
        dt, A = F.softplus(mix.dt_bias), -torch.exp(mix.A_log)                       # (Di,), (Di, N)
        j = torch.arange(13, dtype=torch.float64)[:, None, None]
        kernel = (torch.exp(j * dt[:, None] * A) * dt[:, None] * mix.B_lti * mix.C_lti).sum(-1)
        y = torch.stack([sum(kernel[s] * u[:, t - s] for s in range(t + 1)) for t in range(13)], 1)
        torch.testing.assert_close(got, mix.out_proj((y + mix.D * u) * F.silu(z)))
        ids = torch.randint(0, V, (2, 20), generator=torch.Generator().manual_seed(4))
        state = model.init_state(2)
        steps = torch.cat([model(ids[:, t:t + 1], state=state).logits for t in range(20)], 1)
        torch.testing.assert_close(steps, model(ids).logits, rtol=0, atol=1e-6)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear | nn.Conv1d))
    assert model.matmul_weights() == weights
