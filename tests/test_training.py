import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minillm.io import CheckpointError
from minillm.models import GPT, GPTConfig
from minillm.training import (
    TrainConfig,
    Trainer,
    evaluate_loss,
    latest_checkpoint,
    lr_at,
    param_groups,
)

# a random but periodic sequence: there is something to learn
DATA = torch.randint(0, 61, (97,), generator=torch.Generator().manual_seed(0)).repeat(52)


def _trainer(tmp_path=None, dropout=0.1, **overrides):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=61, context_length=16, d_model=32, n_layer=2, n_head=4,
                          dropout=dropout))
    cfg = dict(max_steps=12, batch_size=4, warmup_steps=3, lr=3e-3, eval_interval=6,
               eval_batches=2, log_interval=2, device="cpu",
               out_dir=str(tmp_path) if tmp_path else None)
    cfg.update(overrides)
    return Trainer(model, DATA, DATA[:500], TrainConfig(**cfg))


def test_schedule_warms_up_then_follows_the_cosine_to_the_floor():
    lrs = [lr_at(s, 1.0, 10, 110, 0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_weight_decay_only_on_matrices(tiny_model):
    decay, no_decay = param_groups(tiny_model, 0.1)
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.ndim < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in tiny_model.parameters())  # tied weight counted once


def test_training_lowers_the_loss_and_records_history():
    t = _trainer(max_steps=40)
    before = evaluate_loss(t.model, DATA[:800])
    assert before > 3.5
    t.fit()
    after = evaluate_loss(t.model, DATA[:800])
    assert after < before - 0.5
    assert [h["step"] for h in t.history] == list(range(2, 41, 2))
    assert [e["step"] for e in t.eval_history] == [6, 12, 18, 24, 30, 36, 40]
    assert all(h["lr"] > 0 and h["tokens_per_s"] > 0 for h in t.history)


def test_gradient_accumulation_matches_one_big_batch():
    a = _trainer(max_steps=3, batch_size=8, grad_accum_steps=1, dropout=0.0, grad_clip=0.0)
    b = _trainer(max_steps=3, batch_size=4, grad_accum_steps=2, dropout=0.0, grad_clip=0.0)
    # the same windows: 8 at once, or 4 then 4 from the same generator stream
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(torch.randint(0, 99, (8,), generator=g1),
                       torch.cat([torch.randint(0, 99, (4,), generator=g2) for _ in range(2)]))
    a.fit()
    b.fit()
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)


def test_resume_in_process_is_bit_exact(tmp_path):
    full = _trainer(tmp_path / "full", checkpoint_interval=6)
    full.fit()
    resumed = _trainer(tmp_path / "other")
    assert resumed.resume(tmp_path / "full" / "checkpoints" / "step_000006")
    assert resumed.step == 6
    resumed.fit()
    for (k, v1), (_, v2) in zip(full.model.state_dict().items(),
                                resumed.model.state_dict().items(), strict=True):
        assert torch.equal(v1, v2), k


def _train_cmd(out_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "minillm", "train", "--output-dir", str(out_dir),
            "--d-model", "32", "--n-layer", "2", "--n-head", "2", "--context-length", "32",
            "--batch-size", "8",
            "--dropout", "0.1", "--max-steps", "400", "--warmup-steps", "20", "--lr", "3e-3",
            "--eval-steps", "100", "--eval-batches", "2", "--checkpoint-interval", "25",
            "--threads", "1", "--device", "cpu", "--seed", "7", *extra]


@pytest.mark.slow
def test_sigkill_and_resume_ends_bit_identical(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_train_cmd(tmp_path / "ref"), check=True, env=env, capture_output=True)

    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(run), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "latest.json").exists():
        time.sleep(0.02)
    time.sleep(0.3)  # let it get past the checkpoint, into the middle of later steps
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int(latest_checkpoint(run).name.split("_")[1])
    assert 0 < killed_at < 400

    subprocess.run(_train_cmd(run, "--resume"), check=True, env=env, capture_output=True)
    ref = load_file(str(latest_checkpoint(tmp_path / "ref") / "model.safetensors"))
    got = load_file(str(latest_checkpoint(run) / "model.safetensors"))
    assert latest_checkpoint(run).name == "step_000400"
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), f"{k} differs after kill + resume from step {killed_at}"


