"""Quantizing whole models: GPTQ against the paper's algorithm written out and against
round-to-nearest on the course model, checkpoints that reload exactly with the stated byte
counts, and quantization-aware training through the Trainer."""

from pathlib import Path

import pytest
import torch
from torch import nn

from minillm import GPT, GPTConfig
from minillm.data import load_corpus
from minillm.quantization import (
    FakeQuantLinear,
    WeightOnlyLinear,
    calibrate,
    gptq_quantize,
    load_quantized,
    prepare_qat,
    quantize_model,
    save_quantized,
    state_nbytes,
)
from minillm.quantization.calibration import linear_layers
from minillm.quantization.gptq import hessian_from_inputs
from minillm.quantization.int4 import rtn_quantize
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer

# chapter 15's model: the previous base (d128), whose rows the chapter and the lineage quantize
CKPT = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "shakespeare_byte_d128"


# ---- GPTQ against the paper's Algorithm 1 written out ----------------------------------------
def _grid(w, bits):
    """Zero-point grid per row, scales rounded to fp16 as the stored format keeps them."""
    qmax = 2 ** bits - 1
    lo, hi = torch.clamp(w.min(1).values, max=0), torch.clamp(w.max(1).values, min=0)
    scale = ((hi - lo).clamp(min=1e-8) / qmax).half().double()
    return scale, torch.round(-lo / scale).clamp(0, qmax)


def gptq_direct(W, H, bits, group_size, damp=0.01):
    """Optimal Brain Quantization in a fixed column order, unoptimised: the inverse Hessian of
    the not-yet-quantized columns F is recomputed by eliminating one row/column at a time
    (Frantar et al., Eq. 3 and Algorithm 1 with B = 1 and no Cholesky trick)."""
    W = W.double().clone()
    H = H.double() + damp * torch.diag(H).mean() * torch.eye(H.shape[0], dtype=torch.float64)
    Hinv = torch.linalg.inv(H)                       # H_F^-1 with F = all columns
    Q = torch.zeros_like(W)
    for q in range(W.shape[1]):
        if q % group_size == 0:
            scale, zero = _grid(W[:, q:q + group_size], bits)
        codes = (torch.round(W[:, q] / scale) + zero).clamp(0, 2 ** bits - 1)
        Q[:, q] = scale * (codes - zero)
        err = (W[:, q] - Q[:, q]) / Hinv[0, 0]
        W[:, q:] -= err[:, None] * Hinv[0][None, :]   # δ_F = -err · (H_F^-1)_{:,q}
        Hinv = Hinv[1:, 1:] - Hinv[1:, :1] @ Hinv[:1, 1:] / Hinv[0, 0]  # drop q from F
    return Q


@pytest.mark.parametrize("bits,group", [(4, 16), (3, 8), (4, None)])
def test_gptq_equals_the_direct_algorithm_and_lazy_batches_equal_column_by_column(bits, group):
    torch.manual_seed(0)
    W = torch.randn(6, 16)
    X = torch.randn(200, 16) @ torch.randn(16, 16)
    H = hessian_from_inputs(X)
    ref = gptq_direct(W, H, bits, group or 16)
    _, lazy = gptq_quantize(W, H, bits, group, blocksize=8, return_dequantized=True)
    packed, col = gptq_quantize(W, H, bits, group, blocksize=1, return_dequantized=True)
    torch.testing.assert_close(lazy, ref, rtol=0, atol=1e-9)
    torch.testing.assert_close(col, lazy, rtol=0, atol=1e-12)
    torch.testing.assert_close(packed.dequantize().double(), ref, rtol=0, atol=1e-6)


