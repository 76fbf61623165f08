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

__all__ = ["choose_device", "seed_everything", "timer", "default_dtype_for"]


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
