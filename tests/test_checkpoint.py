"""minillm.training.checkpoint: what a killed save or prune leaves is removed at start-up, a
SIGKILL anywhere in a save and a resume give the weights of an unbroken run, and a trainer
state holding a pickled object is refused without running it."""

import json
import os

import pytest
import torch


def _tiny_trainer(out_dir, max_steps=3, **overrides):
    from minillm.models import GPT, GPTConfig
    from minillm.training import TrainConfig, Trainer

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, context_length=16, d_model=16, n_layer=1, n_head=2))
    cfg = TrainConfig(**{"max_steps": max_steps, "batch_size": 2, "warmup_steps": 1,
                         "eval_interval": 0, "device": "cpu", "checkpoint_interval": 1,
                         "keep_checkpoints": 2, "out_dir": str(out_dir), "progress": False,
                         "seed": 3, **overrides})
    return Trainer(model, torch.arange(400) % 257, None, cfg)


CHECKPOINT_FILES = ("config.json", "model.safetensors", "trainer_state.pt", "trainer.json")


def _leftovers(out_dir):
    """Hidden temporaries, and step_N folders that lack a checkpoint file."""
    ckpts = out_dir / "checkpoints"
    hidden = [p.name for folder in (out_dir, ckpts) if folder.is_dir() for p in folder.iterdir()
              if p.name.startswith(".")]
    partial = [p.name for p in ckpts.glob("step_*")
               if not all((p / f).is_file() for f in CHECKPOINT_FILES)]
    return hidden + partial


def _leftover_kinds(out_dir):
    kinds = set()
    for name in _leftovers(out_dir):
        if name.endswith(".pruned.tmp"):
            kinds.add("pruning")
        elif name.startswith(".step_") and name.endswith(".tmp"):
            kinds.add("half-written folder")
        elif name.endswith(".old"):
            kinds.add("replaced folder")
        else:
            kinds.add("file write" if name.startswith(".") else "partial step folder")
    return kinds


def test_start_up_removes_what_killed_saves_and_prunes_left(tmp_path):
    _tiny_trainer(tmp_path).fit()  # steps 2 and 3 kept
    ckpts = tmp_path / "checkpoints"
    (ckpts / ".step_000004.k2j3h4.tmp").mkdir()          # killed while writing step 4
    (ckpts / ".step_000004.k2j3h4.tmp" / "config.json").write_text("{}")
    (ckpts / ".step_000001.pruned.tmp").mkdir()           # killed while pruning step 1
    (tmp_path / ".latest.json.a8d7f.tmp").write_text("{")  # killed inside latest.json's write
    half = ckpts / "step_000001"                         # a step folder missing its files
    half.mkdir()
    (half / "trainer.json").write_text("{}")
    (ckpts / ".step_000003.old").mkdir()                  # a finished replace of step 3
    assert len(_leftovers(tmp_path)) == 5
    trainer = _tiny_trainer(tmp_path, max_steps=4)
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_000002", "step_000003"]
    assert trainer.resume() and trainer.step == 3


def test_a_kill_during_pruning_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    import shutil

    from minillm.training import checkpoint

    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # delete one file, then the process dies
        os.unlink(sorted(p.path for p in os.scandir(path) if p.is_file())[0])
        raise KeyboardInterrupt("killed")

    trainer = _tiny_trainer(tmp_path)
    trainer.fit()                                # steps 2, 3 kept
    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_midway)
    trainer.config.max_steps = 4
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()                            # saves step 4, dies pruning step 2
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real_rmtree)
    assert [n for n in _leftovers(tmp_path) if not n.startswith(".")] == []
    _tiny_trainer(tmp_path, max_steps=4)        # start-up removes the renamed half
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_000003", "step_000004"]


