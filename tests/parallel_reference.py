"""What the tensor- and pipeline-parallel tests share: one launch of
`scripts/distributed/parallel_bench.py` per world size, and a comparison of its saved tensors.

    from parallel_reference import assert_tensors_close, run_parallel_bench
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from minillm.distributed.launch import launch

RUNNER = Path(__file__).resolve().parents[1] / "scripts" / "distributed" / "parallel_bench.py"


def run_parallel_bench(tmp_path_factory, tag: str, nproc: int, args: list[str]
                       ) -> tuple[int, Path, dict]:
    """Launch the runner on `nproc` gloo processes (one thread each) into a fresh folder.

    Returns:
        (nproc, the folder, its results.json).
    """
    out = tmp_path_factory.mktemp(f"{tag}{nproc}")
    launch([str(RUNNER), "--out", str(out), *args], nproc, timeout=300,
           env={"OMP_NUM_THREADS": "1"})
    return nproc, out, json.loads((out / "results.json").read_text())


def assert_tensors_close(a: dict, b: dict, prefix: str, atol: float) -> None:
    """The same names under `prefix` ("grad.", "weight.") in both, equal within `atol`."""
    keys = sorted(k for k in a if k.startswith(prefix))
    assert keys and keys == sorted(k for k in b if k.startswith(prefix))
    for k in keys:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)
