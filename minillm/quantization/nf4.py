"""NF4: 4-bit NormalFloat with blocks of 64 and double quantization (QLoRA).

Dettmers et al. 2023, arXiv:2305.14314, §3. Trained weights are roughly normal, so the 16
levels are placed at quantiles of N(0, 1) rather than evenly: with offset δ = 0.9677083,

    positive levels  Φ^-1(linspace(δ, 1/2, 9))[:-1]   (8 values)
    negative levels -Φ^-1(linspace(δ, 1/2, 8))[:-1]   (7 values),   plus an exact 0,

sorted and divided by the largest, so the levels span [-1, 1] (asymmetric: 8 positive, 7
negative). A block of 64 weights is scaled by its absmax c and each w / c goes to the nearest
level (4 bits; two codes per byte, first in the high nibble).

*Double quantization*: the fp32 absmax constants (32 / 64 = 0.5 bit per weight) are themselves
quantized: their mean is subtracted, and blocks of 256 are coded in 8 bits with the signed
dynamic map of Dettmers 2015 (arXiv:1511.04561), leaving one fp32 per 256 constants:
8/64 + 32/(64·256) ≈ 0.127 bit per weight.

Against bitsandbytes (tests): the NF4 codes, their packing and the fp32 block absmax are
bit-identical to `quantize_4bit(..., quant_type="nf4")`; with double quantization
(`compress_statistics=True`) the offset and the second-level scales are identical, but the
8-bit codes of the absmax constants are not always: bitsandbytes' CPU kernel picks a
non-nearest code of the dynamic map for some constants, where minillm picks the nearest (as
bitsandbytes' pure-torch path does). On the shapes the tests try, under 1% of the blocks'
constants are coded differently (the tests assert it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NF4_LEVELS", "nf4_levels", "dynamic_map", "quantize_blockwise",
           "dequantize_blockwise", "NF4Weight", "nf4_quantize", "NF4Linear"]

# the table published with QLoRA (bitsandbytes functional.get_4bit_type("nf4"))
NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0])


def nf4_levels(offset: float = 0.9677083) -> torch.Tensor:
    """The 16 NF4 levels derived from normal quantiles (float64, equal to `NF4_LEVELS` to
    ~1e-7; quantization uses the published float32 table so that codes match exactly)."""
    ppf = torch.special.ndtri
    pos = ppf(torch.linspace(offset, 0.5, 9, dtype=torch.float64))[:-1]
    neg = -ppf(torch.linspace(offset, 0.5, 8, dtype=torch.float64))[:-1]
    levels = torch.cat([pos, neg, torch.zeros(1, dtype=torch.float64)]).sort().values
    return levels / levels.max()


def dynamic_map(max_exponent_bits: int = 7, total_bits: int = 8) -> torch.Tensor:
    """The signed 8-bit dynamic (tree) quantization map of Dettmers 2015 (256 sorted values in
    [-1, 1]): a decimal exponent from 10^-6 to 10^0, then evenly spaced fractions whose count
    doubles with each exponent step."""
    values: list[float] = []
    extra = 2 ** (total_bits - 1 - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        n = 2 ** (i + total_bits - 1 - max_exponent_bits) + 1
        edges = torch.linspace(0.1, 1, n, dtype=torch.float32)
        mids = (edges[:-1] + edges[1:]) / 2.0
        values += (10 ** (-(max_exponent_bits - 1) + i) * mids).tolist()
        values += (-(10 ** (-(max_exponent_bits - 1) + i)) * mids).tolist()
    if extra > 0:
        edges = torch.linspace(0.1, 1, extra + 1, dtype=torch.float32)
        mids = (edges[:-1] + edges[1:]) / 2.0
        values += (10 ** (-(max_exponent_bits - 1) + max_exponent_bits - 1) * mids).tolist()
        values += (-(10 ** (-(max_exponent_bits - 1) + max_exponent_bits - 1)) * mids).tolist()
    values += [0.0, 1.0]
    return torch.tensor(values).sort().values


def _blocks(x: torch.Tensor, blocksize: int) -> torch.Tensor:
    if blocksize <= 0 or x.numel() % blocksize:
        raise ValueError(f"blocksize={blocksize} must be positive and divide the tensor's "
                         f"{x.numel()} entries")
    return x.reshape(-1, blocksize).float()


def quantize_blockwise(x: torch.Tensor, code: torch.Tensor, blocksize: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax quantization to the nearest value of a sorted `code` book.

    Returns:
        codes (uint8, x's numel) and the per-block absmax (float32).
    """
    b = _blocks(x, blocksize)
    absmax = b.abs().amax(-1)
    scaled = torch.clamp(b * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(-1), -1, 1)
    midpoints = (code[:-1] + code[1:]) / 2
    return torch.bucketize(scaled.reshape(-1), midpoints).to(torch.uint8), absmax


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor,
                         blocksize: int) -> torch.Tensor:
    """code[codes] * absmax, block by block (flat float32)."""
    return (code[codes.long()].reshape(-1, blocksize) * absmax.unsqueeze(-1)).reshape(-1)


