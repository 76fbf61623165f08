"""The composed training path on CUDA: NCCL, FSDP2's bf16 `MixedPrecisionPolicy`, blocks
compiled one by one, DCP checkpoints written from the GPU, and the consolidated export.

Skipped without a CUDA device (this repository's CI has none): `benchmarks/gpu_suite/run.sh`
runs this file on a lent GPU. The gloo twins of these tests are in tests/test_parallelize.py;
what differs on CUDA is the precision (the parallel strategy gathers parameters in bf16 there
and reduces gradients in fp32) and the backend, so the reference is a float32 run of one
process and the tolerance is bf16's:
- 12 AdamW steps on one batch per step: every step's loss within 0.05 nats of the float32 run
  (bf16 keeps 8 bits of mantissa: about 3 significant digits in the logits), and not equal to
  it (the bf16 policy was applied);
- the exported model generates on the GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ROOT = Path(__file__).resolve().parents[1]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _train(out_dir: Path, *extra: str, batch: int = 8) -> list[str]:
    return ["-m", "minillm", "train", "--output-dir", str(out_dir), "--d-model", "128",
            "--n-layer", "2", "--n-head", "4", "--context-length", "64", "--batch-size",
            str(batch), "--max-steps", "12", "--warmup-steps", "2", "--lr", "1e-3",
            "--eval-steps", "0", "--log-steps", "1", "--device", "cuda", "--checkpoint-interval", "12",
            *extra]


def _run(args: list[str], nproc: int = 1) -> None:
    cmd = [sys.executable, *args] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", *args]
    proc = subprocess.run(cmd, env={**os.environ, **ENV}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _losses(run: Path) -> list[float]:
    record = json.loads((run / "checkpoints" / "step_000012" / "trainer.json").read_text())
    return [h["loss"] for h in record["history"]]


@pytest.mark.parametrize("compile_blocks", [False, True], ids=["eager", "compiled"])
def test_fsdp2_in_bf16_over_nccl_follows_a_float32_run(tmp_path, compile_blocks):
    nproc = min(2, torch.cuda.device_count())
    extra = ["--dp-shard", str(nproc)] + (["--compile"] if compile_blocks else [])
    _run(_train(tmp_path / "mesh", *extra, batch=8 // nproc), nproc)
    _run(_train(tmp_path / "one"), 1)
    mesh, one = _losses(tmp_path / "mesh"), _losses(tmp_path / "one")
    assert len(mesh) == len(one) > 0
    assert max(abs(a - b) for a, b in zip(mesh, one, strict=True)) < 0.05, (mesh, one)
    assert mesh != one  # bf16 parameters in the forward: not the float32 numbers

    from minillm.generation import generate
    from minillm.models import GPT

    _run(["-m", "minillm", "checkpoint", "consolidate",
          str(tmp_path / "mesh" / "checkpoints" / "step_000012"), "--output-dir",
          str(tmp_path / "export")])
    model = GPT.from_checkpoint(tmp_path / "export").cuda()
    out = generate(model, torch.tensor([[10, 11, 12]], device="cuda"), 8)
    assert out.shape == (1, 11)


def test_moe_grouped_dispatch_on_cuda_matches_the_loop_and_compiles():
    """bf16 on CUDA takes the grouped path (no host sync); it agrees with the per-expert loop
    at bf16's tolerance and compiles as one graph."""
    from minillm.models.moe import MoE, grouped_mm_available

    if not grouped_mm_available():
        pytest.skip("this PyTorch has no grouped_mm")
    torch.manual_seed(0)
    moe = MoE(64, 8, 128, top_k=2).cuda().to(torch.bfloat16)
    x = torch.randn(4, 32, 64, device="cuda", dtype=torch.bfloat16)
    assert moe.dispatch_impl(x) == "grouped"
    grouped = moe(x).hidden
    moe.impl = "loop"
    torch.testing.assert_close(grouped, moe(x).hidden, atol=2e-2, rtol=2e-2)
    moe.impl = None
    compiled = torch.compile(moe, fullgraph=True)
    torch.testing.assert_close(compiled(x).hidden, grouped, atol=2e-2, rtol=2e-2)