def test_empty_corpus_and_short_corpus_raise():
    model = GPT(GPTConfig(vocab_size=61, context_length=16, d_model=32, n_layer=1, n_head=4))
    with pytest.raises(ValueError, match="training tokens is empty"):
        Trainer(model, torch.tensor([], dtype=torch.long), config=TrainConfig(device="cpu"))
    with pytest.raises(ValueError, match="fewer than context_length"):
        Trainer(model, torch.arange(10), config=TrainConfig(device="cpu"))


def test_bad_train_config_names_the_field():
    with pytest.raises(ValueError, match="min_lr=0.1 is above lr=0.01"):
        TrainConfig(lr=0.01, min_lr=0.1)
    with pytest.raises(ValueError, match="batch_size=0 must be positive"):
        TrainConfig(batch_size=0)


def test_checkpoint_folder_missing_or_corrupt_files(tmp_path, tiny_model):
    folder = tmp_path / "ckpt"
    tiny_model.save(folder)
    assert torch.equal(GPT.from_checkpoint(folder).tok_emb.weight, tiny_model.tok_emb.weight)
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        GPT.from_checkpoint(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        GPT.from_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is corrupt"):
        GPT.from_checkpoint(folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        GPT.from_checkpoint(tmp_path / "nowhere")


def test_a_failed_save_leaves_the_old_checkpoint_untouched(tmp_path, tiny_model, monkeypatch):
    folder = tmp_path / "ckpt"
    tiny_model.save(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    import minillm.models.base as base_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(base_module, "save_tensors", broken)
    with torch.no_grad():
        tiny_model.tok_emb.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        tiny_model.save(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folders left behind


def test_resume_refuses_a_different_world_size(tmp_path):
    t = _trainer(tmp_path, max_steps=2)
    t.fit()
    import json

    meta_path = latest_checkpoint(tmp_path) / "trainer.json"
    meta = json.loads(meta_path.read_text())
    meta["world_size"] = 4
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="written by 4 processes"):
        _trainer(tmp_path, max_steps=4).resume()


def test_training_window_can_be_shorter_than_the_context():
    t = _trainer(max_steps=2, seq_len=8)
    x_seen = []
    original = t.runner.forward
    t.runner.forward = lambda x, y, **kw: (x_seen.append(x.shape), original(x, y, **kw))[1]
    t.fit()
    assert x_seen and all(shape == (4, 8) for shape in x_seen)
    with pytest.raises(ValueError, match="seq_len=32 is longer than the model's context_length=16"):
        _trainer(seq_len=32)


@pytest.mark.slow
def test_compiled_training_saves_plain_weights(tmp_path):
    """torch.compile wraps the model; checkpoints must still hold the plain names (no _orig_mod.)."""
    t = _trainer(tmp_path, max_steps=2, compile=True, dropout=0.0)
    t.fit()
    names = list(load_file(str(latest_checkpoint(tmp_path) / "model.safetensors")))
    assert names and not any("_orig_mod" in n for n in names)
    assert GPT.from_checkpoint(latest_checkpoint(tmp_path)).config == t.model.config


def test_float16_scales_the_loss_and_learns_like_float32():
    ref = _trainer(dtype="float32", dropout=0.0, eval_interval=0)
    half = _trainer(dtype="float16", dropout=0.0, eval_interval=0)
    assert ref.scaler is None and half.scaler is not None
    ref.fit(), half.fit()
    for a, b in zip(ref.history, half.history, strict=True):
        assert abs(a["loss"] - b["loss"]) < 0.02, (a, b)
    assert all(p.dtype == torch.float32 for p in half.model.parameters())  # master weights
    assert half.scaler.state_dict()["_growth_tracker"] == 12  # 12 steps, none skipped


def test_float16_skips_a_step_whose_scaled_gradients_overflow():
    tr = _trainer(dtype="float16", dropout=0.0)
    tr.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)  # far beyond float16's 65504
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.train_step()
    assert tr.scaler.get_scale() == 2.0 ** 39  # backed off by half
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the optimizer step was skipped
    for _ in range(40):  # the scale keeps halving until the gradients fit, then it learns
        tr.train_step()
    assert tr.scaler.get_scale() <= 2.0 ** 24
    assert any(not torch.equal(v, before[k]) for k, v in tr.model.state_dict().items())


def test_float16_resume_restores_the_loss_scaler(tmp_path):
    full = _trainer(tmp_path / "full", dtype="float16", checkpoint_interval=6)
    full.fit()
    resumed = _trainer(tmp_path / "other", dtype="float16")
    assert resumed.resume(tmp_path / "full" / "checkpoints" / "step_000006")
    assert resumed.scaler.state_dict()["_growth_tracker"] == 6
    resumed.fit()
    assert resumed.scaler.state_dict() == full.scaler.state_dict()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


# ---- edge cases: pruning, interrupted replaces, resume, unembeddable tokens -------------
def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path):
    from minillm.training.checkpoint import save_training_checkpoint

    model = _trainer().model
    for step in (4, 8):  # an older run left later steps in this out_dir
        save_training_checkpoint(tmp_path, step, model, {}, {"step": step}, keep=2)
    save_training_checkpoint(tmp_path, 2, model, {}, {"step": 2}, keep=2)
    assert latest_checkpoint(tmp_path).name == "step_000002"
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000002", "step_000004", "step_000008"]  # not ours to delete
    # steps compare as numbers: step_1000000 is newer than step_999999
    for step in (999_999, 1_000_000):
        save_training_checkpoint(tmp_path / "big", step, model, {}, {"step": step}, keep=1)
    assert [p.name for p in (tmp_path / "big" / "checkpoints").iterdir()] == ["step_1000000"]
    assert latest_checkpoint(tmp_path / "big").name == "step_1000000"


def test_a_replace_killed_between_its_two_renames_is_recovered(tmp_path):
    from minillm.training.checkpoint import save_training_checkpoint

    model = _trainer().model
    folder = save_training_checkpoint(tmp_path, 3, model, {}, {"step": 3})
    folder.rename(folder.with_name(f".{folder.name}.old"))  # the state a kill leaves behind
    assert latest_checkpoint(tmp_path) == folder and (folder / "model.safetensors").is_file()


def test_resume_at_max_steps_writes_nothing(tmp_path):
    tr = _trainer(tmp_path, max_steps=4)
    tr.fit()
    folder = latest_checkpoint(tmp_path)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = _trainer(tmp_path, max_steps=4)
    assert again.resume()
    again.fit()
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_resume_applies_this_runs_optimizer_settings(tmp_path):
    _trainer(tmp_path, max_steps=4).fit()
    tr = _trainer(tmp_path, max_steps=8, weight_decay=0.0, beta2=0.99)
    assert tr.resume()
    decay, no_decay = tr.optimizer.param_groups
    assert decay["weight_decay"] == 0.0 and decay["betas"] == (0.9, 0.99)
    assert no_decay["weight_decay"] == 0.0
    assert len(tr.optimizer.state) > 0  # the Adam moments did come back


def test_resume_refuses_a_different_model_size_by_name(tmp_path):
    _trainer(tmp_path, max_steps=2).fit()
    model = GPT(GPTConfig(vocab_size=61, context_length=16, d_model=64, n_layer=2, n_head=4))
    tr = Trainer(model, DATA, config=TrainConfig(device="cpu", out_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"shapes \(saved vs model\) differ for .*tok_emb"):
        tr.resume()


def test_tokens_the_model_cannot_embed_are_refused():
    model = GPT(GPTConfig(vocab_size=61, context_length=16, d_model=32, n_layer=1, n_head=4))
    with pytest.raises(ValueError, match=r"ids in \[0, 70\] but the model's vocab_size is 61"):
        Trainer(model, torch.arange(71).repeat(3), config=TrainConfig(device="cpu"))
    with pytest.raises(ValueError, match="dtype torch.uint8; token ids must be int64"):
        Trainer(model, DATA.to(torch.uint8), config=TrainConfig(device="cpu"))


def test_token_count_survives_a_resume_with_another_batch_size(tmp_path):
    _trainer(tmp_path, max_steps=4, batch_size=4).fit()  # 4 steps x 4 x 16 = 256 tokens
    tr = _trainer(tmp_path, max_steps=6, batch_size=8)
    assert tr.resume() and tr.tokens == 256
    tr.fit()                                              # + 2 steps x 8 x 16 = 256 more
    assert tr.history[-1]["step"] == 6 and tr.history[-1]["tokens"] == 512
