"""Low-precision floating point: the FP8 (E4M3, E5M2) and FP4 (E2M1) grids, and FP8 weight /
activation quantization through PyTorch's own float8 casts.

A minifloat with E exponent bits and M mantissa bits (bias 2^(E-1) - 1) represents

    normal      (1 + m / 2^M) · 2^(e - bias),   e = 1 .. 2^E - 1
    subnormal   (m / 2^M) · 2^(1 - bias),       e = 0

minus the bit patterns a format reserves: E5M2 keeps IEEE's rule (the top exponent is inf /
NaN: largest finite 57344), E4M3 ("fn": finite, no inf) reserves only S.1111.111 for NaN and
so reaches 448 (Micikevicius et al. 2022, arXiv:2209.05433), and E2M1 (FP4, OCP MX) reserves
nothing: ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}. Like fp16 and bf16, and unlike int8, their spacing is
*relative*: 2^-M of the magnitude within each binade.

FP8 quantization scales a tensor (or each output row of a weight) so its largest magnitude
lands on the format's largest finite value, then casts with `torch.Tensor.to(float8 dtype)`
(round to nearest, ties to even). `Fp8Linear` stores E4M3 weights with one fp32 scale per
output row and, optionally, rounds its inputs to E4M3 with one dynamic scale per tensor or per
token; the product is taken in fp32 on the dequantized values (what an FP8 tensor core computes,
up to the order of the fp32 accumulation: CPUs have no FP8 matmul).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FLOAT_FORMATS", "TORCH_FP8", "minifloat_values", "fp8_quantize", "fp8_dequantize",
           "Fp8Linear"]

# name: (exponent bits, mantissa bits, which bit patterns are not finite numbers)
FLOAT_FORMATS = {"e4m3": (4, 3, "fn"), "e5m2": (5, 2, "ieee"), "e2m1": (2, 1, "none")}
TORCH_FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def minifloat_values(fmt: str) -> torch.Tensor:
    """Every non-negative finite value of a format in FLOAT_FORMATS, sorted (float64)."""
    if fmt not in FLOAT_FORMATS:
        raise ValueError(f"fmt={fmt!r}; choose one of {list(FLOAT_FORMATS)}")
    e_bits, m_bits, special = FLOAT_FORMATS[fmt]
    bias, top, m_top = 2 ** (e_bits - 1) - 1, 2 ** e_bits - 1, 2 ** m_bits - 1
    values = []
    for e in range(top + 1):
        for m in range(m_top + 1):
            if (special == "ieee" and e == top) or (special == "fn" and e == top and m == m_top):
                continue
            if e == 0:
                values.append(m / 2 ** m_bits * 2.0 ** (1 - bias))
            else:
                values.append((1 + m / 2 ** m_bits) * 2.0 ** (e - bias))
    return torch.tensor(sorted(values), dtype=torch.float64)


def _fp8_dtype(fmt: str) -> torch.dtype:
    if fmt not in TORCH_FP8:
        raise ValueError(f"fmt={fmt!r}; FP8 quantization supports {list(TORCH_FP8)}")
    return TORCH_FP8[fmt]


def fp8_quantize(x: torch.Tensor, fmt: str = "e4m3", granularity: str = "tensor"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale x so its absmax (per tensor, or per row for "channel") is the format's largest
    finite value, and cast to FP8.

    Returns:
        codes (x's shape, a torch float8 dtype) and scales (float32: shape () or (rows, 1));
        x ≈ codes.float() * scale.
    """
    dtype = _fp8_dtype(fmt)
    top = torch.finfo(dtype).max
    xf = x.detach().float()
    if granularity == "tensor":
        amax = xf.abs().amax()
    elif granularity == "channel":
        amax = xf.reshape(-1, xf.shape[-1]).abs().amax(-1, keepdim=True)
        xf = xf.reshape(-1, xf.shape[-1])
    else:
        raise ValueError(f"granularity={granularity!r}; choose 'tensor' or 'channel'")
    scale = amax.clamp(min=1e-12) / top
    codes = (xf / scale).clamp(-top, top).to(dtype)
    return codes.reshape(x.shape), scale


def fp8_dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes * scale in float32 (scale broadcast over rows for per-channel codes)."""
    if scale.dim() == 0:
        return codes.float() * scale
    return (codes.reshape(-1, codes.shape[-1]).float() * scale).reshape(codes.shape)


class Fp8Linear(nn.Module):
    """A linear layer with E4M3 weights (one fp32 scale per output row) and, optionally,
    inputs rounded to E4M3 with a dynamic scale.

    Args:
        in_features, out_features, bias: as `nn.Linear`.
        activations: "none" (weight-only), "tensor" (one scale per input tensor) or "token".
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activations: str = "none"):
        super().__init__()
        if activations not in ("none", "tensor", "token"):
            raise ValueError(f"activations={activations!r}; choose 'none', 'tensor' or 'token'")
        self.in_features, self.out_features, self.activations = in_features, out_features, activations
        self.register_buffer("qweight", torch.zeros(out_features, in_features,
                                                    dtype=torch.float8_e4m3fn))
        self.register_buffer("weight_scale", torch.ones(out_features, 1))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, activations: str = "none") -> Fp8Linear:
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, activations)
        q, s = fp8_quantize(linear.weight, "e4m3", "channel")
        m.qweight.copy_(q)
        m.weight_scale.copy_(s)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach())
        return m.to(linear.weight.device)

    def dequantized_weight(self) -> torch.Tensor:
        return fp8_dequantize(self.qweight, self.weight_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.activations != "none":
            gran = "tensor" if self.activations == "tensor" else "channel"
            xf = fp8_dequantize(*fp8_quantize(xf, "e4m3", gran))
        return F.linear(xf, self.dequantized_weight(), self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activations={self.activations}")
