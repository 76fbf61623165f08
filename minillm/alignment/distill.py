"""Knowledge distillation: a small student learns from a large teacher's distributions, samples
or hidden states.

With teacher logits v and student logits z at one position, softened by a temperature T,

    p = softmax(v / T)    (teacher)        q = softmax(z / T)    (student)

the token-level losses here are, per position (summed over the vocabulary), then averaged over
the positions whose label is not `ignore_index` (as the course's `lm_loss` averages):

- `forward_kl` KL(p || q) = sum p (log p - log q): mode-covering. Hinton, Vinyals & Dean 2015
  (arXiv:1503.02531) train on it at a high T; `kd_loss` multiplies it by T^2 so the gradient,
  which shrinks as 1/T^2, keeps its size as T changes (their §2). At large T with zero-mean
  logits its gradient tends to (z - v) / N, that of logit matching (§2.1).
- `reverse_kl` KL(q || p): mode-seeking; MiniLLM (Gu et al. 2024, arXiv:2306.08543) argues it
  suits generative students, which should not spread mass over the teacher's low-probability
  regions. (MiniLLM optimises it over the student's own samples with a policy gradient; here it
  is the per-token, teacher-forced form, as trl's GKD computes it.)
- `generalized_jsd` with beta in [0, 1] (GKD, Agarwal et al. 2024, arXiv:2306.13649, eq. 1):
  with the mixture m = beta p + (1 - beta) q,
      JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m);
  beta is the teacher's weight in the mixture, exactly as in trl's
  `GKDTrainer.generalized_jsd_loss`, and as there beta = 0 is defined as forward KL(p || q) and
  beta = 1 as reverse KL(q || p) (JSD(beta) itself tends to 0 at both ends).

Sequence-level KD (Kim & Rush 2016, arXiv:1606.07947) trains the student with the plain
language-model loss on the teacher's own outputs: `teacher_sequences` decodes them (greedy by
default, standing in for the paper's beam search; or sampled) and `sequence_rows` /
`SequenceBatches` serve them, loss on the continuation only. It is also what "API distillation"
is: training on a provider's answers.

Feature distillation (DistilBERT, Sanh et al. 2019, arXiv:1910.01108; TinyBERT, Jiao et al. 2020,
arXiv:1909.10351) matches hidden states: `hidden_mse` of the student's final hidden states, put
through a learned linear map W (d_student -> d_teacher), against the teacher's. Departure: only
the final hidden states (after the final norm, what `LMOutput.hidden_states` holds), not
TinyBERT's per-layer states and attention maps. `FeatureDistillStudent` carries W beside the
student so the Trainer's optimizer trains both.

`distill_loss_fn` makes the Trainer's `loss_fn`: alpha * CE(labels) + (1 - alpha) * the
distillation term (T^2 times the divergence for the token-level losses; the MSE for "feature"),
the teacher frozen, in eval mode, under no_grad.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from minillm.generation import generate
from minillm.models.base import LanguageModel, LMOutput

__all__ = ["LOSSES", "IGNORE_INDEX", "FeatureDistillStudent", "SequenceBatches",
           "check_vocabularies", "distill_loss_fn", "forward_kl", "generalized_jsd",
           "hidden_mse", "kd_loss", "reverse_kl", "sequence_rows", "teacher_sequences"]

IGNORE_INDEX = -100  # labels to skip, as `lm_loss` and the SFT batches mark them
# the losses `distill_loss_fn` builds ("seqkd" trains with the plain LM loss on teacher samples)
LOSSES = ("kd", "reverse_kl", "gjsd", "feature")


# ---- the divergences: pure functions ---------------------------------------------------------
def _log_probs(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q, log p) at `temperature`, in float32 at least (float64 stays float64)."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be positive")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape; a vocabulary mismatch "
                         "(last dim) means the two models need the same tokenizer")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    return log_q, log_p


def _masked_mean(per_position: torch.Tensor, labels: torch.Tensor | None,
                 ignore_index: int) -> torch.Tensor:
    """Mean over the positions whose label is not `ignore_index` (all of them without labels);
    0, still attached to the graph, when every position is ignored."""
    if labels is None:
        return per_position.mean()
    if labels.shape != per_position.shape:
        raise ValueError(f"labels {tuple(labels.shape)} must have the logits' shape without the "
                         f"vocabulary dim, {tuple(per_position.shape)}")
    keep = labels != ignore_index
    return (per_position * keep).sum() / keep.sum().clamp(min=1)


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) = sum_v a (log a - log b) over the last dim (log-softmax of finite logits is
    finite, so no 0 * inf arises)."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               labels: torch.Tensor | None = None, temperature: float = 1.0,
               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean KL(p || q) of the teacher's softened distribution p from the student's q.

    Args:
        student_logits, teacher_logits: (..., V) scores over the same vocabulary.
        labels: optional (...) next-token ids; positions with `ignore_index` are left out.
        temperature: T, dividing both models' logits.
        ignore_index: the label that marks a position to skip.

    Returns:
        Scalar: the mean over kept positions of sum_v p_v (log p_v - log q_v).
    """
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return _masked_mean(_kl(log_p, log_q), labels, ignore_index)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               labels: torch.Tensor | None = None, temperature: float = 1.0,
               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean KL(q || p): the student's distribution measured against the teacher's (MiniLLM).

    Args and Returns as `forward_kl`, with the two distributions' roles swapped.
    """
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return _masked_mean(_kl(log_q, log_p), labels, ignore_index)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    labels: torch.Tensor | None = None, beta: float = 0.5,
                    temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """GKD's generalized Jensen-Shannon divergence, beta the teacher's weight in the mixture.

    m = beta p + (1 - beta) q;  JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m), with
    beta = 0 giving forward KL(p || q) and beta = 1 reverse KL(q || p). This is trl's
    `GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta, temperature)` with its
    default reduction ("batchmean": the sum over kept positions / their number); neither
    multiplies by T^2 (`distill_loss_fn` does).

    Args:
        student_logits, teacher_logits, labels, temperature, ignore_index: as `forward_kl`.
        beta: in [0, 1].

    Returns:
        Scalar: the mean over kept positions.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1] (0: forward KL, 1: reverse KL)")
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits, labels, temperature, ignore_index)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, labels, temperature, ignore_index)
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    # log m = log(beta p + (1 - beta) q), computed stably in log space
    log_m = torch.logaddexp(log_p + torch.log(torch.tensor(beta, dtype=log_p.dtype)),
                            log_q + torch.log1p(torch.tensor(-beta, dtype=log_q.dtype)))
    jsd = beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
    return _masked_mean(jsd, labels, ignore_index)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            labels: torch.Tensor | None = None, temperature: float = 1.0,
            ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: T^2 * KL(p_T || q_T), mean over kept positions.

    The T^2 keeps the gradient's size independent of T (it scales as 1/T^2); at T = 1 this is
    `forward_kl`. Args as `forward_kl`.
    """
    return temperature ** 2 * forward_kl(student_logits, teacher_logits, labels, temperature,
                                         ignore_index)


def hidden_mse(projected: torch.Tensor, teacher_hidden: torch.Tensor,
               labels: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX
               ) -> torch.Tensor:
    """Feature distillation: mean squared error between the student's hidden states mapped
    into the teacher's width and the teacher's, averaged over the width and the kept positions.

    Args:
        projected: (..., d_teacher) W h_student (+ b).
        teacher_hidden: (..., d_teacher) the teacher's hidden states.
        labels, ignore_index: as `forward_kl`.

    Returns:
        Scalar: mean over kept positions of ||W h_s - h_t||^2 / d_teacher.
    """
    if projected.shape != teacher_hidden.shape:
        raise ValueError(f"projected student states {tuple(projected.shape)} and teacher states "
                         f"{tuple(teacher_hidden.shape)} differ: project the student's width to "
                         "the teacher's (FeatureDistillStudent(student, teacher_d_model))")
    dtype = torch.promote_types(projected.dtype, torch.float32)
    err = (projected.to(dtype) - teacher_hidden.to(dtype)).pow(2).mean(-1)
    return _masked_mean(err, labels, ignore_index)


TOKEN_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "kd": forward_kl, "reverse_kl": reverse_kl, "gjsd": generalized_jsd}


# ---- the student with a projection, for feature distillation -------------------------------
class FeatureDistillStudent(LanguageModel):
    """A student with a learned linear map of its final hidden states to the teacher's width.

    Its forward is the student's, except that `hidden_states` in the returned `LMOutput` are
    the projected ones, (B, T, teacher_d_model), so one forward gives the logits and the states
    to match (and a data-parallel wrapper sees the projection used). Checkpoints hold the
    student's weights under "student." and the map under "projection."; `student` is the model
    to keep.

    Args:
        student: the model being trained (a GPT; its `config` is this module's).
        teacher_d_model: the teacher's hidden width.
    """

    def __init__(self, student: nn.Module, teacher_d_model: int):
        super().__init__()
        if teacher_d_model <= 0:
            raise ValueError(f"teacher_d_model={teacher_d_model} must be positive")
        self.student = student
        self.config = student.config
        self.config_class = type(student.config)
        self.projection = nn.Linear(student.config.d_model, teacher_d_model)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                **kwargs) -> LMOutput:
        """The student's output, its hidden states mapped to (B, T, teacher_d_model)."""
        out = self.student(idx, targets, **kwargs)
        return dataclasses.replace(out, hidden_states=self.projection(out.hidden_states))

    def weights_state_dict(self, state: dict[str, torch.Tensor] | None = None
                           ) -> dict[str, torch.Tensor]:
        """The student's weights (its aliases dropped) under "student.", the map's under
        "projection."."""
        state = dict(state) if state is not None else self.state_dict()
        own = {k.removeprefix("student."): v for k, v in state.items()
               if k.startswith("student.")}
        out = {f"student.{k}": v for k, v in self.student.weights_state_dict(own).items()}
        out.update({k: v for k, v in state.items() if k.startswith("projection.")})
        return out

    def load_weights(self, tensors: dict[str, torch.Tensor], source=None, fix=None) -> None:
        """Load "student." tensors through the student's `load_weights`, then the map's."""
        own = {k.removeprefix("student."): v for k, v in tensors.items()
               if k.startswith("student.")}
        proj = {k.removeprefix("projection."): v for k, v in tensors.items()
                if k.startswith("projection.")}
        if set(proj) != set(self.projection.state_dict()):
            raise ValueError(f"{source or 'weights'}: no projection.weight/bias of a feature-"
                             "distillation run; resume a feature run's checkpoint (or load a "
                             "plain student with GPT.from_checkpoint)")
        self.student.load_weights(own, source, fix)
        self.projection.load_state_dict(proj)


# ---- the Trainer's loss ----------------------------------------------------------------------
def check_vocabularies(teacher_vocab: int, student_vocab: int,
                       teacher_tokenizer: dict | None = None,
                       student_tokenizer: dict | None = None) -> None:
    """Refuse a teacher and student that do not share one vocabulary: token-level losses compare
    distributions id by id, and teacher samples are ids the student must read the same way.

    Raises:
        ValueError: naming both sizes and the fix.
    """
    if teacher_vocab != student_vocab or (
            teacher_tokenizer is not None and student_tokenizer is not None
            and teacher_tokenizer != student_tokenizer):
        what = "vocab_size" if teacher_vocab != student_vocab else "tokenizer (same size)"
        raise ValueError(
            f"the teacher's vocabulary ({teacher_vocab} ids) and the student's ({student_vocab} "
            f"ids) differ in {what}: distillation compares the two models' distributions over "
            "the same token ids; give the student the teacher's tokenizer and vocab_size (drop "
            "--vocab-size / --tokenizer), or distil from a teacher trained with the student's")


def distill_loss_fn(teacher: nn.Module, loss: str = "kd", alpha: float = 0.5,
                    temperature: float = 1.0, beta: float = 0.5
                    ) -> Callable[[nn.Module, dict[str, torch.Tensor]],
                                  tuple[torch.Tensor, dict[str, float]]]:
    """The Trainer's `loss_fn` for distillation: alpha * CE + (1 - alpha) * distillation term.

    Args:
        teacher: the frozen teacher (set to eval mode, no gradients; moved to the batch's
            device at the first call).
        loss: "kd" (T^2 KL(p||q)), "reverse_kl" (T^2 KL(q||p)), "gjsd" (T^2 JSD(beta)) or
            "feature" (`hidden_mse`; the runner must be a `FeatureDistillStudent`).
        alpha: the weight of the cross-entropy on the batch's labels, in [0, 1].
        temperature: T of the token-level losses.
        beta: GKD's beta (loss "gjsd").

    Returns:
        `loss_fn(runner, batch) -> (loss, {"lm_loss": CE, "distill_loss": the term})`:
        "lm_loss" is the student's cross-entropy on the labels, so the Trainer's validation
        reports it. Batches carry "input_ids" and "labels" (-100 ignored), and may carry
        "attention_mask" / "position_ids" (packed rows), passed to both models.
    """
    if loss not in LOSSES:
        hint = (" (sequence-level KD trains on the teacher's samples with the plain LM loss: "
                "teacher_sequences + SequenceBatches + lm_loss_fn)" if loss == "seqkd" else "")
        raise ValueError(f"loss={loss!r}; choose one of {LOSSES}{hint}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1] (the weight of the cross-entropy)")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be positive")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1] (0: forward KL, 1: reverse KL)")
    teacher.eval().requires_grad_(False)

    def loss_fn(runner: nn.Module, batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, float]]:
        ids, labels = batch["input_ids"], batch["labels"]
        extra = {k: batch[k] for k in ("attention_mask", "position_ids") if k in batch}
        if next(teacher.parameters()).device != ids.device:
            teacher.to(ids.device)
        teacher.eval()  # (whatever a caller did to it in between)
        with torch.no_grad():
            t_out = teacher(ids, **extra)
        out = runner(ids, **extra)
        ce = F.cross_entropy(out.logits.float().flatten(0, 1), labels.flatten(),
                             ignore_index=IGNORE_INDEX)
        if loss == "feature":
            if t_out.hidden_states is None:
                raise ValueError("the teacher returns no hidden_states; feature distillation "
                                 "needs a GPT teacher")
            term = hidden_mse(out.hidden_states, t_out.hidden_states, labels)
        else:
            args = {"beta": beta} if loss == "gjsd" else {}
            term = temperature ** 2 * TOKEN_LOSSES[loss](out.logits, t_out.logits, labels,
                                                         temperature=temperature, **args)
        total = alpha * ce + (1.0 - alpha) * term
        return total, {"lm_loss": ce.item(), "distill_loss": term.item()}

    return loss_fn


