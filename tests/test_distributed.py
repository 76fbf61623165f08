"""The training entry point under torchrun: 2 gloo processes follow one process exactly."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from minillm.training import latest_checkpoint


def _cmd(out_dir, batch_size):
    return ["-m", "minillm", "train", "--output-dir", str(out_dir), "--d-model", "32", "--n-layer",
            "2", "--n-head", "2", "--context-length", "32", "--batch-size", str(batch_size),
            "--grad-accum-steps", "2", "--max-steps", "8", "--warmup-steps", "2", "--lr", "3e-3",
            "--eval-steps", "4", "--eval-batches", "2", "--threads", "1", "--device", "cpu"]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_process_ddp_matches_single_process_on_the_same_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *_cmd(tmp_path / "single", 8)], check=True, env=env,
                   capture_output=True)
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         *_cmd(tmp_path / "ddp", 4)], env=env, capture_output=True, text=True)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = load_file(str(latest_checkpoint(tmp_path / "single") / "model.safetensors"))
    multi = load_file(str(latest_checkpoint(tmp_path / "ddp") / "model.safetensors"))
    assert single.keys() == multi.keys()
    for k in single:
        torch.testing.assert_close(single[k], multi[k], atol=1e-5, rtol=1e-4, msg=k)
    # and the run really was distributed
    import json

    meta = json.loads((latest_checkpoint(tmp_path / "ddp") / "trainer.json").read_text())
    assert meta["world_size"] == 2


def test_world_size_without_rank_is_a_clear_error(monkeypatch):
    from minillm.distributed import init_from_env

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="RANK is not set: launch with torchrun"):
        init_from_env()
