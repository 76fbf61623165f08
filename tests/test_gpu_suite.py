"""The GPU suite's dry run: every step of benchmarks/gpu_suite/run.sh on the CPU with tiny
shapes, so that a typo or a stale call fails here and not on the first lent GPU. (The dry run
found two such: benchmarks/moe.py compared an MLPOutput with a tensor, and
benchmarks/quantization.py asked for 128-wide groups of the d=192 course model.)"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None
    or importlib.util.find_spec("triton") is None,
    reason="needs bash, coreutils' timeout and triton (flash_triton runs through its interpreter)")


def test_dry_run_runs_every_step_and_writes_the_report(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)  # the suite sets it for the step that needs it
    proc = subprocess.run(["bash", "benchmarks/gpu_suite/run.sh", "--dry-run"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in summary] == [
        "environment", "cuda_tests", "flash_attention", "train_step", "moe", "quantization"]
    assert all(" rc=0 " in line for line in summary), summary
    rows = json.loads((tmp_path / "flash_attention.json").read_text())
    # every backend the GPU table has, both head dims, causal and not: fwd and fwd+bwd timed
    assert {r["backend"] for r in rows} == {"naive", "sdpa", "flash_torch", "flash_triton"}
    assert {(r["d"], r["causal"]) for r in rows} == {(16, True), (16, False), (32, True),
                                                     (32, False)}
    assert all(r["fwd_ms"] > 0 and r["ms"] > 0 for r in rows)
    assert "tiny GPT, bf16, compiled" in (tmp_path / "train_step.txt").read_text()
    moe = (tmp_path / "moe.txt").read_text()
    assert "grouped dispatch" in moe and "loop dispatch" in moe
    assert "gptq4" in (tmp_path / "quantization.txt").read_text()
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("<!-- gpu-suite:begin -->") and "| flash_triton |" in report
    # a dry run never touches the docs
    assert "DRY RUN" not in (ROOT / "docs/benchmarks.md").read_text()


def test_report_replaces_the_marked_section_of_the_docs(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks/gpu_suite"))
    try:
        import report
    finally:
        sys.path.pop(0)
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"before\n{report.BEGIN}\nold\n{report.END}\nafter\n")
    report.write_docs(f"{report.BEGIN}\nnew\n{report.END}\n", docs)
    assert docs.read_text() == f"before\n{report.BEGIN}\nnew\n{report.END}\nafter\n"
    assert report.BEGIN in (ROOT / "docs/benchmarks.md").read_text()
