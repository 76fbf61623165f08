"""The ladder below PPO: REINFORCE, REINFORCE with a baseline, and RLOO's leave-one-out baseline.

A response y to a prompt x earns one sequence reward r(x, y) (a reward-model score, an exact
match; any KL penalty already folded in). The policy-gradient theorem (Williams 1992) gives

    grad E[r] = E[ r * grad log pi(y | x) ] = E[ r * sum_t grad log pi(y_t | x, y_<t) ]

so REINFORCE minimises, per real response token,

    loss = -A * log pi(y_t | x, y_<t)        with A = r (plain REINFORCE)

averaged over the batch's real tokens (`masked_mean`). Subtracting a baseline b that does not
depend on the sampled y keeps the gradient unbiased and lowers its variance: A = r - b, with b
the batch's mean reward (`reinforce_advantages(..., baseline="mean")`) or a fixed number.

RLOO (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style
Optimization for Learning from Human Feedback in LLMs", arXiv:2402.14740) samples k responses
per prompt and gives each the mean of the *other* k - 1 as its baseline:

    A_i = r_i - 1/(k - 1) * sum_{j != i} r_j  =  k/(k - 1) * (r_i - mean_j r_j)

unbiased (the baseline never sees r_i) and with no critic to train. GRPO
(`minillm.alignment.grpo.group_advantages`) uses the group mean *including* r_i and divides by
the group's std. PPO replaces the single A of a response by a per-token GAE estimate from a
learned critic (`minillm.alignment.ppo`). Layout: the k samples of one prompt are contiguous
rows, as in GRPO and trl's RLOO trainer.
"""

from __future__ import annotations

import torch

from minillm.alignment.ppo import masked_mean

__all__ = ["reinforce_advantages", "reinforce_loss", "rloo_advantages"]

BASELINES = ("none", "mean")


def reinforce_advantages(rewards: torch.Tensor, baseline: str | float = "none") -> torch.Tensor:
    """A = r - b per response: b = 0 ("none", plain REINFORCE), the batch mean ("mean"), or a
    number. `rewards` (B,) -> (B,)."""
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(f"baseline={baseline!r}; choose one of {BASELINES} or a number")
        return rewards - rewards.mean() if baseline == "mean" else rewards.clone()
    return rewards - float(baseline)


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO's leave-one-out advantages: A_i = r_i - mean of the other k - 1 rewards of its
    prompt. `rewards` (P * k,), the k samples of each prompt contiguous -> (P * k,)."""
    if k < 2:
        raise ValueError(f"k={k}: a leave-one-out baseline needs at least 2 samples per prompt")
    if rewards.dim() != 1 or rewards.numel() % k:
        raise ValueError(f"rewards {tuple(rewards.shape)} must be flat, a multiple of k={k} long")
    grouped = rewards.view(-1, k)
    others = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    return (grouped - others).view(-1)


def reinforce_loss(logprobs: torch.Tensor, advantages: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """The REINFORCE loss: the mean over real tokens of -A * log pi(y_t).

    Args:
        logprobs: (B, T) log-probs of the sampled tokens under the policy (with gradients).
        advantages: (B,) one per response (broadcast over its tokens) or (B, T) per token;
            treated as constants (detached).
        mask: (B, T) 1 on real response tokens.
    """
    adv = advantages.detach()
    if adv.dim() == 1:
        adv = adv[:, None]
    return masked_mean(-adv * logprobs, mask)
