"""GRPO: group-relative policy optimisation on verifiable rewards, no value model.

DeepSeekMath (Shao et al. 2024, arXiv:2402.03300, §4.1) drops PPO's critic: for each prompt q
it samples a group of G responses o_1..o_G, scores them (here: exact match against the task's
answer, 1 or 0) and uses the group as its own baseline,

    A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)             the same A_i for every token of o_i

then maximises the clipped surrogate with a KL term to the reference (the k3 estimator,
see `minillm.alignment.ppo.kl_penalty`), rho_{i,t} = pi_theta / pi_old:

    J = (1/G) sum_i (1/|o_i|) sum_t [ min(rho A_i, clip(rho, 1 - eps, 1 + eps) A_i)
                                      - beta * k3_{i,t} ]

Dr. GRPO (Liu et al. 2025, arXiv:2503.20783) shows two biases in this: the std division
up-weights groups that are nearly all right or all wrong (`scale="none"` drops it), and the
1/|o_i| length normalisation favours long wrong answers (`loss_type="dr_grpo"` sums over tokens
and divides by a constant, G * max_new_tokens). `loss_type="bnpo"` averages over all the
batch's tokens. A group whose rewards are all equal has A = 0: no signal.

Departures: the std is Bessel-corrected and eps = 1e-4 is added to it (as trl does); one
rollout serves `grpo_iterations` passes of updates (mu in DeepSeekMath's Algorithm 1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from minillm.alignment.chat import ChatTemplate
from minillm.alignment.ppo import kl_penalty, masked_mean, masked_normalize, token_logprobs
from minillm.alignment.ppo_trainer import OnPolicyTrainer
from minillm.alignment.recipe import score_chat
from minillm.alignment.rollout import decode_responses, response_forward, sample_rollout
from minillm.alignment.sft import exact_match_by_task
from minillm.data.sft import SFTExample
from minillm.models import GPT

__all__ = ["GRPOConfig", "GRPOTrainer", "exact_match_rewards", "grpo_loss", "group_advantages",
           "pass_at_k", "sampled_exact_match"]

LOSS_TYPES = ("grpo", "dr_grpo", "bnpo")
SCALES = ("group", "none")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """A_i = r_i - mean of its group, divided by (group std + eps) when scale="group".

    Args:
        rewards: (N * G,) rewards, the G responses of a prompt adjacent.
        group_size: G >= 2 (one response has no group to compare with).
        scale: "group" (GRPO) or "none" (Dr. GRPO).
    Returns:
        (N * G,) advantages.
    """
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: GRPO needs at least 2 responses per prompt "
                         "(the group mean is the baseline)")
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}; choose one of {SCALES}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    groups = rewards.float().view(-1, group_size)
    adv = groups - groups.mean(-1, keepdim=True)
    if scale == "group":
        adv = adv / (groups.std(-1, keepdim=True) + eps)
    return adv.view(-1)


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, clip_range: float = 0.2,
              beta: float = 0.04, loss_type: str = "grpo", max_new_tokens: int | None = None,
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The negated GRPO objective (to minimise) and {"kl", "clip_frac"}.

    Args:
        logprobs, old_logprobs, ref_logprobs: (B, T) log-probs of the sampled tokens under the
            policy being trained, the one that sampled them, and the reference.
        advantages: (B,) one per response; mask: (B, T) 1 on real response tokens.
        clip_range: eps > 0; beta: KL weight >= 0.
        loss_type: "grpo" (mean per response, then over responses), "bnpo" (mean over all
            tokens) or "dr_grpo" (sum over tokens / (B * max_new_tokens)).
        max_new_tokens: the constant of "dr_grpo" (default T).
    """
    if clip_range <= 0:
        raise ValueError(f"clip_range={clip_range} must be > 0")
    if beta < 0:
        raise ValueError(f"beta={beta} must be >= 0 (the KL coefficient)")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}; choose one of {LOSS_TYPES}")
    mask = mask.to(logprobs.dtype)
    ratio = (logprobs - old_logprobs).exp()
    adv = advantages[:, None]
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_range, 1 + clip_range) * adv)
    kl = kl_penalty(logprobs, ref_logprobs, "k3")
    per_token = -(surrogate - beta * kl)
    if loss_type == "grpo":
        loss = masked_mean(per_token, mask, dim=-1).mean()
    elif loss_type == "bnpo":
        loss = masked_mean(per_token, mask)
    else:
        loss = masked_normalize(per_token, mask, mask.size(0) * (max_new_tokens or mask.size(1)))
    with torch.no_grad():
        stats = {"kl": masked_mean(kl, mask),
                 "clip_frac": masked_mean(((ratio - 1).abs() > clip_range).float(), mask)}
    return loss, stats


