"""The course's one FLOP count: what a training run costs, and how much of a chip it used.

Convention (Kaplan et al. 2020, arXiv:2001.08361, Table 1): 2 FLOPs per weight per token in the
forward pass, plus 2 * n_layer * n_ctx * d_model for attention over the context, and three times
that for forward + backward:

    C_train = D * 3 * (2N + 2 n_layer T d)  ≈  6 N D        (`training_flops`, `flops_6nd`)

N counts every weight a token is multiplied by: the output head included (a matmul like any
other, 257 rows for bytes, 2,048 for chapter 04's BPE), the embedding lookup not. Each model
class holds its exact per-token count (`GPT.flops_per_token`, and for chapter 02's MLP and RNN
LMs `MLPLM/RNNLM.flops_per_token`); `training_flops` multiplies it by the tokens, and it is the
only function the chapters, the sweep and the lineage table use. PaLM (Chowdhery et al. 2022,
arXiv:2204.02311, App. B) counts attention's two matmuls over the full context, 6N + 12 L T d;
for the course's models (T = 256, d >= 64) the two differ by a few percent of the total.

Model FLOPs utilisation (`mfu`) divides the model FLOPs a run achieved by the peak of the
precision it actually computed in: the datasheet figure for a known GPU (`DATASHEET_PEAKS`,
dense, no sparsity), and on a CPU the measured matmul throughput in that dtype
(`measure_matmul_flops`), named as such.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["DATASHEET_PEAKS", "allocations_for_budget", "flops_6nd", "measure_matmul_flops",
           "mfu", "param_counts", "peak_flops", "training_flops"]

# dense (no sparsity) TFLOP/s from the vendors' datasheets, SXM parts; float32 is the plain
# (non-tensor-core) rate, which torch uses unless TF32 matmuls are allowed
DATASHEET_PEAKS: dict[str, dict[torch.dtype, float]] = {
    "H200": {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 67e12},
    "H100": {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 67e12},
    "A100": {torch.bfloat16: 312e12, torch.float16: 312e12, torch.float32: 19.5e12},
}


def param_counts(model) -> dict[str, int]:
    """{"total": every parameter once, "non_embedding": without token/position embeddings}.
    Kaplan et al. count N without embeddings; Chinchilla counts all parameters.

    Args:
        model: anything with `num_params(non_embedding=...)` (a GPT).

    Returns:
        The two counts.
    """
    return {"total": model.num_params(non_embedding=False),
            "non_embedding": model.num_params(non_embedding=True)}


def training_flops(model, tokens: float, seq_len: int | None = None) -> float:
    """Training FLOPs for `tokens` tokens: tokens × `model.flops_per_token(seq_len)`; for a GPT
    3 × (2N + 2·n_layer·T·d_model): Kaplan et al.'s forward count (Table 1: 2 FLOPs per weight
    per token, the output head included, plus 2·n_layer·n_ctx·d for attention over the
    context), times 3 for forward + backward, i.e. 6N + 6·n_layer·T·d_model.

    Args:
        model: a GPT, MLPLM or RNNLM (anything with `flops_per_token(seq_len, training=True)`).
        tokens: training tokens D.
        seq_len: the context T the attention term uses (default: the model's).

    Returns:
        Training FLOPs.
    """
    return float(tokens) * model.flops_per_token(seq_len, training=True)


def flops_6nd(n_params: float | np.ndarray, tokens: float | np.ndarray) -> np.ndarray:
    """The usual approximation C ≈ 6 N D (works on scalars and arrays).

    Args:
        n_params: N; tokens: D (broadcast together).

    Returns:
        6 N D as a float array (0-d for scalars).
    """
    return 6.0 * np.asarray(n_params, dtype=float) * np.asarray(tokens, dtype=float)


def allocations_for_budget(budget: float, n_params: Sequence[float],
                           flops_per_token: Sequence[float] | None = None) -> list[tuple]:
    """(N, D) pairs that spend `budget` FLOPs: D = C / flops_per_token, with flops_per_token =
    6N unless the exact per-model values are given (e.g. from `GPT.flops_per_token`).

    Args:
        budget: training FLOPs C (> 0).
        n_params: the models' N.
        flops_per_token: optional exact FLOPs per training token of each model.

    Returns:
        [(N, D), ...] in the order of `n_params`.

    Raises:
        ValueError: a non-positive budget or mismatched lengths.
    """
    if budget <= 0:
        raise ValueError(f"budget={budget} must be positive (training FLOPs)")
    fpt = [6.0 * n for n in n_params] if flops_per_token is None else list(flops_per_token)
    if len(fpt) != len(n_params):
        raise ValueError(f"flops_per_token has {len(fpt)} entries for {len(n_params)} models")
    return [(float(n), budget / f) for n, f in zip(n_params, fpt, strict=True)]


def measure_matmul_flops(n: int = 1024, repeats: int = 5, dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu") -> float:
    """Measured FLOP/s of an n × n matmul in `dtype` on `device` (2n³ FLOPs each, one warm-up).

    On a CPU this is the peak to divide by: no datasheet figure holds for a shared or throttled
    machine, so say "measured matmul peak" when quoting an MFU against it.
    """
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def peak_flops(device: str | torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """(FLOP/s, where the figure comes from) for `dtype` matmuls on `device`.

    A GPU named in `DATASHEET_PEAKS` gets its datasheet figure ("datasheet, H100, bfloat16");
    anything else (a CPU, an unlisted GPU) gets `measure_matmul_flops` ("measured matmul peak").
    """
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for chip, peaks in DATASHEET_PEAKS.items():
            if chip in name and dtype in peaks:
                return peaks[dtype], f"datasheet, {chip}, {str(dtype).removeprefix('torch.')}"
    return (measure_matmul_flops(dtype=dtype, device=device),
            f"measured matmul peak, {device.type}, {str(dtype).removeprefix('torch.')}")


def mfu(flops_per_token: float, tokens_per_second: float, peak: float) -> float:
    """Model FLOPs utilisation: the model FLOPs a run did per second over the peak (PaLM, App.
    B, with the FLOP count of `training_flops`).

    Args:
        flops_per_token: training FLOPs per token (`model.flops_per_token()`).
        tokens_per_second: measured training throughput.
        peak: FLOP/s of the precision the run computed in (`peak_flops`).
    """
    if peak <= 0:
        raise ValueError(f"peak={peak} FLOP/s must be positive")
    return flops_per_token * tokens_per_second / peak
