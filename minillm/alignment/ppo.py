"""PPO for RLHF, piece by piece: masked statistics, the KL penalty, GAE, the clipped losses.

InstructGPT (Ouyang et al. 2022, arXiv:2203.02155, Eq. 2) maximises, over prompts x and
responses y ~ pi(. | x),

    objective = E[ r_theta(x, y) - beta * log(pi(y | x) / pi_ref(y | x)) ]  (+ gamma * pretraining)

with PPO (Schulman et al. 2017, arXiv:1707.06347) as the optimiser. Following Ziegler et al.
(2019, arXiv:1909.08593) and Stiennon et al. (2020, arXiv:2009.01325) the KL term is spent per
token and the reward model's score arrives at the last token of the response:

    r_t = -beta * kl_t + [t = last] * score              t over response tokens

Two estimators of kl_t = KL(pi || pi_ref) from a sample y_t ~ pi (Schulman, "Approximating KL
divergence", 2020, http://joschu.net/blog/kl-approx.html), with log-ratio l = log pi - log pi_ref
and ratio rho = pi_ref / pi = exp(-l):
- k1 = l: unbiased, but a single sample can be negative (high variance);
- k3 = (rho - 1) - log rho: unbiased too (E_pi[rho] = 1), and never negative (x - 1 >= log x),
  with lower variance while pi stays near pi_ref. GRPO uses it (DeepSeekMath, arXiv:2402.03300).

Generalised advantage estimation (Schulman et al. 2015, arXiv:1506.02438), over a response
that ends at its last real token (the value after it is 0):

    delta_t = r_t + gamma * V_{t+1} - V_t          A_t = delta_t + gamma * lambda * A_{t+1}
    returns_t = A_t + V_t

The clipped surrogate with ratio rho_t = exp(log pi_theta - log pi_old) and clip range eps:

    L_policy = -mean_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)
    L_value  = 0.5 * mean_t max((V_t - R_t)^2, (clip(V_t, V_old - eps_v, V_old + eps_v) - R_t)^2)

and the entropy bonus -c_ent * mean_t H(pi(. | s_t)). Every mean is over real response tokens
(`masked_mean`); advantages are whitened over the batch's real tokens (`masked_whiten`).

The adaptive KL controller of Ziegler et al. (§2.2) steers the measured KL towards a target:

    e = clip(KL / KL_target - 1, -0.2, 0.2)        beta <- beta * (1 + K_beta * e),  K_beta = n / horizon

Departures: `masked_var` is Bessel-corrected (as trl's was) and `approx_kl` is the k3 mean of
the new policy against the rollout policy (trl logged 0.5 * mean(l^2)). The trainer that puts
these together is `minillm.alignment.ppo_trainer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AdaptiveKLController", "FixedKLController", "entropy_from_logits",
           "explained_variance", "gae_advantages", "kl_penalty", "last_index", "masked_mean",
           "masked_normalize", "masked_var",
           "masked_whiten", "ppo_policy_loss", "ppo_value_loss", "rewards_with_kl",
           "token_logprobs"]

KL_ESTIMATORS = ("k1", "k3")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is 1 (all of them, or along `dim`).

    An all-masked input (or row, along `dim`) gives 0, not the 0/0 = NaN of the plain formula
    sum(x * mask) / sum(mask): the count is clamped to at least 1, so a response with no real
    token contributes nothing instead of poisoning the batch.
    """
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_normalize(x: torch.Tensor, mask: torch.Tensor, constant: float,
                     dim: int | None = None) -> torch.Tensor:
    """Sum of `x` over the positions where `mask` is 1, divided by a fixed `constant` (all
    positions, or along `dim`): sum(x * mask) / constant.

    Dr. GRPO (Liu et al. 2025, arXiv:2503.20783) and Stanford CS336's assignment 5 normalise a
    per-token loss this way, by a constant such as the generation budget, instead of by each
    response's own length (`masked_mean` per row), which weights a token of a short response
    more than one of a long response. An all-masked input (or row) gives 0 (a sum of nothing).
    """
    if constant == 0:
        raise ValueError("constant=0: masked_normalize divides by it (use e.g. max_new_tokens)")
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / constant
    return (x * mask).sum(dim) / constant


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over the positions where `mask` is 1 (Bessel-corrected by default)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError(f"masked_var(unbiased=True) needs at least 2 real values, got {int(n)}")
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the real positions; padding is set to 0.
    With shift_mean=False the mean is added back (only the scale changes)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    white = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        white = white + mean
    return white * mask.to(x.dtype)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under each row of `logits` (..., V) -> (...), in float32."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens[..., None]).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p_v log p_v of each row of `logits` (..., V) -> (...), in float32."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
               estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled under pi (see the module
    docstring): "k1" = log pi - log pi_ref; "k3" = (rho - 1) - log rho, rho = pi_ref / pi."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator={estimator!r}; choose one of {KL_ESTIMATORS}")


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last 1 of each row of `mask` (B, T); a row of zeros is an error."""
    if not bool((mask.sum(-1) > 0).all()):
        raise ValueError("a row of the mask has no real token: every response needs at least one")
    t = mask.size(-1)
    return t - 1 - mask.flip(-1).float().argmax(-1)


def rewards_with_kl(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                    kl_coef: float) -> torch.Tensor:
    """Per-token rewards r_t = -kl_coef * kl_t, plus each row's score at its last real token.

    Args:
        scores: (B,) reward-model scores of the whole responses.
        kl: (B, T) per-token KL estimates; mask: (B, T) 1 on real response tokens.
    Returns:
        (B, T) rewards, 0 on padding.
    """
    if kl_coef < 0:
        raise ValueError(f"kl_coef={kl_coef} must be >= 0 (it scales a penalty)")
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    rows = torch.arange(kl.size(0), device=kl.device)
    rewards[rows, last_index(mask)] += scores.to(rewards.dtype)
    return rewards


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over right-padded responses.

    Args:
        rewards, values: (B, T); mask: (B, T) 1 on real tokens (a prefix of each row).
        gamma: discount; lam: GAE's lambda (0: one-step TD, 1: Monte-Carlo minus V).
    Returns:
        (advantages, returns), (B, T), 0 on padding.
    """
    for name, v in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}={v} must be in [0, 1]")
    mask = mask.to(values.dtype)
    t_len = rewards.size(1)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(t_len)):
        alive = mask[:, t + 1] if t + 1 < t_len else torch.zeros_like(running)
        next_value = values[:, t + 1] * alive if t + 1 < t_len else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running * alive
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                    advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate (to minimise), and {"clip_frac", "approx_kl"}: the share of real
    tokens whose ratio left [1 - eps, 1 + eps], and the k3 estimate of KL(pi_old || pi_theta)."""
    if clip_range <= 0:
        raise ValueError(f"clip_range={clip_range} must be > 0 (0 would freeze the policy)")
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_range, 1 + clip_range) * advantages
    loss = masked_mean(-torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean(((ratio - 1).abs() > clip_range).float(), mask)
        approx_kl = masked_mean(kl_penalty(old_logprobs, logprobs, "k3"), mask)
    return loss, {"clip_frac": clip_frac, "approx_kl": approx_kl}


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   mask: torch.Tensor, clip_range_value: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * masked mean of max((V - R)^2, (clip(V, V_old +- eps_v) - R)^2), and the share of
    real tokens where the clipped term was the larger."""
    if clip_range_value <= 0:
        raise ValueError(f"clip_range_value={clip_range_value} must be > 0")
    clipped = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    plain_err, clipped_err = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(plain_err, clipped_err), mask)
    return loss, masked_mean((clipped_err > plain_err).float(), mask).detach()