KILL_ARGS = ["--d-model", "16", "--n-layer", "1", "--n-head", "2", "--context-length", "16",
             "--batch-size", "2", "--max-steps", "24", "--warmup-steps", "2",
             "--eval-steps", "0", "--device", "cpu", "--threads", "1",
             "--checkpoint-interval", "1", "--keep-checkpoints", "2", "--dropout", "0.1"]


def _killed_run(out_dir, mode, occurrence, delay):
    """Start `minillm train --resume` in a subprocess and SIGKILL it: inside the
    `occurrence`-th checkpoint phase `mode` ("writing": the folder half written; "replaced":
    the folder in place, latest.json not yet; "pruning": an old folder renamed, not yet
    deleted), or ("random") `delay` seconds after its first save began, wherever it is then.
    Returns whether it was still running when killed."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINILLM_TEST_CHECKPOINT_PAUSE": "0.15"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "minillm", "train", "--output-dir", str(out_dir), "--resume",
         *KILL_ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen = 0
        for line in proc.stderr:
            if mode == "random" and line.startswith("minillm-checkpoint: "):
                time.sleep(delay)
                break
            seen += line.strip() == f"minillm-checkpoint: {mode}"
            if seen == occurrence:
                break
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return killed
    finally:
        proc.stderr.close()


def _final_weights(out_dir):
    from minillm.models import GPT
    from minillm.training import latest_checkpoint

    return GPT.from_checkpoint(latest_checkpoint(out_dir)).state_dict()


@pytest.mark.slow
def test_sigkill_during_saves_and_pruning_then_resume_is_bit_identical(tmp_path, one_thread):
    import random

    from minillm.cli import main
    from minillm.models import GPT
    from minillm.training import latest_checkpoint, load_trainer_state
    from minillm.training.checkpoint import prepare_out_dir

    rng = random.Random(12)
    out = tmp_path / "killed"
    modes = ["writing", "replaced", "pruning", "random"] * 2
    rng.shuffle(modes)
    left = set()
    for mode in modes:
        assert _killed_run(out, mode, rng.randint(1, 2), rng.uniform(0.0, 1.0)), mode
        if (out / "latest.json").exists():  # the latest checkpoint loads, whatever was killed
            folder = latest_checkpoint(out)
            GPT.from_checkpoint(folder)
            state, meta = load_trainer_state(folder)
            assert meta["step"] == json.loads((out / "latest.json").read_text())["step"]
        left |= _leftover_kinds(out)
        if out.exists():
            prepare_out_dir(out)  # what every start-up (resume included) does first
            assert _leftovers(out) == []
    # the kills did land inside a save (a half-written folder) and inside pruning, and no
    # kill ever left a step_N folder without its files
    assert {"half-written folder", "pruning"} <= left and "partial step folder" not in left, left

    assert main(["train", "--output-dir", str(out), "--resume", *KILL_ARGS]) == 0
    assert main(["train", "--output-dir", str(tmp_path / "straight"), *KILL_ARGS]) == 0
    resumed, straight = _final_weights(out), _final_weights(tmp_path / "straight")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert json.loads((out / "latest.json").read_text())["step"] == 24


class _Payload:
    """An object whose unpickling would run code (here: create a file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_trainer_state_holding_a_pickled_object_is_refused_unrun(tmp_path):
    from minillm.io import CheckpointError
    from minillm.training import load_trainer_state

    trainer = _tiny_trainer(tmp_path, max_steps=1)
    trainer.fit()
    folder = tmp_path / "checkpoints" / "step_000001"
    marker = tmp_path / "code_ran"
    torch.save({"optimizer": _Payload(marker)}, folder / "trainer_state.pt")
    with pytest.raises(CheckpointError, match="trainer_state.pt") as refused:
        load_trainer_state(folder)
    assert not marker.exists()
    # said as it is: refused, not "corrupt", and without torch's advice to turn weights_only off
    message = str(refused.value)
    assert "refused: not a weights-only file" in message and "never unpickles" in message
    assert "corrupt" not in message and "weights_only=False" not in message
