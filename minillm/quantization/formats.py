"""Integer number formats as pure functions: absmax and zero-point quantization, per tensor,
per channel or per group, and packing of sub-byte codes.

Absmax (symmetric) quantization with b bits (Dettmers et al. 2022, LLM.int8(), arXiv:2208.07339, §2.1):

    s = max|x| / (2^(b-1) - 1),   q = round(x / s) in [-(2^(b-1) - 1), 2^(b-1) - 1],   x ≈ s q

Zero-point (asymmetric, "min-max") quantization uses the whole unsigned range [0, 2^b - 1]:

    s = (max x - min x) / (2^b - 1),   z = round(-min x / s),   q = clamp(round(x / s) + z),
    x ≈ s (q - z)

so a distribution that is not centred on 0 (e.g. after a GELU) does not waste half the codes.
The statistics (max, min) are taken over the whole tensor, over each row (an output channel of a
weight, or a token of an activation), or over groups of `group_size` consecutive entries of a
row (GPTQ, AWQ and llama.cpp's group-wise formats).

Codes of b < 8 bits are packed densely: 8 codes of b bits make b bytes, big-endian, so two int4
codes share a byte with the first in the high nibble (bitsandbytes' order).
"""

from __future__ import annotations

import torch

__all__ = ["GRANULARITIES", "absmax_quantize", "absmax_dequantize", "zeropoint_quantize",
           "zeropoint_dequantize", "check_bits", "check_group_size", "pack_bits", "unpack_bits",
           "grouped"]

GRANULARITIES = ("tensor", "channel", "group")


def check_bits(bits: int, supported: tuple[int, ...], what: str = "bits") -> int:
    """Raise a ValueError unless `bits` is one of `supported`."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in supported:
        raise ValueError(f"{what}={bits!r} is not supported; choose one of {list(supported)}")
    return bits


def check_group_size(group_size: int | None, n_cols: int) -> int:
    """The group size to use for rows of `n_cols` entries (None or -1: the whole row).

    Raises:
        ValueError: if the group size is not positive or does not divide the row.
    """
    if group_size is None or group_size == -1:
        return n_cols
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size={group_size!r} must be a positive integer (or None / -1 "
                         "for one group per row)")
    if n_cols % group_size:
        raise ValueError(f"group_size={group_size} does not divide the row length {n_cols}; "
                         f"choose a divisor of {n_cols} such as "
                         f"{[g for g in (32, 64, 128, 256) if n_cols % g == 0] or [n_cols]}")
    return group_size


def grouped(x: torch.Tensor, granularity: str, group_size: int | None = None) -> torch.Tensor:
    """View a 2-D tensor as (R, G, g): the statistics are taken over the last axis.

    "tensor": (1, 1, numel); "channel": (rows, 1, cols); "group": (rows, cols / g, g).
    """
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D tensor (rows, cols), got shape {tuple(x.shape)}; "
                         "flatten activations to (tokens, features) first")
    if granularity == "tensor":
        return x.reshape(1, 1, -1)
    if granularity == "channel":
        return x.reshape(x.shape[0], 1, x.shape[1])
    if granularity == "group":
        if group_size is None:
            raise ValueError("granularity='group' needs a group_size")
        g = check_group_size(group_size, x.shape[1])
        return x.reshape(x.shape[0], x.shape[1] // g, g)
    raise ValueError(f"granularity={granularity!r}; choose one of {list(GRANULARITIES)}")


def _expand(scale: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, int]:
    R, G = scale.shape
    return scale[..., None], shape.numel() // (R * G)


def absmax_quantize(x: torch.Tensor, bits: int = 8, granularity: str = "channel",
                    group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization q = round(x / s), s = max|x| / (2^(b-1) - 1).

    Args:
        x: a 2-D float tensor (a weight (out, in), or activations (tokens, features)).
        bits: 2..8.
        granularity: "tensor", "channel" (per row) or "group" (per `group_size` entries of a row).

    Returns:
        q (int8, x's shape) and the scales (float32, (R, G): (1, 1), (rows, 1) or (rows, cols/g)).
    """
    check_bits(bits, tuple(range(2, 9)))
    xg = grouped(x.float(), granularity, group_size)
    qmax = 2 ** (bits - 1) - 1
    scale = xg.abs().amax(-1, keepdim=True).clamp(min=1e-12) / qmax
    q = torch.round(xg / scale).clamp(-qmax, qmax).to(torch.int8)
    return q.reshape(x.shape), scale.squeeze(-1)


