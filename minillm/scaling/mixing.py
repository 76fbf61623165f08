"""The data mixing law of Ye et al. 2024 ("Data Mixing Laws", arXiv:2403.16952), for two
sources.

Ye et al. find that the validation loss on domain i is an exponential of a linear function of
the training mixture's proportions r_j:

    L_i(r) = c_i + k_i · exp(Σ_j t_ij r_j)

With two sources, r_other = 1 − r_i, so the law for one domain is a function of its own share
r alone: L(r) = c + k · exp(t · r), with t < 0 when more of the domain helps. `fit_mixing_law`
fits (c, k, t): for each t on a fine grid, c and k by linear least squares; the t with the
least squared error wins (then a finer grid around it).

Departures: the paper fits all domains jointly and predicts unseen mixtures from a few runs;
here one domain at a time, as a description of the measured curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MixingLawFit", "fit_mixing_law"]


@dataclass(frozen=True)
class MixingLawFit:
    c: float   # the loss the exponential decays (or grows) towards
    k: float   # the exponential's scale
    t: float   # its rate per unit of share
    rmse: float  # root-mean-square error of the fit on the points (same unit as the losses)

    def predict(self, share: np.ndarray | float) -> np.ndarray:
        return self.c + self.k * np.exp(self.t * np.asarray(share, dtype=np.float64))


def fit_mixing_law(shares, losses, t_range: tuple[float, float] = (-20.0, 20.0),
                   ) -> MixingLawFit:
    """Fit L(r) = c + k exp(t r) to (share, loss) points.

    Args:
        shares: the domain's share of the training mixture per point, in [0, 1].
        losses: the validation loss on the domain per point.
        t_range: the rates searched.

    Raises:
        ValueError: fewer than 3 distinct shares, or lengths that differ.
    """
    r = np.asarray(shares, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if r.shape != y.shape:
        raise ValueError(f"{r.size} shares but {y.size} losses: give one loss per share")
    if len(np.unique(r)) < 3:
        raise ValueError("three parameters need at least 3 distinct shares")

    def solve(t: float) -> tuple[float, float, float]:
        design = np.stack([np.ones_like(r), np.exp(t * r)], axis=1)
        (c, k), *_ = np.linalg.lstsq(design, y, rcond=None)
        return float(np.sum((design @ np.array([c, k]) - y) ** 2)), float(c), float(k)

    grid = np.linspace(*t_range, 801)
    best = min(grid, key=lambda t: solve(t)[0])
    step = grid[1] - grid[0]
    best = min(np.linspace(best - step, best + step, 201), key=lambda t: solve(t)[0])
    sse, c, k = solve(best)
    return MixingLawFit(c, k, float(best), float(np.sqrt(sse / len(r))))
