"""Knowledge distillation (minillm.alignment.distill): every loss against its formula written out
here, the generalized JSD against trl's `GKDTrainer.generalized_jsd_loss`, Hinton et al.'s
T = 1 and T -> infinity limits, a Trainer run that moves a student toward its teacher, the
feature loss's gradient reaching the projection, and sequence-level KD's data against a
hand-written greedy loop."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from minillm.alignment.distill import (
    FeatureDistillStudent,
    SequenceBatches,
    check_vocabularies,
    distill_loss_fn,
    forward_kl,
    generalized_jsd,
    hidden_mse,
    kd_loss,
    reverse_kl,
    sequence_rows,
    teacher_sequences,
)
from minillm.models import GPT, GPTConfig
from minillm.training import TrainConfig, Trainer

V = 11


def logits_and_labels(seed=0, shape=(3, 5), vocab=V, scale=3.0, dtype=torch.float64):
    """Random student and teacher logits and labels with about a third of them -100."""
    g = torch.Generator().manual_seed(seed)
    s = (scale * torch.randn(*shape, vocab, generator=g)).to(dtype)
    t = (scale * torch.randn(*shape, vocab, generator=g)).to(dtype)
    labels = torch.randint(0, vocab, shape, generator=g)
    labels[torch.rand(shape, generator=g) < 0.35] = -100
    labels.view(-1)[0] = 3  # at least one kept position
    return s, t, labels


def written_out(s, t, labels, temperature, divergence):
    """The per-position formula over the vocabulary, position by position in plain Python
    floats, averaged over the kept positions."""
    total, kept = 0.0, 0
    for sv, tv, y in zip(s.reshape(-1, s.size(-1)).tolist(), t.reshape(-1, t.size(-1)).tolist(),
                         labels.reshape(-1).tolist(), strict=True):
        if y == -100:
            continue
        q = [math.exp(x / temperature) for x in sv]
        p = [math.exp(x / temperature) for x in tv]
        q = [x / sum(q) for x in q]
        p = [x / sum(p) for x in p]
        total += divergence(p, q)
        kept += 1
    return total / kept


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True))


def jsd(beta):
    def div(p, q):
        m = [beta * x + (1 - beta) * y for x, y in zip(p, q, strict=True)]
        return beta * kl(p, m) + (1 - beta) * kl(q, m)
    return div


# ---- each loss equals its formula ---------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_losses_equal_their_formulas(temperature):
    s, t, labels = logits_and_labels(seed=int(temperature * 10))
    cases = {
        "forward": (forward_kl(s, t, labels, temperature), lambda p, q: kl(p, q)),
        "reverse": (reverse_kl(s, t, labels, temperature), lambda p, q: kl(q, p)),
        "kd": (kd_loss(s, t, labels, temperature), lambda p, q: temperature ** 2 * kl(p, q)),
    }
    for beta in (0.1, 0.5, 0.9):
        cases[f"jsd{beta}"] = (generalized_jsd(s, t, labels, beta, temperature), jsd(beta))
    for name, (ours, formula) in cases.items():
        expected = written_out(s, t, labels, temperature, formula)
        assert ours.item() == pytest.approx(expected, rel=1e-10, abs=1e-12), name


def test_masking_equals_the_loss_on_the_kept_positions_alone():
    s, t, labels = logits_and_labels(seed=3, dtype=torch.float32)
    keep = labels != -100
    for fn in (forward_kl, reverse_kl, kd_loss):
        torch.testing.assert_close(fn(s, t, labels, 2.0), fn(s[keep], t[keep], None, 2.0))
    torch.testing.assert_close(generalized_jsd(s, t, labels, 0.3, 2.0),
                               generalized_jsd(s[keep], t[keep], None, 0.3, 2.0))
    # every position ignored: 0, with a gradient path (as an all-padding batch must give)
    s.requires_grad_(True)
    none = forward_kl(s, t, torch.full_like(labels, -100))
    none.backward()
    assert none.item() == 0.0
    assert torch.count_nonzero(s.grad) == 0


def test_divergences_are_zero_for_equal_distributions_and_positive_otherwise():
    s, t, labels = logits_and_labels(seed=4)
    for fn in (forward_kl, reverse_kl, lambda a, b, y: generalized_jsd(a, b, y, 0.5)):
        assert fn(s, s + 1.5, labels).item() == pytest.approx(0.0, abs=1e-12)  # shift-invariant
        assert fn(s, t, labels).item() > 1e-3


# ---- generalized JSD: trl parity and its end points ---------------------------------------
@pytest.fixture(scope="module")
def trl_gjsd():
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    pytest.importorskip("trl")
    from trl.experimental.gkd import GKDTrainer

    return GKDTrainer.generalized_jsd_loss


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0])
def test_generalized_jsd_matches_trl(trl_gjsd, beta, temperature):
    s, t, labels = logits_and_labels(seed=int(100 * beta + 10 * temperature))
    theirs = trl_gjsd(s, t, labels=labels, beta=beta, temperature=temperature)
    ours = generalized_jsd(s, t, labels, beta=beta, temperature=temperature)
    assert abs(ours.item() - theirs.item()) < 1e-6
    # and the gradients the student gets
    s32 = s.float().requires_grad_(True)
    generalized_jsd(s32, t.float(), labels, beta, temperature).backward()
    s_ref = s.float().requires_grad_(True)
    trl_gjsd(s_ref, t.float(), labels=labels, beta=beta, temperature=temperature).backward()
    torch.testing.assert_close(s32.grad, s_ref.grad, atol=1e-6, rtol=1e-5)


def test_generalized_jsd_end_points_are_trls_forward_and_reverse_kl():
    """trl (and we) define beta = 0 as KL(teacher || student), beta = 1 as KL(student ||
    teacher); F.kl_div(input, target) is KL(target || input), an independent spelling."""
    s, t, labels = logits_and_labels(seed=5)
    keep = labels != -100
    log_q, log_p = F.log_softmax(s[keep] / 2, -1), F.log_softmax(t[keep] / 2, -1)
    fwd = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    rev = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    torch.testing.assert_close(generalized_jsd(s, t, labels, 0.0, 2.0), fwd)
    torch.testing.assert_close(generalized_jsd(s, t, labels, 1.0, 2.0), rev)
    # inside (0, 1) the mixture is symmetric: JSD(beta)(p, q) = JSD(1 - beta)(q, p)
    torch.testing.assert_close(generalized_jsd(s, t, labels, 0.3), generalized_jsd(t, s, labels, 0.7))


# ---- Hinton et al.'s limits ----------------------------------------------------------------
def test_kd_at_temperature_one_is_plain_kl():
    s, t, labels = logits_and_labels(seed=6)
    keep = labels != -100
    plain = F.kl_div(F.log_softmax(s[keep], -1), F.softmax(t[keep], -1), reduction="batchmean")
    torch.testing.assert_close(kd_loss(s, t, labels, temperature=1.0), plain)


def test_kd_gradient_tends_to_logit_matching_at_high_temperature():
    """Hinton et al. §2.1: with zero-mean logits, dC/dz_i -> (z_i - v_i) / (N T^2) for
    C = KL(p_T || q_T) as T -> infinity, the gradient of sum_i (z_i - v_i)^2 / (2 N T^2); with
    kd_loss's T^2 factor, (z_i - v_i) / N per position (over the positions averaged). The gap
    shrinks as 1/T."""
    s, t, labels = logits_and_labels(seed=7, scale=1.0)
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    keep = labels != -100
    gaps = []
    for temperature in (10.0, 100.0, 1000.0):
        z = s.clone().requires_grad_(True)
        forward_kl(z, t, labels, temperature).backward()
        # logit matching: the squared logit error / (2 N T^2), averaged like the KD loss
        m = s.clone().requires_grad_(True)
        mse = ((m - t) ** 2).sum(-1) / (2 * V * temperature ** 2)
        mse[keep].mean().backward()
        limit = m.grad
        torch.testing.assert_close(  # (its gradient, written out: (z - v) / (N T^2) / kept)
            limit, torch.where(keep[..., None], s - t, 0.0) / (V * temperature ** 2 * keep.sum()))
        gaps.append(((z.grad - limit).norm() / limit.norm()).item())
        zk = s.clone().requires_grad_(True)
        kd_loss(zk, t, labels, temperature).backward()  # the T^2 factor: a T-free limit
        torch.testing.assert_close(zk.grad, z.grad * temperature ** 2)
    assert gaps[2] < 1e-2
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[1] / gaps[2] == pytest.approx(10.0, rel=0.2)  # O(1/T)


# ---- feature distillation ------------------------------------------------------------------
def test_hidden_mse_gradient_reaches_the_projection_as_derived():
    """d/dW mean_n ||W h_n + b - t_n||^2 / D = 2 / (N D) sum_n (W h_n + b - t_n) h_n^T."""
    g = torch.Generator().manual_seed(8)
    h, target = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 10, generator=g)
    labels = torch.tensor([[1, 2, -100, 3], [-100, 4, 5, 6]])
    proj = torch.nn.Linear(6, 10)
    hidden_mse(proj(h), target, labels).backward()
    keep = labels != -100
    err = proj(h)[keep] - target[keep]
    n, d = err.shape
    expected = 2 / (n * d) * err.T @ h[keep]
    torch.testing.assert_close(proj.weight.grad, expected.detach())
    torch.testing.assert_close(proj.bias.grad, (2 / (n * d) * err.sum(0)).detach())


def tiny(d_model=16, n_layer=1, seed=0, vocab=V, init_std=0.02):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, context_length=16, d_model=d_model, n_layer=n_layer,
                         n_head=2, init_std=init_std))


def test_feature_loss_fn_trains_the_projection_and_leaves_the_teacher_frozen():
    teacher, student = tiny(d_model=24, seed=1), tiny(d_model=8, seed=2)
    wrapped = FeatureDistillStudent(student, teacher.config.d_model)
    ids = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(0))
    labels = torch.roll(ids, -1, 1)
    loss, metrics = distill_loss_fn(teacher, "feature", alpha=0.25)(
        wrapped, {"input_ids": ids, "labels": labels})
    loss.backward()
    with torch.no_grad():
        t_hidden = teacher(ids).hidden_states
        s_out = student(ids, labels)
    expected = 0.25 * s_out.loss + 0.75 * ((wrapped.projection(s_out.hidden_states) - t_hidden)
                                           ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["lm_loss"] == pytest.approx(s_out.loss.item(), rel=1e-5)
    assert wrapped.projection.weight.grad.abs().sum() > 0
    assert student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training


def test_feature_student_weights_round_trip_with_tied_embeddings():
    wrapped = FeatureDistillStudent(tiny(d_model=8, seed=3), 24)
    saved = wrapped.weights_state_dict()
    assert "student.lm_head.weight" not in saved  # the tied alias is not saved twice
    assert {"projection.weight", "projection.bias"} <= set(saved)
    other = FeatureDistillStudent(tiny(d_model=8, seed=4), 24)
    other.load_weights(saved)
    for (name, a), b in zip(wrapped.state_dict().items(), other.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ValueError, match="projection"):
        other.load_weights({k: v for k, v in saved.items() if not k.startswith("projection")})


# ---- the Trainer's loss_fn ------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["kd", "reverse_kl", "gjsd"])
def test_loss_fn_is_alpha_ce_plus_t2_divergence(loss):
    teacher, student = tiny(seed=5, init_std=0.5), tiny(seed=6)
    ids = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(1))
    labels = torch.roll(ids, -1, 1)
    labels[0, :3] = -100
    value, metrics = distill_loss_fn(teacher, loss, alpha=0.3, temperature=2.0, beta=0.4)(
        student, {"input_ids": ids, "labels": labels})
    with torch.no_grad():
        z, v = student(ids).logits, teacher(ids).logits
    fn = {"kd": forward_kl, "reverse_kl": reverse_kl,
          "gjsd": lambda a, b, y, temperature: generalized_jsd(a, b, y, 0.4, temperature)}[loss]
    term = 4.0 * fn(z, v, labels, temperature=2.0)
    ce = F.cross_entropy(z.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert value.item() == pytest.approx((0.3 * ce + 0.7 * term).item(), rel=1e-5)
    assert metrics["distill_loss"] == pytest.approx(term.item(), rel=1e-5)
    assert metrics["lm_loss"] == pytest.approx(ce.item(), rel=1e-5)


def test_trainer_with_kd_loss_moves_the_student_toward_the_teacher():
    """alpha = 0: the student learns only the teacher's distributions; its KL to the teacher on
    held-out windows falls, and it falls further than the student's own CE does not need to."""
    teacher, student = tiny(d_model=32, n_layer=2, seed=7, init_std=0.3), tiny(seed=8)
    g = torch.Generator().manual_seed(2)
    tokens, held = torch.randint(0, V, (4000,), generator=g), torch.randint(0, V, (4, 17),
                                                                             generator=g)

    def kl_to_teacher():
        with torch.no_grad():
            return forward_kl(student(held[:, :-1]).logits, teacher(held[:, :-1]).logits).item()

    before = kl_to_teacher()
    cfg = TrainConfig(max_steps=25, batch_size=8, seq_len=16, lr=1e-2, min_lr=1e-2,
                      warmup_steps=0, eval_interval=0, log_interval=5, device="cpu",
                      progress=False)
    trainer = Trainer(student, tokens, config=cfg, loss_fn=distill_loss_fn(teacher, "kd", 0.0))
    history = trainer.fit()
    after = kl_to_teacher()
    assert after < 0.5 * before, (before, after)
    assert history[-1]["distill_loss"] < history[0]["distill_loss"]
    assert all(p.grad is None for p in teacher.parameters())


