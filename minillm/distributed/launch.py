"""Start N local worker processes for torch.distributed, and end them all if one fails.

`torchrun` is the launcher for real runs. This small one is for the course, the tests and the
benchmark: it picks a free port per launch (so launches can run in parallel), sets RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, and watches the workers. When one exits
with an error or is killed, the others (which would wait in their next collective) are ended
within `grace` seconds and `WorkerFailed` names the rank that failed first, with its stderr.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

__all__ = ["free_port", "launch", "WorkerFailed"]


class WorkerFailed(RuntimeError):
    """A worker process failed; `rank` is the first one seen failing."""

    def __init__(self, rank: int, returncode: int | None, stderr: str, message: str):
        super().__init__(message)
        self.rank, self.returncode, self.stderr = rank, returncode, stderr


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def launch(args: Sequence[str], nproc: int, timeout: float = 300.0, grace: float = 10.0,
           env: dict[str, str] | None = None) -> list[str]:
    """Run `python *args` as `nproc` ranks of one process group on this machine.

    Args:
        args: arguments after the interpreter, e.g. ["-m", "minillm.distributed.workbench", ...].
        nproc: number of processes (the world size).
        timeout: seconds the whole run may take before every rank is killed.
        grace: seconds the other ranks get to exit after one failed, before they are killed.
        env: extra environment variables.

    Returns:
        Each rank's stdout.

    Raises:
        WorkerFailed: a rank failed (or the run timed out); the message names the rank.
    """
    if nproc < 1:
        raise ValueError(f"nproc={nproc} must be >= 1")
    port = free_port()
    procs = []
    for rank in range(nproc):
        e = {**os.environ, **(env or {}), "RANK": str(rank), "LOCAL_RANK": str(rank),
             "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, *args], env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    start = time.monotonic()
    failed: tuple[int, int | None, str] | None = None
    while True:
        codes = [p.poll() for p in procs]
        bad = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if bad and failed is None:
            r = bad[0]
            failed = (r, codes[r], f"rank {r} {_describe(codes[r])}")
            deadline = time.monotonic() + grace
        if all(c is not None for c in codes):
            break
        if failed is not None and time.monotonic() > deadline:
            break
        if time.monotonic() - start > timeout:
            alive = [r for r, c in enumerate(codes) if c is None]
            failed = failed or (alive[0], None, f"timed out after {timeout:.0f} s with ranks "
                                                 f"{alive} still running")
            break
        time.sleep(0.05)
    for p in procs:  # whatever is left gets killed
        if p.poll() is None:
            p.kill()
    outs = [p.communicate() for p in procs]
    if failed is not None:
        rank, code, what = failed
        err = outs[rank][1][-3000:]
        raise WorkerFailed(rank, code, err, f"{what}; every rank ended. Its stderr:\n{err}")
    return [o for o, _ in outs]
