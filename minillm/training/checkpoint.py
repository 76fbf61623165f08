"""Training checkpoints: a folder per save, written atomically, and a pointer to the latest.

    out_dir/
      latest.json                     {"step": 300, "path": "checkpoints/step_000300"}
      checkpoints/step_000300/
        config.json                   the GPTConfig
        model.safetensors             weights (from the uncompiled, unwrapped model)
        trainer_state.pt              optimizer, data-generator, RNG and fp16 loss-scale states
        trainer.json                  step, train config, metrics history
        tokenizer.json                optional

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

__all__ = ["save_training_checkpoint", "latest_checkpoint", "load_trainer_state",
           "intact_checkpoint_before",
           "prepare_out_dir", "remove_stale_files", "CHECKPOINT_FILES"]

# the files every training checkpoint folder has (tokenizer.json is optional); start-up removes a
# step_N folder missing one of them (a save that writes another set must change this tuple)
CHECKPOINT_FILES = ("config.json", "model.safetensors", "trainer_state.pt", "trainer.json")


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
    if keep > 0:
        # older steps beyond the newest keep - 1 go; the one just written never does, nor do
        # later steps left in out_dir by another run (they are not this run's to delete)
        older = sorted(s for s in _steps(out_dir / "checkpoints") if s < step)
        for old in older[: max(0, len(older) - (keep - 1))]:
            _remove_folder(out_dir / "checkpoints" / f"step_{old:06d}")
    return out_dir / rel


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
        if folder.resolve() != pointed and not all((folder / f).is_file()
                                                    for f in CHECKPOINT_FILES):
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
