"""Expert parallelism over 2 and 4 gloo processes equals the single-process MoE layer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minillm.distributed.expert_parallel import check_expert_parallel

CHECK = Path(__file__).resolve().parents[1] / "scripts/distributed/expert_parallel_check.py"


def _launch(tmp_path, nproc, *args):
    out = tmp_path / f"check{nproc}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
         str(CHECK), "--check", str(out), *args],
        env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("nproc,args", [
    (2, ["--n-expert", "4", "--top-k", "2", "--capacity-factor", "1.0", "--n-shared-expert", "1"]),
    (4, ["--n-expert", "8", "--top-k", "1", "--mlp", "gelu", "--seq", "12"]),
])
def test_expert_parallel_outputs_and_gradients_equal_one_process(tmp_path, nproc, args):
    results = _launch(tmp_path, nproc, *args)
    assert [r["rank"] for r in results] == list(range(nproc))
    for r in results:
        assert r["world_size"] == nproc
        assert r["out_diff"] <= 1e-5 and r["aux_diff"] <= 1e-6 and r["grad_diff"] <= 1e-5, r
        assert sum(r["sent_to"]) > 0
        assert r["forward_stored"] == []  # the splits come back in the routing, not on the module
    # tokens really travelled: some rank sent rows to another rank, unevenly
    sent = [r["sent_to"] for r in results]
    assert any(s[j] > 0 for i, s in enumerate(sent) for j in range(nproc) if j != i)
    assert len({tuple(s) for s in sent}) > 1
    # what rank i sent to rank j is what rank j received from rank i
    for i in range(nproc):
        for j in range(nproc):
            assert results[i]["sent_to"][j] == results[j]["received_from"][i]
    if "--capacity-factor" in args:
        assert any(r["dropped"] > 0 for r in results)


def test_n_expert_not_divisible_by_world_size_is_a_clear_error():
    assert check_expert_parallel(8, 4) == 2
    with pytest.raises(ValueError, match="n_expert=6 is not divisible by world_size=4.*multiple of 4"):
        check_expert_parallel(6, 4)


@pytest.mark.distributed
@pytest.mark.slow
def test_check_and_bench_in_one_launch(tmp_path):
    bench = tmp_path / "bench.json"
    results = _launch(tmp_path, 2, "--bench", str(bench), "--steps", "2", "--seq", "8")
    assert all(r["out_diff"] <= 1e-5 for r in results)
    timed = json.loads(bench.read_text())
    assert [r["rank"] for r in timed] == [0, 1]
    assert all(0 < r["all_to_all_ms"] < r["step_ms"] for r in timed)
