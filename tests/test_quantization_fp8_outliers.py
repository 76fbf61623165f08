"""FP8 / FP4 grids and FP8 quantization against PyTorch's own float8 casts, the unsmoothed
SmoothQuant baseline, and planted outlier features (chapter 15): the same function in full
precision, a larger error for per-tensor int8."""

import tempfile
from pathlib import Path

import pytest
import torch

from minillm import GPT, GPTConfig
from minillm.quantization import (
    Fp8Linear,
    QuantScheme,
    SmoothQuantLinear,
    load_quantized,
    plant_outliers,
    quantize_model,
    save_quantized,
)
from minillm.quantization.fp8 import fp8_dequantize, fp8_quantize, minifloat_values


def _torch_values(dtype):
    """Every non-negative finite value of a torch float8 dtype, from all 256 bit patterns."""
    v = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).double()
    return v[torch.isfinite(v) & (v >= 0)].unique()


# ---- the grids ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,dtype", [("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)])
def test_minifloat_grid_equals_every_torch_float8_bit_pattern(fmt, dtype):
    ours = minifloat_values(fmt)
    assert torch.equal(ours.unique(), _torch_values(dtype))
    assert ours.max() == torch.finfo(dtype).max


def test_minifloat_known_values():
    e4m3, e5m2 = minifloat_values("e4m3"), minifloat_values("e5m2")
    # E4M3 (fn): 127 non-negative values, largest 448, smallest normal 2^-6, subnormal 2^-9
    assert e4m3.numel() == 127 and e4m3.max() == 448 and e4m3[1] == 2 ** -9
    assert (e4m3 == 2 ** -6).any() and not (e4m3 == 480).any()   # 480 would be S.1111.111
    # E5M2 (IEEE-like): largest finite 57344, smallest subnormal 2^-16
    assert e5m2.max() == 57344 and e5m2[1] == 2 ** -16
    # E2M1 (FP4): the OCP MX table
    assert minifloat_values("e2m1").tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    with pytest.raises(ValueError, match="fmt"):
        minifloat_values("e3m4")


# ---- FP8 quantization ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_round_trip_equals_torchs_cast_and_is_on_the_grid(fmt):
    torch.manual_seed(0)
    dtype = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}[fmt]
    x = torch.randn(64, 96) * torch.logspace(-3, 1, 96)
    codes, scale = fp8_quantize(x, fmt, "tensor")
    assert codes.dtype == dtype and codes.float().abs().max() == torch.finfo(dtype).max
    assert torch.equal(codes.float(), (x / scale).to(dtype).float())   # torch's own rounding
    x_hat = fp8_dequantize(codes, scale)
    grid = minifloat_values(fmt)
    assert torch.isin(codes.float().abs().double(), grid).all()
    # relative error within half a step (2^-(M+1)) wherever the value is a normal number
    m_bits = 3 if fmt == "e4m3" else 2
    normal = (x / scale).abs() >= torch.finfo(dtype).tiny
    rel = ((x_hat - x).abs() / x.abs())[normal]
    assert rel.max() <= 2.0 ** -(m_bits + 1) * (1 + 1e-6)
    # per channel: each row's absmax maps to the largest value
    codes_c, scale_c = fp8_quantize(x, fmt, "channel")
    assert scale_c.shape == (64, 1)
    assert torch.equal(codes_c.float().abs().amax(1), torch.full((64,), torch.finfo(dtype).max))
    with pytest.raises(ValueError, match="granularity"):
        fp8_quantize(x, fmt, "group")


def test_fp8_linear_matches_its_definition_and_reloads():
    torch.manual_seed(1)
    lin = torch.nn.Linear(32, 24)
    x = torch.randn(5, 7, 32)
    for act in ("none", "tensor", "token"):
        q = Fp8Linear.from_linear(lin, act)
        w = (lin.weight / q.weight_scale).to(torch.float8_e4m3fn).float() * q.weight_scale
        xr = x
        if act == "tensor":
            s = x.abs().max() / 448
            xr = (x / s).to(torch.float8_e4m3fn).float() * s
        elif act == "token":
            s = x.abs().amax(-1, keepdim=True) / 448
            xr = (x / s).to(torch.float8_e4m3fn).float() * s
        torch.testing.assert_close(q(x), torch.nn.functional.linear(xr, w, lin.bias))
        assert (q(x) - lin(x)).norm() < 0.1 * lin(x).norm()
    model = GPT(GPTConfig(vocab_size=32, context_length=16, d_model=32, n_layer=1, n_head=2))
    quantize_model(model.eval(), "fp8-w8a8")
    ids = torch.randint(0, 32, (2, 16))
    with tempfile.TemporaryDirectory() as d:
        save_quantized(model, Path(d) / "m")
        again = load_quantized(Path(d) / "m")
    assert torch.equal(again(ids).logits, model(ids).logits)


# ---- SmoothQuant without smoothing --------------------------------------------------------------
def test_smoothquant_alpha_none_is_per_tensor_int8_without_migration():
    torch.manual_seed(2)
    lin = torch.nn.Linear(16, 8)
    m = SmoothQuantLinear.from_linear(lin, None, alpha=None)
    assert torch.equal(m.smooth, torch.ones(16))
    assert not QuantScheme("smoothquant", activations="tensor", alpha=None).needs_calibration
    with pytest.raises(ValueError, match="calibration"):
        SmoothQuantLinear.from_linear(lin, None, alpha=0.5)


# ---- planted outliers ---------------------------------------------------------------------------
def test_planted_outliers_keep_the_function_and_break_per_tensor_int8():
    torch.manual_seed(3)
    cfg = GPTConfig(vocab_size=64, context_length=32, d_model=64, n_layer=2, n_head=2)
    base = GPT(cfg).eval()
    with torch.no_grad():                       # a trained-looking LayerNorm: gains around 1
        for n, p in base.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))

    def copy(m):
        c = GPT(cfg).eval()
        c.load_state_dict(m.state_dict())
        return c

    planted = plant_outliers(copy(base), [3, 40], 20.0)
    ids = torch.randint(0, 64, (4, 32))
    with torch.no_grad():
        ref = base(ids).logits
        torch.testing.assert_close(planted(ids).logits, ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(planted.blocks[0].norm1.weight[3], 20 * base.blocks[0].norm1.weight[3])

        def err(model, scheme):
            quantize_model(model, scheme, calibration=ids)
            return (model(ids).logits - ref).norm() / ref.norm()

        unsmoothed = QuantScheme("smoothquant", activations="tensor", alpha=None)
        for scheme in ("w8a8-static", unsmoothed):
            assert err(copy(planted), scheme) > 3 * err(copy(base), scheme), scheme
        # smoothing (alpha = 0.5) migrates the planted scale back into the weights
        assert err(copy(planted), "smoothquant") < 0.5 * err(copy(planted), unsmoothed)
        # LLM.int8() takes the planted columns out of the integer product
        assert err(copy(planted), "llm.int8") < 0.5 * err(copy(planted), "w8a8-static")
    with pytest.raises(ValueError, match="dims"):
        plant_outliers(GPT(cfg), [64])
