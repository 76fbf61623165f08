"""Sharded checkpoints: each rank writes its own shards through torch.distributed.checkpoint (DCP).

A gathered checkpoint (what the teaching strategies write) needs the full model and Adam state
on rank 0: ~16 bytes per parameter, 112 GB for 7B. DCP instead has every rank write the shards
it holds, in parallel, plus one `.metadata` file that records, for every tensor by its
one-process name ("blocks.0.attn.qkv.weight"), which slice of the global tensor each file
holds. Loading is planned the other way: each rank asks for the slices *its* DTensors need
now, whatever mesh wrote them, so a run saved on 2 processes resumes on 4 or on 1 (resharding):

    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(...)}
    dcp.save(state, checkpoint_id=folder)          # collective: every rank writes its shards
    dcp.load(state, checkpoint_id=folder)          # collective: fills this run's shards in place

(`get_state_dict` / `set_state_dict` from `torch.distributed.checkpoint.state_dict` name every
parameter and its Adam moments by the one-process name, which is what makes the layouts of two
runs comparable.)

A fused qkv weight (3 C, d_model) is stored as its (3, C, d_model) view (`qkv_pieces`): tensor
parallelism shards each of q, k, v (a strided shard, which DCP cannot describe); in the view it
is a plain box. `minillm checkpoint consolidate` turns the shards back into model.safetensors.

Departures, to keep minillm's rule that nothing it loads is unpickled:
- only tensors go into DCP: the optimizer's per-parameter state ("step", "exp_avg",
  "exp_avg_sq"); its hyperparameters are the resuming run's config (as for every strategy);
  DCP would pickle other objects and load them with `torch.load(weights_only=False)`;
- DCP's `.metadata` is a pickle of DCP's own dataclasses: `SafeFileSystemReader` unpickles it
  with an allow-list of those classes (and torch's dtypes, layouts and Size, paths), so a crafted file cannot run
  code (torch's own weights-only unpickler cannot read the protocol-4 frames DCP writes). This
  is the one module of minillm that imports pickle (tests/test_io.py names it). A checkpoint folder is trusted no further than that.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint import FileSystemReader

__all__ = ["SafeFileSystemReader", "is_sharded_checkpoint", "load_full_weights",
           "load_sharded", "save_sharded"]

DCP_FOLDER = "dcp"  # inside a checkpoint folder: the .distcp files and .metadata


# besides DCP's own classes, torch dtypes and plain containers: what a .metadata file names
_ALLOWED = {("torch", "Size"), ("torch.serialization", "_get_layout"),  # torch.strided by name
            ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),       # the checkpoint_id
            ("collections", "OrderedDict")}


class _AllowListUnpickler(pickle.Unpickler):
    """Builds only DCP's metadata classes, torch's dtypes, layouts and sizes, paths and plain
    containers."""

    def find_class(self, module: str, name: str):
        if module.startswith("torch.distributed.checkpoint.") or (module, name) in _ALLOWED or (
                module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)) or (
                module == "builtins" and name in ("set", "frozenset", "slice", "getattr")):
            if module == "builtins" and name == "getattr":  # torch pickles dtypes as
                return _safe_getattr                         # getattr(torch, "float32")
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"checkpoint metadata refers to {module}.{name}, which a "
                                     "DCP checkpoint never holds; minillm does not load it")


def _safe_getattr(obj, name: str):
    if obj is torch and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    raise pickle.UnpicklingError(f"checkpoint metadata asks for getattr({obj!r}, {name!r})")


class SafeFileSystemReader(FileSystemReader):
    """`FileSystemReader` whose `.metadata` is read by an allow-list unpickler."""

    def read_metadata(self, *args, **kwargs):
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            metadata = _AllowListUnpickler(f).load()
        if getattr(metadata, "storage_meta", None) is None:
            from torch.distributed.checkpoint.metadata import StorageMeta

            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def is_sharded_checkpoint(folder: str | Path) -> bool:
    """Whether the checkpoint folder holds DCP shards (dcp/.metadata) rather than
    model.safetensors."""
    return (Path(folder) / DCP_FOLDER / ".metadata").is_file()


def _fused(model: nn.Module, name: str) -> bool:
    """Whether `name` is a fused qkv weight stored as (3, C, d_model) (`qkv_pieces`)."""
    c = getattr(model, "config", None)
    return name.endswith("attn.qkv.weight") and c is not None and c.n_kv_head == c.n_head


def _state(model: nn.Module, optimizer: torch.optim.Optimizer | None):
    """(what DCP reads and writes, the model and optimizer state dicts it aliases). Fused qkv
    weights and their Adam moments become their (3, C, d_model) views, in place."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    from minillm.distributed.parallelize import qkv_pieces

    if optimizer is None:
        msd, osd = get_model_state_dict(model), None
    else:
        msd, osd = get_state_dict(model, optimizer)
    state = {"model": {k: qkv_pieces(v) if _fused(model, k) else v for k, v in msd.items()}}
    if optimizer is not None:
        state["optim"] = {k: {s: qkv_pieces(v) if _fused(model, k) and v.ndim == 2 else v
                              for s, v in st.items()} for k, st in osd["state"].items()}
    return state, (msd, osd)


def save_sharded(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write every rank's shards of `model` and `optimizer` into `folder`/dcp (collective: all
    ranks call it with the same folder, on a filesystem they share)."""
    import torch.distributed.checkpoint as dcp

    state, _ = _state(model, optimizer)
    dcp.save(state, checkpoint_id=Path(folder) / DCP_FOLDER)


def load_sharded(folder: str | Path, model: nn.Module,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
    """Fill this run's shards of `model` (and `optimizer`'s Adam state) from a checkpoint any
    mesh wrote (collective). The optimizer keeps its own hyperparameters."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    folder = Path(folder) / DCP_FOLDER
    state, (msd, osd) = _state(model, optimizer)
    dcp.load(state, storage_reader=SafeFileSystemReader(folder))  # into msd / osd's storage
    if optimizer is None:
        set_model_state_dict(model, msd)
    else:
        set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=osd)


def load_full_weights(folder: str | Path, model: nn.Module) -> None:
    """Load a sharded checkpoint's weights into a plain one-process `model` (no process group):
    DCP assembles each full tensor from the shards of every rank that wrote it."""
    import torch.distributed.checkpoint as dcp

    from minillm.distributed.parallelize import qkv_pieces

    full = model.state_dict()
    state = {"model": {k: qkv_pieces(v) if _fused(model, k) else v for k, v in full.items()}}
    with warnings.catch_warnings():  # ("no process group: loading in one process", as meant)
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, storage_reader=SafeFileSystemReader(Path(folder) / DCP_FOLDER),
                 no_dist=True)
    model.load_state_dict(full)  # (the views above wrote into these tensors)
