"""FLOPs accounting for scaling laws: what a training run of N parameters on D tokens costs.

Kaplan et al. 2020 (arXiv:2001.08361, Table 1) count 2 FLOPs per weight per token in the forward
pass, plus 2 * n_layer * n_ctx * d_model for attention over the context, and three times that for
forward + backward:

    C_train = D * 3 * (2N + 2 n_layer T d)  ≈  6 N D        (`training_flops`, `flops_6nd`)

Departure: N includes the output projection (a matmul like any other); `GPT.flops_per_token`
holds the exact per-model count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["allocations_for_budget", "flops_6nd", "param_counts", "training_flops"]


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
    """Training FLOPs for `tokens` tokens: tokens × `model.flops_per_token(seq_len)`, i.e.
    3 × (2N + 2·n_layer·T·d_model): Kaplan et al.'s forward count (Table 1: 2 FLOPs per weight
    per token, the output head included, plus 2·n_layer·n_ctx·d for attention over the
    context), times 3 for forward + backward, i.e. 6N + 6·n_layer·T·d_model.

    Args:
        model: a GPT (anything with `flops_per_token(seq_len, training=True)`).
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
