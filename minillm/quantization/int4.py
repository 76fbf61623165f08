"""Group-wise weight-only quantization (round-to-nearest), int4 / int3 / int8, packed.

Each row of a weight W (out, in) is cut into groups of g consecutive input columns (g = 32, 64,
128, or the whole row); each group gets its own zero-point quantizer (formats.py):

    s = (max w - min w) / (2^b - 1),  z = round(-min w / s),  q = clamp(round(w / s) + z, 0, 2^b-1)

and the layer computes y = x dequant(W)^T + b, dequantizing on the fly (weight-only: the
activations stay in floating point, so it is the weights' bytes, not the arithmetic, that
shrink — what matters when decoding is memory-bound). Smaller groups follow the weights more
closely at the cost of one fp16 scale and one zero point per group:

    bits per weight = b + (16 + 8) / g            (b = 4, g = 128: 4.19)

The codes are packed densely (8 codes of b bits in b bytes: two int4 per byte). GPTQ
(gptq.py) produces the same format with better-chosen codes; this module's `rtn_quantize` is its
round-to-nearest baseline (Frantar et al. 2022, arXiv:2210.17323, "RTN").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minillm.quantization.formats import (
    check_bits,
    check_group_size,
    pack_bits,
    unpack_bits,
    zeropoint_dequantize,
    zeropoint_quantize,
)

__all__ = ["WEIGHT_BITS", "PackedWeight", "rtn_quantize", "WeightOnlyLinear", "bits_per_weight"]

WEIGHT_BITS = (2, 3, 4, 8)


@dataclass
class PackedWeight:
    """A group-wise quantized weight: packed codes, fp16 scales and uint8 zero points."""

    packed: torch.Tensor       # uint8, ceil(out*in / 8) * bits bytes
    scale: torch.Tensor        # float16 (out, in / g)
    zero: torch.Tensor         # uint8 (out, in / g)
    bits: int
    shape: tuple[int, int]

    @property
    def group_size(self) -> int:
        return self.shape[1] // self.scale.shape[1]

    def codes(self) -> torch.Tensor:
        return unpack_bits(self.packed, self.bits, self.shape[0] * self.shape[1]).reshape(self.shape)

    def dequantize(self) -> torch.Tensor:
        return zeropoint_dequantize(self.codes(), self.scale, self.zero)


def bits_per_weight(bits: int, group_size: int) -> float:
    """Storage per weight: the code plus an fp16 scale and an 8-bit zero point per group."""
    return bits + 24 / group_size


def rtn_quantize(weight: torch.Tensor, bits: int = 4, group_size: int | None = 128) -> PackedWeight:
    """Round-to-nearest group-wise quantization of a weight (out, in).

    Args:
        bits: one of 2, 3, 4, 8.
        group_size: consecutive input columns sharing a scale (must divide `in`); None = row.
    """
    check_bits(bits, WEIGHT_BITS)
    g = check_group_size(group_size, weight.shape[1])
    q, s, z = zeropoint_quantize(weight.detach(), bits, "group", g, scale_dtype=torch.float16)
    return PackedWeight(pack_bits(q, bits), s, z, bits, tuple(weight.shape))


def pack_quantized(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                   bits: int) -> PackedWeight:
    """Wrap codes chosen elsewhere (GPTQ) in the packed format."""
    return PackedWeight(pack_bits(codes, bits), scale.to(torch.float16), zero.to(torch.uint8),
                        bits, tuple(codes.shape))


class WeightOnlyLinear(nn.Module):
    """`nn.Linear` with packed group-wise integer weights, dequantized at each forward.

    `cache_dequantized=True` keeps the fp32 weight after the first forward (fast, but the memory
    saving is then gone at run time; the checkpoint stays small either way).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 4,
                 group_size: int | None = 128, cache_dequantized: bool = False):
        super().__init__()
        check_bits(bits, WEIGHT_BITS)
        g = check_group_size(group_size, in_features)
        self.in_features, self.out_features, self.bits, self.group_size = \
            in_features, out_features, bits, g
        n_bytes = -(-in_features * out_features // 8) * bits
        self.register_buffer("packed", torch.zeros(n_bytes, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, in_features // g,
                                                 dtype=torch.float16))
        self.register_buffer("zero", torch.zeros(out_features, in_features // g,
                                                 dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.cache_dequantized = cache_dequantized
        self._cached: torch.Tensor | None = None

    @classmethod
    def from_packed(cls, pw: PackedWeight, bias: torch.Tensor | None = None,
                    **kw) -> WeightOnlyLinear:
        m = cls(pw.shape[1], pw.shape[0], bias is not None, pw.bits, pw.group_size, **kw)
        m.packed.copy_(pw.packed)
        m.scale.copy_(pw.scale)
        m.zero.copy_(pw.zero)
        if bias is not None:
            m.bias.copy_(bias.detach())
        return m

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 4, group_size: int | None = 128,
                    **kw) -> WeightOnlyLinear:
        return cls.from_packed(rtn_quantize(linear.weight, bits, group_size), linear.bias, **kw)

    def packed_weight(self) -> PackedWeight:
        return PackedWeight(self.packed, self.scale, self.zero, self.bits,
                            (self.out_features, self.in_features))

    def dequantized_weight(self) -> torch.Tensor:
        return self.packed_weight().dequantize()

    def _load_from_state_dict(self, *args, **kwargs):
        self._cached = None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._cached is not None:
            w = self._cached
        else:
            w = self.dequantized_weight().to(x.dtype)
            if self.cache_dequantized:
                self._cached = w
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, group_size={self.group_size}")