def test_bad_arguments_are_refused_with_the_fix():
    teacher = tiny()
    with pytest.raises(ValueError, match="teacher_sequences"):
        distill_loss_fn(teacher, "seqkd")
    with pytest.raises(ValueError, match="alpha=1.5"):
        distill_loss_fn(teacher, "kd", alpha=1.5)
    with pytest.raises(ValueError, match="temperature=0"):
        distill_loss_fn(teacher, "kd", temperature=0)
    with pytest.raises(ValueError, match="beta=-0.1"):
        generalized_jsd(torch.zeros(2, V), torch.zeros(2, V), beta=-0.1)
    with pytest.raises(ValueError, match="same tokenizer"):
        forward_kl(torch.zeros(2, V), torch.zeros(2, V + 1))
    with pytest.raises(ValueError, match=r"teacher's vocabulary \(257 ids\).*student's \(300"):
        check_vocabularies(257, 300)
    with pytest.raises(ValueError, match="tokenizer"):
        check_vocabularies(257, 257, {"type": "bytes"}, {"type": "bpe"})
    check_vocabularies(257, 257, {"type": "bytes"}, {"type": "bytes"})  # the same: no error
    student = tiny(vocab=V + 2)
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"{V}\)"):
        distill_loss_fn(teacher, "kd")(student, {"input_ids": ids, "labels": ids})


