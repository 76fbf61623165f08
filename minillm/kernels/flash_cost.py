r"""Counting what a tiled attention kernel moves between HBM and fast memory.

FlashAttention (Dao et al., arXiv:2205.14135, Theorem 2) counts HBM accesses: standard attention
reads Q, K, V and writes and re-reads the N x N score and probability matrices,
Θ(N d + N²); FlashAttention reads each K, V tile once per query tile, Θ(N² d² / M) for an SRAM
of M elements, because its tiles are B_c = ⌈M / 4d⌉ keys by B_r = min(B_c, d) queries, so there
are N / B_r query tiles each streaming all N·d elements of K and V.

`flash_tile_visits` counts the (query tile, key tile) pairs that `flash_torch_forward` and the
Triton forward kernel actually visit, causal tile skipping included (a test checks the count
against the loop), and `flash_forward_hbm_elements` turns that into elements read and written.
"""

from __future__ import annotations

import math

__all__ = ["fa1_block_sizes", "fa1_hbm_elements", "flash_forward_hbm_elements",
           "flash_tile_visits", "standard_attention_hbm_elements"]


def flash_tile_visits(t_q: int, t_k: int, block_q: int, block_k: int, causal: bool) -> int:
    """Number of (query tile, key tile) pairs the forward loop visits.

    Args:
        t_q, t_k: query and key lengths; causal is bottom-right aligned (j ≤ i + t_k - t_q).
        block_q, block_k: tile sizes.

    Returns:
        The count; causal tiles wholly above the diagonal are skipped.
    """
    offset = t_k - t_q
    visits = 0
    for i0 in range(0, t_q, block_q):
        j_end = min(t_k, min(i0 + block_q, t_q) + offset) if causal else t_k
        visits += math.ceil(max(j_end, 0) / block_k)
    return visits


def flash_forward_hbm_elements(t: int, d: int, block_q: int, block_k: int,
                               causal: bool = False) -> int:
    """Elements the tiled forward reads from and writes to HBM for one (batch, head).

    Each query tile is read once and its output and log-sum-exp written once (2 t d + t over all
    rows); every visited key tile brings a K and a V tile (2 block_k d elements, fewer for the
    last partial tile, which this count rounds up as the hardware does with a masked load).
    """
    return 2 * t * d + t + flash_tile_visits(t, t, block_q, block_k, causal) * 2 * block_k * d


def standard_attention_hbm_elements(t: int, d: int, backward: bool = False) -> int:
    """FlashAttention's Algorithm 0 for one (batch, head): read Q, K (2 t d), write S (t²),
    read S and write P (2 t²), read P and V (t² + t d), write O (t d): 4 t d + 4 t².

    backward=True adds the standard backward (FlashAttention's Algorithm 3), one kernel per
    line: dV = Pᵀ dO (read P, dO; write dV: t² + 2 t d), dP = dO Vᵀ (read dO, V; write dP:
    2 t d + t²), dS = P ∘ (dP − rowsum(P ∘ dP)) (read P, dP; write dS: 3 t²), dQ = dS K and
    dK = dSᵀ Q (read dS and K or Q, write dQ or dK: 2 (t² + 2 t d)): 7 t² + 8 t d more.
    Masking and dropout kernels, which an implementation may add, are not counted."""
    fwd = 4 * t * d + 4 * t * t
    return fwd + (7 * t * t + 8 * t * d if backward else 0)


def fa1_hbm_elements(t: int, d: int, sram_elements: int, backward: bool = False) -> int:
    """FlashAttention-1's HBM accesses for one (batch, head), counted from its Algorithm 1
    (forward) and Algorithm 4 (backward) with the tiles of `fa1_block_sizes`.

    Forward: the outer loop runs over the T_c = ⌈t / B_c⌉ key/value tiles, each loaded once
    (2 t d in all); for each, the inner loop reads every query tile Q_i, O_i, ℓ_i, m_i and
    writes O_i, ℓ_i, m_i back: T_c (3 t d + 4 t). Backward: K_j, V_j loaded and dK_j, dV_j
    written once (4 t d); for each of the T_c key tiles every Q_i, O_i, dO_i, dQ_i, ℓ_i, m_i is
    read and dQ_i written: T_c (5 t d + 2 t). So Θ(t² d / B_c) = Θ(t² d² / M).
    """
    _, b_c = fa1_block_sizes(sram_elements, d)
    t_c = math.ceil(t / b_c)
    fwd = 2 * t * d + t_c * (3 * t * d + 4 * t)
    return fwd + (4 * t * d + t_c * (5 * t * d + 2 * t) if backward else 0)


def fa1_block_sizes(sram_elements: int, d: int) -> tuple[int, int]:
    """FlashAttention-1's tiles for an SRAM of M elements: B_c = ⌈M / 4d⌉, B_r = min(B_c, d).

    Returns:
        (B_r, B_c): query rows and key columns per tile.
    """
    b_c = math.ceil(sram_elements / (4 * d))
    return min(b_c, d), b_c
