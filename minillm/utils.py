"""Small helpers every layer may use: device choice, seeding, config dictionaries.

Nothing here holds global state of its own; `seed_everything` sets the seeds of the
libraries it is asked about and returns nothing else. `config_from_dict` is the one policy every
config dataclass follows when read back from JSON: unknown fields are an error that names them.
"""

from __future__ import annotations

import random
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["choose_device", "config_from_dict", "default_dtype_for", "seed_everything"]

T = TypeVar("T")


def choose_device(device: str | torch.device = "auto") -> torch.device:
    """Return a `torch.device`: "auto" picks cuda > mps > cpu; anything else is checked.

    Args:
        device: "auto", a device string ("cpu", "cuda:1", ...) or a `torch.device`.

    Returns:
        The device.

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
    """The autocast dtype for `device`: bfloat16 where the hardware does it well (CUDA with
    bf16), else float32.

    Args:
        device: where the model runs.

    Returns:
        torch.bfloat16 or torch.float32.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def seed_everything(seed: int, libraries: tuple[str, ...] = ("python", "numpy", "torch")) -> None:
    """Seed the global generators of `libraries`: Python's `random`, NumPy's legacy global
    generator, torch's (CPU and every CUDA device). The one seeding helper of the package.

    Args:
        seed: any integer (NumPy gets it modulo 2**32).
        libraries: which to seed; the Trainer seeds only "torch" (dropout), so that training
            leaves a notebook's NumPy and Python streams alone.

    Raises:
        ValueError: an unknown library name.
    """
    unknown = set(libraries) - {"python", "numpy", "torch"}
    if unknown:
        raise ValueError(f"libraries={libraries!r}: unknown {sorted(unknown)}; choose among "
                         "'python', 'numpy', 'torch'")
    if "python" in libraries:
        random.seed(seed)
    if "numpy" in libraries:
        np.random.seed(seed % 2**32)
    if "torch" in libraries:
        torch.manual_seed(seed)


def config_from_dict(cls: type[T], d: Any, what: str = "config") -> T:
    """Build the dataclass `cls` from a dict of its fields (e.g. a config.json).

    Args:
        cls: a dataclass whose `__post_init__` validates the values.
        d: the fields; every key must be a field of `cls` (missing ones take their defaults).
        what: how the error messages name the dict.

    Returns:
        `cls(**d)`.

    Raises:
        ValueError: `d` is not a dict, or names fields `cls` does not have (listed, with the
            known ones).
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(d, dict):
        raise ValueError(f"a {what} must be a JSON object of fields, got {type(d).__name__}: "
                         f"is this file a minillm {cls.__name__}?")
    known = {f.name for f in fields(cls) if f.init}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{what} has unknown fields {sorted(unknown)} for {cls.__name__}; "
                         f"known: {sorted(known)}")
    return cls(**d)
