"""The model's extension points: build_mlp, auxiliary losses, final hidden states, and the one
typed output (`LMOutput`) that carries them."""

import dataclasses

import pytest
import torch
from torch import nn

from minillm.models import GPT, GPTConfig
from minillm.models.base import LMOutput, MLPOutput
from minillm.models.mlp import GeluMLP, SwiGLU, build_mlp
from minillm.training import TrainConfig, Trainer, lm_loss_fn

CFG = dict(vocab_size=29, context_length=16, d_model=16, n_layer=2, n_head=2)


class MLPWithAux(nn.Module):
    """A dense MLP that reports a made-up auxiliary loss, as an MoE layer reports its balance."""

    def __init__(self, mlp: nn.Module, coef: float):
        super().__init__()
        self.mlp, self.coef = mlp, coef

    def forward(self, x):
        out = self.mlp(x)
        aux = {"balance": self.coef * out.pow(2).mean(), "z": 0.5 * self.coef * x.mean()}
        return MLPOutput(out, aux)


def test_build_mlp_picks_the_configured_mlp_per_layer():
    assert isinstance(build_mlp(GPTConfig(**CFG), 0), GeluMLP)
    assert isinstance(build_mlp(GPTConfig(**CFG, mlp="swiglu"), 1), SwiGLU)
    model = GPT(GPTConfig(**CFG))
    assert [b.attn.layer_idx for b in model.blocks] == [0, 1]


def test_forward_returns_one_typed_output_and_stores_nothing():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG, n_expert=4, top_k=2))
    x = torch.randint(0, 29, (2, 16))
    before = {name: dict(vars(m)) for name, m in model.named_modules()}
    out = model(x, x)
    assert isinstance(out, LMOutput) and out.logits.shape == (2, 16, 29)
    assert set(out.aux_losses) == {"moe_balance", "moe_z"} and len(out.routing) == 2
    with pytest.raises(TypeError):  # not a tuple: no positional unpacking or indexing
        out[0]
    after = {name: dict(vars(m)) for name, m in model.named_modules()}
    changed = [(name, key) for name in before for key in set(before[name]) | set(after[name])
               if key not in ("_parameters", "_buffers", "_modules")
               and before[name].get(key, "missing") is not after[name].get(key, "missing")]
    assert changed == [], f"forward set module state: {changed}"
    assert [f.name for f in dataclasses.fields(LMOutput)] == [
        "logits", "loss", "aux_losses", "hidden_states", "routing"]


def test_aux_losses_are_summed_over_modules_and_not_in_the_lm_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    x = torch.randint(0, 29, (2, 16))
    out = model(x, x)
    assert out.aux_losses == {} and out.aux_loss is None and out.routing == ()  # dense
    torch.testing.assert_close(out.total_loss(), out.loss)
    for block in model.blocks:
        block.mlp = MLPWithAux(block.mlp, 0.1)
    seen = []  # what each MLP saw and returned, recorded independently of the output
    hooks = [b.mlp.register_forward_hook(lambda m, i, o: seen.append((i[0], o.hidden)))
             for b in model.blocks]
    with_aux = model(x, x)
    for h in hooks:
        h.remove()
    aux = with_aux.aux_losses
    assert set(aux) == {"balance", "z"} and len(seen) == 2
    assert torch.equal(with_aux.loss, out.loss)                       # LM loss unchanged
    torch.testing.assert_close(aux["balance"], sum(0.1 * o.pow(2).mean() for _, o in seen))
    torch.testing.assert_close(aux["z"], sum(0.05 * i.mean() for i, _ in seen))
    torch.testing.assert_close(with_aux.total_loss(), out.loss + aux["balance"] + aux["z"])


def test_default_loss_adds_the_aux_losses_to_the_gradient():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    for block in model.blocks:
        block.mlp = MLPWithAux(block.mlp, 0.3)
    x = torch.randint(0, 29, (2, 16))
    loss, metrics = lm_loss_fn(model, {"input_ids": x, "labels": x})
    out = model(x, x)
    torch.testing.assert_close(loss, out.loss + out.aux_losses["balance"] + out.aux_losses["z"])
    assert set(metrics) == {"lm_loss", "balance", "z"}
    assert metrics["lm_loss"] == pytest.approx(out.loss.item())


def test_hidden_states_are_the_final_norm_output():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG)).eval()
    x = torch.randint(0, 29, (1, 9))
    captured = []
    hook = model.norm_f.register_forward_hook(lambda m, i, o: captured.append(o))
    out = model(x)
    hook.remove()
    assert out.loss is None and torch.equal(out.hidden_states, captured[0])
    assert out.hidden_states.shape == (1, 9, 16)
    torch.testing.assert_close(out.logits, model.lm_head(out.hidden_states))


