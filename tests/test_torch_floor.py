"""The torch floor in pyproject.toml is what the code needs: every torch API minillm calls beyond
the long-stable core exists in the installed torch (a missing one fails by name, whatever the
version string says), and the floor is the newest of their first releases.

First releases, from PyTorch's pull requests and release notes (where a row says "<= 2.13" its
first release was not looked up: it only has to exist by the floor):
- `torch.distributed.all_gather_single`: 2.13 (pytorch/pytorch#186130, June 2026, which
  deprecated `all_gather_into_tensor`; huggingface/accelerate#4272 names 2.13 as that release);
- `torch.nn.utils.get_total_norm`: 2.6 (pytorch/pytorch#139662, November 2024);
- the rest (FSDP2 under `torch.distributed.fsdp`, DTensor and its parallel styles, pipelining's
  1F1B with `eval`, DCP's state-dict helpers and `no_dist` loads): <= 2.13.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOOR = (2, 13)  # the newest first release below

# (module, attribute[, keyword arguments it must take], first release or None if not looked up)
APIS = [
    ("torch.distributed", "all_gather_single", (), (2, 13)),          # minillm.distributed.zero
    ("torch.nn.utils", "get_total_norm", (), (2, 6)),                  # strategy (fsdp)
    ("torch.distributed.fsdp", "fully_shard", ("mesh", "mp_policy", "shard_placement_fn",
                                               "reshard_after_forward"), None),
    ("torch.distributed.fsdp", "MixedPrecisionPolicy", ("param_dtype", "reduce_dtype"), None),
    ("torch.distributed.device_mesh", "init_device_mesh", ("mesh_dim_names",), None),
    ("torch.distributed.tensor", "distribute_tensor", ("src_data_rank",), None),
    ("torch.distributed.tensor.placement_types", "_StridedShard", ("split_factor",), None),
    ("torch.distributed.tensor.parallel", "parallelize_module", ("src_data_rank",), None),
    ("torch.distributed.tensor.parallel", "ColwiseParallel", (), None),
    ("torch.distributed.tensor.parallel", "RowwiseParallel", (), None),
    ("torch.distributed.pipelining", "PipelineStage", ("group",), None),
    ("torch.distributed.pipelining", "Schedule1F1B", ("n_microbatches", "loss_fn"), None),
    ("torch.distributed.checkpoint.state_dict", "get_state_dict", (), None),
    ("torch.distributed.checkpoint.state_dict", "set_state_dict", (), None),
    ("torch.distributed.checkpoint", "load", ("no_dist",), None),
    ("torch.distributed.checkpoint", "FileSystemReader", (), None),
]


@pytest.mark.parametrize("module, name, kwargs, first", APIS, ids=lambda v: str(v))
def test_every_torch_api_minillm_calls_exists(module, name, kwargs, first):
    obj = getattr(importlib.import_module(module), name, None)
    assert obj is not None, f"{module}.{name} is missing: the torch floor is {FLOOR}"
    params = inspect.signature(obj).parameters
    for kw in kwargs:
        assert kw in params, f"{module}.{name} takes no {kw}="


def test_methods_minillm_relies_on_exist():
    from torch import nn
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.pipelining import Schedule1F1B
    from torch.distributed.tensor import DTensor

    assert callable(Schedule1F1B.eval)                    # evaluation through the stages
    assert callable(FileSystemReader._get_metadata_path)  # dcp.SafeFileSystemReader
    assert {"shape", "stride"} <= set(inspect.signature(DTensor.from_local).parameters)
    assert callable(nn.Module.compile) and callable(nn.Module.to_empty)


def test_the_floor_is_the_newest_first_release():
    declared = re.search(r'"torch>=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert declared is not None
    assert tuple(map(int, declared.groups())) == FLOOR == max(f for *_, f in APIS if f)
