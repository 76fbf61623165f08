"""The PPO loop for RLHF: rollout, score, advantages, several epochs of clipped updates.

One `PPOTrainer.step()` (InstructGPT, arXiv:2203.02155; Ziegler et al. 2019, arXiv:1909.08593;
the pieces are the pure functions of `minillm.alignment.ppo`):

    1. rollout: sample a response to `batch_size` prompts from the policy (KV cache, left-padded
       prompts; `minillm.alignment.rollout`);
    2. score: the proxy reward model's score of each conversation, and, for measuring only, the
       gold reward of its text;
    3. recompute the log-probs of the sampled tokens under the policy and the frozen reference,
       and the value of each state; per-token rewards -beta * kl_t plus the score at the last
       token; GAE(gamma, lambda); advantages whitened over the batch's real tokens;
    4. `ppo_epochs` passes over shuffled mini-batches: clipped policy loss + vf_coef * clipped
       value loss - ent_coef * entropy, one AdamW step per mini-batch;
    5. the KL controller (fixed, or adaptive towards `kl_target`) sees the batch's mean KL.

Logged per step: proxy and gold reward, KL to the reference (sum over the response, k1),
beta, clip fraction, approx-KL, value explained variance, entropy, response length, losses.

Three of Huang et al.'s implementation details ("The N+ Implementation Details of RLHF with
PPO", 2024, arXiv:2403.17031), each an option, off by default (the shipped runs used none):
- `missing_eos_penalty`: a response that reaches `max_new_tokens` without the stop token gets
  this fixed score (e.g. -1) in place of the reward model's, which would otherwise read a
  mid-sentence token it was never trained on;
- `normalize_reward`: before the first update, `reward_norm_samples` responses are sampled from
  the initial (SFT) policy with a generator of their own (the rollouts are unchanged) and the
  reward model's scores are standardised by their mean and std for the whole run;
- `value_from_reward_model`: the critic is a separate model, a copy of the reward model (trunk
  and head; InstructGPT's choice), so V(s_t) starts as the reward model's score of the prefix
  (rescaled when `normalize_reward` is on) instead of a zero-initialised head.

Departures: by default the value head sits on the policy's own final hidden states (a shared
trunk, as trl's `AutoModelForCausalLMWithValueHead` did); no pretraining-mix term (gamma = 0,
"PPO" not "PPO-ptx").

`OnPolicyTrainer` holds what PPO and GRPO share: the shuffled prompt stream, the seeded
generator, the optimizer step, and a checkpoint folder that a run resumes from exactly:

    folder/config.json + model.safetensors   the policy GPT (GPT.from_checkpoint reads it)
    folder/heads.safetensors                 extra trained modules (PPO's value head)
    folder/trainer_state.pt                  optimizer, generator, prompt order, torch RNG
    folder/rl.json                           step, config, KL coefficient, history
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from minillm.alignment.chat import ChatTemplate
from minillm.alignment.ppo import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    explained_variance,
    gae_advantages,
    kl_penalty,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
    rewards_with_kl,
    token_logprobs,
)
from minillm.alignment.rollout import Rollout, decode_responses, response_forward, sample_rollout
from minillm.io import (
    atomic_folder,
    load_tensors,
    read_json,
    save_tensors,
    torch_load_safe,
    torch_save_atomic,
)
from minillm.models import GPT

__all__ = ["OnPolicyTrainer", "PPOConfig", "PPOTrainer", "ValueHead", "ValueModel",
           "reward_model_scorer"]

RewardFn = Callable[[Rollout, list[str]], torch.Tensor]


@dataclass
class PPOConfig:
    batch_size: int = 16           # prompts (= responses) per rollout
    minibatch_size: int = 8        # responses per gradient step
    ppo_epochs: int = 2            # passes over each rollout
    max_new_tokens: int = 48       # response length cap
    temperature: float = 1.0       # sampling temperature of the rollouts
    lr: float = 1e-5               # AdamW learning rate (no decay)
    kl_coef: float = 0.05          # beta, the initial one if adaptive
    kl_estimator: str = "k1"       # per-token KL in the reward: "k1" or "k3"
    adaptive_kl: bool = False      # Ziegler et al.'s controller towards kl_target
    kl_target: float = 6.0         # nats per response (adaptive only)
    kl_horizon: int = 10_000       # samples for the controller to act (adaptive only)
    gamma: float = 1.0             # discount
    lam: float = 0.95              # GAE lambda
    clip_range: float = 0.2        # policy ratio clip eps
    clip_range_value: float = 0.2  # value clip eps_v
    vf_coef: float = 0.1           # value-loss weight
    ent_coef: float = 0.0          # entropy bonus weight
    grad_clip: float = 1.0         # max global gradient norm (0 = none)
    seed: int = 0                  # seeds prompt order, sampling and mini-batches
    missing_eos_penalty: float | None = None  # score of a response cut at the cap (None: off)
    normalize_reward: bool = False  # standardise scores by SFT samples' mean and std
    reward_norm_samples: int = 64  # SFT responses those statistics are measured on
    value_from_reward_model: bool = False  # critic = a copy of the reward model

    def __post_init__(self) -> None:
        for name in ("batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.minibatch_size > self.batch_size:
            raise ValueError(f"minibatch_size={self.minibatch_size} is larger than batch_size="
                             f"{self.batch_size}: lower it or sample more per rollout")
        for name in ("lr", "temperature", "clip_range", "clip_range_value"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("kl_coef", "vf_coef", "ent_coef", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator={self.kl_estimator!r}; choose one of {KL_ESTIMATORS}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.normalize_reward and self.reward_norm_samples < 2:
            raise ValueError(f"reward_norm_samples={self.reward_norm_samples}: a std needs >= 2")
        if self.adaptive_kl:  # the controller checks kl_target and kl_horizon
            AdaptiveKLController(self.kl_coef, self.kl_target, self.kl_horizon)


class ValueModel(nn.Module):
    """A critic with its own trunk: V(s_t) = head(h_t) on a GPT's final hidden states, both
    copied from a `RewardModel` (Huang et al.'s "initialise the value model from the reward
    model")."""

    def __init__(self, reward_model: nn.Module):
        super().__init__()
        self.backbone = copy.deepcopy(reward_model.backbone)
        self.head = copy.deepcopy(reward_model.head)
        self.backbone.lm_head = nn.Identity()  # unused: only the hidden states are read
        self.backbone.train()

    def forward(self, rollout: Rollout) -> torch.Tensor:
        _, hidden = response_forward(self.backbone, rollout, return_hidden=True)
        return self.head(hidden).squeeze(-1).float()


class ValueHead(nn.Module):
    """V(s_t) = w . h_t + b on the policy's final hidden states (B, T, C) -> (B, T)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.linear = nn.Linear(d_model, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden).squeeze(-1).float()


def reward_model_scorer(reward_model: nn.Module) -> RewardFn:
    """A reward function reading a `RewardModel`'s score of each whole rollout sequence."""
    @torch.no_grad()
    def score(rollout: Rollout, texts: list[str]) -> torch.Tensor:  # noqa: ARG001 - tokens suffice
        reward_model.eval()
        return reward_model(rollout.sequences, attention_mask=rollout.attention_mask)
    return score


class OnPolicyTrainer:
    """Shared by PPO, GRPO and REINFORCE/RLOO: prompts, generator, optimizer, checkpoint and
    resume.

    Subclasses set `self.heads` (extra trained modules by name) before calling
    `_build_optimizer`, and implement `step()`.
    """

    def __init__(self, policy: GPT, ref: GPT, tokenizer, prompts: Sequence[str],
                 config, template: ChatTemplate | None = None):
        if not prompts:
            raise ValueError("the trainer needs at least one prompt")
        self.config = config
        self.policy, self.ref, self.tokenizer = policy, ref, tokenizer
        self.template = template or ChatTemplate()
        self.stop_id = self.template.stop_id(tokenizer)
        self.prompts = [self.template.encode(tokenizer, p)[0] for p in prompts]
        ctx = policy.config.context_length
        too_long = [i for i, ids in enumerate(self.prompts)
                    if len(ids) + config.max_new_tokens > ctx]
        if too_long:
            raise ValueError(f"{len(too_long)} prompts (e.g. #{too_long[0]}, "
                             f"{len(self.prompts[too_long[0]])} tokens) leave no room for "
                             f"max_new_tokens={config.max_new_tokens} in context_length={ctx}: "
                             "drop them or ask for fewer new tokens")
        self.prompt_texts = list(prompts)
        ref.eval().requires_grad_(False)
        self.device = next(policy.parameters()).device
        self.generator = torch.Generator().manual_seed(config.seed)
        self.order: list[int] = []
        self.cursor = 0
        self.step_count = 0
        self.history: list[dict] = []
        self.heads: dict[str, nn.Module] = {}

    def _build_optimizer(self) -> None:
        params = list(self.policy.parameters()) + [p for h in self.heads.values()
                                                   for p in h.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=0.0)

    def _next_prompts(self, n: int) -> list[int]:
        """Indices of the next `n` prompts of a stream reshuffled every pass."""
        out = []
        while len(out) < n:
            if self.cursor >= len(self.order):
                self.order = torch.randperm(len(self.prompts), generator=self.generator).tolist()
                self.cursor = 0
            out.append(self.order[self.cursor])
            self.cursor += 1
        return out

    @staticmethod
    def _accumulate(sums: dict[str, float], items) -> None:
        """Add (name, scalar tensor or float) pairs into `sums`."""
        for k, v in items:
            sums[k] = sums.get(k, 0.0) + (v.item() if isinstance(v, torch.Tensor) else float(v))

    def _ended(self, rollout: Rollout) -> torch.Tensor:
        """(B,) bool: the response holds the stop token."""
        return ((rollout.responses == self.stop_id) & rollout.response_mask.bool()).any(-1)

    def _optimizer_step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip or float("inf"))
        self.optimizer.step()
        return float(norm)

    def fit(self, steps: int, checkpoint: str | Path | None = None,
            checkpoint_interval: int = 0) -> list[dict]:
        """Run `steps` more steps (saving every `checkpoint_interval` and at the end when a
        `checkpoint` folder is given); returns the history."""
        for _ in range(steps):
            self.step()
            if checkpoint is not None and checkpoint_interval and \
                    self.step_count % checkpoint_interval == 0:
                self.save(checkpoint)
        if checkpoint is not None:
            self.save(checkpoint)
        return self.history

    # ---- checkpoints -----------------------------------------------------------------------
    def _extra_json(self) -> dict:
        return {}

    def _load_extra_json(self, meta: dict) -> None:
        del meta

    def save(self, folder: str | Path) -> Path:
        """Write the run's checkpoint folder atomically (see the module docstring)."""
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            self.policy.write_files(tmp, extra_files={"rl.json": {
                "step": self.step_count, "config": asdict(self.config),
                "history": self.history, **self._extra_json()}})
            if self.heads:
                save_tensors(tmp / "heads.safetensors", {
                    f"{name}.{k}": v for name, h in self.heads.items()
                    for k, v in h.state_dict().items()})
            torch_save_atomic(tmp / "trainer_state.pt", {
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "order": torch.tensor(self.order, dtype=torch.long), "cursor": self.cursor,
                "torch_rng": torch.get_rng_state()})
        return folder

    def resume(self, folder: str | Path) -> None:
        """Restore weights, optimizer, generator, prompt stream and history from `folder`;
        the run then continues as if it had never stopped."""
        folder = Path(folder)
        meta = read_json(folder / "rl.json", "rl.json to resume an RL run")
        if meta["config"] != asdict(self.config):
            changed = sorted(k for k, v in asdict(self.config).items() if meta["config"].get(k) != v)
            raise ValueError(f"{folder} was written with another config (fields {changed} differ): "
                             "resume with the config of the run that wrote it")
        self.policy.load_weights(load_tensors(folder / "model.safetensors"),
                                 source=folder / "model.safetensors")
        if self.heads:
            tensors = load_tensors(folder / "heads.safetensors")
            for name, h in self.heads.items():
                h.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items()
                                   if k.startswith(name + ".")})
        state = torch_load_safe(folder / "trainer_state.pt", "trainer_state.pt to resume")
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.order = [int(i) for i in state["order"]]
        self.cursor = int(state["cursor"])
        torch.set_rng_state(state["torch_rng"])
        self.step_count, self.history = int(meta["step"]), list(meta["history"])
        self._load_extra_json(meta)


