"""A reward model trained on comparisons: the SFT GPT with a scalar head, Bradley-Terry loss.

InstructGPT (Ouyang et al. 2022, arXiv:2203.02155, §3.5, Eq. 1) starts the reward model from
the SFT model, replaces its unembedding by a linear head giving one scalar r_theta(x, y), read
at the last token of the conversation, and fits the comparisons (y_w preferred to y_l) by the
Bradley-Terry likelihood (Bradley & Terry 1952; Christiano et al. 2017, arXiv:1706.03741):

    loss = -E[ log sigmoid(r_theta(x, y_w) - r_theta(x, y_l) - m) ]       m = margin (default 0)

(Llama 2, arXiv:2307.09288, adds the margin m for pairs rated far apart.) What is measured:
- held-out pair accuracy: P(r(y_w) > r(y_l)) over labelled pairs;
- agreement with the gold scorer: P(sign(r(y_w) - r(y_l)) = sign(gold(y_w) - gold(y_l))),
  the accuracy against the noise-free preference (the labels are Bradley-Terry samples,
  `minillm.data.preference`, so even the gold scorer agrees with only ~80% of them);
- calibration: the predicted P(y_w > y_l) = sigmoid(r_w - r_l), binned, against how often the
  first of a pair really was preferred (each pair counted in both orders, so the bins are
  symmetric about 1/2), and the expected calibration error (Guo et al. 2017, arXiv:1706.04599).

Departures: the head reads the final hidden state (after the final norm) of the last real
token (the template's <|end|>); the GPT keeps its (unused) LM head, so its weights stay those
of the SFT checkpoint it came from. `PreferenceBatches` + `reward_loss_fn` plug into the
`Trainer` as `SFTBatches` + `sft_loss_fn` do; a reward model saves and loads like any model
folder (config.json + model.safetensors).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from minillm.alignment.chat import ChatTemplate
from minillm.alignment.ppo import last_index
from minillm.alignment.sft import ShuffledSource, pad_batch
from minillm.data.preference import PreferencePair
from minillm.models import GPT, GPTConfig
from minillm.models.base import LanguageModel

__all__ = ["FluentGold", "PreferenceBatches", "RewardModel", "bradley_terry_loss",
           "calibration_bins", "encode_pairs", "evaluate_reward_model", "gold_agreement",
           "mean_token_logprob", "pair_accuracy", "reward_loss_fn", "score_pairs"]


class RewardModel(LanguageModel):
    """A GPT trunk and a linear head on the last real token's final hidden state: (B,) rewards."""

    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.backbone = GPT(config)
        self.head = nn.Linear(config.d_model, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (config.d_model + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_sft(cls, model: GPT, seed: int = 0) -> RewardModel:
        """A reward model whose trunk is a copy of `model` (its head seeded by `seed`)."""
        torch.manual_seed(seed)
        rm = cls(GPTConfig.from_dict(model.config.to_dict()))
        rm.backbone.load_state_dict(model.state_dict())
        return rm.to(next(model.parameters()).device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Args:
            input_ids: (B, T) whole conversations, padded on either side.
            attention_mask: (B, T) 1 on real tokens (default: all real).
        Returns:
            (B,) float32 rewards, read at each row's last real token.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.backbone(input_ids, attention_mask=attention_mask).hidden_states
        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        return self.head(hidden[rows, last_index(attention_mask)]).squeeze(-1).float()

    def weights_state_dict(self, state: dict[str, torch.Tensor] | None = None
                           ) -> dict[str, torch.Tensor]:
        """The state dict (or `state`) without a tied `backbone.lm_head.weight`."""
        sd = dict(state) if state is not None else self.state_dict()
        if self.config.tie_embeddings:
            sd.pop("backbone.lm_head.weight", None)
        return sd

    def load_weights(self, tensors, source=None, fix=None) -> None:
        tensors = dict(tensors)
        if self.config.tie_embeddings and "backbone.tok_emb.weight" in tensors:
            tensors.setdefault("backbone.lm_head.weight", tensors["backbone.tok_emb.weight"])
        super().load_weights(tensors, source, fix)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor,
                       margin: torch.Tensor | float | None = None) -> torch.Tensor:
    """-mean log sigmoid(r_chosen - r_rejected - margin) over the pairs."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def pair_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of pairs with r_chosen > r_rejected (a tie counts as wrong)."""
    return float((chosen > rejected).float().mean())


def gold_agreement(chosen: torch.Tensor, rejected: torch.Tensor,
                   gold_chosen: torch.Tensor, gold_rejected: torch.Tensor) -> float:
    """Share of gold-untied pairs where the model orders the two as the gold scorer does."""
    gold = torch.sign(gold_chosen - gold_rejected)
    keep = gold != 0
    if not bool(keep.any()):
        raise ValueError("every pair is tied under the gold scorer: no order to agree with")
    return float((torch.sign(chosen - rejected)[keep] == gold[keep]).float().mean())


def calibration_bins(probs: torch.Tensor, outcomes: torch.Tensor, n_bins: int = 10
                     ) -> tuple[list[dict], float]:
    """Equal-width bins of predicted probabilities against observed frequencies.

    Returns:
        ([{"lo", "hi", "count", "predicted", "observed"} per non-empty bin], expected
        calibration error = sum_b (n_b / n) |predicted_b - observed_b|).
    """
    if n_bins <= 0:
        raise ValueError(f"n_bins={n_bins} must be positive")
    if probs.shape != outcomes.shape or probs.numel() == 0:
        raise ValueError(f"probs {tuple(probs.shape)} and outcomes {tuple(outcomes.shape)} must "
                         "have one shape, and not be empty")
    which = (probs * n_bins).long().clamp(max=n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = which == b
        n = int(sel.sum())
        if n == 0:
            continue
        pred, obs = float(probs[sel].mean()), float(outcomes[sel].float().mean())
        bins.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": n,
                     "predicted": pred, "observed": obs})
        ece += n / probs.numel() * abs(pred - obs)
    return bins, ece


# ---- data and training -----------------------------------------------------------------------
def encode_pairs(tokenizer, pairs: Sequence[PreferencePair], context_length: int,
                 template: ChatTemplate | None = None) -> list[tuple[list[int], list[int]]]:
    """Token ids of (prompt + chosen, prompt + rejected) conversations, through the chat
    template (the reward is read at their final <|end|>). A conversation longer than
    `context_length` is an error."""
    template = template or ChatTemplate()
    out = []
    for p in pairs:
        ids = [template.encode(tokenizer, p.prompt, r)[0] for r in (p.chosen, p.rejected)]
        if max(len(x) for x in ids) > context_length:
            raise ValueError(f"the pair for {p.prompt[:40]!r} has {max(map(len, ids))} tokens, "
                             f"more than context_length={context_length}: drop it")
        out.append((ids[0], ids[1]))
    return out


def _pair_batch(encoded: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, right-padded: input_ids, attention_mask (2N, T)."""
    seqs = [(c, c) for c, _ in encoded] + [(r, r) for _, r in encoded]
    batch = pad_batch(seqs)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def reward_loss_fn(runner: nn.Module, batch: dict[str, torch.Tensor], margin: float = 0.0
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """The Trainer's `loss_fn` for a reward model over a `PreferenceBatches` batch.
    Returns (Bradley-Terry loss, {"rm_loss", "accuracy", "margin"})."""
    rewards = runner(batch["input_ids"], attention_mask=batch["attention_mask"])
    chosen, rejected = rewards.chunk(2)
    loss = bradley_terry_loss(chosen, rejected, margin or None)
    return loss, {"rm_loss": loss.item(), "accuracy": pair_accuracy(chosen, rejected),
                  "margin": float((chosen - rejected).detach().mean())}


class PreferenceBatches(ShuffledSource):
    """A `BatchSource` of preference pairs: `batch_size` pairs per batch (2 * batch_size rows),
    shuffled each epoch by a seeded generator; "val" cycles through its pairs in order."""

    def __init__(self, train: Sequence[tuple[list[int], list[int]]],
                 val: Sequence[tuple[list[int], list[int]]] | None, batch_size: int,
                 seed: int = 0):
        if not train:
            raise ValueError("PreferenceBatches needs at least one training pair")
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be positive")
        self.train, self.val = list(train), list(val or [])
        self.batch_size = batch_size
        self._init_shuffle(seed)

    def next_batch(self, split: str = "train") -> dict[str, torch.Tensor]:
        if split == "train":
            return _pair_batch([self.train[i] for i in self._take(self.batch_size, len(self.train))])
        if split != "val":
            raise ValueError(f"split={split!r}; use 'train' or 'val'")
        if not self.val:
            raise ValueError("PreferenceBatches has no validation pairs")
        return _pair_batch([self.val[i] for i in self._val_indices(self.batch_size, len(self.val))])

    def has_split(self, split: str) -> bool:
        return split == "train" or (split == "val" and bool(self.val))

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": torch.tensor(self.order),
                "cursor": self.cursor, "val_cursor": self.val_cursor}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = [int(i) for i in state["order"]]
        self.cursor, self.val_cursor = int(state["cursor"]), int(state["val_cursor"])


# ---- evaluation ----------------------------------------------------------------------------
@torch.no_grad()
def score_pairs(model: RewardModel, encoded: Sequence[tuple[list[int], list[int]]],
                batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards), (N,) each, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(encoded), batch_size):
        batch = _pair_batch(encoded[start:start + batch_size])
        c, r = model(batch["input_ids"].to(device),
                     attention_mask=batch["attention_mask"].to(device)).cpu().chunk(2)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def evaluate_reward_model(model: RewardModel, tokenizer, pairs: Sequence[PreferencePair],
                          n_bins: int = 10, batch_size: int = 64) -> dict:
    """Accuracy, gold agreement, mean Bradley-Terry loss and calibration on labelled pairs.

    Returns:
        {"pairs", "accuracy", "gold_agreement", "gold_label_agreement" (how often the label
        agrees with the gold order: the ceiling a perfect gold model reaches on accuracy),
        "loss", "ece", "calibration" (bins)}.
    """
    encoded = encode_pairs(tokenizer, pairs, model.config.context_length)
    chosen, rejected = score_pairs(model, encoded, batch_size)
    gold_c = torch.tensor([p.gold_chosen for p in pairs])
    gold_r = torch.tensor([p.gold_rejected for p in pairs])
    p_first = torch.sigmoid(chosen - rejected)
    probs = torch.cat([p_first, 1 - p_first])
    outcomes = torch.cat([torch.ones_like(p_first), torch.zeros_like(p_first)])
    bins, ece = calibration_bins(probs, outcomes, n_bins)
    return {"pairs": len(pairs), "accuracy": pair_accuracy(chosen, rejected),
            "gold_agreement": gold_agreement(chosen, rejected, gold_c, gold_r),
            "gold_label_agreement": pair_accuracy(gold_c, gold_r),
            "loss": float(bradley_terry_loss(chosen, rejected)), "ece": ece, "calibration": bins}


# ---- a gold scorer with a fluency term -------------------------------------------------------
@torch.no_grad()
def mean_token_logprob(model: nn.Module, tokenizer, texts: Sequence[str], context: str = "\n",
                       batch_size: int = 64) -> torch.Tensor:
    """Mean log p (nats per token) of each text's tokens under a plain language model, each
    read after `context` (default a newline: a line of a play starts after one).

    An empty text has no tokens; it gets -log(vocab_size), the uniform model's mean, so that
    saying nothing is not the most fluent answer. Returns (N,) float64 on the CPU.
    """
    if not context:
        raise ValueError("context must hold at least one token: the first token needs a prefix")
    ctx_ids = tokenizer.encode(context)
    rows = [tokenizer.encode(t) for t in texts]
    floor = -torch.log(torch.tensor(float(model.config.vocab_size), dtype=torch.float64))
    out = torch.full((len(rows),), float(floor), dtype=torch.float64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ctx_max = model.config.context_length
    for start in range(0, len(rows), batch_size):
        chunk = [(i, (ctx_ids + r)[:ctx_max]) for i, r in enumerate(rows[start:start + batch_size],
                                                                     start) if r]
        if not chunk:
            continue
        width = max(len(ids) for _, ids in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width)
        for k, (_, row) in enumerate(chunk):
            ids[k, :len(row)] = torch.tensor(row)
            mask[k, len(ctx_ids):len(row)] = 1.0  # score the text's tokens, not the context
        logits = model(ids.to(device)).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None].to(device)).squeeze(-1)
        m = mask[:, 1:].to(device)
        means = ((logp * m).sum(-1) / m.sum(-1)).double().cpu()
        for k, (i, _) in enumerate(chunk):
            out[i] = means[k]
    model.train(was_training)
    return out


class FluentGold:
    """A gold scorer that also asks for fluent text: the sentiment lexicon score
    (`minillm.data.preference.gold_reward`: (#positive - #negative words) / sqrt(#words)) plus
    `fluency_weight` times the mean log-probability per token of the text under a *base*
    (pre-trained, never preference-tuned) model:

        gold(y) = lexicon(y) + lambda * mean_t log p_base(y_t | y_<t)

    It measures "positive and reads like the corpus": a string of "love love love" or a stutter
    loses what the lexicon gives it if the base model finds it unlikely. Still a proxy for what a
    reader wants, with blind spots of its own (a short, common positive word is both positive
    and likely). Call it on one text (a `gold_fn`) or `score` a batch.
    """

    def __init__(self, base: nn.Module, tokenizer, fluency_weight: float = 0.5,
                 context: str = "\n"):
        if fluency_weight < 0:
            raise ValueError(f"fluency_weight={fluency_weight} must be >= 0")
        self.base, self.tokenizer = base, tokenizer
        self.fluency_weight, self.context = fluency_weight, context

    def parts(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(lexicon scores, mean log p_base per token), (N,) float64 each."""
        from minillm.data.preference import gold_reward

        lexicon = torch.tensor([gold_reward(t) for t in texts], dtype=torch.float64)
        return lexicon, mean_token_logprob(self.base, self.tokenizer, texts, self.context)

    def score(self, texts: Sequence[str]) -> torch.Tensor:
        """(N,) gold rewards of `texts`."""
        lexicon, fluency = self.parts(texts)
        return lexicon + self.fluency_weight * fluency

    def __call__(self, text: str) -> float:
        return float(self.score([text])[0])