# ---- sequence-level KD: the teacher's outputs as data ---------------------------------------
@torch.no_grad()
def teacher_sequences(teacher: nn.Module, prompts: torch.Tensor, max_new_tokens: int, *,
                      do_sample: bool = False, temperature: float = 1.0,
                      top_k: int | None = None, seed: int = 0, batch_size: int = 64
                      ) -> torch.Tensor:
    """The teacher's continuations of `prompts` (Kim & Rush's sequence-level KD data).

    Args:
        teacher: a GPT (decoded with `minillm.generation.generate`).
        prompts: (N, P) prompt ids, all of one length.
        max_new_tokens: tokens added to each prompt.
        do_sample: sample at `temperature` (with `top_k`); default greedy, the mode the paper's
            beam search approximates.
        seed: seeds the sampling generator (unused when greedy).
        batch_size: prompts per `generate` call.

    Returns:
        (N, P + max_new_tokens) int64 on the CPU: prompt then continuation.
    """
    if prompts.ndim != 2 or prompts.size(0) == 0:
        raise ValueError(f"prompts must be (N, P) token ids with N >= 1, got shape "
                         f"{tuple(prompts.shape)}")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be positive")
    room = teacher.config.context_length
    if prompts.size(1) + max_new_tokens > room:
        raise ValueError(f"prompt length {prompts.size(1)} + max_new_tokens {max_new_tokens} is "
                         f"more than the teacher's context_length={room}; shorten either")
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    for start in range(0, prompts.size(0), batch_size):
        ids = prompts[start:start + batch_size].to(device)
        sampling = {"temperature": temperature, "top_k": top_k} if do_sample else {}
        out = generate(teacher, ids, max_new_tokens, do_sample=do_sample, generator=gen,
                       **sampling)
        chunks.append(out.cpu())
    teacher.train(was_training)
    return torch.cat(chunks)


