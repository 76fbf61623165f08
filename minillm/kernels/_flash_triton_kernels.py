"""The Triton kernels behind `minillm.kernels.flash_triton` (read that module's docstring).

Kept in their own module so that Triton is imported, and the kernels jitted, only on the first
call: `TRITON_INTERPRET=1` must be set before `triton` is imported for the CPU interpreter to
take over, and importing minillm must not decide that.
"""

import triton
import triton.language as tl

__all__ = ["_attn_bwd_dkdv", "_attn_bwd_dkdv_tiles", "_attn_bwd_p_ds", "_attn_bwd_dq", "_attn_bwd_dq_tiles",
           "_attn_fwd", "_attn_fwd_tiles"]

# the kernels work in base 2 (exp2, log2 are the fast instructions): e^x = 2^(x · log2 e), and
# back to natural units with ln 2. Globals read inside @triton.jit code must be constexpr.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _attn_fwd_tiles(acc, l_i, m_i, q, K, V, BIAS, b, h, hk, rows, row_ok, dims, d_ok, cols0,
                    skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn, T_K, offset, qk_scale,
                    lo, hi,
                    BLOCK_N: tl.constexpr, DIAGONAL: tl.constexpr, HAS_BIAS: tl.constexpr,
                    PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Key tiles lo..hi of one query tile: the online-softmax update of (acc, l, m). DIAGONAL
    compiles in the causal comparison; the tiles left of the diagonal run without it (the
    Triton tutorial's two stages)."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + cols0
        col_ok = cols < T_K
        kt = tl.load(K + b * skb + hk * skh + cols[None, :] * skn + dims[:, None],
                     mask=col_ok[None, :] & d_ok[:, None], other=0.0)  # Kᵀ (BLOCK_D, BLOCK_N)
        if UPCAST:
            kt = kt.to(tl.float32)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale         # (BLOCK_M, BLOCK_N)
        valid = col_ok[None, :] & row_ok[:, None]
        if DIAGONAL:
            valid = valid & (cols[None, :] <= rows[:, None] + offset)
        if HAS_BIAS:
            bias = tl.load(BIAS + b * sbb + h * sbh + rows[:, None] * sbm + cols[None, :] * sbn,
                           mask=valid, other=0.0)
            s = s + bias * LOG2E
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw no key yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + b * svb + hk * svh + cols[:, None] * svn + dims[None, :],
                    mask=col_ok[:, None] & d_ok[None, :], other=0.0)   # (BLOCK_N, BLOCK_D)
        pv = p.to(V.dtype.element_ty)  # P rounded to the input dtype, as FA2 does
        if UPCAST:
            v, pv = v.to(tl.float32), pv.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(pv, v, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, BIAS,
              sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
              sbb, sbh, sbm, sbn,
              H, G, T_Q, T_K, T_Q_BUCKET, T_K_BUCKET, scale,
              HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr,
              PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # T_Q_BUCKET, T_K_BUCKET: the lengths rounded up to a power of two; unused here, they key
    # the autotuner (one tuning per bucket, not per exact length)
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // G                                     # the kv head this query head reads
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # query indices of this tile
    dims = tl.arange(0, BLOCK_D)
    cols0 = tl.arange(0, BLOCK_N)
    row_ok = rows < T_Q
    d_ok = dims < HEAD_DIM
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqm + dims[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)      # (BLOCK_M, BLOCK_D)
    if UPCAST:  # the interpreter's tl.dot is wrong for bf16/fp16: compute it in fp32
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    offset = T_K - T_Q
    qk_scale = scale * LOG2E                                          # scale · log2(e)
    if CAUSAL:
        # stage 1: key tiles wholly left of the diagonal (every key <= every row's limit): no
        # causal comparison; stage 2: the tiles the diagonal crosses. Key tiles right of the
        # diagonal are never loaded.
        hi = tl.minimum(T_K, (pid_m + 1) * BLOCK_M + offset)
        lo_diag = tl.maximum(0, tl.minimum(hi, ((pid_m * BLOCK_M + offset + 1) // BLOCK_N)
                                           * BLOCK_N))
        acc, l_i, m_i = _attn_fwd_tiles(
            acc, l_i, m_i, q, K, V, BIAS, b, h, hk, rows, row_ok, dims, d_ok, cols0,
            skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn, T_K, offset, qk_scale, 0, lo_diag,
            BLOCK_N, False, HAS_BIAS, PRECISION, UPCAST)
        acc, l_i, m_i = _attn_fwd_tiles(
            acc, l_i, m_i, q, K, V, BIAS, b, h, hk, rows, row_ok, dims, d_ok, cols0,
            skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn, T_K, offset, qk_scale, lo_diag, hi,
            BLOCK_N, True, HAS_BIAS, PRECISION, UPCAST)
    else:
        acc, l_i, m_i = _attn_fwd_tiles(
            acc, l_i, m_i, q, K, V, BIAS, b, h, hk, rows, row_ok, dims, d_ok, cols0,
            skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn, T_K, offset, qk_scale, 0, T_K,
            BLOCK_N, False, HAS_BIAS, PRECISION, UPCAST)
    seen = l_i > 0.0
    l_safe = tl.where(seen, l_i, 1.0)
    out = acc / l_safe[:, None]
    lse = tl.where(seen, (m_i + tl.log2(l_safe)) * LN2, float("-inf"))
    tl.store(O + b * sob + h * soh + rows[:, None] * som + dims[None, :],
             out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(LSE + pid_bh * T_Q + rows, lse, mask=row_ok)


@triton.jit
def _attn_bwd_p_ds(q, k, v, do, lse, delta, BIAS, b, h, rows, cols, row_ok, col_ok,
                   sbb, sbh, sbm, sbn, offset, qk_scale,
                   DIAGONAL: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr):
    """One (query tile, key tile) of the backward: the probabilities P recomputed from the
    saved log-sum-exp and dS = P ∘ (dO Vᵀ − Δ), both (BLOCK_M, BLOCK_N) in float32. DIAGONAL
    compiles in the causal comparison."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    valid = row_ok[:, None] & col_ok[None, :] & (lse[:, None] > float("-inf"))
    if DIAGONAL:
        valid = valid & (cols[None, :] <= rows[:, None] + offset)
    if HAS_BIAS:
        bias = tl.load(BIAS + b * sbb + h * sbh + rows[:, None] * sbm + cols[None, :] * sbn,
                       mask=valid, other=0.0)
        s = s + bias * LOG2E
    p = tl.where(valid, tl.exp2(s - lse[:, None] * LOG2E), 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)          # (BLOCK_M, BLOCK_N)
    return p, p * (dp - delta[:, None])


@triton.jit
def _attn_bwd_dkdv_tiles(dk, dv, k, v, Q, DO, LSE, DELTA, BIAS, b, h, H, cols, col_ok, dims,
                         d_ok, rows0, sqb, sqh, sqm, sdb, sdh, sdm, sbb, sbh, sbm, sbn, T_Q,
                         offset, qk_scale, lo, hi,
                         BLOCK_M: tl.constexpr, DIAGONAL: tl.constexpr, HAS_BIAS: tl.constexpr,
                         PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Query tiles lo..hi of one key tile and query head h: accumulate dK and dV. DIAGONAL
    compiles in the causal comparison (the tiles the diagonal crosses); the query tiles below
    the diagonal see every key of the tile and run without it."""
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + rows0
        row_ok = rows < T_Q
        q_mask = row_ok[:, None] & d_ok[None, :]
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqm + dims[None, :],
                    mask=q_mask, other=0.0)
        do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sdm + dims[None, :],
                     mask=q_mask, other=0.0)
        if UPCAST:
            q, do = q.to(tl.float32), do.to(tl.float32)
        lse = tl.load(LSE + (b * H + h) * T_Q + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + (b * H + h) * T_Q + rows, mask=row_ok, other=0.0)
        p, ds = _attn_bwd_p_ds(q, k, v, do, lse, delta, BIAS, b, h, rows, cols, row_ok, col_ok,
                               sbb, sbh, sbm, sbn, offset, qk_scale, DIAGONAL, HAS_BIAS,
                               PRECISION)
        pv = p.to(DO.dtype.element_ty)
        if UPCAST:
            pv = pv.to(tl.float32)
        dv += tl.dot(tl.trans(pv), do, input_precision=PRECISION)
        ds = ds.to(Q.dtype.element_ty)
        if UPCAST:
            ds = ds.to(tl.float32)
        dk += tl.dot(tl.trans(ds), q, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, BIAS,
                   sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdb, sdh, sdm,
                   sbb, sbh, sbm, sbn,
                   H, G, T_Q, T_K, T_Q_BUCKET, T_K_BUCKET, scale,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr,
                   PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)           # over batch · kv heads
    HKV = H // G
    b = pid_bh // HKV
    hk = pid_bh % HKV
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    rows0 = tl.arange(0, BLOCK_M)
    col_ok = cols < T_K
    d_ok = dims < HEAD_DIM
    kv_mask = col_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b * skb + hk * skh + cols[:, None] * skn + dims[None, :], mask=kv_mask,
                other=0.0)                                               # (BLOCK_N, BLOCK_D)
    v = tl.load(V + b * svb + hk * svh + cols[:, None] * svn + dims[None, :], mask=kv_mask,
                other=0.0)
    if UPCAST:
        k, v = k.to(tl.float32), v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    offset = T_K - T_Q
    qk_scale = scale * LOG2E
    for g in range(0, G):              # the query heads sharing this kv head
        h = hk * G + g
        if CAUSAL:
            # query tiles wholly above this key tile's diagonal see none of its keys (skipped);
            # stage 1: the tiles the diagonal crosses, with the causal comparison; stage 2:
            # the tiles wholly below it (each row sees every key of the tile), without it
            lo = (tl.maximum(0, pid_n * BLOCK_N - offset) // BLOCK_M) * BLOCK_M
            full = tl.maximum(lo, tl.cdiv(pid_n * BLOCK_N + BLOCK_N - 1 - offset, BLOCK_M)
                              * BLOCK_M)
            full = tl.minimum(full, tl.cdiv(T_Q, BLOCK_M) * BLOCK_M)
            dk, dv = _attn_bwd_dkdv_tiles(
                dk, dv, k, v, Q, DO, LSE, DELTA, BIAS, b, h, H, cols, col_ok, dims, d_ok, rows0,
                sqb, sqh, sqm, sdb, sdh, sdm, sbb, sbh, sbm, sbn, T_Q, offset, qk_scale, lo,
                full, BLOCK_M, True, HAS_BIAS, PRECISION, UPCAST)
            dk, dv = _attn_bwd_dkdv_tiles(
                dk, dv, k, v, Q, DO, LSE, DELTA, BIAS, b, h, H, cols, col_ok, dims, d_ok, rows0,
                sqb, sqh, sqm, sdb, sdh, sdm, sbb, sbh, sbm, sbn, T_Q, offset, qk_scale, full,
                T_Q, BLOCK_M, False, HAS_BIAS, PRECISION, UPCAST)
        else:
            dk, dv = _attn_bwd_dkdv_tiles(
                dk, dv, k, v, Q, DO, LSE, DELTA, BIAS, b, h, H, cols, col_ok, dims, d_ok, rows0,
                sqb, sqh, sqm, sdb, sdh, sdm, sbb, sbh, sbm, sbn, T_Q, offset, qk_scale, 0,
                T_Q, BLOCK_M, False, HAS_BIAS, PRECISION, UPCAST)
    tl.store(DK + pid_bh * T_K * HEAD_DIM + cols[:, None] * HEAD_DIM + dims[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + pid_bh * T_K * HEAD_DIM + cols[:, None] * HEAD_DIM + dims[None, :],
             dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _attn_bwd_dq_tiles(dq, q, do, lse, delta, K, V, BIAS, b, h, hk, rows, row_ok, dims, d_ok,
                       cols0, skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn, T_K, offset,
                       qk_scale, lo, hi,
                       BLOCK_N: tl.constexpr, DIAGONAL: tl.constexpr, HAS_BIAS: tl.constexpr,
                       PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Key tiles lo..hi of one query tile: accumulate dQ. DIAGONAL as in `_attn_fwd_tiles`."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + cols0
        col_ok = cols < T_K
        kv_mask = col_ok[:, None] & d_ok[None, :]
        k = tl.load(K + b * skb + hk * skh + cols[:, None] * skn + dims[None, :],
                    mask=kv_mask, other=0.0)
        v = tl.load(V + b * svb + hk * svh + cols[:, None] * svn + dims[None, :],
                    mask=kv_mask, other=0.0)
        if UPCAST:
            k, v = k.to(tl.float32), v.to(tl.float32)
        _, ds = _attn_bwd_p_ds(q, k, v, do, lse, delta, BIAS, b, h, rows, cols, row_ok, col_ok,
                               sbb, sbh, sbm, sbn, offset, qk_scale, DIAGONAL, HAS_BIAS,
                               PRECISION)
        ds = ds.to(K.dtype.element_ty)
        if UPCAST:
            ds = ds.to(tl.float32)
        dq += tl.dot(ds, k, input_precision=PRECISION)
    return dq


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, BIAS,
                 sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdb, sdh, sdm,
                 sbb, sbh, sbm, sbn,
                 H, G, T_Q, T_K, T_Q_BUCKET, T_K_BUCKET, scale,
                 HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr,
                 PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // G
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    cols0 = tl.arange(0, BLOCK_N)
    row_ok = rows < T_Q
    d_ok = dims < HEAD_DIM
    q_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqm + dims[None, :], mask=q_mask,
                other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sdm + dims[None, :], mask=q_mask,
                 other=0.0)
    if UPCAST:
        q, do = q.to(tl.float32), do.to(tl.float32)
    lse = tl.load(LSE + pid_bh * T_Q + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + pid_bh * T_Q + rows, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    offset = T_K - T_Q
    qk_scale = scale * LOG2E
    if CAUSAL:  # the forward's two stages: left of the diagonal without the comparison
        hi = tl.minimum(T_K, (pid_m + 1) * BLOCK_M + offset)
        lo_diag = tl.maximum(0, tl.minimum(hi, ((pid_m * BLOCK_M + offset + 1) // BLOCK_N)
                                           * BLOCK_N))
        dq = _attn_bwd_dq_tiles(dq, q, do, lse, delta, K, V, BIAS, b, h, hk, rows, row_ok, dims,
                                d_ok, cols0, skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn,
                                T_K, offset, qk_scale, 0, lo_diag,
                                BLOCK_N, False, HAS_BIAS, PRECISION, UPCAST)
        dq = _attn_bwd_dq_tiles(dq, q, do, lse, delta, K, V, BIAS, b, h, hk, rows, row_ok, dims,
                                d_ok, cols0, skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn,
                                T_K, offset, qk_scale, lo_diag, hi,
                                BLOCK_N, True, HAS_BIAS, PRECISION, UPCAST)
    else:
        dq = _attn_bwd_dq_tiles(dq, q, do, lse, delta, K, V, BIAS, b, h, hk, rows, row_ok, dims,
                                d_ok, cols0, skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn,
                                T_K, offset, qk_scale, 0, T_K,
                                BLOCK_N, False, HAS_BIAS, PRECISION, UPCAST)
    tl.store(DQ + pid_bh * T_Q * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)
