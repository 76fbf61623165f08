"""Preference pairs for the Trainer: padded chosen/rejected rows, cached reference log-probs,
the loss functions of `minillm.alignment.dpo` as `loss_fn`s, and KL to the reference on samples.

A batch holds B pairs as 2B right-padded rows, chosen rows first then rejected rows, labels
-100 on the prompt and padding (`tokenize_example` through the SFT model's chat template), so
one forward gives every sequence log-prob the losses need:

    batches = pair_batches(tok, load_preferences("train"), load_preferences("test"), 8,
                           context_length, reference=sft_model)        # ref log-probs cached once
    Trainer(policy, config=cfg, batches=batches, loss_fn=preference_loss_fn("dpo", beta=0.1)).fit()
    stats = sample_stats(policy, sft_model, tok, prompts)              # gold reward, KL, length

The reference model's log-probs do not change during training, so they are computed once, when
the batches are built (DPO's usual "precompute_ref_log_probs"), and travel in each batch as
`ref_logps`. For KTO each pair also carries a *mismatched* row, its prompt followed by the next
pair's chosen response, whose log-ratio estimates the KL reference point z.

KL on samples: responses y ~ pi(.|x) sampled at temperature 1; the mean of
log pi(y|x) - log pi_ref(y|x) over them is an unbiased estimate of KL(pi || pi_ref), the x-axis of
DPO's Figure 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from minillm.alignment.chat import ChatTemplate
from minillm.alignment.dpo import (
    dpo_loss,
    hinge_loss,
    ipo_loss,
    kto_loss,
    orpo_loss,
    sequence_logps,
    simpo_loss,
)
from minillm.alignment.recipe import sample_chat_ids
from minillm.alignment.sft import IGNORE, Sequence_, ShuffledSource, pad_batch, tokenize_example
from minillm.data.preference import PreferencePair, gold_reward

__all__ = ["METHODS", "PairBatches", "pair_batches", "preference_loss_fn", "reference_logps",
           "sample_stats", "tokenize_pair"]

METHODS = ("dpo", "ipo", "ipo_sum", "hinge", "kto", "simpo", "orpo")
Pair = tuple[Sequence_, ...]  # (chosen, rejected) or (chosen, rejected, mismatched)


def tokenize_pair(tokenizer, template: ChatTemplate, prompt: str, chosen: str, rejected: str,
                  context_length: int) -> tuple[Sequence_, Sequence_]:
    """(chosen, rejected) as (input_ids, labels) each; prompt tokens carry label -100.

    Raises ValueError for a pair whose two responses are the same text (its DPO gradient is
    exactly zero: it carries no preference) or a sequence longer than `context_length`."""
    if chosen.strip() == rejected.strip():
        raise ValueError(f"the pair for {prompt[:40]!r}... has identical chosen and rejected "
                         f"responses ({chosen[:40]!r}): it carries no preference; drop it")
    return (tokenize_example(tokenizer, template, prompt, chosen, context_length),
            tokenize_example(tokenizer, template, prompt, rejected, context_length))


def _mismatched(prompt_of: Sequence_, response_of: Sequence_, context_length: int) -> Sequence_:
    """`prompt_of`'s prompt followed by `response_of`'s response (KTO's KL rows)."""
    def split(seq: Sequence_) -> tuple[list[int], list[int]]:
        ids, labels = seq
        full = list(ids) + [labels[-1]]
        n_prompt = sum(t == IGNORE for t in labels) + 1
        return full[:n_prompt], full[n_prompt:]
    prompt, _ = split(prompt_of)
    _, response = split(response_of)
    full = (prompt + response)[:context_length + 1]
    return full[:-1], [IGNORE] * (len(prompt) - 1) + full[len(prompt):]


@torch.no_grad()
def reference_logps(model: nn.Module, seqs: Sequence[Sequence_], batch_size: int = 32
                    ) -> torch.Tensor:
    """Summed response log-probs of each sequence under `model` (evaluated once, no grad)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(seqs), batch_size):
        batch = pad_batch(seqs[start:start + batch_size])
        logits = model(batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        out.append(sequence_logps(logits, batch["labels"].to(device))[0].cpu())
    return torch.cat(out)


class PairBatches(ShuffledSource):
    """A `BatchSource` of preference pairs: shuffled each epoch, B pairs per batch.

    Args:
        train, val: tokenized pairs, (chosen, rejected[, mismatched]) tuples of (ids, labels).
        batch_size: pairs per batch.
        ref_train, ref_val: (N, k) reference log-probs of each pair's k sequences (or None).
        seed: seeds the epoch shuffles.
    Batches: input_ids, labels, attention_mask of k*B rows (all chosen rows, then all
    rejected, then any mismatched), sequences_per_pair (k), and ref_logps (k*B,) when cached.
    """

    def __init__(self, train: Sequence[Pair], val: Sequence[Pair] | None, batch_size: int,
                 ref_train: torch.Tensor | None = None, ref_val: torch.Tensor | None = None,
                 seed: int = 0, pad_id: int = 0):
        if not train:
            raise ValueError("PairBatches needs at least one training pair")
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be positive")
        for name, pairs, ref in (("train", train, ref_train), ("val", val or [], ref_val)):
            if ref is not None and tuple(ref.shape) != (len(pairs), len(pairs[0])):
                raise ValueError(f"ref_{name} has shape {tuple(ref.shape)}, expected "
                                 f"({len(pairs)}, {len(pairs[0])}): one log-prob per sequence")
        self.train, self.val = list(train), list(val or [])
        self.ref_train, self.ref_val = ref_train, ref_val
        self.batch_size, self.pad_id = batch_size, pad_id
        self._init_shuffle(seed)

    def _collate(self, pairs: list[Pair], ref: torch.Tensor | None) -> dict[str, torch.Tensor]:
        rows = [p[k] for k in range(len(pairs[0])) for p in pairs]   # chosen..., rejected...
        batch = pad_batch(rows, self.pad_id)
        batch["sequences_per_pair"] = torch.tensor(len(pairs[0]))
        if ref is not None:
            batch["ref_logps"] = ref.T.reshape(-1).clone()
        return batch

    def next_batch(self, split: str = "train") -> dict[str, torch.Tensor]:
        """The next batch of `split` ("train": shuffled; "val": in order, cycling)."""
        if split == "train":
            idx = self._take(self.batch_size, len(self.train))
            pairs, ref = self.train, self.ref_train
        elif split == "val":
            if not self.val:
                raise ValueError("PairBatches has no validation pairs")
            idx = self._val_indices(self.batch_size, len(self.val))
            pairs, ref = self.val, self.ref_val
        else:
            raise ValueError(f"split={split!r}; use 'train' or 'val'")
        return self._collate([pairs[i] for i in idx], None if ref is None else ref[idx])

    def has_split(self, split: str) -> bool:
        return split == "train" or (split == "val" and bool(self.val))

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())


def pair_batches(tokenizer, train: Sequence[PreferencePair], val: Sequence[PreferencePair] | None,
                 batch_size: int, context_length: int, reference: nn.Module | None = None,
                 mismatched: bool = False, seed: int = 0,
                 template: ChatTemplate | None = None) -> PairBatches:
    """Tokenize preference pairs through the chat template and cache the reference log-probs.

    Args:
        reference: the frozen reference model (the SFT model); None: no `ref_logps` (enough
            for SimPO and ORPO).
        mismatched: add KTO's mismatched row to each pair (pair i's prompt, pair i+1's chosen).
    """
    template = template or ChatTemplate()

    def encode(pairs: Sequence[PreferencePair]) -> tuple[list[Pair], torch.Tensor | None]:
        out: list[Pair] = [tokenize_pair(tokenizer, template, p.prompt, p.chosen, p.rejected,
                                         context_length) for p in pairs]
        if mismatched:
            out = [p + (_mismatched(p[0], out[(i + 1) % len(out)][0], context_length),)
                   for i, p in enumerate(out)]
        if reference is None or not out:
            return out, None
        flat = reference_logps(reference, [s for p in out for s in p])
        return out, flat.view(len(out), len(out[0]))

    train_seqs, ref_train = encode(train)
    val_seqs, ref_val = encode(val or [])
    return PairBatches(train_seqs, val_seqs, batch_size, ref_train, ref_val, seed)


LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def preference_loss_fn(method: str = "dpo", beta: float = 0.1, label_smoothing: float = 0.0,
                       gamma: float = 0.5) -> LossFn:
    """The Trainer's `loss_fn` for `PairBatches`: one forward over the 2B (3B for KTO) rows,
    summed (DPO, IPO, hinge, KTO) or mean (SimPO, ORPO) response log-probs, the method's loss.
    "ipo" is trl's IPO (log-ratios divided by the response lengths), "ipo_sum" Azar et al.'s
    eq. 17 as written (summed log-ratios).

    Metrics: reward_accuracy (share of pairs whose chosen implicit reward is higher),
    reward_margin, chosen_reward, rejected_reward (means), chosen_logps and rejected_logps
    (mean summed log-probs under the policy: DPO can lower both).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose one of {list(METHODS)}")
    # a bad beta, label_smoothing or gamma fails now, on a dummy pair, not at the first step
    zero = torch.full((1,), -1.0)
    check = {"dpo": lambda: dpo_loss(zero, zero, zero, zero, beta, label_smoothing),
             "ipo": lambda: ipo_loss(zero, zero, zero, zero, beta),
             "ipo_sum": lambda: ipo_loss(zero, zero, zero, zero, beta),
             "hinge": lambda: hinge_loss(zero, zero, zero, zero, beta),
             "kto": lambda: kto_loss(zero, zero, zero > 0, zero, zero, beta),
             "simpo": lambda: simpo_loss(zero, zero, beta, gamma, label_smoothing),
             "orpo": lambda: orpo_loss(zero, zero, zero.sum(), beta)}
    check[method]()

    def loss_fn(runner: nn.Module, batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = runner(batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        summed, n = sequence_logps(logits, batch["labels"])
        k = int(batch.get("sequences_per_pair", torch.tensor(2)))
        if method == "kto" and k != 3:
            raise ValueError("method='kto' needs each pair's mismatched row (its KL estimate): "
                             "build the batches with pair_batches(..., mismatched=True)")
        b = summed.size(0) // k
        pc, pr = summed[:b], summed[b:2 * b]
        nc, nr = n[:b], n[b:2 * b]
        needs_ref = method in ("dpo", "ipo", "ipo_sum", "hinge", "kto")
        if needs_ref and "ref_logps" not in batch:
            raise ValueError(f"method={method!r} needs the reference log-probs: build the "
                             "batches with pair_batches(..., reference=sft_model)")
        ref = batch.get("ref_logps")
        if method == "dpo":
            out = dpo_loss(pc, pr, ref[:b], ref[b:2 * b], beta, label_smoothing)
        elif method == "ipo":
            out = ipo_loss(pc, pr, ref[:b], ref[b:2 * b], beta, nc, nr)
        elif method == "ipo_sum":
            out = ipo_loss(pc, pr, ref[:b], ref[b:2 * b], beta)
        elif method == "hinge":
            out = hinge_loss(pc, pr, ref[:b], ref[b:2 * b], beta)
        elif method == "kto":
            good = torch.arange(2 * b, device=summed.device) < b
            out = kto_loss(summed[:2 * b], ref[:2 * b], good, summed[2 * b:].detach(),
                           ref[2 * b:], beta)
        elif method == "simpo":
            out = simpo_loss(pc / nc, pr / nr, beta, gamma, label_smoothing)
        else:
            nll = -pc.sum() / nc.sum()  # the SFT loss: mean over the chosen response tokens
            out = orpo_loss(pc / nc, pr / nr, nll, beta)
        won = (out.chosen_rewards > out.rejected_rewards).float()
        return out.loss, {
            "reward_accuracy": won.mean().item(),
            "reward_margin": (out.chosen_rewards - out.rejected_rewards).mean().item(),
            "chosen_reward": out.chosen_rewards.mean().item(),
            "rejected_reward": out.rejected_rewards.mean().item(),
            "chosen_logps": pc.mean().item(), "rejected_logps": pr.mean().item()}

    return loss_fn


@torch.no_grad()
def sample_stats(policy: nn.Module, reference: nn.Module, tokenizer, prompts: Sequence[str],
                 seed: int = 0, max_new_tokens: int = 64, batch_size: int = 64,
                 template: ChatTemplate | None = None) -> dict:
    """Sample one response per prompt from `policy` (temperature 1) and measure it.

    Returns:
        {"gold_reward": mean gold reward of the responses, "kl": mean of
        log pi(y|x) - log pi_ref(y|x) (nats per response), "length": mean response tokens
        (stop token included), "responses": the texts, and per response "gold_rewards" and
        "kls"}.
    """
    template = template or ChatTemplate()
    stop = template.stop_id(tokenizer)
    prompt_ids, responses = sample_chat_ids(policy, tokenizer, prompts, 1.0, None, seed,
                                            max_new_tokens, batch_size, template)
    seqs = []
    for p, r in zip(prompt_ids, responses, strict=True):
        full = p + r
        seqs.append((full[:-1], [IGNORE] * (len(p) - 1) + full[len(p):]))
    kl = reference_logps(policy, seqs, batch_size) - reference_logps(reference, seqs, batch_size)
    texts = [tokenizer.decode([t for t in r if t != stop]).strip() for r in responses]
    golds = [gold_reward(t) for t in texts]
    return {"gold_reward": sum(golds) / len(golds), "kl": kl.mean().item(),
            "length": sum(map(len, responses)) / len(responses), "responses": texts,
            "gold_rewards": golds, "kls": kl.tolist()}