def exact_match_rewards(answers: Sequence[str], references: Sequence[str]) -> torch.Tensor:
    """1.0 where the answer equals the reference (whitespace-stripped, as
    `exact_match_by_task` scores), else 0.0."""
    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} answers for {len(references)} references")
    return torch.tensor([exact_match_by_task(["x"], [a], [r])["x"]
                         for a, r in zip(answers, references, strict=True)])


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c are right (Chen et al. 2021,
    arXiv:2107.03374, Eq. 1): 1 - C(n - c, k) / C(n, k), the chance that k samples drawn
    without replacement from the n include a right one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@torch.no_grad()
def sampled_exact_match(model: GPT, tokenizer, examples: Sequence[SFTExample], n: int,
                        ks: Sequence[int], max_new_tokens: int,
                        generator: torch.Generator | None = None, temperature: float = 1.0,
                        template: ChatTemplate | None = None, batch_size: int = 64
                        ) -> dict[str, dict[str, float]]:
    """Sampled exact match per task: n samples per prompt (chat template, KV cache), scored
    like the GRPO reward; for each k in ks, pass@k averaged over the task's prompts."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    template = template or ChatTemplate()
    stop_id = template.stop_id(tokenizer)
    prompts = [template.encode(tokenizer, e.prompt)[0] for e in examples]
    rows = [i for i in range(len(examples)) for _ in range(n)]
    right: list[float] = []
    model.eval()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        roll = sample_rollout(model, [prompts[i] for i in chunk], max_new_tokens, stop_id,
                              generator, temperature)
        right += exact_match_rewards(decode_responses(tokenizer, roll, stop_id),
                                     [examples[i].response for i in chunk]).tolist()
    per_prompt = torch.tensor(right).view(len(examples), n).sum(-1).long().tolist()
    out: dict[str, dict[str, float]] = {}
    for task in dict.fromkeys(e.task for e in examples):
        cs = [c for e, c in zip(examples, per_prompt, strict=True) if e.task == task]
        out[task] = {f"pass@{k}": sum(pass_at_k(n, c, k) for c in cs) / len(cs) for k in ks}
    return out


@dataclass
class GRPOConfig:
    prompts_per_step: int = 8      # N distinct prompts per rollout
    group_size: int = 8            # G responses per prompt
    grpo_iterations: int = 1       # mu: passes over each rollout
    minibatch_size: int = 32       # responses per gradient step
    max_new_tokens: int = 32       # response length cap
    temperature: float = 1.0       # sampling temperature of the rollouts
    lr: float = 1e-5               # AdamW learning rate (no decay)
    beta: float = 0.04             # KL weight (k3)
    clip_range: float = 0.2        # policy ratio clip eps
    scale: str = "group"           # "group" (divide by the group std) or "none" (Dr. GRPO)
    loss_type: str = "grpo"        # "grpo", "dr_grpo" or "bnpo"
    grad_clip: float = 1.0         # max global gradient norm (0 = none)
    seed: int = 0                  # seeds prompt order, sampling and mini-batches

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size={self.group_size}: GRPO needs at least 2 responses "
                             "per prompt (the group mean is the baseline)")
        for name in ("prompts_per_step", "grpo_iterations", "minibatch_size", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        for name in ("lr", "temperature", "clip_range"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("beta", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.scale not in SCALES:
            raise ValueError(f"scale={self.scale!r}; choose one of {SCALES}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r}; choose one of {LOSS_TYPES}")


class GRPOTrainer(OnPolicyTrainer):
    """GRPO on instruction examples with exact answers (chapter 11's verifiable tasks).

    Args:
        policy: the GPT to tune (in place); ref: the frozen reference.
        tokenizer, examples: `SFTExample`s; the prompt goes through the chat template and the
            response is the reference answer.
        config: a `GRPOConfig`.
    """

    def __init__(self, policy: GPT, ref: GPT, tokenizer, examples: Sequence[SFTExample],
                 config: GRPOConfig | None = None, template: ChatTemplate | None = None):
        config = config or GRPOConfig()
        super().__init__(policy, ref, tokenizer, [e.prompt for e in examples], config, template)
        self.examples = list(examples)
        self._build_optimizer()

    def step(self) -> dict:
        """One group rollout and its updates; returns (and appends to `history`) the log."""
        c = self.config
        start = time.perf_counter()
        self.policy.eval()
        chosen = self._next_prompts(c.prompts_per_step)
        rows = [i for i in chosen for _ in range(c.group_size)]
        rollout = sample_rollout(self.policy, [self.prompts[i] for i in rows], c.max_new_tokens,
                                 self.stop_id, self.generator, c.temperature)
        rollout_s = time.perf_counter() - start
        answers = decode_responses(self.tokenizer, rollout, self.stop_id)
        rewards = exact_match_rewards(answers, [self.examples[i].response for i in rows])
        advantages = group_advantages(rewards, c.group_size, c.scale).to(self.device)
        tokens, mask = rollout.responses, rollout.response_mask.float()
        with torch.no_grad():
            old_logp = token_logprobs(response_forward(self.policy, rollout, c.temperature)[0],
                                      tokens)
            ref_logp = token_logprobs(response_forward(self.ref, rollout, c.temperature)[0],
                                      tokens)
        self.policy.train()
        sums: dict[str, float] = {}
        n = 0
        for _ in range(c.grpo_iterations):
            perm = torch.randperm(len(rows), generator=self.generator).to(self.device)
            for sub in perm.split(c.minibatch_size):
                logp = token_logprobs(response_forward(self.policy, rollout.select(sub),
                                                       c.temperature)[0],
                                      tokens[sub])
                loss, stats = grpo_loss(logp, old_logp[sub], ref_logp[sub], advantages[sub],
                                        mask[sub], c.clip_range, c.beta, c.loss_type,
                                        c.max_new_tokens)
                grad_norm = self._optimizer_step(loss)
                self._accumulate(sums, (("loss", loss.detach()), ("kl", stats["kl"]),
                                        ("clip_frac", stats["clip_frac"]),
                                        ("grad_norm", grad_norm)))
                n += 1
        self.policy.eval()
        self.step_count += 1
        groups = rewards.view(-1, c.group_size)
        log = {"step": self.step_count, "reward": float(rewards.mean()),
               "solved_groups": float((groups.max(-1).values > 0).float().mean()),
               "flat_groups": float((groups.std(-1) == 0).float().mean()),
               "response_length": float(mask.sum(-1).mean()),
               # Dr. GRPO's length bias shows here: the lengths of rewarded and unrewarded
               # responses (None when the rollout has none of that kind)
               **{f"length_{kind}": (float(mask.sum(-1)[pick].mean()) if pick.any() else None)
                  for kind, pick in (("right", rewards.to(mask.device) > 0),
                                     ("wrong", rewards.to(mask.device) <= 0))},
               **{k: v / n for k, v in sums.items()},
               "rollout_s": rollout_s, "step_s": time.perf_counter() - start}
        self.history.append(log)
        return log

    def evaluate(self, examples: Sequence[SFTExample]) -> dict[str, float]:
        """Greedy exact match per task (and "mean") on `examples`, as chapter 11 scores."""
        return exact_match_by_task(*score_chat(self.policy, self.tokenizer, examples,
                                               self.template))

    def evaluate_sampled(self, examples: Sequence[SFTExample], n: int = 8,
                         max_new_tokens: int | None = None, seed: int = 0,
                         batch_size: int = 64) -> dict[str, dict[str, float]]:
        """`sampled_exact_match` of the policy at the rollout temperature: pass@1 and pass@n
        per task."""
        return sampled_exact_match(self.policy, self.tokenizer, examples, n, (1, n),
                                   max_new_tokens or self.config.max_new_tokens,
                                   torch.Generator().manual_seed(seed), self.config.temperature,
                                   self.template, batch_size)
