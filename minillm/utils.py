"""Small helpers every layer may use: device choice, seeding, timing.

Nothing here holds global state of its own; `seed_everything` sets the seeds of the
libraries it is asked about and returns nothing else.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["choose_device", "configure_threads", "seed_everything", "timer", "default_dtype_for"]


def choose_device(device: str | torch.device = "auto") -> torch.device:
    """Return a `torch.device`: "auto" picks cuda > mps > cpu; anything else is checked.

    Raises:
        ValueError: the device named is not available here.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for CUDA, but no CUDA GPU is visible; "
                         "use device='auto' or 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} asked for MPS, which is not available; use 'cpu'")
    return dev


def default_dtype_for(device: torch.device) -> torch.dtype:
    """bfloat16 autocast where the hardware does it well (CUDA with bf16), else float32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


@contextmanager
def timer() -> Iterator[dict]:
    """`with timer() as t: ...` then `t["seconds"]` holds the wall time (CUDA synchronised)."""
    out: dict = {}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        yield out
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out["seconds"] = time.perf_counter() - start


THREADS_ENV = "MINILLM_NUM_THREADS"


def configure_threads(requested: int | None = None) -> int:
    """Set torch's CPU thread count and return it.

    The environment variable MINILLM_NUM_THREADS, when set, wins over `requested`: that is how
    the test suite re-runs every chapter with another thread count than the stored outputs were
    made with, so that a checked number that depends on the reduction order fails here first
    rather than on someone else's machine. Without either, torch's default is kept.

    Args:
        requested: the thread count a chapter or script asks for (None or 0: torch's default).

    Returns:
        The number of threads torch now uses.
    """
    override = os.environ.get(THREADS_ENV, "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            raise ValueError(f"{THREADS_ENV}={override!r} must be a positive whole number")
        requested = int(override)
    if requested:
        torch.set_num_threads(int(requested))
    return torch.get_num_threads()
