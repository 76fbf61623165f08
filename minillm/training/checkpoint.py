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
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from minillm.io import (
    CheckpointError,
    atomic_folder,
    atomic_write_json,
    read_json,
    restore_interrupted_replace,
    torch_load_safe,
    torch_save_atomic,
)

__all__ = ["save_training_checkpoint", "latest_checkpoint", "load_trainer_state"]


def save_training_checkpoint(
    out_dir: str | Path, step: int, model, trainer_state: dict, trainer_json: dict,
    tokenizer: dict | None = None, keep: int = 2, weights: dict | None = None,
) -> Path:
    """Write checkpoints/step_{step} atomically, point latest.json at it, prune old ones.
    `weights` (full tensors, e.g. gathered from a sharded run) replace the model's own."""
    out_dir = Path(out_dir)
    rel = Path("checkpoints") / f"step_{step:06d}"
    extra = {"trainer.json": trainer_json}
    if tokenizer is not None:
        extra["tokenizer.json"] = tokenizer
    with atomic_folder(out_dir / rel) as tmp:
        model.write_files(tmp, extra_files=extra, weights=weights)
        torch_save_atomic(tmp / "trainer_state.pt", trainer_state)
    atomic_write_json(out_dir / "latest.json", {"step": step, "path": str(rel)})
    if keep > 0:
        # older steps beyond the newest keep - 1 go; the one just written never does, nor do
        # later steps left in out_dir by another run (they are not this run's to delete)
        older = sorted(s for s in _steps(out_dir / "checkpoints") if s < step)
        for old in older[: max(0, len(older) - (keep - 1))]:
            shutil.rmtree(out_dir / "checkpoints" / f"step_{old:06d}", ignore_errors=True)
    return out_dir / rel


def _steps(folder: Path) -> list[int]:
    """Steps of the step_N folders in `folder` (numerically: step_1000000 > step_999999)."""
    return [int(m.group(1)) for p in folder.glob("step_*")
            if p.is_dir() and (m := re.fullmatch(r"step_(\d+)", p.name))]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The folder latest.json points to, or None when out_dir has no checkpoint yet."""
    pointer = Path(out_dir) / "latest.json"
    if not pointer.exists():
        return None
    folder = Path(out_dir) / read_json(pointer, "latest.json")["path"]
    restore_interrupted_replace(folder)
    if not folder.is_dir():
        raise CheckpointError(f"latest.json points to {folder}, which does not exist")
    return folder


def load_trainer_state(folder: str | Path) -> tuple[dict, dict]:
    """(trainer_state tensors/containers, trainer.json contents) of a checkpoint folder."""
    folder = Path(folder)
    state = torch_load_safe(folder / "trainer_state.pt", "trainer_state.pt to resume training")
    meta = read_json(folder / "trainer.json", "trainer.json to resume training")
    return state, meta
