"""Quantization-aware training: fake quantization with the straight-through estimator.

Jacob et al. 2018 (arXiv:1712.05877); Bengio et al. 2013 (arXiv:1308.3432) for the estimator.
The forward pass uses the weights the deployed model will have, Ŵ = dequant(quant(W))
(group-wise zero-point, int4.py), so the loss sees the rounding; round() has zero gradient
almost everywhere, so the backward pass pretends it is the identity:

    forward: Ŵ = s (clamp(round(W / s) + z) − z),      backward: ∂L/∂W := ∂L/∂Ŵ

The float W keeps accumulating small updates that rounding alone would erase, and training
moves it to where its *rounded* value serves the loss. A `FakeQuantLinear` is an `nn.Linear`,
so any optimiser and the ordinary `Trainer` train it; `quantize_model(model, "rtn4-g64")`
afterwards stores exactly the weights training saw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minillm.quantization.calibration import linear_layers
from minillm.quantization.formats import (
    check_bits,
    check_group_size,
    zeropoint_dequantize,
    zeropoint_quantize,
)
from minillm.quantization.int4 import WEIGHT_BITS

__all__ = ["fake_quantize", "FakeQuantLinear", "prepare_qat"]


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, bits, group_size):
        q, s, z = zeropoint_quantize(w, bits, "group", group_size, scale_dtype=torch.float16)
        return zeropoint_dequantize(q, s, z).to(w.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def fake_quantize(w: torch.Tensor, bits: int = 4, group_size: int | None = 64) -> torch.Tensor:
    """dequant(quant(w)) in the forward pass, identity gradient in the backward pass."""
    check_bits(bits, WEIGHT_BITS)
    g = check_group_size(group_size, w.shape[1])
    return _FakeQuantSTE.apply(w, bits, g)


class FakeQuantLinear(nn.Linear):
    """An `nn.Linear` whose forward uses its fake-quantized weight."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 4,
                 group_size: int | None = 64):
        super().__init__(in_features, out_features, bias)
        check_bits(bits, WEIGHT_BITS)
        self.bits, self.group_size = bits, check_group_size(group_size, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quantize(self.weight, self.bits, self.group_size), self.bias)


def prepare_qat(model: nn.Module, bits: int = 4, group_size: int | None = 64,
                skip=("lm_head",)) -> nn.Module:
    """Swap every `nn.Linear` (but `skip`) for a `FakeQuantLinear` with the same weights, in
    place. Returns the model."""
    for name, lin in linear_layers(model, skip).items():
        fq = FakeQuantLinear(lin.in_features, lin.out_features, lin.bias is not None, bits,
                             group_size).to(lin.weight.device)
        fq.load_state_dict(lin.state_dict())
        _set_module(model, name, fq)
    return model


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