def test_gptq_act_order_and_groups_use_static_grids_in_the_stored_format():
    torch.manual_seed(1)
    W = torch.randn(8, 32)
    X = torch.randn(300, 32) * torch.linspace(0.1, 3, 32)
    H = hessian_from_inputs(X)
    packed, Q = gptq_quantize(W, H, 4, 8, act_order=True, return_dequantized=True)
    torch.testing.assert_close(packed.dequantize().double(), Q, rtol=0, atol=1e-6)
    rtn = rtn_quantize(W, 4, 8)
    assert torch.equal(packed.scale, rtn.scale) and torch.equal(packed.zero, rtn.zero)
    err = lambda A: ((W.double() - A.double()) @ X.double().t()).norm()
    assert err(Q) < err(rtn.dequantize())


def test_gptq_empty_calibration_raises():
    with pytest.raises(ValueError, match="no calibration inputs"):
        hessian_from_inputs(torch.zeros(0, 8))
    model = GPT(GPTConfig(vocab_size=32, context_length=16, d_model=32, n_layer=1, n_head=2))
    for bad in (None, [], [torch.zeros(1, 0, dtype=torch.long)]):
        with pytest.raises(ValueError, match="calibration"):
            quantize_model(model, "gptq4-g16", calibration=bad)
    with pytest.raises(ValueError, match="calibration"):
        quantize_model(model, "smoothquant", calibration=[])


# ---- the course model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def course():
    if not (CKPT / "model.safetensors").exists():
        pytest.skip("course checkpoint missing")
    tok = ByteTokenizer()
    train = tok.encode_tensor(load_corpus("shakespeare", "train"))
    val = tok.encode_tensor(load_corpus("shakespeare", "validation"))
    calib = torch.stack([train[i * 997: i * 997 + 256] for i in range(16)])
    held_out = torch.stack([val[i * 1009: i * 1009 + 256] for i in range(8)])
    return GPT.from_checkpoint(CKPT).eval(), calib, held_out


@pytest.mark.slow
def test_gptq_beats_rtn_on_every_layer_of_the_course_model(course):
    model, calib, held_out = course
    layers = linear_layers(model)
    stats = calibrate(model, calib, layers, hessian=True)
    inputs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(
        n, i[0].reshape(-1, i[0].shape[-1]).double())) for n, m in layers.items()]
    with torch.no_grad():
        model(held_out)
    for h in hooks:
        h.remove()
    assert len(layers) == 4 * model.config.n_layer
    for bits, group in ((4, 128), (3, 64)):
        for name, lin in layers.items():
            W, X = lin.weight.detach().double(), inputs[name]
            err = lambda Wq, W=W, X=X: ((W - Wq.double()) @ X.t()).norm().item()
            e_rtn = err(rtn_quantize(lin.weight, bits, group).dequantize())
            e_gptq = err(gptq_quantize(lin.weight, stats[name]["H"], bits, group).dequantize())
            assert e_gptq < e_rtn, (name, bits, group, e_gptq, e_rtn)


# fp32 bytes of the course model's tensors that stay unquantized: token and position
# embeddings, LayerNorms (2 per block + final), and the tied head stored once
def _fp_bytes(c):
    return 4 * (c.vocab_size * c.d_model + c.context_length * c.d_model
                + (2 * c.n_layer + 1) * 2 * c.d_model)


def _linear_shapes(c):
    return [(3 * c.d_model, c.d_model), (c.d_model, c.d_model), (c.d_ff, c.d_model),
            (c.d_model, c.d_ff)] * c.n_layer


def _expected_bytes(scheme, c):
    total = _fp_bytes(c)
    for out, inp in _linear_shapes(c):
        n = out * inp
        total += 4 * out                                          # fp32 bias
        if scheme.startswith("rtn4-g") or scheme.startswith("gptq4-g"):
            g = int(scheme.split("-g")[1].split("-")[0])
            total += n // 2 + 2 * n // g + n // g                 # nibbles, fp16 scale, uint8 zero
        elif scheme == "rtn3-g64":
            total += 3 * n // 8 + 3 * n // 64
        elif scheme == "w8a8":
            total += n + 4 * out                                  # int8 + fp32 scale per row
        elif scheme == "nf4":
            total += n // 2 + n // 64 + 4 * (n // 64 // 256) + 4  # codes, 8-bit absmax, 2nd level
    return total


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["w8a8", "rtn4-g128", "rtn3-g64", "nf4", "gptq4-g64-act",
                                    "llm.int8", "smoothquant", "w8a8-static"])
