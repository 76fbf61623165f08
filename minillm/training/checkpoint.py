"""Training checkpoints: a folder per save, written atomically, and a pointer to the latest.

    out_dir/
      latest.json                     {"step": 300, "path": "checkpoints/step_000300"}
      checkpoints/step_000300/
        config.json                   the GPTConfig
        model.safetensors             weights (from the uncompiled, unwrapped model)
        trainer_state.pt              optimizer, data-generator, RNG and fp16 loss-scale states
        trainer.json                  step, train config, metrics history
        tokenizer.json                optional

A sharded run (strategy "parallel") writes, in place of model.safetensors, every rank's shards
of the weights and the Adam moments with torch.distributed.checkpoint (`minillm.distributed.dcp`):

      checkpoints/step_000300/
        config.json  trainer.json  trainer_state.pt  tokenizer.json
        dcp/.metadata  dcp/__0_0.distcp  dcp/__1_0.distcp ...

All ranks write into one temporary `.step_N.sharded.tmp` folder (on a filesystem they share),
then rank 0 adds the JSON files and trainer_state.pt, renames the folder into place and moves
latest.json: the same contract. `minillm checkpoint consolidate` turns such a folder into
config.json + model.safetensors for `GPT.from_checkpoint` and `minillm generate`.

`GPT.from_checkpoint(folder)` reads only config.json + model.safetensors; `load_trainer_state`
reads the rest. `trainer_state.pt` is read with `torch.load(weights_only=True)`: no pickled
objects. `latest.json` is replaced only after its folder is complete, so a run killed at any
moment resumes from the last complete checkpoint.

What a kill can leave behind, and who removes it (`prepare_out_dir`, at every start-up):
a `.step_N.*.tmp` folder (killed while a save was writing it), a `.NAME.*.tmp` file (killed
inside an atomic file write), a `.step_N.old` folder (killed while replacing step_N), a
`.step_N.pruned.tmp` folder (killed while pruning: an old checkpoint is first renamed out of
the `step_*` names, then deleted, so a half-deleted folder never looks like a checkpoint).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

from minillm.io import (
    CheckpointError,
    atomic_folder,
    atomic_write_json,
    check_writable,
    load_tensors,
    read_json,
    restore_interrupted_replace,
    torch_load_safe,
    torch_save_atomic,
)

__all__ = ["consolidate_checkpoint", "save_training_checkpoint", "save_sharded_training_checkpoint", "latest_checkpoint",
           "load_trainer_state", "intact_checkpoint_before", "is_complete_checkpoint",
           "prepare_out_dir", "remove_stale_files", "CHECKPOINT_FILES", "SHARDED_CHECKPOINT_FILES"]

# the files every training checkpoint folder has (tokenizer.json is optional); start-up removes a
# step_N folder missing one of them (a save that writes another set must change this tuple)
CHECKPOINT_FILES = ("config.json", "model.safetensors", "trainer_state.pt", "trainer.json")
SHARDED_CHECKPOINT_FILES = ("config.json", "dcp/.metadata", "trainer_state.pt", "trainer.json")


def is_complete_checkpoint(folder: str | Path) -> bool:
    """Whether `folder` has every file of a checkpoint, gathered or sharded."""
    folder = Path(folder)
    return any(all((folder / f).is_file() for f in files)
               for files in (CHECKPOINT_FILES, SHARDED_CHECKPOINT_FILES))


def save_training_checkpoint(
    out_dir: str | Path, step: int, model, trainer_state: dict, trainer_json: dict,
    tokenizer: dict | None = None, keep: int = 2, weights: dict | None = None,
) -> Path:
    """Write checkpoints/step_{step} atomically, point latest.json at it, prune old ones.

    Args:
        out_dir: the run's folder.
        step: the step being saved.
        model: the unwrapped model (writes config.json and model.safetensors).
        trainer_state: tensors and plain containers for trainer_state.pt.
        trainer_json: step, config and history for trainer.json.
        tokenizer: optional tokenizer dict for tokenizer.json.
        keep: how many checkpoint folders to keep (0 = all).
        weights: the tensors to save (default: the model's own; a sharded strategy passes the
            gathered full weights).

    Returns:
        The new checkpoint folder.
    """
    out_dir = Path(out_dir)
    rel = Path("checkpoints") / f"step_{step:06d}"
    extra = {"trainer.json": trainer_json}
    if tokenizer is not None:
        extra["tokenizer.json"] = tokenizer
    with atomic_folder(out_dir / rel) as tmp:
        model.write_files(tmp, extra_files=extra, weights=weights)
        _pause_for_tests("writing")
        torch_save_atomic(tmp / "trainer_state.pt", trainer_state)
    _pause_for_tests("replaced")
    atomic_write_json(out_dir / "latest.json", {"step": step, "path": str(rel)})
    _prune(out_dir, step, keep)
    return out_dir / rel


def save_sharded_training_checkpoint(
    out_dir: str | Path, step: int, config: dict, write_shards, trainer_state: dict,
    trainer_json: dict, tokenizer: dict | None = None, keep: int = 2, is_main: bool = True,
    barrier=lambda: None,
) -> Path:
    """The sharded form of `save_training_checkpoint` (collective: every rank calls it).

    Args:
        out_dir, step, trainer_state, trainer_json, tokenizer, keep: as there (the last four are
            used on rank 0 only).
        config: the model's config dict (config.json).
        write_shards: `write_shards(folder)` writes this rank's shards into folder/dcp
            (`minillm.distributed.dcp.save_sharded`).
        is_main: this is rank 0.
        barrier: waits for every rank (`torch.distributed.barrier`).

    Returns:
        The new checkpoint folder.
    """
    out_dir = Path(out_dir)
    rel = Path("checkpoints") / f"step_{step:06d}"
    tmp = out_dir / "checkpoints" / f".step_{step:06d}.sharded.tmp"
    if is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()  # the folder exists for every rank
    write_shards(tmp)
    barrier()  # every rank's shards (and rank 0's .metadata) are written
    if is_main:
        files = {"config.json": config, "trainer.json": trainer_json}
        if tokenizer is not None:
            files["tokenizer.json"] = tokenizer
        with atomic_folder(out_dir / rel, tmp=tmp):
            for name, obj in files.items():
                atomic_write_json(tmp / name, obj)
            _pause_for_tests("writing")
            torch_save_atomic(tmp / "trainer_state.pt", trainer_state)
        _pause_for_tests("replaced")
        atomic_write_json(out_dir / "latest.json", {"step": step, "path": str(rel)})
        _prune(out_dir, step, keep)
    barrier()  # no rank goes on (or resumes) before latest.json moved
    return out_dir / rel


def _prune(out_dir: Path, step: int, keep: int) -> None:
    """Remove older steps beyond the newest keep - 1 (0 = keep all); the one just written never
    goes, nor do later steps left in out_dir by another run (they are not this run's to delete)."""
    if keep > 0:
        older = sorted(s for s in _steps(out_dir / "checkpoints") if s < step)
        for old in older[: max(0, len(older) - (keep - 1))]:
            _remove_folder(out_dir / "checkpoints" / f"step_{old:06d}")


def _remove_folder(folder: Path) -> None:
    """Rename `folder` to a hidden temporary name, then delete it: a kill in between leaves a
    `.NAME.pruned.tmp` folder (removed at the next start-up), never a half-deleted `step_N`."""
    doomed = folder.with_name(f".{folder.name}.pruned.tmp")
    if doomed.exists():
        shutil.rmtree(doomed)
    os.replace(folder, doomed)
    _pause_for_tests("pruning")
    shutil.rmtree(doomed, ignore_errors=True)  # what stays is removed at the next start-up


def _pause_for_tests(phase: str) -> None:
    """Test hook: with MINILLM_TEST_CHECKPOINT_PAUSE=SECONDS in the environment, print
    `minillm-checkpoint: PHASE` on stderr and sleep, so that a test can SIGKILL the process
    inside that phase of a save (tests/test_checkpoint.py). Unset, it does nothing."""
    seconds = os.environ.get("MINILLM_TEST_CHECKPOINT_PAUSE")
    if seconds:
        print(f"minillm-checkpoint: {phase}", file=sys.stderr, flush=True)
        time.sleep(float(seconds))


def prepare_out_dir(out_dir: str | Path) -> None:
    """Before a run trains: create `out_dir`, check a file can be written there, and remove
    what killed runs left (`remove_stale_files`).

    Raises:
        CheckpointError: the folder cannot be created or written (names it and the OS's reason).
    """
    remove_stale_files(check_writable(out_dir, "out_dir"))


def remove_stale_files(out_dir: str | Path) -> list[Path]:
    """Remove the temporaries killed runs leave in `out_dir` (see the module docstring),
    restore a `step_N` whose replacement was interrupted, and remove `step_N` folders that lack
    a checkpoint file (pruned by an older minillm that deleted in place) unless latest.json
    points to one. Returns what was removed.

    Only one run may use an out_dir at a time: this would remove a live run's temporaries.
    """
    out_dir = Path(out_dir)
    removed: list[Path] = []
    ckpts = out_dir / "checkpoints"
    for folder in (out_dir, ckpts):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if not (p.name.startswith(".") and p.name.endswith(".tmp")):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    if not ckpts.is_dir():
        return removed
    for old in ckpts.glob(".step_*.old"):
        current = old.with_name(old.name[1:-len(".old")])
        if not restore_interrupted_replace(current) and current.is_dir():
            shutil.rmtree(old)  # the replacement finished: the previous version is garbage
            removed.append(old)
    pointed = None
    pointer = out_dir / "latest.json"
    if pointer.exists():
        try:
            pointed = (out_dir / read_json(pointer, "latest.json")["path"]).resolve()
        except (CheckpointError, KeyError, TypeError):
            pointed = None
    for step in _steps(ckpts):
        folder = ckpts / f"step_{step:06d}"
        if folder.resolve() != pointed and not is_complete_checkpoint(folder):
            _remove_folder(folder)
            removed.append(folder)
    return removed


def _steps(folder: Path) -> list[int]:
    """Steps of the step_N folders in `folder` (numerically: step_1000000 > step_999999)."""
    return [int(m.group(1)) for p in folder.glob("step_*")
            if p.is_dir() and (m := re.fullmatch(r"step_(\d+)", p.name))]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The folder latest.json points to, or None when out_dir has no checkpoint yet.

    Raises:
        CheckpointError: latest.json is corrupt or points to a missing folder.
    """
    pointer = Path(out_dir) / "latest.json"
    if not pointer.exists():
        return None
    folder = Path(out_dir) / read_json(pointer, "latest.json")["path"]
    restore_interrupted_replace(folder)
    if not folder.is_dir():
        raise CheckpointError(f"latest.json points to {folder}, which does not exist")
    return folder


def intact_checkpoint_before(folder: str | Path) -> Path | None:
    """The newest checkpoint in `folder`'s checkpoints/ older than `folder` whose files all
    load (for a message when `folder` itself is damaged); None if there is none."""
    folder = Path(folder)
    current = re.fullmatch(r"step_(\d+)", folder.name)
    steps = sorted((s for s in _steps(folder.parent) if current is None
                    or s < int(current.group(1))), reverse=True)
    for step in steps:
        earlier = folder.parent / f"step_{step:06d}"
        try:
            load_trainer_state(earlier)
            if not (earlier / "dcp" / ".metadata").is_file():  # (a sharded one: its files)
                load_tensors(earlier / "model.safetensors")
            read_json(earlier / "config.json", "config.json")
        except CheckpointError:
            continue
        return earlier
    return None


def load_trainer_state(folder: str | Path) -> tuple[dict, dict]:
    """(trainer_state tensors/containers, trainer.json contents) of a checkpoint folder.

    Raises:
        CheckpointError: a file is missing or corrupt.
    """
    folder = Path(folder)
    state = torch_load_safe(folder / "trainer_state.pt", "trainer_state.pt to resume training")
    meta = read_json(folder / "trainer.json", "trainer.json to resume training")
    return state, meta


def consolidate_checkpoint(source: str | Path, output_dir: str | Path) -> Path:
    """Turn a sharded (DCP) checkpoint into a model folder: config.json + model.safetensors
    (+ tokenizer.json), which `GPT.from_checkpoint` and `minillm generate` load. One process,
    no process group; it holds the full model (the output is the full model).

    Args:
        source: a checkpoint folder, or a run folder (its latest checkpoint).
        output_dir: the model folder to write (atomically).

    Returns:
        The checkpoint folder read.

    Raises:
        ValueError: the folder holds no sharded weights (then it loads as it is).
        CheckpointError: a file is missing or corrupt.
    """
    from minillm.distributed.dcp import is_sharded_checkpoint, load_full_weights
    from minillm.models import GPT, GPTConfig

    folder = Path(source)
    if not (folder / "config.json").exists() and (folder / "latest.json").exists():
        folder = latest_checkpoint(folder)
    if not is_sharded_checkpoint(folder):
        raise ValueError(f"{folder} holds no sharded (DCP) checkpoint (dcp/.metadata); a folder "
                         "with model.safetensors loads as it is")
    model = GPT(GPTConfig.from_dict(read_json(folder / "config.json", "config.json")))
    load_full_weights(folder, model)
    extra = {"consolidated_from.json": {"checkpoint": str(folder.resolve())}}
    if (folder / "tokenizer.json").is_file():
        extra["tokenizer.json"] = read_json(folder / "tokenizer.json", "tokenizer.json")
    model.save(output_dir, extra_files=extra)
    return folder
