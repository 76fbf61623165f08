"""Multi-process training: process groups (`env`) and the ways to wrap a model (`strategy`).

`init_from_env` reads torchrun's RANK / LOCAL_RANK / WORLD_SIZE and starts the process group;
a `Strategy` wraps the model for the Trainer (compile, DistributedDataParallel), builds its
optimizer, and says how to clip gradients and gather the weights for a checkpoint. Built in
(`strategy`): "single", "ddp", the written-out bucketed DDP ("own_ddp", `ddp`), ZeRO stages 1-3
over flat shards ("zero1/2/3", `zero`), torch's FSDP2 ("fsdp", `fsdp`) and the composed path
("parallel"): `mesh` lays the processes out as a named `DeviceMesh` (`ParallelDims`),
`parallelize` applies tensor parallel and FSDP2/HSDP to a GPT built on the meta device, and
`dcp` saves and loads its shards with torch.distributed.checkpoint. `memory`
measures per-rank bytes and communication beside the ZeRO paper's formulas, `launch` starts
worker processes and ends them all when one fails, `expert_parallel` spreads a mixture of
experts over ranks, `tensor_parallel` splits each block's matrices over ranks (Megatron-LM), and
`pipeline` splits the blocks into stages fed by micro-batches (GPipe, 1F1B).

The experiments that run these side by side (the tests, chapter 10 and the benchmark launch
them) are scripts, not library code: `scripts/distributed/workbench.py` (the data-parallel
strategies) and `scripts/distributed/parallel_bench.py` (tensor and pipeline parallelism beside
one process).
"""

from minillm.distributed.env import DistInfo, all_reduce_mean, init_from_env, shutdown
from minillm.distributed.mesh import ParallelDims
from minillm.distributed.strategy import (
    DDPStrategy,
    Strategy,
    get_strategy,
    register_strategy,
    resolve_strategy,
    strategy_class,
    strategy_names,
)

__all__ = ["DDPStrategy", "DistInfo", "ParallelDims", "Strategy", "all_reduce_mean",
           "get_strategy", "init_from_env", "register_strategy", "resolve_strategy", "shutdown",
           "strategy_class", "strategy_names"]