def test_quantized_checkpoints_reload_identically_and_are_smaller(course, scheme, tmp_path):
    base, calib, held_out = course
    model = GPT.from_checkpoint(CKPT).eval()
    quantize_model(model, scheme, calibration=calib[:4])
    save_quantized(model, tmp_path / "q")
    again = load_quantized(tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(model(held_out[:2]).logits, again(held_out[:2]).logits)
        assert (model(held_out[:2]).logits - base(held_out[:2]).logits).abs().max() > 0  # it did change
    size = (tmp_path / "q" / "model.safetensors").stat().st_size
    assert 0 < size - state_nbytes(model) < 32_000            # safetensors' JSON header only
    fp32 = state_nbytes(base)
    if scheme not in ("llm.int8", "smoothquant", "w8a8-static"):
        assert state_nbytes(model) == _expected_bytes(scheme, model.config)
    low_bit = scheme.startswith(("rtn", "gptq", "nf4"))
    assert state_nbytes(model) < (0.21 if low_bit else 0.31) * fp32    # embeddings stay fp32


def test_save_needs_a_quantized_model(tmp_path):
    model = GPT(GPTConfig(vocab_size=32, context_length=16, d_model=32, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="not quantized"):
        save_quantized(model, tmp_path / "q")


# ---- quantization-aware training -------------------------------------------------------------
def test_fake_quant_passes_gradients_straight_through():
    torch.manual_seed(2)
    fq = FakeQuantLinear(32, 8, bits=4, group_size=16)
    x = torch.randn(5, 32)
    fq(x).pow(2).sum().backward()
    w_hat = WeightOnlyLinear.from_linear(fq, 4, 16).dequantized_weight().requires_grad_()
    torch.nn.functional.linear(x, w_hat, fq.bias.detach()).pow(2).sum().backward()
    torch.testing.assert_close(fq.weight.grad, w_hat.grad)


def test_qat_through_the_trainer_then_convert_exactly():
    torch.manual_seed(3)
    tokens = torch.randint(0, 64, (4000,))
    tokens[1::2] = (tokens[::2] * 7 + 3) % 64      # a learnable pattern
    model = GPT(GPTConfig(vocab_size=64, context_length=32, d_model=64, n_layer=2, n_head=2))
    prepare_qat(model, bits=3, group_size=32)
    assert sum(isinstance(m, FakeQuantLinear) for m in model.modules()) == 8
    fq_weight = model.blocks[0].mlp.fc.weight.detach().clone()
    trainer = Trainer(model, tokens, config=TrainConfig(max_steps=30, batch_size=8, lr=3e-3,
                                                        warmup_steps=2, eval_interval=0,
                                                        device="cpu", progress=False))
    trainer.fit()
    assert not torch.equal(model.blocks[0].mlp.fc.weight, fq_weight)   # the float weights moved
    assert trainer.history[-1]["loss"] < trainer.history[0]["loss"]
    model.eval()
    x = tokens[:32][None]
    with torch.no_grad():
        trained = model(x).logits
        quantize_model(model, "rtn3-g32")                       # store what training saw
        assert not any(isinstance(m, FakeQuantLinear) for m in model.modules())
        torch.testing.assert_close(model(x).logits, trained, rtol=0, atol=1e-5)


def test_quantize_model_replaces_linears_of_any_minillm_model():
    model = GPT(GPTConfig(vocab_size=32, context_length=16, d_model=64, n_layer=2, n_head=2,
                          mlp="swiglu", norm="rmsnorm", bias=False, n_kv_head=1))
    quantize_model(model, "rtn4-g32")
    assert not any(type(m) is nn.Linear for n, m in model.named_modules() if n != "lm_head")
    model(torch.zeros(1, 8, dtype=torch.long))