@dataclass
class NF4Weight:
    packed: torch.Tensor            # uint8 (numel / 2): two NF4 codes per byte
    absmax: torch.Tensor            # float32 (blocks,) or, double-quantized, uint8 codes
    shape: tuple[int, ...]
    blocksize: int = 64
    absmax_scale: torch.Tensor | None = None   # float32 (blocks / 256,): second-level absmax
    absmax_offset: torch.Tensor | None = None  # float32 scalar: mean of the absmax constants
    absmax_blocksize: int = 256

    def block_absmax(self) -> torch.Tensor:
        if self.absmax_scale is None:
            return self.absmax
        return dequantize_blockwise(self.absmax, self.absmax_scale, dynamic_map(),
                                    self.absmax_blocksize) + self.absmax_offset

    def codes(self) -> torch.Tensor:
        return torch.stack([self.packed >> 4, self.packed & 0xF], -1).reshape(-1)

    def dequantize(self) -> torch.Tensor:
        out = dequantize_blockwise(self.codes(), self.block_absmax(), NF4_LEVELS.to(
            self.packed.device), self.blocksize)
        return out.reshape(self.shape)


def nf4_quantize(weight: torch.Tensor, blocksize: int = 64, double_quant: bool = True,
                 absmax_blocksize: int = 256) -> NF4Weight:
    """NF4-quantize a tensor in blocks of `blocksize` (QLoRA: 64), optionally double-quantizing
    the absmax constants in blocks of `absmax_blocksize` (256; must divide the block count)."""
    codes, absmax = quantize_blockwise(weight.detach(), NF4_LEVELS.to(weight.device), blocksize)
    packed = (codes[0::2] << 4) | codes[1::2]
    if not double_quant:
        return NF4Weight(packed, absmax, tuple(weight.shape), blocksize)
    offset = absmax.mean()
    qabs, scale2 = quantize_blockwise(absmax - offset, dynamic_map().to(weight.device),
                                      absmax_blocksize)
    return NF4Weight(packed, qabs, tuple(weight.shape), blocksize, scale2, offset,
                     absmax_blocksize)


class NF4Linear(nn.Module):
    """`nn.Linear` with NF4 weights (double-quantized constants), dequantized at each forward."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 blocksize: int = 64, double_quant: bool = True, absmax_blocksize: int = 256):
        super().__init__()
        n = in_features * out_features
        blocks = n // blocksize
        if n % blocksize or (double_quant and blocks % absmax_blocksize):
            raise ValueError(f"NF4 needs out*in={n} divisible by blocksize={blocksize}"
                             + (f" and {blocks} blocks divisible by absmax_blocksize="
                                f"{absmax_blocksize}" if double_quant else "")
                             + "; use smaller blocks or double_quant=False")
        self.in_features, self.out_features = in_features, out_features
        self.blocksize, self.double_quant, self.absmax_blocksize = \
            blocksize, double_quant, absmax_blocksize
        self.register_buffer("packed", torch.zeros(n // 2, dtype=torch.uint8))
        if double_quant:
            self.register_buffer("absmax", torch.zeros(blocks, dtype=torch.uint8))
            self.register_buffer("absmax_scale", torch.ones(blocks // absmax_blocksize))
            self.register_buffer("absmax_offset", torch.zeros(()))
        else:
            self.register_buffer("absmax", torch.ones(blocks))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, blocksize: int = 64, double_quant: bool = True,
                    absmax_blocksize: int = 256) -> NF4Linear:
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, blocksize,
                double_quant, absmax_blocksize)
        w = nf4_quantize(linear.weight, blocksize, double_quant, absmax_blocksize)
        m.packed.copy_(w.packed)
        m.absmax.copy_(w.absmax)
        if double_quant:
            m.absmax_scale.copy_(w.absmax_scale)
            m.absmax_offset.copy_(w.absmax_offset)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach())
        return m

    def nf4_weight(self) -> NF4Weight:
        return NF4Weight(self.packed, self.absmax, (self.out_features, self.in_features),
                         self.blocksize, getattr(self, "absmax_scale", None),
                         getattr(self, "absmax_offset", None), self.absmax_blocksize)

    def dequantized_weight(self) -> torch.Tensor:
        return self.nf4_weight().dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"blocksize={self.blocksize}, double_quant={self.double_quant}")
