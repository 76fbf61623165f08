"""The composed path (minillm.distributed.mesh, parallelize, dcp; strategy "parallel") on gloo.

References and tolerances:
- initial weights of a meta-device build after `materialize_gpt`: bit-identical to
  `torch.manual_seed(s); GPT(config)` (the draws are replayed in the same order);
- a few AdamW steps on a dp_shard x tp or dp_replicate x dp_shard mesh against one process on
  the whole global batch: losses and gradient norms within 1e-5, weights within 1e-4 (measured
  ~2e-5: the ranks' partial sums are added in another order, and Adam's first, normalised steps
  (~lr * sign(g)) carry those last-bit differences into the weights, as in
  test_distributed_strategies.py);
- `minillm train` on a 2 x 2 mesh or 2 pipeline stages against one process (lr 3e-3, 4 steps):
  weights within 2e-5 (measured 1.8e-6), losses within 1e-5;
- DCP resume at the same world size: bit-identical; under another world size (2 -> 4 -> 1
  processes, the same global batch): within 2e-5 of the uninterrupted 2-process run (measured
  2.4e-7), for the same reason (the resharding itself is exact: the shards load as saved).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minillm.distributed.launch import launch

ROOT = Path(__file__).resolve().parents[1]
CHECK = str(ROOT / "scripts" / "distributed" / "parallelize_check.py")
ENV = {"OMP_NUM_THREADS": "1"}


# ---- one process: the dims, the refusals -------------------------------------------------------
def test_parallel_dims_must_multiply_to_the_world_size():
    from minillm.distributed import ParallelDims

    with pytest.raises(ValueError, match=r"dp_replicate\*dp_shard\*tp\*pp = 1\*2\*2\*1 = 4 but "
                                         r"the world size is 8"):
        ParallelDims(dp_shard=2, tp=2, world_size=8)
    assert ParallelDims(dp_replicate=2, tp=2, world_size=8).dp_shard == 2  # -1: what is left
    assert ParallelDims(dp_replicate=2, tp=2, world_size=8).dp == 4
    with pytest.raises(ValueError, match="does not divide the world size 6"):
        ParallelDims(tp=4, world_size=6)
    # the data slice from the rank alone: ranks 2k, 2k+1 (one tp pair) read the same batch
    dims = ParallelDims(dp_replicate=2, dp_shard=2, tp=2, world_size=8)
    assert [dims.data_slice(r) for r in range(8)] == [(r // 2, 4) for r in range(8)]
    assert ParallelDims(dp_shard=2, pp=2, world_size=4).data_slice(3) == (1, 2)  # stage 1


def test_parallel_options_are_the_parallel_strategys():
    from minillm.distributed import resolve_strategy
    from minillm.training import TrainConfig

    with pytest.raises(ValueError, match="use strategy='parallel'"):
        TrainConfig(strategy="zero3", tp=2)
    assert resolve_strategy("auto", 4, TrainConfig(tp=2)) == "parallel"
    assert resolve_strategy("auto", 4, TrainConfig()) == "ddp"
    assert resolve_strategy("auto", 1, TrainConfig()) == "single"


def test_splits_the_model_cannot_take_are_refused():
    from minillm.distributed import ParallelDims
    from minillm.distributed.parallelize import check_parallelizable
    from minillm.models import GPTConfig

    with pytest.raises(ValueError, match="n_kv_head=2 != n_head=4"):
        check_parallelizable(GPTConfig(d_model=32, n_head=4, n_kv_head=2),
                             ParallelDims(tp=2, world_size=2))
    with pytest.raises(ValueError, match="n_head=3 is not divisible"):
        check_parallelizable(GPTConfig(d_model=48, n_head=3), ParallelDims(tp=2, world_size=2))


def test_a_meta_model_needs_the_parallel_strategy():
    from minillm.models import GPT, GPTConfig
    from minillm.training import TrainConfig, Trainer

    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=16, context_length=8, d_model=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="meta device"):
        Trainer(model, torch.arange(64) % 16, config=TrainConfig(strategy="single", device="cpu"))


def test_dcp_metadata_is_read_without_running_code(tmp_path):
    from minillm.distributed.dcp import SafeFileSystemReader

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo unpickled > " + str(tmp_path / "ran"),))

    (tmp_path / ".metadata").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(pickle.UnpicklingError, match="refers to posix.system"):
        SafeFileSystemReader(tmp_path).read_metadata()
    assert not (tmp_path / "ran").exists()


# ---- several processes ----------------------------------------------------------------------
def _check(tmp_path, nproc, *args):
    launch([CHECK, "--out", str(tmp_path), *args], nproc, timeout=300, env=ENV)
    return json.loads((tmp_path / "results.json").read_text())


def _assert_follows_one_process(r):
    assert r["init_max_diff"] == 0.0  # the meta build replays GPT(config)'s draws exactly
    for s in r["steps"]:
        assert abs(s["loss"] - s["ref_loss"]) < 1e-5, s
        assert abs(s["grad_norm"] - s["ref_grad_norm"]) < 1e-5, s
    assert 0 < r["final_max_diff"] < 1e-4, r["final_max_diff"]  # (> 0: it ran distributed)


@pytest.mark.distributed
@pytest.mark.slow
def test_dp_shard_by_tp_mesh_builds_on_meta_and_trains_as_one_process(tmp_path):
    r = _check(tmp_path, 4, "--dp-shard", "2", "--tp", "2")
    _assert_follows_one_process(r)
    for mem in r["memory"]:  # no rank held the full weights, even while initialising
        assert mem["local_bytes"] + mem["largest_full_tensor_bytes"] < r["full_bytes"] / 2, mem
        assert mem["local_bytes"] > r["full_bytes"] / 4  # (embeddings and norms are not tp-split)


@pytest.mark.distributed
@pytest.mark.slow
def test_hsdp_on_four_processes_trains_as_one_process(tmp_path):
    r = _check(tmp_path, 4, "--dp-replicate", "2", "--dp-shard", "2", "--mlp", "swiglu",
               "--no-bias", "--no-tie", "--positions", "rope")
    assert r["dims"] == {"pp": 1, "dp_replicate": 2, "dp_shard": 2, "tp": 1}
    _assert_follows_one_process(r)
    for mem in r["memory"]:  # sharded over the 2 ranks of a replica, replicated across replicas
        assert abs(mem["local_bytes"] - r["full_bytes"] / 2) <= 256, mem


# ---- the command line under torchrun: mesh, DCP checkpoints, resharding, consolidate ---------
def _train(out_dir, *extra, batch=4, steps=4):
    return ["-m", "minillm", "train", "--output-dir", str(out_dir), "--d-model", "32",
            "--n-layer", "2", "--n-head", "2", "--context-length", "32", "--batch-size",
            str(batch), "--max-steps", str(steps), "--warmup-steps", "2", "--lr", "3e-3",
            "--eval-steps", "0", "--threads", "1", "--device", "cpu", "--checkpoint-interval",
            "2", "--keep-checkpoints", "5", *extra]


def _run(args, nproc):
    if nproc == 1:
        proc = subprocess.run([sys.executable, *args], env={**os.environ, **ENV},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return
    launch(args, nproc, timeout=300, env=ENV)


def _consolidated(run, step, out):
    _run(["-m", "minillm", "checkpoint", "consolidate",
          str(run / "checkpoints" / f"step_{step:06d}"), "--output-dir", str(out)], 1)
    return load_file(str(out / "model.safetensors"))


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.distributed
@pytest.mark.slow
def test_cli_dp_shard_by_tp_matches_one_process_and_its_export_generates(tmp_path):
    from minillm.generation import generate
    from minillm.models import GPT

    _run(_train(tmp_path / "mesh", "--dp-shard", "2", "--tp", "2"), 4)
    _run(_train(tmp_path / "one", batch=8), 1)  # the same global batch: 2 dp ranks x 4
    sharded = tmp_path / "mesh" / "checkpoints" / "step_000004"
    assert (sharded / "dcp" / ".metadata").is_file() and not (sharded / "model.safetensors").exists()
    mesh = _consolidated(tmp_path / "mesh", 4, tmp_path / "export")
    one = load_file(str(tmp_path / "one" / "checkpoints" / "step_000004" / "model.safetensors"))
    assert _max_diff(mesh, one) < 2e-5  # (measured 1.8e-6)
    model = GPT.from_checkpoint(tmp_path / "export")
    prompt = torch.tensor([[10, 11, 12]])
    assert generate(model, prompt, 5).shape == (1, 8)
    hf = GPT.from_hf_gpt2(model.to_hf_gpt2_state_dict(), n_head=2)  # GPT-2's names and layout
    torch.testing.assert_close(hf(prompt).logits, model(prompt).logits, rtol=0, atol=0)


@pytest.mark.distributed
@pytest.mark.slow
def test_cli_hsdp_over_two_nodes_on_one_machine_matches_one_process(tmp_path):
    """Two "nodes" of two processes each (`torchrun --nnodes=2`, a localhost rendezvous): HSDP
    replicates across the nodes and shards within each, the layout the README gives for several
    nodes, so only the gradient all-reduce crosses between them."""
    from minillm.distributed.launch import free_port

    port = str(free_port())
    run = tmp_path / "nodes"
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={r}",
         "--nproc_per_node=2", "--master-addr=127.0.0.1", f"--master-port={port}",
         *_train(run, "--dp-replicate", "2", "--dp-shard", "2", batch=2)],
        env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]
    _run(_train(tmp_path / "one", batch=8), 1)  # the same global batch: 4 dp ranks x 2
    record = json.loads((run / "checkpoints" / "step_000004" / "trainer.json").read_text())
    assert record["world_size"] == 4
    nodes_weights = _consolidated(run, 4, tmp_path / "export")
    one = load_file(str(tmp_path / "one" / "checkpoints" / "step_000004" / "model.safetensors"))
    assert 0 < _max_diff(nodes_weights, one) < 2e-5  # (> 0: it ran distributed)


@pytest.mark.distributed
@pytest.mark.slow
def test_cli_two_pipeline_stages_match_one_process(tmp_path):
    untied = ("--no-tie-embeddings", "--eval-steps", "2", "--eval-batches", "2")
    _run(_train(tmp_path / "pp", "--pp", "2", "--export-dir", str(tmp_path / "gathered"),
                *untied), 2)  # both stages read the same batch
    _run(_train(tmp_path / "one", *untied), 1)
    pp = _consolidated(tmp_path / "pp", 4, tmp_path / "export")  # the stages' shards, merged
    one = load_file(str(tmp_path / "one" / "checkpoints" / "step_000004" / "model.safetensors"))
    assert _max_diff(pp, one) < 2e-5  # (measured 1.8e-6)
    gathered = load_file(str(tmp_path / "gathered" / "model.safetensors"))  # --export-dir
    assert all(torch.equal(gathered[k], pp[k]) for k in pp)
    history = [json.loads((tmp_path / run / "checkpoints" / "step_000004" / "trainer.json")
                          .read_text()) for run in ("pp", "one")]
    for a, b in zip(history[0]["history"] + history[0]["eval_history"],
                    history[1]["history"] + history[1]["eval_history"], strict=True):
        key = "loss" if "loss" in a else "val_loss"
        assert abs(a[key] - b[key]) < 1e-5, (a, b)


@pytest.mark.distributed
@pytest.mark.slow
def test_cli_tensor_parallel_ranks_read_the_same_shard_windows(tmp_path):
    text = "\n\n".join(f"Paragraph {i}: " + "the quick brown fox jumps. " * (3 + i % 5)
                         for i in range(400))
    (tmp_path / "corpus.txt").write_text(text)
    _run(["-m", "minillm", "data", "prepare", "--input", str(tmp_path / "corpus.txt"),
          "--output-dir", str(tmp_path / "ds"), "--tokenizer", "bytes", "--text-unit",
          "paragraph"], 1)
    data = ("--data", str(tmp_path / "ds"))
    _run(_train(tmp_path / "tp", "--tp", "2", *data, steps=2), 2)  # one replica: both read it
    _run(_train(tmp_path / "one", *data, steps=2), 1)
    losses = [json.loads((tmp_path / run / "checkpoints" / "step_000002" / "trainer.json")
                         .read_text())["history"][-1]["loss"] for run in ("tp", "one")]
    assert abs(losses[0] - losses[1]) < 1e-5, losses


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("dcp2")
    _run(_train(run, "--strategy", "parallel", steps=6), 2)
    return run


def _rewind(run, step):
    """Make `run` look stopped after `step`'s checkpoint (later ones removed, latest.json moved),
    as a killed run would be: the schedule (warm-up, cosine to --max-steps) stays the same."""
    for later in sorted((run / "checkpoints").glob("step_*")):
        if int(later.name.split("_")[1]) > step:
            shutil.rmtree(later)
    (run / "latest.json").write_text(json.dumps({"step": step,
                                                 "path": f"checkpoints/step_{step:06d}"}))


@pytest.mark.distributed
@pytest.mark.slow
def test_dcp_resume_at_the_same_world_size_is_bit_identical(two_process_run, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(two_process_run, part)
    _rewind(part, 2)
    _run(_train(part, "--strategy", "parallel", "--resume", steps=6), 2)
    a = _consolidated(two_process_run, 6, tmp_path / "a")
    b = _consolidated(part, 6, tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.distributed
@pytest.mark.slow
def test_dcp_reshards_from_two_to_four_to_one_process(two_process_run, tmp_path):
    run = tmp_path / "reshard"  # 2 processes to step 2, then 4 to step 4, then 1 to step 6
    shutil.copytree(two_process_run, run)
    _rewind(run, 2)
    _run(_train(run, "--strategy", "parallel", "--resume", batch=2, steps=6), 4)
    assert json.loads((run / "checkpoints" / "step_000004" / "trainer.json").read_text()
                      )["world_size"] == 4
    _rewind(run, 4)
    _run(_train(run, "--strategy", "parallel", "--resume", batch=8, steps=6), 1)
    meta = json.loads((run / "checkpoints" / "step_000006" / "trainer.json").read_text())
    assert meta["world_size"] == 1 and meta["step"] == 6
    resharded = _consolidated(run, 6, tmp_path / "r")
    uninterrupted = _consolidated(two_process_run, 6, tmp_path / "u")
    assert _max_diff(resharded, uninterrupted) < 2e-5  # (measured 2.4e-7)


def test_the_readme_memory_table_is_the_zero_formula():
    import re

    from minillm.distributed.memory import MIXED_PRECISION_ADAM, zero_memory_formula

    text = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| (125M|1\.3B|7B) \| (.+) \|$", text, flags=re.M))
    assert set(rows) == {"125M", "1.3B", "7B"}
    for name, psi in (("125M", 125e6), ("1.3B", 1.3e9), ("7B", 7e9)):
        shown = [float(x) for x in rows[name].split(" | ")]
        assert shown == [round(zero_memory_formula(psi, 8, stage, **MIXED_PRECISION_ADAM)
                               ["total"] / 2**30, 1) for stage in range(4)], name
