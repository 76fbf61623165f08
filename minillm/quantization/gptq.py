"""GPTQ: post-training quantization with second-order error feedback.

Frantar et al. 2022, arXiv:2210.17323. For a linear layer with calibration inputs X (in, n) the
layer-wise objective is argmin_Ŵ ‖WX − ŴX‖², whose Hessian (per output row) is H = 2 X X^T.
Columns are quantized one at a time (OBQ, Frantar & Alistarh 2022); after quantizing column q
the remaining columns F absorb its error (Eq. 3):

    δ_F = − (w_q − quant(w_q)) / [H_F^-1]_qq · (H_F^-1)_{:,q},

and the inverse Hessian of the remaining columns is H^-1 with row and column q eliminated.
GPTQ's three steps make this fast (Algorithm 1):
1. the same column order for every row (so one H^-1 serves all rows);
2. *lazy batch updates*: the error of a block of B = 128 columns is applied to the columns
   inside the block at once, and to the rest of the matrix in one matmul at the block's end
   (the same numbers as column by column, far fewer memory passes);
3. the *Cholesky form*: the rows of H^-1 that the eliminations would produce are the rows of
   the upper Cholesky factor U of H^-1 (H^-1 = U^T U), scaled, so U is computed once.
Damping λ = 1% of the mean diagonal is added to H for numerical stability.
Options: `act_order` (columns by decreasing H_ii, the "desc_act" of the reference code) and
`group_size` (a zero-point grid per g columns, fixed when the group's first column is reached,
from the weights as updated so far).

Departures from the reference code (IST-DASLab/gptq):
- with groups (no act_order), a group's grid is computed when its first column is reached from
  the weights *as updated so far inside the current lazy block* — the same numbers as quantizing
  column by column, whatever the block size. The reference computes it from the full matrix,
  which receives the current block's updates only at the block's end, so its grid for a group
  that starts inside a block ignores the updates of that block's earlier columns and changes
  with the block size. The two agree when every group starts a block (g a multiple of B);
  otherwise the scales and zero points (and so the codes) can differ;
- with groups, the lazy block is rounded up to a multiple of the group size, so that lazy
  updates stay exactly equal to column by column;
- with act_order *and* groups the grids are fixed up front from the unquantized weights in the
  original column order (the reference code's `static_groups`), so the result is the ordinary
  group-wise format of int4.py.
"""

from __future__ import annotations

import torch

from minillm.quantization.formats import check_bits, check_group_size
from minillm.quantization.int4 import WEIGHT_BITS, PackedWeight, pack_quantized

__all__ = ["gptq_quantize", "minmax_grid", "quantize_to_grid", "hessian_from_inputs"]


def minmax_grid(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-point grid per row of w (rows, cols): fp16-rounded scale and zero point (rows,)."""
    qmax = 2 ** bits - 1
    lo = w.amin(1).clamp(max=0)
    hi = w.amax(1).clamp(min=0)
    scale = ((hi - lo).clamp(min=1e-8) / qmax).to(torch.float16).to(w.dtype)
    zero = torch.round(-lo / scale).clamp(0, qmax)
    return scale, zero


def quantize_to_grid(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and dequantized values of a column w (rows,) on per-row grids."""
    q = (torch.round(w / scale) + zero).clamp(0, 2 ** bits - 1)
    return q, scale * (q - zero)


def hessian_from_inputs(x: torch.Tensor) -> torch.Tensor:
    """H = 2 X X^T / n from inputs x (n, in) (float64 accumulation is left to the caller)."""
    x = x.reshape(-1, x.shape[-1]).double()
    if x.shape[0] == 0:
        raise ValueError("no calibration inputs: GPTQ needs at least one token")
    return 2 * x.t() @ x / x.shape[0]


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int = 4,
                  group_size: int | None = None, blocksize: int = 128, damp: float = 0.01,
                  act_order: bool = False, return_dequantized: bool = False
                  ) -> PackedWeight | tuple[PackedWeight, torch.Tensor]:
    """Quantize a weight (out, in) with GPTQ, given the input Hessian H (in, in).

    Args:
        bits: one of 2, 3, 4, 8. group_size: None (one grid per row) or a divisor of `in`.
        blocksize: columns per lazy batch (1 = column by column: the same result, slower).
        damp: fraction of the mean diagonal of H added to it. act_order: see the module doc.
    Returns:
        the packed weight (int4.py's format), and with `return_dequantized` also Ŵ (float64).
    """
    check_bits(bits, WEIGHT_BITS)
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"hessian has shape {tuple(hessian.shape)}, expected ({cols}, {cols})")
    if blocksize < 1:
        raise ValueError(f"blocksize={blocksize} must be >= 1")
    g = check_group_size(group_size, cols)
    grouped = g < cols
    W = weight.detach().double().clone()
    H = hessian.double().clone()
    dead = torch.diag(H) == 0                     # inputs never active: any value is exact
    H[dead, dead] = 1
    W[:, dead] = 0
    n_groups = cols // g
    scales = torch.zeros(rows, n_groups, dtype=W.dtype)
    zeros = torch.zeros(rows, n_groups, dtype=W.dtype)
    static = act_order and grouped
    if static:                                    # grids from the unquantized weights
        for j in range(n_groups):
            scales[:, j], zeros[:, j] = minmax_grid(W[:, j * g:(j + 1) * g], bits)
    elif not grouped:
        scales[:, 0], zeros[:, 0] = minmax_grid(W, bits)
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    Q = torch.zeros_like(W)
    codes = torch.zeros_like(W)
    if grouped and not static:
        blocksize = g * -(-blocksize // g)       # whole groups per block (exact lazy updates)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if grouped and not static and col % g == 0:
                scales[:, col // g], zeros[:, col // g] = minmax_grid(W1[:, i:i + g], bits)
            j = perm[col] // g if grouped else 0
            w, d = W1[:, i], Hinv[col, col]
            c, q = quantize_to_grid(w, scales[:, j], zeros[:, j], bits)
            codes[:, col], Q[:, col] = c, q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv[col, col:i2].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    inv = torch.argsort(perm)
    Q, codes = Q[:, inv], codes[:, inv]
    packed = pack_quantized(codes.to(torch.uint8), scales, zeros, bits)
    return (packed, Q) if return_dequantized else packed
