r"""FlashAttention-2 written in PyTorch: exact attention in tiles, without the T x T matrix.

Dao et al., *FlashAttention* (arXiv:2205.14135) and Dao, *FlashAttention-2* (arXiv:2307.08691).
The output is the ordinary O = softmax(S) V with S = scale · Q Kᵀ (+ mask); what changes is the
order of the arithmetic, so that only tiles of S ever exist.

**Safe softmax.** softmax(s)_j = e^{s_j - m} / ℓ with m = max_j s_j and ℓ = Σ_j e^{s_j - m}.
Subtracting the max changes nothing mathematically and keeps every exponent ≤ 0.

**Online softmax (forward).** Split a row of keys into tiles 1..n. After tile t keep the
running max m_t, the running sum ℓ_t and the unnormalised output accumulator A_t::

    m_t = max(m_{t-1}, rowmax(S_t))
    P_t = exp(S_t - m_t)                               # the tile's weights, ≤ 1
    ℓ_t = e^{m_{t-1} - m_t} ℓ_{t-1} + rowsum(P_t)
    A_t = e^{m_{t-1} - m_t} A_{t-1} + P_t V_t          # rescale what was summed under the old max

With m_0 = -∞, ℓ_0 = 0, A_0 = 0, after the last tile O = A_n / ℓ_n exactly (every term was
summed under the final max once the factors e^{m_{t-1} - m_t} telescope). FlashAttention-2's
departures from FlashAttention-1, both here: the division by ℓ happens once at the end, not per
tile, and the only statistic saved for the backward is the log-sum-exp L = m_n + log ℓ_n.

**Backward by recomputation.** With P = exp(S - L) (one tile at a time, from Q, K and the saved L)::

    dV = Pᵀ dO          dP = dO Vᵀ
    dS = P ∘ (dP - D)   with D = rowsum(dO ∘ O)   (= rowsum(P ∘ dP), one number per query)
    dQ = scale · dS K   dK = scale · dSᵀ Q

The loop runs over key tiles outside (dK, dV of a tile finished in one pass) and query tiles
inside (dQ accumulated), FlashAttention-2's Algorithm 2. A gradient dL flowing into the
log-sum-exp itself (∂L_i/∂S_ij = P_ij) only shifts D to D - dL.

Memory: saved for backward are Q, K, V, O and L, i.e. Θ(T·d); working memory is one tile of
scores, Θ(B_r·B_c). The naive formula saves the T×T softmax.

Departures and details:

- Causal masking is bottom-right aligned (query i sees keys j ≤ i + T_k - T_q, as after a KV
  cache) and tiles wholly above that diagonal are skipped, forward and backward.
- Grouped-query heads are grouped, not copied: q is viewed as (B, H_kv, G, T, d) so each key
  tile serves its G query heads by broadcasting, and dK, dV sum over the group.
- A mask (boolean, True = may attend, or a float bias such as ALiBi) is sliced tile by tile from
  a broadcast view; the mask itself is the caller's tensor (it is not differentiated).
- Accumulation is in float32 (float64 for float64 inputs, for gradcheck) whatever the input
  dtype; outputs are cast back. Rows with no visible key give O = 0 and L = -∞.
- No dropout (ValueError): attention dropout needs the RNG replayed in the backward.
"""

from __future__ import annotations

import math

import torch

from minillm.kernels.flash_autograd import flash_attention_function
from minillm.kernels.registry import register_attention

