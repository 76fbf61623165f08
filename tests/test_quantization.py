"""Quantization formats against independent references (torch's quantized tensors,
bitsandbytes), hypothesis error bounds, and clear errors for bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.quantization import (
    Int8Linear,
    LLMInt8Linear,
    NF4Linear,
    QuantScheme,
    WeightOnlyLinear,
)
from minillm.quantization.formats import (
    absmax_dequantize,
    absmax_quantize,
    pack_bits,
    unpack_bits,
    zeropoint_dequantize,
    zeropoint_quantize,
)
from minillm.quantization.int4 import rtn_quantize
from minillm.quantization.int8 import int8_matmul
from minillm.quantization.llm_int8 import vectorwise_quantize
from minillm.quantization.modules import parse_scheme
from minillm.quantization.nf4 import NF4_LEVELS, dynamic_map, nf4_levels, nf4_quantize
from minillm.quantization.smoothquant import smoothing_factors

pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per:UserWarning")
bnb = pytest.importorskip("bitsandbytes")
import bitsandbytes.functional as bnbF  # noqa: E402


# ---- int8 against torch's quantized tensors ------------------------------------------------
def test_absmax_per_channel_equals_torch_quantize_per_channel():
    torch.manual_seed(0)
    w = torch.randn(48, 96) * torch.rand(48, 1)
    q, s = absmax_quantize(w, 8, "channel")
    ref = torch.quantize_per_channel(w, s[:, 0].double(), torch.zeros(48, dtype=torch.long), 0,
                                     torch.qint8)
    assert torch.equal(ref.int_repr(), q)
    torch.testing.assert_close(absmax_dequantize(q, s), ref.dequantize(), rtol=0, atol=1e-6)


def test_zeropoint_per_tensor_equals_torch_quantize_per_tensor():
    torch.manual_seed(1)
    x = torch.randn(64, 32).abs() + 0.1 * torch.randn(64, 32)  # skewed: zero-point pays
    q, s, z = zeropoint_quantize(x, 8, "tensor")
    ref = torch.quantize_per_tensor(x, float(s), int(z), torch.quint8)
    assert (ref.int_repr().int() - q.int()).abs().max() <= 0  # same codes
    torch.testing.assert_close(zeropoint_dequantize(q, s, z), ref.dequantize(), rtol=0,
                               atol=1e-6)


def test_zeropoint_beats_absmax_on_a_one_sided_row():
    x = torch.rand(1, 256)  # all positive, like a post-GELU activation
    qa, sa = absmax_quantize(x, 4, "tensor")
    qz, sz, zz = zeropoint_quantize(x, 4, "tensor")
    err_a = (absmax_dequantize(qa, sa) - x).abs().mean()
    err_z = (zeropoint_dequantize(qz, sz, zz) - x).abs().mean()
    assert err_z < 0.6 * err_a


def test_int8_matmul_is_exact():
    torch.manual_seed(2)
    a = torch.randint(-127, 128, (33, 64), dtype=torch.int8)
    b = torch.randint(-127, 128, (24, 64), dtype=torch.int8)
    assert torch.equal(int8_matmul(a, b), a.long().matmul(b.long().t()).int())


def test_int8_linear_dynamic_and_static():
    torch.manual_seed(3)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(4, 10, 64)
    dyn = Int8Linear.from_linear(lin)
    qx, sx = absmax_quantize(x.reshape(-1, 64), 8, "channel")
    qw, sw = absmax_quantize(lin.weight.detach(), 8, "channel")
    ref = (absmax_dequantize(qx, sx) @ absmax_dequantize(qw, sw).t() + lin.bias).reshape(4, 10, 32)
    torch.testing.assert_close(dyn(x), ref.detach(), rtol=1e-5, atol=1e-5)
    static = Int8Linear.from_linear(lin, "static", x.reshape(-1, 64).abs().amax(0))
    assert (static(x) - lin(x)).abs().max() < 0.05
    with pytest.raises(ValueError, match="calibration"):
        Int8Linear.from_linear(lin, "static")


# ---- LLM.int8() against bitsandbytes' Linear8bitLt -------------------------------------------
def _fp16_exact(t: torch.Tensor) -> torch.Tensor:
    return t.half().float()  # bnb quantizes through fp16; give both sides the same numbers


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_llm_int8_equals_bitsandbytes_linear8bitlt(threshold):
    torch.manual_seed(4)
    lin = torch.nn.Linear(128, 64)
    with torch.no_grad():
        lin.weight.copy_(_fp16_exact(lin.weight))
        lin.bias.copy_(_fp16_exact(lin.bias))
    x = torch.randn(3, 12, 128)
    x[..., 5] *= 12                 # an outlier feature dimension, in every token
    x[1, 3, 70] = -9.0              # and a lone outlier
    x = _fp16_exact(x)
    ref = bnb.nn.Linear8bitLt(128, 64, has_fp16_weights=False, threshold=threshold)
    ref.load_state_dict(lin.state_dict())
    ref.eval()
    ours = LLMInt8Linear.from_linear(lin, threshold)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)
        q, absmax, cols = vectorwise_quantize(x.reshape(-1, 128).half(), threshold)
        q_ref, absmax_ref, cols_ref = bnbF.int8_vectorwise_quant(x.reshape(-1, 128).half(),
                                                                 threshold)
    assert torch.equal(q, q_ref) and torch.equal(absmax, absmax_ref)
    if threshold:
        assert torch.equal(cols, cols_ref) and 5 in cols.tolist() and 70 in cols.tolist()
        assert ours.last_outliers.tolist() == cols.tolist()


def test_decomposition_rescues_int8_from_outliers():
    torch.manual_seed(5)
    lin = torch.nn.Linear(256, 64)
    x = torch.randn(32, 256) * 0.5
    x[:, 7] = 60.0                  # one feature dimension 100x the rest
    exact = lin(x).detach()
    plain = LLMInt8Linear.from_linear(lin, 0.0)(x)
    mixed = LLMInt8Linear.from_linear(lin, 6.0)(x)
    assert (mixed - exact).abs().mean() < 0.25 * (plain - exact).abs().mean()


def test_smoothquant_preserves_the_product_and_flattens_activations():
    torch.manual_seed(6)
    w = torch.randn(32, 64)
    x = torch.randn(100, 64)
    x[:, 3] *= 50
    s = smoothing_factors(x.abs().amax(0), w, 0.5)
    torch.testing.assert_close((x / s) @ (w * s).t(), x @ w.t(), rtol=1e-4, atol=1e-3)
    spread = lambda t: (t.abs().amax(0).max() / t.abs().amax(0).median()).item()
    assert spread(x / s) < spread(x) / 4


# ---- NF4 against bitsandbytes ---------------------------------------------------------------
def test_nf4_levels_from_normal_quantiles_equal_the_published_table():
    published = bnbF.get_4bit_type("nf4", device="cpu")
    assert torch.equal(NF4_LEVELS, published)
    assert (nf4_levels() - published.double()).abs().max() < 2e-7
    assert torch.equal(dynamic_map(), bnbF.create_dynamic_map(signed=True))


@pytest.mark.parametrize("shape", [(384, 128), (128, 512), (64, 256)])
def test_nf4_codes_packing_and_absmax_are_bit_identical_to_bitsandbytes(shape):
    torch.manual_seed(7)
    w = torch.randn(*shape) * 0.02
    packed_ref, state = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4",
                                           compress_statistics=False)
    ours = nf4_quantize(w, 64, double_quant=False)
    assert torch.equal(ours.packed, packed_ref.reshape(-1))          # two codes per byte
    assert torch.equal(ours.absmax, state.absmax)
    assert torch.equal(ours.dequantize(), bnbF.dequantize_4bit(packed_ref, state))
    # double quantization: mean offset, then 8-bit dynamic codes in blocks of 256. bnb's
    # CPU C kernel picks a non-nearest code for some tiny values, so the codes are compared
    # with bnb's pure-torch path of the same operator (nearest code, as on CUDA)
    dq = nf4_quantize(w, 64, double_quant=True)
    _, state2 = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    assert torch.equal(dq.absmax_offset, state2.offset)
    codes_ref, scale2_ref = torch.ops.bitsandbytes.quantize_blockwise(
        (state.absmax - state.absmax.mean()).double(), bnbF.create_dynamic_map(signed=True), 256)
    assert torch.equal(dq.absmax, codes_ref) and torch.equal(dq.absmax_scale, scale2_ref)
    assert torch.equal(dq.absmax_scale, state2.state2.absmax)
    assert (dq.absmax != state2.absmax).float().mean() < 0.01


def test_nf4_beats_int4_on_normal_weights():
    torch.manual_seed(8)
    w = torch.randn(256, 256)
    nf4 = (nf4_quantize(w, 64, double_quant=False).dequantize() - w).pow(2).mean()
    q, s = absmax_quantize(w, 4, "group", 64)
    int4 = (absmax_dequantize(q, s) - w).pow(2).mean()
    assert nf4 < 0.85 * int4


# ---- hypothesis: error bounds and round trips -----------------------------------------------
finite = st.floats(-100, 100, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.sampled_from([8, 16, 32]), st.sampled_from([2, 3, 4, 8]),
       st.integers(0, 10_000))
def test_absmax_and_zeropoint_error_bounds(rows, g, bits, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4 * g, generator=gen) * torch.rand(rows, 1, generator=gen) * 10
    for gran in ("tensor", "channel", "group"):
        q, s = absmax_quantize(x, bits, gran, g)
        err = (absmax_dequantize(q, s) - x).abs().reshape(s.shape[0], s.shape[1], -1)
        assert (err <= s[..., None] / 2 * (1 + 1e-5) + 1e-6).all()
        q, s, z = zeropoint_quantize(x, bits, gran, g)
        err = (zeropoint_dequantize(q, s, z) - x).abs().reshape(s.shape[0], s.shape[1], -1)
        assert (err <= s[..., None] * (1 + 1e-5) + 1e-6).all()   # half a step + the zero shift


@settings(max_examples=40, deadline=None)
@given(st.lists(finite, min_size=64, max_size=64 * 8))
def test_nf4_error_bound(values):
    n = len(values) // 64 * 64
    x = torch.tensor(values[:n])
    w = nf4_quantize(x, 64, double_quant=False)
    half_gap = (NF4_LEVELS[1:] - NF4_LEVELS[:-1]).max() / 2
    err = (w.dequantize() - x).abs().reshape(-1, 64)
    assert (err <= w.absmax[:, None] * half_gap * (1 + 1e-6) + 1e-30).all()


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 3, 4, 5, 8]), st.integers(0, 200), st.integers(0, 10_000))
def test_pack_bits_round_trip(bits, n, seed):
    codes = torch.randint(0, 2 ** bits, (n,), generator=torch.Generator().manual_seed(seed))
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / 8) * bits
    assert torch.equal(unpack_bits(packed, bits, n), codes.to(torch.uint8))


def test_int4_packs_two_codes_per_byte_high_nibble_first():
    assert pack_bits(torch.tensor([1, 2, 15, 0, 3, 4, 5, 6]), 4).tolist() == \
        [0x12, 0xF0, 0x34, 0x56]


@pytest.mark.parametrize("bits,group", [(4, 32), (3, 64), (8, None), (2, 128)])
def test_weight_only_linear_round_trip(bits, group):
    torch.manual_seed(9)
    lin = torch.nn.Linear(128, 48)
    pw = rtn_quantize(lin.weight, bits, group)
    q, s, z = zeropoint_quantize(lin.weight.detach(), bits, "group", group or 128,
                                 scale_dtype=torch.float16)
    assert torch.equal(pw.codes(), q)
    m = WeightOnlyLinear.from_linear(lin, bits, group)
    x = torch.randn(5, 128)
    torch.testing.assert_close(m(x), x @ pw.dequantize().t() + lin.bias, rtol=1e-5, atol=1e-5)
    assert m.packed.numel() == 128 * 48 * bits // 8


# ---- clear errors ----------------------------------------------------------------------------
def test_bad_bits_group_size_and_schemes_raise_clear_errors():
    w = torch.randn(16, 96)
    with pytest.raises(ValueError, match="bits=5 is not supported"):
        rtn_quantize(w, 5, 32)
    with pytest.raises(ValueError, match="group_size=64 does not divide the row length 96"):
        rtn_quantize(w, 4, 64)
    with pytest.raises(ValueError, match="group_size=0 must be a positive"):
        rtn_quantize(w, 4, 0)
    with pytest.raises(ValueError, match="bits=1 is not supported"):
        absmax_quantize(w, 1)
    with pytest.raises(ValueError, match="unknown scheme 'int5'"):
        parse_scheme("int5")
    with pytest.raises(ValueError, match="bits=7"):
        parse_scheme("gptq7")
    with pytest.raises(ValueError, match="method='fp6'"):
        QuantScheme("fp6")
    with pytest.raises(ValueError, match="activations='dynamic'"):
        QuantScheme("fp8")                       # fp8 takes "none", "tensor" or "token"
    with pytest.raises(ValueError, match="blocksize=48 must be positive and divide"):
        nf4_quantize(torch.randn(10, 10), 48)
    with pytest.raises(ValueError, match="NF4 needs"):
        NF4Linear(96, 16)
