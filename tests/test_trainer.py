"""The Trainer's failures: a diverging run stops naming the step and keeps the last good
checkpoint; a rank that raises under torchrun ends every rank."""

import json
import math
import os

import pytest
import torch


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from minillm.models import GPT, GPTConfig
    from minillm.training import TrainConfig, Trainer, TrainingDiverged, lm_loss_fn

    def poisoned(runner, batch):  # the loss of step 3 (and after) is NaN
        loss, metrics = lm_loss_fn(runner, batch)
        return (loss * math.nan if trainer.step >= 2 else loss), metrics

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, context_length=16, d_model=16, n_layer=1, n_head=2))
    cfg = TrainConfig(max_steps=5, batch_size=2, warmup_steps=1, eval_interval=0, device="cpu",
                      checkpoint_interval=1, out_dir=str(tmp_path), progress=False)
    trainer = Trainer(model, torch.randint(0, 257, (400,)), None, cfg, loss_fn=poisoned)
    with pytest.raises(TrainingDiverged, match="step 3: the training loss is nan"):
        trainer.fit()
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 2
    assert not (tmp_path / "checkpoints" / "step_000003").exists()
    weights = GPT.from_checkpoint(tmp_path / "checkpoints" / "step_000002").state_dict()
    assert all(torch.isfinite(t).all() for t in weights.values())


FAILING_RANK = """
import os, torch
from minillm.models import GPT, GPTConfig
from minillm.training import TrainConfig, Trainer, lm_loss_fn

def loss_fn(runner, batch):
    if os.environ["RANK"] == "1" and trainer.step == 2:
        raise RuntimeError("rank 1 fails at step 2")
    return lm_loss_fn(runner, batch)

torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=257, context_length=16, d_model=16, n_layer=1, n_head=2))
config = TrainConfig(max_steps=100_000, batch_size=2, warmup_steps=1, eval_interval=0,
                     device="cpu", progress=False)
trainer = Trainer(model, torch.arange(4000) % 257, None, config, loss_fn=loss_fn)
trainer.fit()
"""


@pytest.mark.distributed
@pytest.mark.slow
def test_a_failing_rank_ends_every_rank(tmp_path):
    """Rank 1 raises at step 2 while rank 0 waits in the gradient all-reduce: torchrun ends
    the whole job with an error instead of leaving rank 0 hanging."""
    import subprocess
    import sys

    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(script)], env=env, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode != 0
    assert "rank 1 fails at step 2" in run.stderr


def test_a_signal_stops_fit_after_the_step_with_its_checkpoint(tmp_path):
    import signal

    from minillm.models import GPT, GPTConfig
    from minillm.training import TrainConfig, Trainer, TrainingInterrupted, lm_loss_fn

    def interrupted(runner, batch):  # Ctrl-C arrives inside step 2
        if trainer.step == 1:
            signal.raise_signal(signal.SIGINT)
        return lm_loss_fn(runner, batch)

    before = signal.getsignal(signal.SIGINT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, context_length=16, d_model=16, n_layer=1, n_head=2))
    cfg = TrainConfig(max_steps=50, batch_size=2, warmup_steps=1, eval_interval=0, device="cpu",
                      checkpoint_interval=0, out_dir=str(tmp_path), progress=False)
    trainer = Trainer(model, torch.randint(0, 257, (400,)), None, cfg, loss_fn=interrupted)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGINT after step 2; checkpoint "
                                                  "saved to") as stop:
        trainer.fit()
    assert stop.value.folder == tmp_path / "checkpoints" / "step_000002"
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are put back
    resumed = Trainer(model, torch.randint(0, 257, (400,)), None, cfg)
    assert resumed.resume() and resumed.step == 2


def test_by_default_a_run_with_an_out_dir_saves_before_its_end():
    """What a SIGKILL can cost is bounded: checkpoints come every checkpoint_interval steps by
    default, more than once in a run of the default length."""
    from minillm.training import TrainConfig

    default = TrainConfig()
    assert 0 < default.checkpoint_interval < default.max_steps
