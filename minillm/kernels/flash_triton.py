r"""FlashAttention-2 as Triton kernels: one forward kernel and a two-kernel backward.

Dao, *FlashAttention-2* (arXiv:2307.08691), Algorithms 1 and 2; the same arithmetic as
`minillm.kernels.flash_torch` (read its docstring for the derivation), moved into kernels so that
a tile of Q, the running statistics m, ℓ and the accumulator live in registers/SRAM and each
tile of K and V is read from HBM once per query tile.

Forward, one program per (query tile, batch·head)::

    m = -inf, ℓ = 0, A = 0                                  # registers, BLOCK_M rows
    for each key tile j (causal: only tiles with a key j ≤ i + T_k - T_q; the rest are skipped)
        S = Q_i K_jᵀ · scale · log2(e)                      # base-2 units: exp2 is the fast path
        m' = max(m, rowmax S);  P = 2^(S - m');  α = 2^(m - m')
        ℓ = α ℓ + rowsum P;  A = α A + P V_j;  m = m'
    O_i = A / ℓ;   L_i = (m + log2 ℓ) · ln 2                # the log-sum-exp in natural units

Backward, with D = rowsum(dO ∘ O) - dL computed first (one torch reduction) and P = exp(S - L)
recomputed from Q, K and the saved L:

- **Split into a dK/dV kernel and a dQ kernel.** The
  dK/dV kernel owns one key tile and loops over the query tiles (and the G query heads that share
  its kv head, so grouped-query dK/dV are summed in registers); the dQ kernel owns one query tile
  and loops over the key tiles. Nothing is written by two programs, so there are no atomics: the
  result is deterministic (bit-identical run to run, which the GPT-parity test relies on) and the
  interpreter and every GPU run the same code. The price is that S, P and dP are computed twice
  (7 tile matmuls instead of 5); the alternative, one kernel with `tl.atomic_add` into a float32
  dQ, saves those FLOPs but is non-deterministic and needs a zeroed fp32 buffer plus a cast.

Details:

- Plain pointer arithmetic with masked `tl.load`/`tl.store` (no `tl.make_block_ptr`, which
  Triton 3.8+ deprecates, and no tensor descriptors, which need a TMA-capable GPU): any stride,
  any length (partial tiles are masked), head dims 16..128 (padded to a power of two).
- fp32 inputs use `tl.dot(..., input_precision="ieee")`: a GPU would otherwise use TF32
  (10-bit mantissa) and fail 1e-5 parity. bf16/fp16 inputs use the tensor cores; accumulation
  is always fp32; P and dS are cast to the input dtype before their matmuls, as in FA2.
- On a GPU the tile sizes are autotuned (`triton.autotune`, keyed on the lengths' power-of-two
  buckets (`length_bucket`: T = 1000 and 1024 share one tuning; exact lengths would re-tune
  for every new T), head dim, causal);
  under `TRITON_INTERPRET=1` (CPU) fixed 16 x 16 tiles keep the interpreter quick. The
  interpreter's `tl.dot` mishandles bf16/fp16 operands (Triton 3.9 multiplies their bit
  patterns), so there (UPCAST) the operands are rounded to the input dtype as on a GPU and then
  multiplied in fp32.
- Causal kernels in two stages, as in Triton's fused-attention tutorial: in the forward and
  the dQ kernel the key tiles wholly left of a query tile's diagonal run without the causal
  comparison, the tiles the diagonal crosses run with it (`DIAGONAL`, compiled in), and tiles
  right of it are never loaded; the dK/dV kernel does the same over query tiles (those wholly
  below a key tile's diagonal see all its keys). What the split saves is a GPU timing, not
  measured here (no GPU has been lent); on the CPU the tests check it changes no number.
- A mask (boolean or float bias, broadcastable to (B, H, Tq, Tk)) is turned into a float32 bias
  of the mask's own shape and read tile by tile through broadcast strides.
- Where Triton is missing, calling the backend raises a clear error (it is still registered).
"""

import functools
import importlib.util
import math
import os

import torch

from minillm.kernels.flash_autograd import flash_attention_function
from minillm.kernels.flash_torch import check_attention_inputs
from minillm.kernels.registry import register_attention

__all__ = ["HAS_TRITON", "FlashAttentionTriton", "flash_triton_attention",
           "flash_triton_attention_with_lse", "flash_triton_forward"]

# Triton is imported on the first call (TRITON_INTERPRET must be set before its import)
HAS_TRITON = importlib.util.find_spec("triton") is not None
HEAD_DIMS = (16, 128)