def test_trainer_trains_a_model_whose_mlp_has_aux_losses_and_logs_them():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    for block in model.blocks:
        block.mlp = MLPWithAux(block.mlp, 0.01)
    tokens = torch.randint(0, 29, (2000,))
    cfg = TrainConfig(max_steps=4, batch_size=2, log_interval=1, eval_interval=0, warmup_steps=1,
                      device="cpu", progress=False)
    history = Trainer(model, tokens, config=cfg).fit()
    for h in history:  # one step per entry: the optimised loss is the LM loss plus the aux ones
        assert h["loss"] == pytest.approx(h["lm_loss"] + h["balance"] + h["z"], rel=1e-5)
        assert h["balance"] > 0


# ---- the Trainer's batch source, loss function and strategy ---------------------------------

from minillm.data import TokenStreamBatches, sample_batch  # noqa: E402
from minillm.distributed import DistInfo, Strategy, get_strategy, register_strategy  # noqa: E402
from minillm.distributed import strategy as strategy_module  # noqa: E402


def _train_cfg(**kw):
    base = dict(max_steps=6, batch_size=2, log_interval=1, eval_interval=0, warmup_steps=1,
                device="cpu", progress=False, seq_len=8)
    return TrainConfig(**(base | kw))


def test_default_batches_are_the_sample_batch_stream():
    torch.manual_seed(0)
    tokens = torch.randint(0, 29, (500,))
    seen = []

    def recording(runner, batch):
        seen.append(batch["input_ids"].clone())
        return lm_loss_fn(runner, batch)

    Trainer(GPT(GPTConfig(**CFG)), tokens, config=_train_cfg(seed=3), loss_fn=recording).fit()
    g = torch.Generator().manual_seed(3)
    for got in seen:
        x, _ = sample_batch(tokens, 2, 8, g)
        assert torch.equal(got, x)


class MaskedPrefixBatches(TokenStreamBatches):
    """SFT-like: the first half of every window is a 'prompt' whose labels are -100."""

    def next_batch(self, split="train"):
        batch = super().next_batch(split)
        labels = batch["labels"].clone()
        labels[:, : labels.size(1) // 2] = -100
        return {**batch, "labels": labels}

    def tokens_in(self, batch):
        return int((batch["labels"] != -100).sum())


def test_a_custom_batch_source_trains_counts_its_tokens_and_resumes_exactly(tmp_path):
    tokens = torch.randint(0, 29, (500,), generator=torch.Generator().manual_seed(1))
    val = torch.randint(0, 29, (200,), generator=torch.Generator().manual_seed(2))

    def trainer(out_dir):
        torch.manual_seed(0)
        src = MaskedPrefixBatches(tokens, val, batch_size=2, seq_len=8, seed=5)
        return Trainer(GPT(GPTConfig(**CFG, dropout=0.1)), config=_train_cfg(
            out_dir=str(out_dir), eval_interval=3, checkpoint_interval=3), batches=src)

    ref = trainer(tmp_path / "ref")
    ref.fit()
    assert ref.history[-1]["tokens"] == 6 * 2 * 4                    # only unmasked labels
    assert len(ref.eval_history) == 2
    resumed = trainer(tmp_path / "other")
    assert resumed.resume(tmp_path / "ref" / "checkpoints" / "step_000003")
    assert resumed.step == 3
    resumed.fit()
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.eval_history == ref.eval_history


def test_trainer_needs_tokens_or_a_source():
    with pytest.raises(ValueError, match="train_tokens .* or a batch source"):
        Trainer(GPT(GPTConfig(**CFG)), config=_train_cfg())


def test_strategies_are_picked_registered_and_used(monkeypatch):
    monkeypatch.setattr(strategy_module, "_STRATEGIES", dict(strategy_module._STRATEGIES))
    assert get_strategy("auto", DistInfo()).name == "single"
    assert get_strategy("auto", DistInfo(rank=0, world_size=2)).name == "ddp"
    with pytest.raises(ValueError, match="strategy='zero9' is not registered"):
        get_strategy("zero9", DistInfo())
    with pytest.raises(ValueError, match="strategy='zero9' is not registered"):
        TrainConfig(strategy="zero9")
    wrapped = []

    class Recording(Strategy):
        name = "recording"

        def wrap(self, model, device, compile):
            wrapped.append(model)
            return super().wrap(model, device, compile)

        def clip_grad_norm(self, model, max_norm):
            return -1.0  # a marker: the trainer reports what the strategy measured

    register_strategy("recording", Recording)
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("recording", Recording)
    tokens = torch.randint(0, 29, (300,))
    tr = Trainer(GPT(GPTConfig(**CFG)), tokens, config=_train_cfg(strategy="recording",
                                                                  max_steps=2))
    tr.fit()
    assert wrapped == [tr.model] and isinstance(tr.strategy, Recording)
    assert [h["grad_norm"] for h in tr.history] == [-1.0, -1.0]
