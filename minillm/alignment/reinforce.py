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

`ReinforceTrainer` runs the three estimators against a reward model on PPO's footing (the same
`OnPolicyTrainer` prompts, generator, optimizer and checkpoints). One `step()`:

    1. rollout: `prompts_per_step` prompts, each sampled `samples_per_prompt` (k) times;
    2. score: the reward function's score of each response (the fixed `missing_eos_penalty`
       in place of it for a response cut at `max_new_tokens`, if set), and the KL to the
       frozen reference summed over the response's real tokens (k1: log pi - log pi_ref),
       folded into one sequence reward, detached (trl's RLOO convention):

           r = score - kl_coef * sum_t (log pi(y_t) - log pi_ref(y_t))

    3. advantages by `estimator`: "reinforce" A = r, "mean" A = r - batch mean, "rloo" the
       leave-one-out baseline of the prompt's other k - 1 samples;
    4. one AdamW step on `reinforce_loss` (the mean over real tokens of -A log pi): the
       rollout is the policy's own, so there is no ratio to clip.

The log-probs of the sampled tokens come from one forward of the policy, which carries the
gradient; the KL in the reward reads the same numbers, detached (exact for the course's
dropout-free models).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minillm.alignment.chat import ChatTemplate
from minillm.alignment.ppo import masked_mean, token_logprobs
from minillm.alignment.ppo_trainer import OnPolicyTrainer, RewardFn
from minillm.alignment.rollout import decode_responses, response_forward, sample_rollout
from minillm.models import GPT

__all__ = ["ESTIMATORS", "ReinforceConfig", "ReinforceTrainer", "estimator_advantages",
           "reinforce_advantages", "reinforce_loss", "rloo_advantages", "sequence_rewards"]

BASELINES = ("none", "mean")
ESTIMATORS = ("reinforce", "mean", "rloo")


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


def sequence_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                     mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The KL-penalised sequence reward r = score - kl_coef * KL and the KL itself, both (B,)
    and detached; KL = sum over real tokens of log pi - log pi_ref (k1)."""
    kl = ((logprobs.detach() - ref_logprobs.detach()) * mask).sum(-1)
    return scores - kl_coef * kl, kl


def estimator_advantages(rewards: torch.Tensor, estimator: str, k: int) -> torch.Tensor:
    """A per response for `estimator` in ESTIMATORS (k samples per prompt, contiguous)."""
    if estimator == "reinforce":
        return reinforce_advantages(rewards, "none")
    if estimator == "mean":
        return reinforce_advantages(rewards, "mean")
    if estimator == "rloo":
        return rloo_advantages(rewards, k)
    raise ValueError(f"estimator={estimator!r}; choose one of {ESTIMATORS}")


@dataclass
class ReinforceConfig:
    prompts_per_step: int = 4      # distinct prompts per rollout
    samples_per_prompt: int = 4    # k responses per prompt (contiguous rows)
    max_new_tokens: int = 48       # response length cap
    temperature: float = 1.0       # sampling temperature of the rollouts
    lr: float = 3e-5               # AdamW learning rate (no decay)
    kl_coef: float = 0.03          # beta: r = score - beta * sum_t k1_t
    estimator: str = "rloo"        # "reinforce" (A = r), "mean" (r - batch mean), "rloo"
    missing_eos_penalty: float | None = None  # score of a response cut at the cap (None: off)
    grad_clip: float = 1.0         # max global gradient norm (0 = none)
    seed: int = 0                  # seeds prompt order and sampling

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "samples_per_prompt", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        for name in ("lr", "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("kl_coef", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 turns it off)")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator={self.estimator!r}; choose one of {ESTIMATORS}")
        if self.estimator == "rloo" and self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt={self.samples_per_prompt}: estimator='rloo' "
                             "needs at least 2 samples per prompt (the others are the baseline)")
        if self.estimator == "mean" and self.prompts_per_step * self.samples_per_prompt < 2:
            raise ValueError("estimator='mean' with prompts_per_step * samples_per_prompt = 1 "
                             "gives every advantage 0: sample at least 2 responses per step")


class ReinforceTrainer(OnPolicyTrainer):
    """REINFORCE, REINFORCE with the batch-mean baseline, or RLOO against a reward function
    (a proxy reward model, `reward_model_scorer`), with the KL to the frozen reference folded
    into the sequence reward. No critic, no clipping: one gradient step per rollout.

    Args:
        policy: the GPT to tune (in place); ref: the frozen reference (usually a copy of it).
        tokenizer, prompts: instructions, encoded through `template`'s prompt part.
        reward_fn: (rollout, response texts) -> (B,) proxy rewards.
        config: a `ReinforceConfig`.
        gold_fn: optional text -> true reward, logged as "gold_reward" (never trained on).
    """

    def __init__(self, policy: GPT, ref: GPT, tokenizer, prompts: Sequence[str],
                 reward_fn: RewardFn, config: ReinforceConfig | None = None,
                 gold_fn: Callable[[str], float] | None = None,
                 template: ChatTemplate | None = None):
        config = config or ReinforceConfig()
        super().__init__(policy, ref, tokenizer, prompts, config, template)
        self.reward_fn, self.gold_fn = reward_fn, gold_fn
        self._build_optimizer()

    def shape_scores(self, scores: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
        """The scores trained on: `missing_eos_penalty` for a response without the stop token."""
        if self.config.missing_eos_penalty is None:
            return scores
        return torch.where(ended, scores,
                           torch.full_like(scores, float(self.config.missing_eos_penalty)))

    def step(self) -> dict:
        """One rollout and one gradient step; returns (and appends to `history`) the log.

        "proxy_reward" is the reward function's raw mean score (before any penalty), "reward"
        the mean KL-penalised r trained on, "kl" the mean per-response k1 sum (nats),
        "ended_share" the share of responses that emitted the stop token."""
        c = self.config
        k = c.samples_per_prompt
        start = time.perf_counter()
        self.policy.eval()
        rows = [i for i in self._next_prompts(c.prompts_per_step) for _ in range(k)]
        rollout = sample_rollout(self.policy, [self.prompts[i] for i in rows], c.max_new_tokens,
                                 self.stop_id, self.generator, c.temperature)
        rollout_s = time.perf_counter() - start
        texts = decode_responses(self.tokenizer, rollout, self.stop_id)
        tokens, mask = rollout.responses, rollout.response_mask.float()
        ended = self._ended(rollout)
        with torch.no_grad():
            ref_logp = token_logprobs(response_forward(self.ref, rollout, c.temperature)[0],
                                      tokens)
            scores = self.reward_fn(rollout, texts).float().to(mask.device)
        self.policy.train()
        logp = token_logprobs(response_forward(self.policy, rollout, c.temperature)[0], tokens)
        rewards, kl = sequence_rewards(self.shape_scores(scores, ended), logp, ref_logp, mask,
                                       c.kl_coef)
        advantages = estimator_advantages(rewards, c.estimator, k)
        loss = reinforce_loss(logp, advantages, mask)
        grad_norm = self._optimizer_step(loss)
        self.policy.eval()
        self.step_count += 1
        log = {"step": self.step_count, "proxy_reward": float(scores.mean()),
               "gold_reward": (sum(self.gold_fn(t) for t in texts) / len(texts)
                               if self.gold_fn is not None else float("nan")),
               "kl": float(kl.mean()), "kl_coef": c.kl_coef, "reward": float(rewards.mean()),
               "advantage_std": float(advantages.std()) if len(rows) > 1 else 0.0,
               "response_length": float(mask.sum(-1).mean()),
               "ended_share": float(ended.float().mean()), "loss": float(loss.detach()),
               "grad_norm": grad_norm, "rollout_s": rollout_s,
               "step_s": time.perf_counter() - start, "sample": texts[0]}
        self.history.append(log)
        return log