class PPOTrainer(OnPolicyTrainer):
    """PPO against a reward function (a proxy reward model, `reward_model_scorer`), with a KL
    penalty to the frozen reference policy.

    Args:
        policy: the GPT to tune (in place); ref: the frozen reference (usually a copy of it).
        tokenizer, prompts: instructions, encoded through `template`'s prompt part.
        reward_fn: (rollout, response texts) -> (B,) proxy rewards.
        config: a `PPOConfig`.
        gold_fn: optional text -> true reward, logged as "gold_reward" (never trained on).
        reward_model: the `RewardModel` to copy the critic from (`value_from_reward_model`).
    """

    def __init__(self, policy: GPT, ref: GPT, tokenizer, prompts: Sequence[str],
                 reward_fn: RewardFn, config: PPOConfig | None = None,
                 gold_fn: Callable[[str], float] | None = None,
                 template: ChatTemplate | None = None, reward_model: nn.Module | None = None):
        config = config or PPOConfig()
        super().__init__(policy, ref, tokenizer, prompts, config, template)
        self.reward_fn, self.gold_fn = reward_fn, gold_fn
        self.reward_stats: tuple[float, float] | None = None  # (mean, std) when normalising
        if config.value_from_reward_model:
            if reward_model is None:
                raise ValueError("value_from_reward_model=True needs the reward_model to copy")
            self.value_head = ValueModel(reward_model).to(self.device)
            self.heads = {"value_model": self.value_head}
        else:
            self.value_head = ValueHead(policy.config.d_model).to(self.device)
            self.heads = {"value_head": self.value_head}
        self.kl_ctl = (AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
                       if config.adaptive_kl else FixedKLController(config.kl_coef))
        self._build_optimizer()

    def _extra_json(self) -> dict:
        return {"kl_coef": self.kl_ctl.value, "reward_stats": self.reward_stats}

    def _load_extra_json(self, meta: dict) -> None:
        self.kl_ctl.value = float(meta["kl_coef"])
        stats = meta.get("reward_stats")
        self.reward_stats = None if stats is None else (float(stats[0]), float(stats[1]))

    def evaluate_forward(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the response tokens (B, R, V) and the values of their states (B, R)."""
        logits, hidden = response_forward(self.policy, rollout, self.config.temperature,
                                          return_hidden=True)
        if isinstance(self.value_head, ValueModel):
            return logits, self.value_head(rollout)
        return logits, self.value_head(hidden)

    @torch.no_grad()
    def measure_reward_stats(self) -> tuple[float, float]:
        """Mean and std of the reward function's scores on `reward_norm_samples` responses of
        the current policy, sampled with a generator of their own (seed + 1) so the run's
        rollouts stay as they would be without normalisation. Sets `reward_stats`; with a critic
        copied from the reward model, rescales its head so that it predicts normalised scores."""
        c = self.config
        gen = torch.Generator().manual_seed(c.seed + 1)
        idx = torch.randint(len(self.prompts), (c.reward_norm_samples,), generator=gen).tolist()
        scores = []
        self.policy.eval()
        for start in range(0, len(idx), c.batch_size):
            rollout = sample_rollout(self.policy, [self.prompts[i] for i in idx[start:start + c.batch_size]],
                                     c.max_new_tokens, self.stop_id, gen, c.temperature)
            texts = decode_responses(self.tokenizer, rollout, self.stop_id)
            scores.append(self.reward_fn(rollout, texts).float().cpu())
        all_scores = torch.cat(scores)
        mean, std = float(all_scores.mean()), float(all_scores.std())
        self.reward_stats = (mean, max(std, 1e-8))
        if isinstance(self.value_head, ValueModel):
            head = self.value_head.head
            head.weight.div_(self.reward_stats[1])
            head.bias.sub_(mean).div_(self.reward_stats[1])
        return self.reward_stats

    def shape_scores(self, scores: torch.Tensor, rollout: Rollout) -> torch.Tensor:
        """The scores PPO trains on: normalised (`normalize_reward`), then the fixed
        `missing_eos_penalty` for every response that never emitted the stop token."""
        c = self.config
        if c.normalize_reward:
            if self.reward_stats is None:
                raise RuntimeError("normalize_reward is on but measure_reward_stats() never ran")
            scores = (scores - self.reward_stats[0]) / self.reward_stats[1]
        if c.missing_eos_penalty is not None:
            scores = torch.where(self._ended(rollout), scores,
                                 torch.full_like(scores, float(c.missing_eos_penalty)))
        return scores

    def step(self) -> dict:
        """One rollout and its PPO epochs; returns (and appends to `history`) the step's log
        ("proxy_reward" is the reward model's raw mean score, before any normalisation or
        penalty; "ended_share" the share of responses that emitted the stop token)."""
        c = self.config
        if c.normalize_reward and self.reward_stats is None:
            self.measure_reward_stats()  # before the first update, on the initial policy
        start = time.perf_counter()
        self.policy.eval()
        prompts = [self.prompts[i] for i in self._next_prompts(c.batch_size)]
        rollout = sample_rollout(self.policy, prompts, c.max_new_tokens, self.stop_id,
                                 self.generator, c.temperature)
        rollout_s = time.perf_counter() - start
        texts = decode_responses(self.tokenizer, rollout, self.stop_id)
        tokens = rollout.responses
        mask = rollout.response_mask.float()
        with torch.no_grad():
            logits, old_values = self.evaluate_forward(rollout)
            old_logp = token_logprobs(logits, tokens)
            ref_logp = token_logprobs(response_forward(self.ref, rollout, c.temperature)[0], tokens)
            scores = self.reward_fn(rollout, texts).float().to(mask.device)
            trained_scores = self.shape_scores(scores, rollout)
            kl = kl_penalty(old_logp, ref_logp, c.kl_estimator) * mask
            rewards = rewards_with_kl(trained_scores, kl, mask, self.kl_ctl.value)
            advantages, returns = gae_advantages(rewards, old_values, mask, c.gamma, c.lam)
            advantages = masked_whiten(advantages, mask)
            explained = explained_variance(old_values, returns, mask)
        self.policy.train()
        sums: dict[str, float] = {}
        n_updates = 0
        for _ in range(c.ppo_epochs):
            perm = torch.randperm(c.batch_size, generator=self.generator).to(mask.device)
            for rows in perm.split(c.minibatch_size):
                logits, values = self.evaluate_forward(rollout.select(rows))
                m = mask[rows]
                logp = token_logprobs(logits, tokens[rows])
                pg_loss, pg = ppo_policy_loss(logp, old_logp[rows], advantages[rows], m,
                                              c.clip_range)
                vf_loss, vf_clip = ppo_value_loss(values, old_values[rows], returns[rows], m,
                                                  c.clip_range_value)
                entropy = masked_mean(entropy_from_logits(logits), m)
                loss = pg_loss + c.vf_coef * vf_loss - c.ent_coef * entropy
                grad_norm = self._optimizer_step(loss)
                self._accumulate(sums, (
                    ("policy_loss", pg_loss.detach()), ("value_loss", vf_loss.detach()),
                    ("entropy", entropy.detach()), ("clip_frac", pg["clip_frac"]),
                    ("approx_kl", pg["approx_kl"]), ("value_clip_frac", vf_clip),
                    ("grad_norm", grad_norm)))
                n_updates += 1
        self.policy.eval()
        kl_k1 = float((kl_penalty(old_logp, ref_logp, "k1") * mask).sum(-1).mean())
        kl_coef = self.kl_ctl.value
        self.kl_ctl.update(kl_k1, c.batch_size)
        self.step_count += 1
        log = {"step": self.step_count, "proxy_reward": float(scores.mean()),
               "gold_reward": (sum(self.gold_fn(t) for t in texts) / len(texts)
                               if self.gold_fn is not None else float("nan")),
               "kl": kl_k1, "kl_coef": kl_coef, "explained_variance": float(explained),
               "response_length": float(mask.sum(-1).mean()),
               "ended_share": float(self._ended(rollout).float().mean()),
               **{k: v / n_updates for k, v in sums.items()},
               "rollout_s": rollout_s, "step_s": time.perf_counter() - start,
               "sample": texts[0]}
        self.history.append(log)
        return log
