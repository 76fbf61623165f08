"""Small helpers every layer may use: device choice, seeding, config dictionaries.

Nothing here holds global state of its own; `seed_everything` sets the seeds of the
libraries it is asked about and returns nothing else. `config_from_dict` is the one policy every
config dataclass follows when read back from JSON: unknown fields are an error that names them.
`field_docs` reads the comment each config field carries, so the command line's help and the
code say the same thing.
"""

from __future__ import annotations

import ast
import inspect
import io
import math
import os
import random
import textwrap
import tokenize
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["check_finite_fields", "choose_device", "config_from_dict", "configure_threads",
           "default_dtype_for", "field_docs", "seed_everything"]

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


def check_finite_fields(config: Any) -> None:
    """Refuse a dataclass whose float fields hold NaN or infinity.

    Every comparison with NaN is false, so `lr <= 0` lets `lr=nan` through; each config calls
    this first in `__post_init__`, before its own range checks.

    Raises:
        ValueError: naming the first such field and its value.
    """
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name}={value} must be a finite number")


def field_docs(cls: type) -> dict[str, str]:
    """What each field of the dataclass `cls` means, in its author's words.

    A field's `metadata["help"]` if it has one, else the comment after it in the class's source,
    joined with the comment lines indented under it that continue it:

        dtype: str = "auto"   # autocast dtype: "auto" = bfloat16 on CUDA, else float32;
                              # "float16" adds dynamic loss scaling      <- continues dtype's

    A comment line at the fields' own indentation starts a new section and belongs to no field.

    Returns:
        {field name: text} for every field ("" where it has neither).
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (e.g. made in a REPL): metadata only
        source = ""
    comments: dict[int, tuple[int, str, bool]] = {}  # line -> (column, text, alone on its line)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            alone = not tok.line[:tok.start[1]].strip()
            comments[tok.start[0]] = (tok.start[1], tok.string.lstrip("#").strip(), alone)
    from_source: dict[str, str] = {}
    body = ast.parse(source).body[0].body if source else []
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        line = node.end_lineno
        if line not in comments or comments[line][2]:
            continue
        parts = [comments[line][1]]
        while line + 1 in comments and comments[line + 1][2] and \
                comments[line + 1][0] > node.col_offset:
            line += 1
            parts.append(comments[line][1])
        from_source[node.target.id] = " ".join(parts)
    return {f.name: f.metadata.get("help") or from_source.get(f.name, "") for f in fields(cls)}