def absmax_dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x ≈ s q, with the scales of `absmax_quantize` (their shape tells the granularity)."""
    s, g = _expand(scale.float(), q.shape)
    return (q.float().reshape(*scale.shape, g) * s).reshape(q.shape)


def zeropoint_quantize(x: torch.Tensor, bits: int = 8, granularity: str = "channel",
                       group_size: int | None = None, scale_dtype: torch.dtype = torch.float32,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric quantization q = clamp(round(x / s) + z, 0, 2^b - 1).

    The range always contains 0 (so that 0 is exact, as zero padding and ReLU outputs need).
    `scale_dtype=torch.float16` rounds the scales to what a compact checkpoint stores *before*
    quantizing, so that dequantization with the stored scales is exact.

    Returns:
        q (uint8), scales (`scale_dtype`, (R, G)) and zero points (uint8, (R, G)).
    """
    check_bits(bits, tuple(range(2, 9)))
    xg = grouped(x.float(), granularity, group_size)
    qmax = 2 ** bits - 1
    lo = xg.amin(-1, keepdim=True).clamp(max=0)
    hi = xg.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo).clamp(min=1e-8) / qmax).to(scale_dtype).float()
    zero = torch.round(-lo / scale).clamp(0, qmax)
    q = (torch.round(xg / scale) + zero).clamp(0, qmax).to(torch.uint8)
    return q.reshape(x.shape), scale.squeeze(-1).to(scale_dtype), zero.squeeze(-1).to(torch.uint8)


def zeropoint_dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """x ≈ s (q - z), with the scales and zero points of `zeropoint_quantize`."""
    s, g = _expand(scale.float(), q.shape)
    z, _ = _expand(zero.float(), q.shape)
    return ((q.float().reshape(*scale.shape, g) - z) * s).reshape(q.shape)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned `bits`-bit codes densely into bytes: 8 codes -> `bits` bytes, big-endian
    (for 4 bits: byte = first << 4 | second). The code count is padded to a multiple of 8.

    Args:
        codes: integer tensor of any shape with values in [0, 2^bits).
    Returns:
        a flat uint8 tensor of ceil(numel / 8) * bits bytes.
    """
    check_bits(bits, tuple(range(1, 9)))
    v = codes.reshape(-1).to(torch.int64)
    if v.numel() and (v.min() < 0 or v.max() >= 2 ** bits):
        raise ValueError(f"codes must lie in [0, {2 ** bits}) to pack into {bits} bits")
    v = torch.nn.functional.pad(v, (0, -v.numel() % 8)).reshape(-1, 8)
    shifts = bits * torch.arange(7, -1, -1)
    word = (v << shifts).sum(-1, keepdim=True)                          # (N/8, 1), 8*bits bits
    byte_shifts = 8 * torch.arange(bits - 1, -1, -1)
    return ((word >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of `pack_bits`: the first `numel` codes, as uint8."""
    check_bits(bits, tuple(range(1, 9)))
    if bits == 8:
        return packed.reshape(-1)[:numel]
    if bits == 4:  # the common case, without 64-bit words
        return torch.stack([packed >> 4, packed & 0xF], -1).reshape(-1)[:numel]
    b = packed.reshape(-1, bits).to(torch.int64)
    word = (b << (8 * torch.arange(bits - 1, -1, -1))).sum(-1, keepdim=True)
    codes = (word >> (bits * torch.arange(7, -1, -1))) & (2 ** bits - 1)
    return codes.reshape(-1)[:numel].to(torch.uint8)