def sequence_rows(sequences: torch.Tensor, prompt_length: int,
                  train_on_prompt: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rows of whole sequences: inputs are each sequence but its last token, labels
    the next tokens, the prompt's own tokens masked (-100) unless `train_on_prompt`.

    Returns:
        (input_ids, labels), each (N, L - 1).
    """
    if sequences.ndim != 2 or sequences.size(1) < 2:
        raise ValueError(f"sequences must be (N, L) with L >= 2, got {tuple(sequences.shape)}")
    if not 0 < prompt_length < sequences.size(1):
        raise ValueError(f"prompt_length={prompt_length} must be in [1, {sequences.size(1) - 1}]")
    inputs, labels = sequences[:, :-1].clone(), sequences[:, 1:].clone()
    if not train_on_prompt:
        labels[:, :prompt_length - 1] = IGNORE_INDEX  # (position P-1 predicts the first new one)
    return inputs, labels


class SequenceBatches:
    """A `BatchSource` over fixed rows (e.g. teacher sequences): each training batch draws
    `batch_size` rows at random (with replacement) from a generator seeded `seed`; "val"
    batches come from `val`, another source (e.g. held-out text windows), when given.

    Args:
        input_ids, labels: (N, L) rows, as `sequence_rows` makes them.
        batch_size: rows per batch, per rank.
        seed: seeds the row draws.
        val: the source of "val" batches, or None.
        rank, world_size: this process's slice of each global draw.
    """

    def __init__(self, input_ids: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 seed: int = 0, val=None, rank: int = 0, world_size: int = 1):
        if input_ids.shape != labels.shape or input_ids.ndim != 2 or input_ids.size(0) == 0:
            raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels "
                             f"{tuple(labels.shape)} must be equal (N, L) shapes with N >= 1")
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be positive")
        self.input_ids, self.labels, self.batch_size = input_ids, labels, batch_size
        self.val, self.rank, self.world_size = val, rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def has_split(self, split: str) -> bool:
        return split == "train" or (split == "val" and self.val is not None)

    def start_eval(self) -> None:
        if self.val is not None and hasattr(self.val, "start_eval"):
            self.val.start_eval()

    def next_batch(self, split: str = "train") -> dict[str, torch.Tensor]:
        """Random rows ("train"), or the `val` source's next batch ("val")."""
        if split == "val":
            if self.val is None:
                raise ValueError("this source has no val batches: pass val=")
            return self.val.next_batch("val")
        if split != "train":
            raise ValueError(f"split={split!r}; choose 'train' or 'val'")
        b = self.batch_size
        rows = torch.randint(0, self.input_ids.size(0), (b * self.world_size,),
                             generator=self.generator)[self.rank * b:(self.rank + 1) * b]
        return {"input_ids": self.input_ids[rows], "labels": self.labels[rows]}

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens with a label (the continuation's)."""
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, d: dict) -> None:
        self.generator.set_state(d["generator"])
