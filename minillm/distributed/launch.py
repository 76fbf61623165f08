"""Start N local worker processes for torch.distributed, and end them all if one fails.

`torchrun` is the launcher for real runs. This small one is for the course, the tests and the
benchmark: it sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, and watches the
workers. When one exits with an error or is killed, the others (which would wait in their next
collective) are ended within `grace` seconds and `WorkerFailed` names the rank that failed
first, with its stderr.

The rendezvous store is the launcher's, as under torchrun: it listens on a port the kernel
assigns (port 0) and holds it for the whole run, and the workers, told so by
TORCHELASTIC_USE_AGENT_STORE, all connect to it as clients. Passing rank 0 a port that was free
a moment ago instead is a race: until rank 0 binds it (seconds later, after importing torch, on
a loaded machine), any other process can take that port, and the launch then fails with
EADDRINUSE or meets another launch's store. Launches therefore run side by side safely. The
workers' stdout and stderr are read while they run, so a chatty worker never blocks on a full
pipe.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["free_port", "launch", "run_rank", "WorkerFailed"]


class WorkerFailed(RuntimeError):
    """A worker process failed; `rank` is the first one seen failing."""

    def __init__(self, rank: int, returncode: int | None, stderr: str, message: str):
        super().__init__(message)
        self.rank, self.returncode, self.stderr = rank, returncode, stderr


def run_rank(main) -> None:
    """Run a worker's `main()`; if it raises, print the traceback and exit with status 1 at once.

    A plain `raise` would reach interpreter teardown while a process group's background threads
    (gloo's work threads) are still alive, and C++ then aborts the process (SIGABRT, "terminate
    called without an active exception"): the launcher would report a signal instead of the
    exception. `os._exit` skips that teardown; stdout and stderr are flushed first.
    """
    try:
        main()
    except SystemExit as e:
        if e.code in (None, 0):
            raise
        if not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(e.code if isinstance(e.code, int) else 1)
    except BaseException:  # noqa: BLE001 - every failure ends the rank the same way
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago: for a server started at once and
    told to bind it. Any other process may take it meanwhile; `launch` does not rely on it."""
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
        args: arguments after the interpreter: a script and its options, e.g.
            ["scripts/distributed/workbench.py", "--out", "run"], or ["-m", module, ...].
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
    from torch.distributed import TCPStore

    # the rendezvous store, on a port the kernel picks and that stays ours until the run ends
    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    procs = []
    for rank in range(nproc):
        e = {**os.environ, **(env or {}), "RANK": str(rank), "LOCAL_RANK": str(rank),
             "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port),
             "TORCHELASTIC_USE_AGENT_STORE": "True"}
        procs.append(subprocess.Popen([sys.executable, *args], env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    # each rank's output and exit time, taken by a thread blocked in communicate(): when one rank
    # fails, the others fail a few milliseconds later (their collectives lose a peer), and the
    # first to end is the one to name
    ended: dict[int, float] = {}
    outs: list[tuple[str, str]] = [("", "")] * nproc
    watchers = []

    def watch(rank: int, proc: subprocess.Popen) -> None:
        outs[rank] = proc.communicate()
        ended[rank] = time.monotonic()

    for rank, proc in enumerate(procs):
        watchers.append(threading.Thread(target=watch, args=(rank, proc), daemon=True))
        watchers[-1].start()
    start = time.monotonic()
    failed: tuple[int, int | None, str] | None = None
    while True:
        done = dict(ended)
        bad = sorted((t, r) for r, t in done.items() if procs[r].returncode != 0)
        if bad and failed is None:
            r = bad[0][1]
            failed = (r, procs[r].returncode, f"rank {r} {_describe(procs[r].returncode)}")
            deadline = time.monotonic() + grace
        if len(done) == nproc:
            break
        if failed is not None and time.monotonic() > deadline:
            break
        if time.monotonic() - start > timeout:
            alive = [r for r in range(nproc) if r not in done]
            failed = failed or (alive[0], None, f"timed out after {timeout:.0f} s with ranks "
                                                 f"{alive} still running")
            break
        time.sleep(0.05)
    for p in procs:  # whatever is left gets killed
        if p.poll() is None:
            p.kill()
    for w in watchers:
        w.join()
    del store
    if failed is not None:
        rank, code, what = failed
        err = outs[rank][1][-3000:]
        raise WorkerFailed(rank, code, err, f"{what}; every rank ended. Its stderr:\n{err}")
    return [o for o, _ in outs]
