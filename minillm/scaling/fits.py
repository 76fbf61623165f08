"""Scaling laws: FLOPs accounting, Kaplan power laws, Chinchilla's fits, IsoFLOP analysis.

Kaplan et al. 2020 (arXiv:2001.08361) fit single-variable power laws in log space,

    L(N) = (N_c / N)^α_N,   L(D) = (D_c / D)^α_D,   L(C) = (C_c / C)^α_C,

on the *frontier* of their runs (N: models trained near convergence; D: large models stopped
early; C: the lower envelope of all training curves). Hoffmann et al. 2022 ("Chinchilla",
arXiv:2203.15556) fit the loss of every run jointly (Approach 3, §3.3, App. D.2),

    L(N, D) = E + A / N^α + B / D^β,

parametrised as log L̂ = LSE(a − α log N, b − β log D, e) with A = e^a, B = e^b, E = e^e, and
minimise Σ_i Huber_δ(log L̂_i − log L_i), δ = 1e-3, with L-BFGS from a grid of
initialisations, keeping the best. Under C = 6ND the optimum of that fit is closed-form:

    N_opt = G (C/6)^(β/(α+β)),  D_opt = G^-1 (C/6)^(α/(α+β)),  G = (αA / (βB))^(1/(α+β)).

Approach 2 fits, per compute budget (an IsoFLOP profile), a parabola of loss against log N; its
vertex is N_opt(C), and a line through log N_opt against log C gives N_opt ∝ C^a (and
D_opt = C / (6 N_opt) ∝ C^b, b = 1 − a).

Approach 1 (§3.1) reads the lowest loss at each FLOP count off every run's *training curve*
(intermediate points included): on a log-spaced grid of C, the run whose interpolated curve is
lowest gives N_opt(C) and D_opt(C) (the tokens that run had seen by C); lines through log N_opt
and log D_opt against log C give a and b (`fit_envelope`).

Departures:
- the initialisation grid is screened first: the objective is evaluated at every grid point
  (cheap, vectorised) and L-BFGS refines only the `n_refine` best (`n_refine=None` refines all
  of them, the paper's procedure; the paper's grid is `CHINCHILLA_GRID`, our default is coarser);
- the objective is the *sum* of Huber terms, as in the paper; Besiroglu et al. 2024
  (arXiv:2404.10102) show how much the fitted values depend on such details;
- bootstrap intervals (resampling runs with replacement) are percentile intervals.

(One module a little over 400 lines on purpose: the three fits share the log-space input
checks and the published values, and chapter 07 compares them side by side.)
N is whatever parameter count you pass; FLOPs per token come from `GPT.flops_per_token`
(6N + the attention term + the output head; see `minillm.scaling.flops`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["PowerLawFit", "fit_power_law", "pareto_frontier", "huber", "chinchilla_objective",
           "ChinchillaFit", "fit_chinchilla", "CHINCHILLA_GRID", "DEFAULT_GRID",
           "IsoFLOPProfile", "IsoFLOPFit", "fit_isoflop_parabola", "fit_isoflops",
           "EnvelopeFit", "fit_envelope", "compute_optimal", "PUBLISHED"]

# Published values, for comparison: Hoffmann et al. 2022 (Chinchilla, arXiv:2203.15556) §3.3
# and App. D.2 (the Approach 3 fit), Table 2 (the exponents a, b of Approaches 2 and 3); Kaplan et
# al. 2020 (arXiv:2001.08361) Table 5 / §1.2 (N_opt ∝ C^0.73); Epoch AI's refit of Chinchilla.
PUBLISHED = {
    "chinchilla": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28,
                   "a_approach2": 0.49, "b_approach2": 0.51, "a_approach3": 0.46,
                   "b_approach3": 0.54},
    # Besiroglu et al. 2024 (Epoch AI, "Chinchilla Scaling: A replication attempt",
    # arXiv:2404.10102), Table 1: Approach 3 refitted on the data of Chinchilla's Figure 4
    "epoch": {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
    "kaplan": {"alpha_N": 0.076, "N_c": 8.8e13, "alpha_D": 0.095, "D_c": 5.4e13,
               "alpha_C_min": 0.050, "a": 0.73},
}


def _arrays(*xs) -> list[np.ndarray]:
    out = [np.asarray(x, dtype=float).ravel() for x in xs]
    if len({len(x) for x in out}) != 1:
        raise ValueError(f"inputs have different lengths {[len(x) for x in out]}")
    if any((x <= 0).any() or not np.isfinite(x).all() for x in out):
        raise ValueError("scaling-law inputs must be finite and positive (they are logged)")
    return out


# ---- Kaplan-style single power laws ------------------------------------------------------------
@dataclass
class PowerLawFit:
    """L(x) = (x_c / x)^exponent, fitted as a line in log-log space.

    `exponent_se` and `log10_scale_se` are ordinary-least-squares standard errors. A nearly
    flat fit (exponent ~ 0) has x_c -> inf; `predict` uses the fitted line itself,
    log L = log_loss_at_1 - exponent * log x, so it stays exact there."""
    exponent: float
    scale: float               # x_c (inf when the exponent is ~0)
    exponent_se: float
    log10_scale_se: float
    r2: float
    n_points: int
    log_loss_at_1: float       # the line's intercept: log L at x = 1

    def predict(self, x):
        return np.exp(self.log_loss_at_1 - self.exponent * np.log(np.asarray(x, dtype=float)))


def fit_power_law(x, loss) -> PowerLawFit:
    """Fit L = (x_c / x)^α by least squares on log L = α log x_c − α log x.

    Args:
        x: N, D or C of each point (positive).
        loss: the loss of each point (positive; nats).
    """
    x, loss = _arrays(x, loss)
    if len(x) < 3:
        raise ValueError(f"a power-law fit with uncertainties needs >= 3 points, got {len(x)}")
    lx, ly = np.log(x), np.log(loss)
    if np.ptp(lx) == 0:
        raise ValueError(f"every x is {x[0]:.4g}: a power law in x needs at least two x values")
    X = np.stack([np.ones_like(lx), lx], axis=1)
    coef, *_ = np.linalg.lstsq(X, ly, rcond=None)
    resid = ly - X @ coef
    dof = max(len(x) - 2, 1)
    cov = np.linalg.inv(X.T @ X) * (resid @ resid) / dof
    intercept, slope = coef
    alpha = -slope
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_xc = np.float64(intercept) / alpha          # +-inf when the fit is flat
        # delta method for log x_c = intercept / alpha
        g = np.array([1.0 / alpha, intercept / alpha**2])
        log_xc_se = math.sqrt(max(float(g @ cov @ g), 0.0)) if np.isfinite(g).all() else math.inf
        scale = float(np.exp(log_xc))
    ss_tot = ((ly - ly.mean()) ** 2).sum()
    return PowerLawFit(exponent=float(alpha), scale=scale,
                       exponent_se=float(math.sqrt(cov[1, 1])),
                       log10_scale_se=float(log_xc_se / math.log(10)),
                       r2=float(1 - (resid @ resid) / ss_tot) if ss_tot > 0 else 1.0,
                       n_points=len(x), log_loss_at_1=float(intercept))


def pareto_frontier(x, loss) -> np.ndarray:
    """Indices (sorted by x) of points whose loss beats every point with a smaller or equal x:
    the lower envelope. (Kaplan et al. fit L(C) to such an envelope over training curves; their
    L(N) and L(D) come from converged and early-stopped runs, not from an envelope.)"""
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    order = np.lexsort((loss, x))
    keep, best = [], math.inf
    for i in order:
        if loss[i] < best:
            keep.append(i)
            best = loss[i]
    return np.array(keep, dtype=int)


# ---- Chinchilla Approach 3 ---------------------------------------------------------------------
def huber(r: torch.Tensor, delta: float = 1e-3) -> torch.Tensor:
    """Elementwise Huber: r²/2 if |r| <= δ, else δ(|r| − δ/2)."""
    a = r.abs()
    return torch.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def chinchilla_objective(theta: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor,
                         log_loss: torch.Tensor, delta: float = 1e-3) -> torch.Tensor:
    """Σ_i Huber_δ(LSE(a − α log N_i, b − β log D_i, e) − log L_i).

    `theta` is (..., 5) = (a, b, e, alpha, beta); leading dimensions give one objective per
    parameter vector (the grid is evaluated in one call)."""
    a, b, e, alpha, beta = theta.unbind(-1)
    terms = torch.stack([a[..., None] - alpha[..., None] * log_n,
                         b[..., None] - beta[..., None] * log_d,
                         e[..., None].expand(*e.shape, log_n.shape[-1])], dim=-1)
    pred = torch.logsumexp(terms, dim=-1)  # (..., n_points)
    return huber(pred - log_loss, delta).sum(-1)


# the paper's grid (App. D.2): 6 × 6 × 5 × 5 × 5 = 4500 starting points for (a, b, e, α, β)
CHINCHILLA_GRID = {"a": np.arange(0, 30, 5.0), "b": np.arange(0, 30, 5.0),
                   "e": np.arange(-1, 1.5, 0.5), "alpha": np.arange(0, 2.5, 0.5),
                   "beta": np.arange(0, 2.5, 0.5)}
# a finer grid in a, b and a coarser one elsewhere; screened, then the best few are refined
DEFAULT_GRID = {"a": np.arange(0, 27.5, 2.5), "b": np.arange(0, 27.5, 2.5),
                "e": np.arange(-1, 1.5, 0.5), "alpha": np.arange(0.1, 1.6, 0.2),
                "beta": np.arange(0.1, 1.6, 0.2)}


@dataclass
class ChinchillaFit:
    """L(N, D) = E + A / N^alpha + B / D^beta and how it was obtained."""
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float             # Σ Huber at the optimum
    n_points: int
    ci: dict[str, tuple[float, float]] | None = None  # bootstrap percentile intervals
    bootstrap: np.ndarray | None = field(default=None, repr=False)  # (n, 5): E, A, B, α, β

    def predict(self, n_params, tokens):
        n = np.asarray(n_params, dtype=float)
        d = np.asarray(tokens, dtype=float)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    @property
    def params(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}

    @property
    def a(self) -> float:
        """Exponent of N_opt ∝ C^a: β / (α + β)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ∝ C^b: α / (α + β)."""
        return self.alpha / (self.alpha + self.beta)


def _grid(grid: dict) -> torch.Tensor:
    names = ("a", "b", "e", "alpha", "beta")
    missing = set(names) - set(grid)
    if missing:
        raise ValueError(f"grid lacks {sorted(missing)}; it needs values for {names}")
    return torch.tensor(list(itertools.product(*(grid[k] for k in names))), dtype=torch.float64)


def _lbfgs(theta0: torch.Tensor, objective) -> tuple[torch.Tensor, float]:
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-14, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = objective(theta)
        value.backward()
        return value

    opt.step(closure)
    with torch.no_grad():
        value = float(objective(theta))
    return theta.detach(), value


def _fit_once(log_n, log_d, log_loss, starts, delta, n_refine,
              extra_start=None) -> tuple[np.ndarray, float, np.ndarray]:
    with torch.no_grad():
        values = chinchilla_objective(starts, log_n, log_d, log_loss, delta)
    order = torch.argsort(values)
    if n_refine is not None:
        order = order[:n_refine]
    candidates = [starts[i] for i in order.tolist()]
    if extra_start is not None:
        candidates.append(extra_start)
    best, best_value = None, math.inf
    for start in candidates:
        theta, value = _lbfgs(start, lambda t: chinchilla_objective(
            t, log_n, log_d, log_loss, delta))
        if math.isfinite(value) and value < best_value:
            best, best_value = theta, value
    if best is None:
        raise ValueError("no start of the Chinchilla fit reached a finite objective: check the "
                         "inputs (positive N, D, loss) or widen the grid")
    a, b, e, alpha, beta = best.tolist()
    return np.array([math.exp(e), math.exp(a), math.exp(b), alpha, beta]), best_value, best


def fit_chinchilla(n_params, tokens, loss, delta: float = 1e-3, grid: dict | None = None,
                   n_refine: int | None = 20, n_bootstrap: int = 0,
                   bootstrap_refine: int = 0, ci: float = 0.9, seed: int = 0) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^α + B/D^β the way Hoffmann et al. 2022 do (Approach 3).

    Args:
        n_params, tokens, loss: one entry per training run (loss in nats).
        delta: Huber threshold on the log-loss residual (paper: 1e-3).
        grid: starting values for (a, b, e, alpha, beta) = (log A, log B, log E, α, β);
            default `DEFAULT_GRID`; `CHINCHILLA_GRID` is the paper's.
        n_refine: L-BFGS is run from the `n_refine` grid points with the lowest objective
            (None: from all of them, slow); the best result is kept.
        n_bootstrap: if > 0, refit on that many resamples of the runs (with replacement) to get
            percentile intervals `ci` (e.g. 0.9 → 5th-95th percentiles); each refit starts
            L-BFGS from the full-data optimum and from its `bootstrap_refine` best grid points
            (0 by default: warm starts only, fast, may understate multi-modal uncertainty).
        seed: seeds the bootstrap resampling.

    Returns:
        A `ChinchillaFit`; `.predict(N, D)`, `.objective`, `.ci` (if bootstrapped).
    """
    n, d, y = _arrays(n_params, tokens, loss)
    if len(n) < 5:
        raise ValueError(f"fit_chinchilla has 5 parameters and needs >= 5 runs, got {len(n)}")
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci} must be in (0, 1), e.g. 0.9 for a 90% interval")
    if n_refine is not None and (not isinstance(n_refine, int) or n_refine < 1):
        raise ValueError(f"n_refine={n_refine!r} must be a positive integer (None refines "
                         "every grid point)")
    log_n, log_d, log_y = (torch.tensor(np.log(v), dtype=torch.float64) for v in (n, d, y))
    starts = _grid(DEFAULT_GRID if grid is None else grid)
    params, value, theta = _fit_once(log_n, log_d, log_y, starts, delta, n_refine)
    fit = ChinchillaFit(*params.tolist(), objective=value, n_points=len(n))
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(n_bootstrap):
            idx = torch.as_tensor(rng.integers(0, len(n), len(n)))
            p, _, _ = _fit_once(log_n[idx], log_d[idx], log_y[idx], starts, delta,
                                bootstrap_refine, extra_start=theta)
            samples.append(p)
        fit.bootstrap = np.array(samples)
        lo, hi = np.quantile(fit.bootstrap, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
        fit.ci = {k: (float(lo[i]), float(hi[i]))
                  for i, k in enumerate(("E", "A", "B", "alpha", "beta"))}
    return fit


# ---- Chinchilla Approach 2: IsoFLOP profiles ---------------------------------------------------
@dataclass
class IsoFLOPProfile:
    """loss ≈ c0 + c1 x + c2 x², x = ln N, for the runs of one budget; its vertex is N_opt."""
    budget: float
    coeffs: tuple[float, float, float]   # (c0, c1, c2)
    n_opt: float
    loss_opt: float
    n_points: int

    def predict(self, n_params):
        x = np.log(np.asarray(n_params, dtype=float))
        c0, c1, c2 = self.coeffs
        return c0 + c1 * x + c2 * x**2


def fit_isoflop_parabola(n_params, loss, budget: float) -> IsoFLOPProfile:
    """Least-squares parabola of loss against ln N for one IsoFLOP profile (>= 3 runs).

    Raises:
        ValueError: fewer than 3 runs, or the parabola opens downwards (no minimum: the
            profile does not bracket the optimum; add smaller and larger models)."""
    n, y = _arrays(n_params, loss)
    if len(n) < 3:
        raise ValueError(f"budget {budget:.3g}: a parabola needs >= 3 runs, got {len(n)}")
    c2, c1, c0 = np.polyfit(np.log(n), y, 2)
    if c2 <= 0:
        raise ValueError(f"budget {budget:.3g}: the parabola opens downwards (c2={c2:.3g}); "
                         "its runs do not bracket a minimum")
    x_opt = -c1 / (2 * c2)
    return IsoFLOPProfile(budget=float(budget), coeffs=(float(c0), float(c1), float(c2)),
                          n_opt=float(math.exp(x_opt)),
                          loss_opt=float(c0 + c1 * x_opt + c2 * x_opt**2), n_points=len(n))


@dataclass
class IsoFLOPFit:
    """N_opt = k_n C^a and D_opt = k_d C^b from the vertices of the IsoFLOP parabolas."""
    profiles: list[IsoFLOPProfile]
    a: float
    b: float
    k_n: float
    k_d: float
    a_se: float
    flops_per_param_token: float = 6.0
    skipped: list[float] = field(default_factory=list)  # budgets whose runs bracket no minimum

    def n_opt(self, budget):
        return self.k_n * np.asarray(budget, dtype=float) ** self.a

    def d_opt(self, budget):
        return self.k_d * np.asarray(budget, dtype=float) ** self.b


def fit_isoflops(n_params, loss, budgets, flops_per_param_token: float = 6.0,
                 skip_unbracketed: bool = True, window: float | None = None) -> IsoFLOPFit:
    """Chinchilla's Approach 2: a parabola per budget, then log N_opt = log k_n + a log C.

    Args:
        n_params, loss: one entry per run.
        budgets: the IsoFLOP budget (target FLOPs) each run belongs to; runs with equal budget
            form one profile.
        flops_per_param_token: D_opt = C / (this × N_opt); 6 for C = 6ND.
        skip_unbracketed: leave out (and list in `.skipped`) budgets whose parabola has no
            minimum or whose vertex lies outside the range of N trained; False raises instead.
        window: fit each parabola only to the runs within this factor of N of the profile's
            lowest-loss run (both sides; the vertex must then lie within those runs): a valley
            that is much steeper on one side than a parabola (e.g. step-limited large models at
            a small budget) then does not drag the vertex off. None (default): all runs.

    Returns:
        An `IsoFLOPFit`; `b = 1 − a` exactly under C = 6ND (D_opt is derived from N_opt).
    """
    n, y, c = _arrays(n_params, loss, budgets)
    profiles, skipped = [], []
    for budget in np.unique(c):
        sel = c == budget
        if window is not None:
            if window <= 1:
                raise ValueError(f"window={window} must be a factor > 1 of N")
            n_low = n[sel][np.argmin(y[sel])]
            sel &= np.abs(np.log(n / n_low)) <= math.log(window) * (1 + 1e-12)
        try:
            profile = fit_isoflop_parabola(n[sel], y[sel], budget)
            if not n[sel].min() <= profile.n_opt <= n[sel].max():
                raise ValueError(f"budget {budget:.3g}: the vertex N={profile.n_opt:.3g} lies "
                                 f"outside the models trained ({n[sel].min():.3g}-"
                                 f"{n[sel].max():.3g}); add models beyond that end")
        except ValueError:
            if not skip_unbracketed:
                raise
            skipped.append(float(budget))
            continue
        profiles.append(profile)
    if len(profiles) < 2:
        raise ValueError(f"need >= 2 budgets that bracket a minimum to fit N_opt ∝ C^a, got "
                         f"{len(profiles)} (skipped {skipped})")
    cs = np.array([p.budget for p in profiles])
    n_opt = np.array([p.n_opt for p in profiles])
    law = fit_power_law(cs, 1.0 / n_opt) if len(cs) >= 3 else None
    slope, intercept = np.polyfit(np.log(cs), np.log(n_opt), 1)
    k_n = math.exp(intercept)
    # D_opt = C / (f k_n C^a) = (1 / (f k_n)) C^(1-a)
    return IsoFLOPFit(profiles=profiles, a=float(slope), b=float(1 - slope),
                      k_n=k_n, k_d=1.0 / (flops_per_param_token * k_n),
                      a_se=float(law.exponent_se) if law is not None else float("nan"),
                      flops_per_param_token=flops_per_param_token, skipped=skipped)


# ---- Chinchilla Approach 1: the envelope of training curves ------------------------------------
@dataclass
class EnvelopeFit:
    """The lower envelope of training curves on a grid of FLOPs, and N_opt = k_n C^a,
    D_opt = k_d C^b fitted to it (least squares in log-log over the grid points in `fit_range`).

    `run[i]` is the index of the run that is lowest at `flops[i]`; `n_opt[i]` its parameters,
    `d_opt[i]` the tokens it had seen by then. The grid points are not independent measurements
    (N_opt is a staircase over the model sizes trained), so no standard error is given."""
    flops: np.ndarray
    loss: np.ndarray
    n_opt: np.ndarray
    d_opt: np.ndarray
    run: np.ndarray
    a: float
    b: float
    k_n: float
    k_d: float
    fit_range: tuple[float, float]

    def n_opt_at(self, budget):
        return self.k_n * np.asarray(budget, dtype=float) ** self.a

    def d_opt_at(self, budget):
        return self.k_d * np.asarray(budget, dtype=float) ** self.b


def fit_envelope(n_params, flops, losses, tokens=None, grid=None, n_grid: int = 1500,
                 fit_range: tuple[float, float] | None = None,
                 flops_per_param_token: float = 6.0) -> EnvelopeFit:
    """Chinchilla's Approach 1: for each FLOP count, the run whose training curve is lowest.

    Args:
        n_params: one parameter count per run.
        flops: one increasing array per run, the training FLOPs at each logged point.
        losses: one array per run, the (smoothed) training loss at those points.
        tokens: one array per run, the tokens seen at those points; default
            flops / (flops_per_param_token × N).
        grid: the FLOP counts to evaluate the envelope at; default `n_grid` log-spaced points
            from the smallest to the largest logged FLOPs (points no run reaches are dropped).
        fit_range: (C_lo, C_hi), the grid points the power laws are fitted on; default all.

    Between logged points a curve is interpolated linearly in log C; outside its first and last
    point a run does not count (a run is not extrapolated). Returns an `EnvelopeFit`.
    """
    n = np.asarray(n_params, dtype=float).ravel()
    if len(flops) != len(n) or len(losses) != len(n) or (tokens is not None
                                                         and len(tokens) != len(n)):
        raise ValueError(f"need one curve per run: {len(n)} runs, {len(flops)} FLOP arrays, "
                         f"{len(losses)} loss arrays")
    if len(n) == 0 or (n <= 0).any() or not np.isfinite(n).all():
        raise ValueError("n_params must be finite and positive, at least one run")
    curves = []
    for i in range(len(n)):
        c_i = np.asarray(flops[i], dtype=float).ravel()
        l_i = np.asarray(losses[i], dtype=float).ravel()
        t_i = (c_i / (flops_per_param_token * n[i]) if tokens is None
               else np.asarray(tokens[i], dtype=float).ravel())
        if not len(c_i) == len(l_i) == len(t_i) or len(c_i) == 0:
            raise ValueError(f"run {i}: FLOPs, losses and tokens must have the same non-zero "
                             f"length, got {len(c_i)}, {len(l_i)}, {len(t_i)}")
        if (c_i <= 0).any() or (np.diff(c_i) <= 0).any() or not np.isfinite(l_i).all():
            raise ValueError(f"run {i}: FLOPs must be positive and increasing, losses finite")
        curves.append((np.log(c_i), l_i, np.log(t_i)))
    if grid is None:
        lo = min(float(np.exp(c[0][0])) for c in curves)
        hi = max(float(np.exp(c[0][-1])) for c in curves)
        grid = np.logspace(math.log10(lo), math.log10(hi), n_grid)
    x = np.log(np.asarray(grid, dtype=float).ravel())
    table = np.full((len(n), len(x)), np.inf)
    log_tokens = np.zeros((len(n), len(x)))
    for i, (lc, ll, lt) in enumerate(curves):
        inside = (x >= lc[0]) & (x <= lc[-1])
        table[i, inside] = np.interp(x[inside], lc, ll)
        log_tokens[i, inside] = np.interp(x[inside], lc, lt)
    covered = np.isfinite(table).any(axis=0)
    x, table, log_tokens = x[covered], table[:, covered], log_tokens[:, covered]
    if len(x) == 0:
        raise ValueError("no grid point lies within any run's curve")
    best = table.argmin(axis=0)
    cols = np.arange(len(x))
    flops_grid = np.exp(x)
    n_opt, d_opt = n[best], np.exp(log_tokens[best, cols])
    lo, hi = fit_range if fit_range is not None else (flops_grid[0], flops_grid[-1])
    sel = (flops_grid >= lo * (1 - 1e-12)) & (flops_grid <= hi * (1 + 1e-12))
    if sel.sum() < 2:
        raise ValueError(f"fit_range {fit_range} holds {sel.sum()} grid point(s); need >= 2")
    a, log_kn = np.polyfit(x[sel], np.log(n_opt[sel]), 1)
    b, log_kd = np.polyfit(x[sel], np.log(d_opt[sel]), 1)
    return EnvelopeFit(flops=flops_grid, loss=table[best, cols], n_opt=n_opt, d_opt=d_opt,
                       run=best, a=float(a), b=float(b), k_n=math.exp(log_kn),
                       k_d=math.exp(log_kd), fit_range=(float(lo), float(hi)))


def compute_optimal(budget, fit: ChinchillaFit | IsoFLOPFit,
                    flops_per_param_token: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) for a compute budget C (scalar or array), from either fit.

    For a `ChinchillaFit` this is the closed-form minimum of L(N, D) on C = f·N·D (f = 6):
    N_opt = G (C/f)^(β/(α+β)), D_opt = G^-1 (C/f)^(α/(α+β)), G = (αA/(βB))^(1/(α+β)).
    For an `IsoFLOPFit` it is the fitted N_opt = k_n C^a, D_opt = k_d C^b.
    """
    c = np.asarray(budget, dtype=float)
    if (c <= 0).any():
        raise ValueError(f"budget={budget} must be positive (training FLOPs)")
    if isinstance(fit, IsoFLOPFit):
        return fit.n_opt(c), fit.d_opt(c)
    if isinstance(fit, ChinchillaFit):
        s = fit.alpha + fit.beta
        g = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1 / s)
        x = c / flops_per_param_token
        return g * x ** (fit.beta / s), x ** (fit.alpha / s) / g
    raise TypeError(f"fit must be a ChinchillaFit or an IsoFLOPFit, got {type(fit).__name__}")
