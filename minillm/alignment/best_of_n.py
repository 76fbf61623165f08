"""Best-of-n sampling as a measuring stick for reward over-optimisation (Gao et al. 2022,
*Scaling Laws for Reward Model Overoptimization*, arXiv:2210.10760, §2-3).

Draw n responses from the initial policy, keep the one the proxy reward model scores highest.
Its KL from the initial policy is known in closed form (their §2; Stiennon et al. 2020):

    KL_bon(n) = log n - (n - 1) / n                 d = sqrt(KL_bon)

and Gao et al. fit the gold reward gained over the initial policy with

    R_bon(d) = d (alpha_bon - beta_bon d)

(peak at d* = alpha_bon / (2 beta_bon)). The expected score of the best-of-n pick is estimated
without resampling from N >= n samples of one prompt: sorted by proxy score ascending, sample i
(1-based rank) is the highest of a uniformly drawn n-subset with probability
C(i - 1, n - 1) / C(N, n), so

    E[value of the best of n] = sum_i C(i - 1, n - 1) / C(N, n) * value_i

an unbiased estimate over all C(N, n) subsets (ties in the proxy are broken by sample order).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["best_of_n_expectation", "best_of_n_kl", "best_of_n_weights", "fit_bon_form"]


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || initial policy) = log n - (n - 1) / n, in nats."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    return math.log(n) - (n - 1) / n


def best_of_n_weights(n_samples: int, n: int) -> np.ndarray:
    """(N,) probabilities that the sample of ascending rank i is the best of a random n-subset."""
    if not 1 <= n <= n_samples:
        raise ValueError(f"n={n} must be in [1, N={n_samples}]")
    total = math.comb(n_samples, n)
    return np.array([math.comb(i, n - 1) / total for i in range(n_samples)], dtype=np.float64)


def best_of_n_expectation(proxy: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Expected `values` of the proxy's best-of-n pick, per prompt.

    Args:
        proxy: (P, N) proxy scores of N samples for each of P prompts.
        values: (P, N) or (K, P, N) what to average (gold scores, the proxy itself, lengths).
        n: how many samples the pick chooses from (1 <= n <= N).
    Returns:
        values' shape without the last axis.
    """
    proxy = np.asarray(proxy, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.shape[-2:] != proxy.shape:
        raise ValueError(f"values {values.shape} must end with the proxy's shape {proxy.shape}")
    order = np.argsort(proxy, axis=-1, kind="stable")  # ascending; ties keep sample order
    ranked = np.take_along_axis(values, np.broadcast_to(order, values.shape), axis=-1)
    return ranked @ best_of_n_weights(proxy.shape[-1], n)


def fit_bon_form(d: np.ndarray, gain: np.ndarray) -> tuple[float, float, float]:
    """Least squares of gain = d (alpha - beta d); returns (alpha, beta, peak d*): alpha / 2 beta
    when the fit bends down (beta > 0), 0 if it only falls (alpha <= 0 < beta), inf if it never
    bends (beta <= 0)."""
    d, gain = np.asarray(d, dtype=np.float64), np.asarray(gain, dtype=np.float64)
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([d, -d * d], 1), gain, rcond=None)
    peak = max(alpha, 0.0) / (2 * beta) if beta > 0 else float("inf")
    return float(alpha), float(beta), float(peak)
