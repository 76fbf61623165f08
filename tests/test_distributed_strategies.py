"""DDP, ZeRO 1-3 and FSDP over gloo against independent references (2, 3 and 4 processes).

Each world size launches the workbench (`scripts/distributed/workbench.py`) once (each launch
holds its own rendezvous port, so tests run in parallel): every strategy trains the same tiny
GPT on the same global batches, and "single" trains the whole global batch in one process.
References:
- one process: equal within 1e-4 (ranks average per-rank mean losses; float sums in another
  order differ in the last bits, which Adam's normalised first steps amplify to ~1e-5);
- torch DDP for own DDP, ZeroRedundancyOptimizer for own ZeRO-1, FSDP2 for own ZeRO-3:
  bit-identical where the arithmetic is the same (2 ranks: a + b is exact in any order), else
  within 2e-5 (3-4 ranks: gloo sums the ranks' chunks in an order that depends on the bucket or
  shard layout, and x/3 is inexact; the clipped runs compute the global norm over shards; those
  last-bit gradient differences grow through three Adam steps, whose first updates are
  ~lr * sign(g), as large as the one-process difference).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minillm.distributed.launch import WorkerFailed, launch
from minillm.distributed.memory import FP32_ADAM, zero_memory_formula

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ALL = "single,own_ddp,ddp,torch_zero1,zero1,zero2,zero3,fsdp"
CASES = {  # world size -> what the run also covers
    2: ["--frozen"],                                                  # tied + frozen, even sizes
    3: ["--d-ff", "37", "--accum", "2", "--frozen", "--checkpointing"],  # odd world, no_sync
    4: ["--d-ff", "37", "--untied", "--accum", "2", "--clip", "0.5"],    # padding, clipping
}
WB = [str(Path(__file__).resolve().parents[1] / "scripts" / "distributed" / "workbench.py")]
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", params=sorted(CASES), ids=lambda n: f"{n}proc")
def run(request, tmp_path_factory):
    n = request.param
    out = tmp_path_factory.mktemp(f"wb{n}")
    launch([*WB, "--out", str(out), "--strategies", ALL, *CASES[n]], n, timeout=400, env=ENV)
    results = json.loads((out / "results.json").read_text())
    weights = {k: load_file(str(out / f"weights_{k}.safetensors")) for k in ALL.split(",")}
    return n, results, weights


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("name", ["own_ddp", "ddp", "zero1", "zero2", "zero3", "fsdp"])
def test_every_strategy_follows_one_process_on_the_global_batch(run, name):
    n, _, w = run
    assert _max_diff(w[name], w["single"]) < 1e-4, (n, name)
    assert _max_diff(w[name], w["single"]) > 0 or n == 1  # it really ran distributed


@pytest.mark.parametrize("ours, reference", [("own_ddp", "ddp"), ("zero1", "torch_zero1"),
                                             ("zero3", "fsdp"), ("zero2", "ddp")])
def test_own_engines_equal_torch_engines(run, ours, reference):
    n, _, w = run
    diff = _max_diff(w[ours], w[reference])
    if n == 2 and "--clip" not in CASES[n]:
        assert diff == 0.0, (ours, reference, diff)
    else:
        assert diff < 2e-5, (ours, reference, diff)


@pytest.mark.parametrize("name, stage", [("own_ddp", 0), ("zero1", 1), ("zero2", 2),
                                         ("zero3", 3)])
def test_measured_memory_equals_the_zero_formula_within_the_padding(run, name, stage):
    n, results, _ = run
    r = results[name]
    formula = zero_memory_formula(r["psi"], n, stage, **FP32_ADAM)
    frozen = r["frozen_bytes"]
    for rank, mem in enumerate(r["memory"]):
        slack = {"params": 4 * r["padding"], "grads": 4 * r["padding"],
                 "optimizer": 8 * r["padding"]}
        assert abs(mem["params"] - frozen - formula["params"]) <= slack["params"], (rank, mem)
        assert abs(mem["grads"] - formula["grads"]) <= slack["grads"], (rank, mem)
        assert abs(mem["optimizer"] - formula["optimizer"]) <= slack["optimizer"], (rank, mem)


def test_fsdp_memory_is_stage_three(run):
    n, results, _ = run
    r = results["fsdp"]
    formula = zero_memory_formula(r["psi"], n, 3, **FP32_ADAM)
    for mem in r["memory"]:  # FSDP2 pads each tensor's dim 0 to a multiple of N, and it
        # shards frozen tensors too
        extra = mem["total"] - r["frozen_bytes"] / n - formula["total"]
        assert abs(extra) <= 16 * r["padding"], (mem, formula)


def test_communication_volume_is_two_psi_and_three_psi(run):
    n, results, _ = run
    for name, factor in (("own_ddp", 2), ("zero1", 2), ("zero2", 2), ("zero3", 3), ("fsdp", 3)):
        r = results[name]
        scalars = r["comm_elements"].get("all_reduce", 0) if name != "own_ddp" else 0
        moved = r["comm_total"] - scalars  # (the global gradient norm's one-number all-reduce)
        padded = r["psi"] + r["padding"]
        if name == "fsdp":  # FSDP2 also shards, and so gathers twice, the frozen tensors
            padded += 2 * r["frozen_bytes"] // 4 // factor + 1
        assert factor * r["psi"] <= moved <= factor * padded, (name, moved, r["psi"])


def test_activation_checkpointing_matches_and_saves_memory():
    from minillm.models import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = dict(vocab_size=50, context_length=64, d_model=32, n_layer=4, n_head=2)
    plain, ckpt = GPT(GPTConfig(**cfg)), GPT(GPTConfig(**cfg, activation_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randint(0, 50, (4, 64))
    saved = {}
    for name, model in (("plain", plain), ("ckpt", ckpt)):
        total = [0]

        def pack(t, total=total):
            total[0] += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(x, x).loss
        loss.backward()
        saved[name] = total[0]
    for p, q in zip(plain.parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    assert saved["ckpt"] < 0.5 * saved["plain"], saved


@pytest.mark.parametrize("mode, what", [("raise", "exited with status 1"),
                                        ("kill", "was killed by SIGKILL")])
def test_a_failing_rank_ends_every_rank_and_is_named(tmp_path, mode, what):
    start = time.monotonic()
    with pytest.raises(WorkerFailed) as info:
        launch([*WB, "--out", str(tmp_path), "--strategies", "zero2", "--steps", "4",
                "--fail-rank", "1", "--fail-step", "2", "--fail-mode", mode], 3,
               timeout=120, grace=15, env=ENV)
    assert time.monotonic() - start < 120
    assert info.value.rank == 1
    assert f"rank 1 {what}" in str(info.value)
    if mode == "raise":
        assert "injected failure on rank 1" in info.value.stderr


# ---- the Trainer under torchrun: sharded checkpoints, resume, two nodes --------------------
def _train(out_dir, *extra):
    return ["-m", "minillm", "train", "--output-dir", str(out_dir), "--d-model", "32", "--n-layer",
            "2", "--n-head", "2", "--context-length", "32", "--batch-size", "4",
            "--grad-accum-steps", "2", "--max-steps", "4", "--warmup-steps", "2", "--lr", "3e-3",
            "--eval-steps", "0", "--threads", "1", "--device", "cpu",
            "--checkpoint-interval", "2", "--keep-checkpoints", "3", *extra]


def _torchrun(*args, nproc=2, extra=()):
    cmd = [sys.executable, "-m", "torch.distributed.run", *extra]
    if not extra:
        cmd += ["--standalone"]
    cmd += [f"--nproc_per_node={nproc}", *args]
    return subprocess.Popen(cmd, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _ok(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def _weights(out_dir, step):
    return load_file(str(out_dir / "checkpoints" / f"step_{step:06d}" / "model.safetensors"))


@pytest.mark.parametrize("strategy", ["zero3", "fsdp"])
def test_sharded_checkpoint_resumes_bit_identical_and_generates(tmp_path, strategy):
    import shutil

    from minillm.generation import generate
    from minillm.models import GPT

    full = tmp_path / "full"  # --final-eval: rank 0 evaluates the gathered weights, no hang
    _ok(_torchrun(*_train(full, "--strategy", strategy, "--final-eval")))
    assert json.loads((full / "summary.json").read_text())["val_nats_per_byte"] > 0
    part = tmp_path / "part"  # the same run, stopped after step 2's checkpoint
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "step_000004")
    (part / "latest.json").write_text(json.dumps({"step": 2, "path": "checkpoints/step_000002"}))
    _ok(_torchrun(*_train(part, "--strategy", strategy, "--resume")))
    a, b = _weights(full, 4), _weights(part, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = GPT.from_checkpoint(full / "checkpoints" / "step_000004")  # one process
    out = generate(model, torch.tensor([[10, 11, 12]]), 5)
    assert out.shape == (1, 8)
    # another world size is refused, clearly
    proc = subprocess.run([sys.executable, *_train(part, "--strategy", "single", "--resume",
                                                     "--max-steps", "6")],
                          env={**os.environ, **ENV}, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "was written by 2 processes but this run has 1" in proc.stderr


def test_two_nodes_on_one_machine_match_one_node(tmp_path):
    from minillm.distributed.launch import free_port

    one = tmp_path / "one"
    single_node = _torchrun(*_train(one, "--strategy", "zero2"))
    _ok(single_node)
    two = tmp_path / "two"
    port = str(free_port())
    nodes = [_torchrun(*_train(two, "--strategy", "zero2"), nproc=1, extra=(
        "--nnodes=2", f"--node-rank={r}", "--master-addr=127.0.0.1", f"--master-port={port}"))
        for r in (0, 1)]
    for node in nodes:
        _ok(node)
    a, b = _weights(one, 4), _weights(two, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((two / "checkpoints" / "step_000004" / "trainer.json").read_text()
                      )["world_size"] == 2