def explained_variance(values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[R - V] / Var[R] over real tokens: 1 is a perfect critic, 0 no better than a
    constant, negative worse."""
    var_returns = masked_var(returns, mask, unbiased=False)
    return 1 - masked_var(returns - values, mask, unbiased=False) / var_returns.clamp(min=1e-12)


@dataclass
class FixedKLController:
    """A constant KL coefficient beta."""

    value: float

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError(f"kl_coef={self.value} must be >= 0")

    def update(self, current_kl: float, n_steps: int) -> None:  # noqa: ARG002 - fixed
        """Nothing to adapt."""


@dataclass
class AdaptiveKLController:
    """Ziegler et al. (arXiv:1909.08593, §2.2): beta <- beta (1 + clip(KL/target - 1, +-0.2)
    * n_steps / horizon), so the measured KL drifts towards `target`.

    Args:
        value: the initial beta (>= 0).
        target: the KL (nats per response) to steer to (> 0).
        horizon: how many samples the correction takes to act (> 0; Ziegler et al.: 10,000).
    """

    value: float
    target: float
    horizon: int = 10_000

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError(f"kl_coef={self.value} must be >= 0")
        if self.target <= 0:
            raise ValueError(f"kl_target={self.target} must be > 0")
        if self.horizon <= 0:
            raise ValueError(f"kl_horizon={self.horizon} must be > 0")

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adapt beta after `n_steps` samples whose mean KL was `current_kl`."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
