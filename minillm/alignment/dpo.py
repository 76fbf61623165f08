"""Direct preference optimisation and its relatives, as pure functions of sequence log-probs.

DPO (Rafailov et al. 2023, arXiv:2305.18290) starts from the KL-constrained RLHF objective

    max_pi  E_{x, y~pi}[ r(x, y) ]  -  beta * KL( pi(.|x) || pi_ref(.|x) )

whose maximiser is pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x). Solved for the reward,
r = beta log(pi*/pi_ref) + beta log Z(x); in a Bradley-Terry likelihood of a preference
y_w > y_l the partition function cancels, leaving a classification loss on the policy itself:

    L_DPO = - log sigmoid( beta * [ (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)) ] )

with *implicit rewards* r_hat(y) = beta * (log pi(y) - log pi_ref(y)). log pi(y) is the sum of
the response tokens' log-probs (the prompt is masked): a per-token *mean* is a different loss
(with a reference it is sometimes called length-normalised DPO; SimPO, below, uses the mean
without a reference), and `sequence_logps` makes the choice explicit.

The relatives, each a function below with the same return type (`PreferenceLoss`):
- conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): labels flipped with
  probability eps: L = -(1 - eps) log sigmoid(beta d) - eps log sigmoid(-beta d);
- IPO (Azar et al. 2023, arXiv:2310.12036, eq. 17): a squared loss that keeps the margin at
  1/(2 beta) instead of pushing it to infinity: L = (d - 1/(2 beta))^2. Eq. 17 is written on
  whole sequences, d the difference of the *summed* log-ratios (`ipo_loss` without token
  counts); trl divides each summed log-ratio by its response length first (a choice trl says it
  confirmed with the IPO authors, not in the paper; `ipo_loss` with token counts, and
  `preference_loss_fn("ipo")`; `"ipo_sum"` is eq. 17 as written);
- KTO (Ethayarajh et al. 2024, arXiv:2402.01306, eq. 7): unpaired desirable / undesirable
  examples against a reference point z = max(0, KL estimate), r the log-ratio:
  desirable     L = w_d (1 - sigmoid(beta (r - z))),
  undesirable   L = w_u (1 - sigmoid(beta (z - r)));
- SimPO (Meng, Xia & Chen 2024, arXiv:2405.14734, eq. 6): reference-free, length-normalised
  log-probs (mean per token) and a target margin gamma: L = -log sigmoid(beta (m_w - m_l) - gamma);
- hinge (SLiC, Zhao et al. 2023, arXiv:2305.10425; trl's `loss_type="hinge"`): DPO's log-ratio
  difference in a hinge instead of a log-sigmoid: L = max(0, 1 - beta d). It stops pushing a
  pair once beta d >= 1, so its margins stop at 1/beta where DPO's grow on;
- ORPO (Hong et al. 2024, arXiv:2403.07691, eq. 6-7): no reference; the SFT negative
  log-likelihood of the chosen response plus an odds-ratio term on mean log-probs p:
  L = NLL - lambda * log sigmoid( log odds(p_w) - log odds(p_l) ),  odds(p) = p / (1 - p).

Departures: the losses return per-example terms and their batch mean (trl's reduction);
ORPO's NLL is whatever the caller passes (the course's SFT loss: response tokens only, where
trl's ORPO trainer also counts the prompt). Identical chosen and rejected responses give d = 0:
loss ln 2 and a gradient that cancels exactly, so such a pair teaches nothing; the pair
batcher (`minillm.alignment.pairs`) rejects them with an error instead.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["PreferenceLoss", "dpo_loss", "hinge_loss", "ipo_loss", "kto_loss", "orpo_loss",
           "sequence_logps", "simpo_loss"]

IGNORE = -100


class PreferenceLoss(NamedTuple):
    """What every loss returns.

    loss: the scalar to backpropagate (the batch mean of `losses`, plus ORPO's NLL).
    losses: the per-example terms (B,).
    chosen_rewards, rejected_rewards: the method's implicit rewards, detached: beta times the
        log-ratio to the reference (DPO, IPO, KTO) or times the policy's own log-prob
        (SimPO, ORPO: no reference).
    """

    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def _check_beta(beta: float, name: str = "beta") -> None:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"{name}={beta} must be a positive number (it is the inverse strength of "
                         "the KL constraint); try 0.1")


def _check_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing={label_smoothing} must lie in [0, 0.5): it is the "
                         "probability that a label is flipped (0.5 would mean no preference)")


def _check_shapes(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
        raise ValueError(f"log-prob tensors must be 1-D and of one shape (one value per "
                         f"sequence), got {shapes}")


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "sum"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each row's labelled tokens (the response), summed or averaged.

    Args:
        logits: (B, T, V) the model's logits.
        labels: (B, T) already shifted (labels[t] is the token after position t), -100 on
            prompt and padding positions (as `minillm.alignment.sft.tokenize_example` makes them).
        reduction: "sum" (log pi(y): DPO, IPO, KTO) or "mean" (per token: SimPO, ORPO).
    Returns:
        (logps (B,), n_tokens (B,)): n_tokens the labelled tokens of each row.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction={reduction!r}; use 'sum' (DPO) or 'mean' (SimPO, ORPO)")
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must "
                         "agree on (batch, time)")
    mask = labels != IGNORE
    n = mask.sum(-1)
    if bool((n == 0).any()):
        raise ValueError(f"rows {torch.nonzero(n == 0).flatten().tolist()} have no labelled "
                         "(response) token: their log-prob is undefined")
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    total = picked.sum(-1)
    return (total if reduction == "sum" else total / n), n


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float = 0.1,
             label_smoothing: float = 0.0) -> PreferenceLoss:
    """DPO's sigmoid loss (conservative DPO with label_smoothing > 0).

    Args:
        policy_chosen, policy_rejected, ref_chosen, ref_rejected: (B,) summed response
            log-probs under the policy and the frozen reference.
        beta: strength of the KL constraint's inverse (> 0).
        label_smoothing: the assumed probability eps that a label is flipped, in [0, 0.5).
    """
    _check_beta(beta)
    _check_smoothing(label_smoothing)
    _check_shapes(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                  ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    logits = beta * (chosen_ratio - rejected_ratio)
    losses = (-(1 - label_smoothing) * F.logsigmoid(logits)
              - label_smoothing * F.logsigmoid(-logits))
    return PreferenceLoss(losses.mean(), losses, beta * chosen_ratio.detach(),
                          beta * rejected_ratio.detach())


def ipo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float = 0.1,
             chosen_tokens: torch.Tensor | None = None,
             rejected_tokens: torch.Tensor | None = None) -> PreferenceLoss:
    """IPO: (d - 1/(2 beta))^2, d the difference of the two responses' log-ratios.

    Two forms, chosen by the token counts:
    - without them (None, None): d is the difference of the *summed* log-ratios, Azar et al.'s
      eq. 17 as written (the target is 1/(2 beta) nats per sequence);
    - with them: each summed log-ratio is divided by its response length first, trl's choice
      (`DPOTrainer`, `loss_type="ipo"`; the target is then 1/(2 beta) nats per token).

    Args:
        policy_*, ref_*: (B,) summed response log-probs.
        beta: IPO's regulariser tau (> 0): the target margin is 1/(2 beta).
        chosen_tokens, rejected_tokens: (B,) response lengths, both or neither.
    Implicit rewards: beta times the summed log-ratios (as for DPO).
    """
    _check_beta(beta)
    _check_shapes(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                  ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    if (chosen_tokens is None) != (rejected_tokens is None):
        raise ValueError("give both chosen_tokens and rejected_tokens (trl's per-token IPO) or "
                         "neither (eq. 17 on summed log-ratios)")
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    c = chosen_ratio if chosen_tokens is None else chosen_ratio / chosen_tokens.clamp(min=1)
    r = rejected_ratio if rejected_tokens is None else rejected_ratio / rejected_tokens.clamp(min=1)
    losses = (c - r - 1 / (2 * beta)) ** 2
    return PreferenceLoss(losses.mean(), losses, beta * chosen_ratio.detach(),
                          beta * rejected_ratio.detach())



def hinge_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
               ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float = 0.1
               ) -> PreferenceLoss:
    """The hinge loss (SLiC's calibration loss on DPO's log-ratios; trl's "hinge"):
    max(0, 1 - beta d), d the difference of the summed log-ratios.

    Args:
        policy_*, ref_*: (B,) summed response log-probs.
        beta: > 0; a pair stops contributing once its margin d reaches 1/beta nats.
    Implicit rewards: beta times the summed log-ratios (as for DPO).
    """
    _check_beta(beta)
    _check_shapes(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                  ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    losses = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    return PreferenceLoss(losses.mean(), losses, beta * chosen_ratio.detach(),
                          beta * rejected_ratio.detach())

def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor,
             kl_policy_logps: torch.Tensor, kl_ref_logps: torch.Tensor, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> PreferenceLoss:
    """KTO on unpaired examples, each marked desirable or not.

    Args:
        policy_logps, ref_logps: (B,) summed response log-probs of the examples.
        desirable: (B,) bool, True for a desirable (chosen-like) example.
        kl_policy_logps, kl_ref_logps: (M,) log-probs of *mismatched* (prompt, response) pairs
            (a response put after another example's prompt): their mean difference estimates
            KL(pi || pi_ref), the reference point z = max(0, estimate), without gradient.
        beta: > 0. desirable_weight, undesirable_weight: lambda_D, lambda_U (> 0).
    Returns:
        losses in input order; chosen_rewards / rejected_rewards: beta * log-ratio of the
        desirable / undesirable examples.
    """
    _check_beta(beta)
    _check_beta(desirable_weight, "desirable_weight")
    _check_beta(undesirable_weight, "undesirable_weight")
    _check_shapes(policy_logps=policy_logps, ref_logps=ref_logps, desirable=desirable)
    _check_shapes(kl_policy_logps=kl_policy_logps, kl_ref_logps=kl_ref_logps)
    z = (kl_policy_logps - kl_ref_logps).mean().clamp(min=0).detach()
    ratio = policy_logps - ref_logps
    good = desirable.bool()
    losses = torch.where(good, desirable_weight * (1 - torch.sigmoid(beta * (ratio - z))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z - ratio))))
    rewards = beta * ratio.detach()
    return PreferenceLoss(losses.mean(), losses, rewards[good], rewards[~good])


def simpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, beta: float = 2.0,
               gamma: float = 0.5, label_smoothing: float = 0.0) -> PreferenceLoss:
    """SimPO: -log sigmoid(beta (m_w - m_l) - gamma), no reference model.

    Args:
        policy_chosen, policy_rejected: (B,) *mean* per-token response log-probs
            (`sequence_logps(..., reduction="mean")`).
        beta: reward scale (> 0; the paper uses 2-2.5). gamma: target margin (>= 0).
        label_smoothing: as in conservative DPO.
    Implicit rewards: beta * m (the length-normalised log-prob).
    """
    _check_beta(beta)
    _check_smoothing(label_smoothing)
    if gamma < 0:
        raise ValueError(f"gamma={gamma} must be >= 0 (it is a target reward margin)")
    _check_shapes(policy_chosen=policy_chosen, policy_rejected=policy_rejected)
    logits = beta * (policy_chosen - policy_rejected) - gamma
    losses = (-(1 - label_smoothing) * F.logsigmoid(logits)
              - label_smoothing * F.logsigmoid(-logits))
    return PreferenceLoss(losses.mean(), losses, beta * policy_chosen.detach(),
                          beta * policy_rejected.detach())


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, nll: torch.Tensor,
              beta: float = 0.1) -> PreferenceLoss:
    """ORPO: NLL - beta * mean log sigmoid(log odds ratio), no reference model.

    Args:
        policy_chosen, policy_rejected: (B,) *mean* per-token response log-probs (< 0).
        nll: scalar SFT loss on the chosen responses.
        beta: ORPO's lambda (> 0), the weight of the odds-ratio term.
    Returns:
        loss = nll + mean(losses), losses = -beta * log sigmoid(log odds ratio); implicit
        rewards beta * mean log-prob.
    """
    _check_beta(beta)
    _check_shapes(policy_chosen=policy_chosen, policy_rejected=policy_rejected)
    if bool((policy_chosen >= 0).any() or (policy_rejected >= 0).any()):
        raise ValueError("ORPO needs mean log-probs < 0 (probabilities below 1): the odds "
                         "p / (1 - p) of a certain response are infinite")
    c, r = policy_chosen.float(), policy_rejected.float()
    log_odds = (c - r) - (_log1mexp(c) - _log1mexp(r))
    losses = -beta * F.logsigmoid(log_odds)
    return PreferenceLoss(nll + losses.mean(), losses, beta * c.detach(), beta * r.detach())