# ---- sequence-level KD ---------------------------------------------------------------------
def test_teacher_sequences_greedy_equal_an_argmax_loop_and_rows_mask_the_prompt():
    teacher = tiny(seed=9, init_std=0.5)
    prompts = torch.randint(0, V, (5, 3), generator=torch.Generator().manual_seed(3))
    seqs = teacher_sequences(teacher, prompts, 6, batch_size=2)
    expected = prompts.clone()
    with torch.no_grad():
        for _ in range(6):
            nxt = teacher(expected).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, nxt], 1)
    torch.testing.assert_close(seqs, expected)
    sampled = teacher_sequences(teacher, prompts, 6, do_sample=True, seed=1)
    assert torch.equal(sampled, teacher_sequences(teacher, prompts, 6, do_sample=True, seed=1))
    assert torch.equal(sampled[:, :3], prompts)
    x, y = sequence_rows(seqs, prompt_length=3)
    assert torch.equal(x, seqs[:, :-1])
    assert (y[:, :2] == -100).all()
    assert torch.equal(y[:, 2:], seqs[:, 3:])
    with pytest.raises(ValueError, match="context_length=16"):
        teacher_sequences(teacher, prompts, 14)


def test_sequence_batches_draw_rows_reproducibly_and_resume():
    x = torch.arange(40).view(10, 4)
    y = x + 1
    y[:, 0] = -100
    a = SequenceBatches(x, y, batch_size=3, seed=5)
    first = a.next_batch()
    state = a.state_dict()
    second = a.next_batch()
    b = SequenceBatches(x, y, batch_size=3, seed=0)
    b.load_state_dict(state)
    assert torch.equal(b.next_batch()["input_ids"], second["input_ids"])
    rows = first["input_ids"][:, 0] // 4
    assert torch.equal(first["labels"], y[rows])
    assert a.tokens_in(first) == 9
    assert not a.has_split("val")