__all__ = ["FlashAttentionTorch", "check_attention_inputs", "flash_torch_attention",
           "flash_torch_attention_with_lse", "flash_torch_backward", "flash_torch_forward"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_attention_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           mask: torch.Tensor | None, dropout_p: float, *, backend: str,
                           head_dims: tuple[int, int], dtypes=SUPPORTED_DTYPES) -> None:
    """Raise a ValueError naming the argument, its value and the fix, for input a backend
    cannot take. q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D) with H % Hkv == 0."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{backend}: {name} has shape {tuple(t.shape)}; expected 4 dims "
                             f"(batch, heads, tokens, head_dim)")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"{backend}: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}); "
                         f"cast them to one dtype")
    if q.dtype not in dtypes:
        raise ValueError(f"{backend}: dtype {q.dtype} is not supported; use one of "
                         f"{[str(d) for d in dtypes]}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{backend}: q, k, v are on different devices ({q.device}, {k.device}, "
                         f"{v.device}); move them to one device")
    if mask is not None and mask.device != q.device:
        raise ValueError(f"{backend}: mask is on {mask.device} but q on {q.device}; move it")
    B, H, _, D = q.shape
    if k.shape != v.shape or k.size(0) != B or k.size(3) != D:
        raise ValueError(f"{backend}: k {tuple(k.shape)} and v {tuple(v.shape)} must both be "
                         f"(B={B}, H_kv, T_k, D={D}) for q {tuple(q.shape)}")
    if k.size(1) == 0 or H % k.size(1):
        raise ValueError(f"{backend}: n_head={H} is not a multiple of n_kv_head={k.size(1)}")
    lo, hi = head_dims
    if not lo <= D <= hi:
        raise ValueError(f"{backend}: head_dim={D} is not supported (supported: {lo}..{hi}); "
                         f"change d_model / n_head, or use attn_impl='sdpa'")
    if dropout_p:
        raise ValueError(f"{backend}: dropout_p={dropout_p} is not supported (the backward would "
                         f"need the dropout mask replayed); use attn_impl='sdpa' or 'naive' for "
                         f"attention dropout, or dropout=0")


def _mask_view(mask: torch.Tensor | None, B: int, H: int, Hkv: int, Tq: int, Tk: int):
    """A (B, Hkv, G, Tq, Tk) broadcast view of the caller's mask (no copy), or None."""
    if mask is None:
        return None
    try:
        full = mask.expand(B, H, Tq, Tk)
    except RuntimeError as err:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to "
                         f"(B, H, Tq, Tk) = {(B, H, Tq, Tk)}") from err
    return full.view(B, Hkv, H // Hkv, Tq, Tk)


def _scores(q_tile: torch.Tensor, k_tile: torch.Tensor, mask5, causal: bool, offset: int,
            i0: int, j0: int) -> torch.Tensor:
    """Scores of one (query tile, key tile) pair, masked. q_tile is already scaled."""
    s = q_tile @ k_tile.transpose(-2, -1)  # (B, Hkv, G, bq, bk)
    bq, bk = s.shape[-2:]
    if causal and j0 + bk - 1 > i0 + offset:  # the tile crosses the diagonal
        rows = torch.arange(i0, i0 + bq, device=s.device)[:, None]
        cols = torch.arange(j0, j0 + bk, device=s.device)[None, :]
        s = s.masked_fill(cols > rows + offset, float("-inf"))
    if mask5 is not None:
        m = mask5[..., i0:i0 + bq, j0:j0 + bk]
        s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m.to(s.dtype)
    return s


def flash_torch_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                        mask: torch.Tensor | None = None, causal: bool = False,
                        scale: float | None = None, block_q: int = 64,
                        block_k: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiled forward (no autograd): running max m, sum ℓ, rescaled accumulator.

    Args:
        q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D).
        mask, causal, scale: as for `flash_torch_attention`.
        block_q, block_k: tile sizes B_r and B_c.

    Returns:
        out (B, H, Tq, D) in q's dtype and the log-sum-exp L (B, H, Tq) in the accumulation
        dtype (float32, or float64 for float64 inputs), -inf for rows that see no key.
    """
    B, H, Tq, D = q.shape
    Hkv, Tk = k.size(1), k.size(2)
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    offset = Tk - Tq
    qg = q.view(B, Hkv, H // Hkv, Tq, D)           # (B, Hkv, G, Tq, D)
    kg, vg = k[:, :, None], v[:, :, None]          # (B, Hkv, 1, Tk, D)
    mask5 = _mask_view(mask, B, H, Hkv, Tq, Tk)
    out = torch.zeros(qg.shape, dtype=acc_dtype, device=q.device)
    lse = torch.full(qg.shape[:-1], float("-inf"), dtype=acc_dtype, device=q.device)
    for i0 in range(0, Tq, block_q):
        i1 = min(i0 + block_q, Tq)
        q_tile = qg[..., i0:i1, :].to(acc_dtype) * scale
        m = torch.full(q_tile.shape[:-1], float("-inf"), dtype=acc_dtype, device=q.device)
        ell = torch.zeros_like(m)
        acc = torch.zeros_like(q_tile)
        j_end = min(Tk, i1 + offset) if causal else Tk  # causal: later key tiles are skipped
        for j0 in range(0, max(j_end, 0), block_k):
            j1 = min(j0 + block_k, j_end)
            s = _scores(q_tile, kg[..., j0:j1, :].to(acc_dtype), mask5, causal, offset, i0, j0)
            m_new = torch.maximum(m, s.amax(-1))
            m_safe = torch.where(torch.isinf(m_new), 0.0, m_new)  # a row that saw nothing yet
            p = torch.exp(s - m_safe[..., None])                   # (B, Hkv, G, bq, bk)
            alpha = torch.exp(m - m_safe)                          # e^{m_{t-1} - m_t}
            ell = alpha * ell + p.sum(-1)
            acc = alpha[..., None] * acc + p @ vg[..., j0:j1, :].to(acc_dtype)
            m = m_new
        seen = ell > 0
        out[..., i0:i1, :] = torch.where(seen[..., None], acc / ell.clamp_min(1e-30)[..., None], 0)
        lse[..., i0:i1] = torch.where(seen, m + torch.log(ell.clamp_min(1e-30)), float("-inf"))
    return out.view(B, H, Tq, D).to(q.dtype), lse.view(B, H, Tq)


def flash_torch_backward(q, k, v, out, lse, d_out, d_lse, *, mask=None, causal=False,
                         scale=None, block_q: int = 64, block_k: int = 64):
    """dQ, dK, dV by recomputing each tile of P from Q, K and the saved log-sum-exp."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.size(1), k.size(2)
    G = H // Hkv
    acc_dtype = lse.dtype
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    offset = Tk - Tq
    qg = q.view(B, Hkv, G, Tq, D)
    do = d_out.reshape(B, Hkv, G, Tq, D).to(acc_dtype)
    delta = (do * out.reshape(B, Hkv, G, Tq, D).to(acc_dtype)).sum(-1)  # D = rowsum(dO ∘ O)
    if d_lse is not None:
        delta = delta - d_lse.reshape(B, Hkv, G, Tq).to(acc_dtype)
    # P = exp(S - L); a row that saw no key has L = -inf and must give P = 0, not NaN
    lse5 = torch.where(torch.isinf(lse), float("inf"), lse).reshape(B, Hkv, G, Tq)
    mask5 = _mask_view(mask, B, H, Hkv, Tq, Tk)
    dq = torch.zeros(qg.shape, dtype=acc_dtype, device=q.device)
    dk = torch.zeros(k.shape, dtype=acc_dtype, device=q.device)
    dv = torch.zeros(v.shape, dtype=acc_dtype, device=q.device)
    for j0 in range(0, Tk, block_k):
        j1 = min(j0 + block_k, Tk)
        k_tile = k[:, :, None, j0:j1].to(acc_dtype)            # (B, Hkv, 1, bk, D)
        v_tile = v[:, :, None, j0:j1].to(acc_dtype)
        dk_tile = torch.zeros(B, Hkv, G, j1 - j0, D, dtype=acc_dtype, device=q.device)
        dv_tile = torch.zeros_like(dk_tile)
        # causal: queries i < j0 - offset see none of these keys; start at their tile
        i_start = (max(0, j0 - offset) // block_q) * block_q if causal else 0
        for i0 in range(i_start, Tq, block_q):
            i1 = min(i0 + block_q, Tq)
            q_tile = qg[..., i0:i1, :].to(acc_dtype) * scale
            s = _scores(q_tile, k_tile, mask5, causal, offset, i0, j0)
            p = torch.exp(s - lse5[..., i0:i1, None])              # (B, Hkv, G, bq, bk)
            do_tile = do[..., i0:i1, :]
            dv_tile += p.transpose(-2, -1) @ do_tile
            dp = do_tile @ v_tile.transpose(-2, -1)
            ds = p * (dp - delta[..., i0:i1, None])
            dq[..., i0:i1, :] += scale * (ds @ k_tile)
            dk_tile += ds.transpose(-2, -1) @ q_tile               # q_tile carries the scale
        dk[:, :, j0:j1] = dk_tile.sum(2)                           # sum over the query group
        dv[:, :, j0:j1] = dv_tile.sum(2)
    return dq.view(B, H, Tq, D).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


FlashAttentionTorch = flash_attention_function(
    "FlashAttentionTorch", flash_torch_forward, flash_torch_backward, ("block_q", "block_k"))


def flash_torch_attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                                   mask: torch.Tensor | None = None, causal: bool = False,
                                   scale: float | None = None, dropout_p: float = 0.0,
                                   block_q: int = 64, block_k: int = 64,
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention and its log-sum-exp, both differentiable.

    Args:
        q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D) with H % Hkv == 0.
        mask: None, boolean broadcastable to (B, H, Tq, Tk) (True = may attend) or a float bias.
        causal: query i sees keys j ≤ i + Tk - Tq (bottom-right aligned).
        scale: default 1/sqrt(D).
        dropout_p: must be 0.
        block_q, block_k: tile sizes.

    Returns:
        out (B, H, Tq, D) and L = log Σ_j exp(s_ij) (B, H, Tq), float32 (float64 inputs: float64).
    """
    check_attention_inputs(q, k, v, mask, dropout_p, backend="flash_torch", head_dims=(1, 256))
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block_q={block_q}, block_k={block_k}: tile sizes must be >= 1")
    return FlashAttentionTorch.apply(q, k, v, mask, causal, scale, block_q, block_k)


def flash_torch_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                          mask: torch.Tensor | None = None, causal: bool,
                          scale: float | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """The "flash_torch" attention backend (minillm.kernels signature).

    Args:
        q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D).
        mask: None, boolean (True = may attend) or float bias, broadcastable to (B, H, Tq, Tk).
        causal: bottom-right-aligned causal mask.
        scale: default 1/sqrt(D).
        dropout_p: must be 0 (ValueError otherwise).

    Returns:
        (B, H, Tq, D) in q's dtype.
    """
    return flash_torch_attention_with_lse(q, k, v, mask=mask, causal=causal, scale=scale,
                                          dropout_p=dropout_p)[0]


register_attention("flash_torch", flash_torch_attention)