def _interpreting() -> bool:
    """Whether Triton's interpreter is on (TRITON_INTERPRET=1)."""
    import triton
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def _gpu_configs(inner: str) -> list:
    """Autotune candidates (GPU only): FA2's tiles {64, 128} x {32, 64, 128}, 4 or 8 warps."""
    import triton
    outer = "BLOCK_N" if inner == "BLOCK_M" else "BLOCK_M"
    return [triton.Config({outer: bo, inner: bi}, num_warps=w, num_stages=s)
            for bo in (64, 128) for bi in (32, 64, 128) for w, s in ((4, 2), (4, 3), (8, 3))
            if not (bo == 128 and bi == 128 and w == 4)]


@functools.cache
def _kernels(interpret: bool) -> dict:
    """Import (and so jit) the kernels on first use; on a GPU wrap them in the autotuner."""
    import triton

    from minillm.kernels import _flash_triton_kernels as K
    if interpret:
        return {"fwd": K._attn_fwd, "dkdv": K._attn_bwd_dkdv, "dq": K._attn_bwd_dq,
                "tuned": False}
    # keyed on the lengths' power-of-two buckets: one tuning per bucket, not one per exact T
    key = ["T_Q_BUCKET", "T_K_BUCKET", "HEAD_DIM", "CAUSAL", "HAS_BIAS", "G"]
    return {"fwd": triton.autotune(_gpu_configs("BLOCK_N"), key=key)(K._attn_fwd),
            "dkdv": triton.autotune(_gpu_configs("BLOCK_M"), key=key)(K._attn_bwd_dkdv),
            "dq": triton.autotune(_gpu_configs("BLOCK_N"), key=key)(K._attn_bwd_dq),
            "tuned": True}


def _require_triton(q: torch.Tensor) -> dict:
    if not HAS_TRITON:
        raise RuntimeError("flash_triton needs the `triton` package, which is not installed "
                           "(pip install triton, Linux x86-64); use attn_impl='flash_torch' or "
                           "'sdpa' meanwhile")
    interpret = _interpreting()
    if q.device.type != "cuda" and not interpret:
        raise RuntimeError(f"flash_triton got tensors on {q.device.type}: Triton kernels run on "
                           f"CUDA, or on the CPU through Triton's interpreter with "
                           f"TRITON_INTERPRET=1 set before the first call (slow; for tests)")
    if q.device.type == "cuda" and interpret:
        raise RuntimeError("TRITON_INTERPRET=1 is set but the tensors are on CUDA; unset it")
    return _kernels(interpret)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def length_bucket(t: int) -> int:
    """The autotuner's key for a length: t rounded up to a power of two (at least 16)."""
    return max(16, 1 << (t - 1).bit_length())


def _bias(mask: torch.Tensor | None, q: torch.Tensor, Tk: int):
    """The mask as a float32 bias of its own shape, expanded (stride 0) to (B, H, Tq, Tk)."""
    B, H, Tq, _ = q.shape
    if mask is None:
        return q, (0, 0, 0, 0)  # any valid pointer: HAS_BIAS=False never reads it
    bias = mask.float() if mask.dtype != torch.bool else \
        torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, float("-inf"))
    try:
        bias = bias.expand(B, H, Tq, Tk)
    except RuntimeError as err:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to "
                         f"(B, H, Tq, Tk) = {(B, H, Tq, Tk)}") from err
    return bias, bias.stride()


def _common(q, k, scale, causal, mask):
    B, H, Tq, D = q.shape
    Hkv, Tk = k.size(1), k.size(2)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    upcast = q.device.type != "cuda" and q.dtype != torch.float32  # interpreter: fp32 dots
    # fp32 inputs: IEEE dots (a GPU's default would be TF32); bf16/fp16 use the tensor cores
    precision = "ieee" if q.dtype == torch.float32 or upcast else "tf32"
    bias, bias_strides = _bias(mask, q, Tk)
    meta = dict(HEAD_DIM=D, BLOCK_D=max(16, 1 << (D - 1).bit_length()), CAUSAL=bool(causal),
                HAS_BIAS=mask is not None, PRECISION=precision, UPCAST=upcast)
    return B, H, Hkv, Tq, Tk, D, scale, bias, bias_strides, meta


