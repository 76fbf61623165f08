"""Safe files: atomic writes, and reading model folders with clear errors.

A checkpoint is a folder: `config.json` + `model.safetensors` (+ more, see
`minillm.training.checkpoint`). Every file is written to a temporary name in the same folder,
flushed to disk and renamed over the target (`os.replace` is atomic on POSIX and Windows), so a
run killed mid-write leaves either the old file or the new one, never half of one. A whole
folder is written beside its target and renamed into place the same way.
Nothing is ever unpickled: tensors travel as safetensors, or through
`torch.load(weights_only=True)`, which only rebuilds tensors and plain containers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = [
    "CheckpointError", "atomic_write_bytes", "atomic_write_json", "atomic_folder",
    "check_writable", "json_safe", "save_tensors", "load_tensors", "read_json",
    "restore_interrupted_replace", "torch_save_atomic", "torch_load_safe",
]


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing a file or holds a corrupt one."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write(Path(path), lambda p: p.write_bytes(data))


def json_safe(obj):
    """`obj` with every NaN or infinite float replaced by None (JSON's null).

    `json.dumps` writes them as bare `NaN` / `Infinity`, which is not JSON: other readers
    (jq, browsers, strict parsers) refuse the whole file.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj) -> None:
    """Write `obj` as JSON atomically; non-finite floats become null (see `json_safe`)."""
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Write a safetensors file atomically (tensors made contiguous, on the CPU)."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic_write(Path(path), lambda p: save_file(cpu, str(p), metadata=metadata))


def torch_save_atomic(path: str | Path, obj) -> None:
    """`torch.save` of tensors and plain containers (loadable with weights_only=True)."""
    _atomic_write(Path(path), lambda p: torch.save(obj, p))


@contextmanager
def atomic_folder(path: str | Path, tmp: str | Path | None = None) -> Iterator[Path]:
    """Write a folder's files into a temporary sibling; on success swap it into `path`.

    If the body raises, the temporary folder is removed and whatever was at `path` stays.

    Args:
        path: the folder to write.
        tmp: an existing temporary sibling to finish (other processes wrote into it first, as
            a sharded checkpoint's ranks do); default a fresh `.NAME.*.tmp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    tmp = Path(tmp)
    try:
        yield tmp
        _fsync_dir(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def restore_interrupted_replace(path: str | Path) -> bool:
    """Finish what a replacing `atomic_folder` was killed in the middle of: if `path` is gone
    but its previous version `.{name}.old` is there, put that back. Returns True if it did."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if path.exists() or not old.is_dir():
        return False
    os.replace(old, path)
    return True


def check_writable(folder: str | Path, what: str = "the folder") -> Path:
    """Create `folder` (and its parents) and write and remove a probe file in it, so that a run
    finds a bad output path before it trains, not at its first save.

    Raises:
        CheckpointError: the folder cannot be created or written; names it and the OS's reason.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{what} {folder} is a file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CheckpointError(f"{what} {folder} cannot be created or written "
                              f"({e.strerror or e}); choose a writable folder") from e
    return folder


def _require(path: Path, what: str, folder: str = "checkpoint folder") -> Path:
    if not path.parent.is_dir():
        raise CheckpointError(f"{folder} {path.parent} does not exist; check the path")
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a {folder} needs {what}")
    return path


def read_json(path: str | Path, what: str = "this file", folder: str = "checkpoint folder"
              ) -> dict:
    """A JSON file of a folder; `folder` is what the messages call that folder."""
    path = _require(Path(path), what, folder)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {e}); "
                              "restore it or re-save the checkpoint") from e


def load_tensors(path: str | Path, what: str = "the model weights") -> dict[str, torch.Tensor]:
    path = _require(Path(path), what)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({e}); "
                              "restore it or re-save the checkpoint") from e


def torch_load_safe(path: str | Path, what: str = "this state") -> dict:
    path = _require(Path(path), what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated zip
        if type(e).__name__ == "UnpicklingError" and "Weights only load failed" in str(e):
            # torch's restricted unpickler met an object it will not build; its advice (turn
            # weights_only off) is exactly what must not be done with a file one did not write
            raise CheckpointError(f"{path} refused: not a weights-only file (it holds pickled "
                                  "objects, which could run code); minillm never unpickles. "
                                  "Use a checkpoint minillm wrote") from None
        raise CheckpointError(f"{path} is corrupt or truncated ({e}); "
                              "restore it or re-save the checkpoint") from e
