"""Multi-process training: process groups (`env`) and the ways to wrap a model (`strategy`).

`init_from_env` reads torchrun's RANK / LOCAL_RANK / WORLD_SIZE and starts the process group;
a `Strategy` wraps the model for the Trainer (compile, DistributedDataParallel), builds its
optimizer, and says how to clip gradients and gather the weights for a checkpoint. Built in:
"single" and "ddp"; later strategies (ZeRO, FSDP) register themselves with
`register_strategy`.
"""

from minillm.distributed.env import DistInfo, all_reduce_mean, init_from_env, shutdown
from minillm.distributed.strategy import (
    DDPStrategy,
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
)

__all__ = ["DDPStrategy", "DistInfo", "Strategy", "all_reduce_mean", "get_strategy",
           "init_from_env", "register_strategy", "shutdown", "strategy_names"]
