"""minillm.distributed.launch: the rendezvous port is held by the launcher from before the workers
start (no other process can take it meanwhile), and a worker that writes more than a pipe
holds does not block. The failing-rank tests are in test_distributed_strategies.py."""

import pytest

from minillm.distributed.launch import launch

pytestmark = pytest.mark.distributed

WORKER = """
import errno, os, socket, sys
import torch
import torch.distributed as dist

with socket.socket() as s:  # before the process group starts: is the port taken already?
    try:
        s.bind(("127.0.0.1", int(os.environ["MASTER_PORT"])))
        held = False
    except OSError as e:
        held = e.errno == errno.EADDRINUSE
dist.init_process_group("gloo")
x = torch.ones(1)
dist.all_reduce(x)
sys.stderr.write("x" * 200_000)  # three times what a pipe buffers
dist.barrier()
print(held, int(x.item()))
dist.destroy_process_group()
"""


def test_the_port_is_held_before_the_workers_start_and_output_never_blocks():
    outs = launch(["-c", WORKER], 2, timeout=120, env={"OMP_NUM_THREADS": "1"})
    assert outs == ["True 2\n", "True 2\n"]