def flash_triton_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                         mask: torch.Tensor | None = None, causal: bool = False,
                         scale: float | None = None, block_m: int = 16, block_n: int = 16,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the forward kernel (no autograd).

    Args:
        q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D), last dim contiguous.
        mask, causal, scale: as for `flash_triton_attention`.
        block_m, block_n: tile sizes under the interpreter (a GPU autotunes them).

    Returns:
        out (B, H, Tq, D) in q's dtype, log-sum-exp (B, H, Tq) float32.
    """
    kernels = _require_triton(q)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    B, H, Hkv, Tq, Tk, D, scale, bias, bs, meta = _common(q, k, scale, causal, mask)
    out = torch.empty_like(q)
    lse = torch.empty(B, H, Tq, device=q.device, dtype=torch.float32)
    args = (q, k, v, out, lse, bias, q.stride(0), q.stride(1), q.stride(2), k.stride(0),
            k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), out.stride(0),
            out.stride(1), out.stride(2), *bs, H, H // Hkv, Tq, Tk, length_bucket(Tq),
            length_bucket(Tk), scale)
    if kernels["tuned"]:
        grid = lambda meta_: (_cdiv(Tq, meta_["BLOCK_M"]), B * H)
        kernels["fwd"][grid](*args, **meta)
    else:
        kernels["fwd"][(_cdiv(Tq, block_m), B * H)](*args, BLOCK_M=block_m,
                                                         BLOCK_N=block_n, **meta)
    return out, lse


def flash_triton_backward(q, k, v, out, lse, d_out, d_lse, *, mask=None, causal=False,
                          scale=None, block_m: int = 16, block_n: int = 16):
    """dQ, dK, dV from the dK/dV kernel and the dQ kernel (no atomics)."""
    kernels = _require_triton(q)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    d_out = d_out.contiguous()
    B, H, Hkv, Tq, Tk, D, scale, bias, bs, meta = _common(q, k, scale, causal, mask)
    delta = (d_out.float() * out.float()).sum(-1)                # D = rowsum(dO ∘ O)
    if d_lse is not None:
        delta = delta - d_lse.float()
    delta = delta.contiguous()
    dq = torch.empty(B, H, Tq, D, device=q.device, dtype=q.dtype)
    dk = torch.empty(B, Hkv, Tk, D, device=q.device, dtype=k.dtype)
    dv = torch.empty(B, Hkv, Tk, D, device=q.device, dtype=v.dtype)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               v.stride(0), v.stride(1), v.stride(2), d_out.stride(0), d_out.stride(1),
               d_out.stride(2), *bs, H, H // Hkv, Tq, Tk, length_bucket(Tq), length_bucket(Tk),
               scale)
    args_kv = (q, k, v, d_out, lse, delta, dk, dv, bias, *strides)
    args_q = (q, k, v, d_out, lse, delta, dq, bias, *strides)
    if kernels["tuned"]:
        kernels["dkdv"][lambda m: (_cdiv(Tk, m["BLOCK_N"]), B * Hkv)](*args_kv, **meta)
        kernels["dq"][lambda m: (_cdiv(Tq, m["BLOCK_M"]), B * H)](*args_q, **meta)
    else:
        blocks = dict(BLOCK_M=block_m, BLOCK_N=block_n)
        kernels["dkdv"][(_cdiv(Tk, block_n), B * Hkv)](*args_kv, **blocks, **meta)
        kernels["dq"][(_cdiv(Tq, block_m), B * H)](*args_q, **blocks, **meta)
    return dq, dk, dv


FlashAttentionTriton = flash_attention_function(
    "FlashAttentionTriton", flash_triton_forward, flash_triton_backward, ("block_m", "block_n"))


def flash_triton_attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                                    mask: torch.Tensor | None = None, causal: bool = False,
                                    scale: float | None = None, dropout_p: float = 0.0,
                                    block_m: int = 16, block_n: int = 16,
                                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention and its log-sum-exp through the Triton kernels, both differentiable.

    Args:
        q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D), H % Hkv == 0, 16 <= D <= 128.
        mask: None, boolean (True = may attend) or float bias, broadcastable to (B, H, Tq, Tk).
        causal: query i sees keys j <= i + Tk - Tq.
        scale: default 1/sqrt(D).
        dropout_p: must be 0.
        block_m, block_n: tile sizes under the interpreter (powers of two >= 16).

    Returns:
        out (B, H, Tq, D) in q's dtype and the log-sum-exp (B, H, Tq) in float32.
    """
    check_attention_inputs(q, k, v, mask, dropout_p, backend="flash_triton", head_dims=HEAD_DIMS,
                           dtypes=(torch.float16, torch.bfloat16, torch.float32))
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if b < 16 or b & (b - 1):
            raise ValueError(f"{name}={b}: Triton tiles must be a power of two >= 16")
    return FlashAttentionTriton.apply(q, k, v, mask, causal, scale, block_m, block_n)


def flash_triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                           mask: torch.Tensor | None = None, causal: bool,
                           scale: float | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """The "flash_triton" attention backend (minillm.kernels signature).

    Args:
        q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D).
        mask: None, boolean or float bias, broadcastable to (B, H, Tq, Tk).
        causal: bottom-right-aligned causal mask.
        scale: default 1/sqrt(D).
        dropout_p: must be 0 (ValueError otherwise).

    Returns:
        (B, H, Tq, D) in q's dtype.
    """
    return flash_triton_attention_with_lse(q, k, v, mask=mask, causal=causal, scale=scale,
                                           dropout_p=dropout_p)[0]


register_attention("flash_triton", flash_triton_attention)
