"""What every minillm language model shares: the loss, and the checkpoint contract.

A model is an `nn.Module` with a `config` (a dataclass with `to_dict`/`from_dict` and a
`context_length`) whose `forward(idx, targets=None)` returns `(logits, loss)`. A checkpoint is a
folder with `config.json` and `model.safetensors`, written atomically (see `minillm.io`); the
trainer adds its own state beside them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minillm.io import atomic_folder, atomic_write_json, load_tensors, read_json, save_tensors

__all__ = ["LanguageModel", "lm_loss"]


def lm_loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
    """Mean next-token cross-entropy in nats (float32); targets of -100 are ignored."""
    if targets is None:
        return None
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)


class LanguageModel(nn.Module):
    """Base class: subclasses set `config_class` and build themselves from a config."""

    config_class: type

    def weights_state_dict(self, state: dict[str, torch.Tensor] | None = None
                           ) -> dict[str, torch.Tensor]:
        """The tensors to save, from `state` or this model's state dict (subclasses drop
        aliases such as tied weights)."""
        return dict(state) if state is not None else self.state_dict()

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load tensors whose names must match this model's exactly."""
        expected = set(self.state_dict())
        missing, unexpected = expected - set(tensors), set(tensors) - expected
        if missing or unexpected:
            raise ValueError(f"weights do not fit this config: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        own = self.state_dict()
        wrong = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                 if tensors[k].shape != v.shape]
        if wrong:
            raise ValueError(f"weights do not fit this config: shapes (saved vs model) differ "
                             f"for {wrong[:3]}; build the model from the checkpoint's "
                             "config.json (e.g. GPT.from_checkpoint) or resume with the same sizes")
        self.load_state_dict(tensors)

    def write_files(self, folder: Path, extra_files: dict[str, dict] | None = None,
                    weights: dict[str, torch.Tensor] | None = None) -> None:
        """Write config.json, model.safetensors and any extra JSON files into `folder`.

        Args:
            folder: an existing (temporary) folder.
            extra_files: file name -> JSON-able object.
            weights: the full tensors to save (e.g. gathered from a sharded run; default this
                model's own); aliases such as a tied head are left out either way.
        """
        folder = Path(folder)
        atomic_write_json(folder / "config.json", self.config.to_dict())
        save_tensors(folder / "model.safetensors", self.weights_state_dict(weights))
        for name, obj in (extra_files or {}).items():
            atomic_write_json(folder / name, obj)

    def save(self, path: str | Path, extra_files: dict[str, dict] | None = None,
             weights: dict[str, torch.Tensor] | None = None) -> None:
        """Write the model folder atomically: a failed save leaves an existing folder untouched."""
        with atomic_folder(path) as tmp:
            self.write_files(tmp, extra_files, weights)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu"):
        """Load a model from a folder holding config.json and model.safetensors (a training
        checkpoint holds more; only these two are read)."""
        path = Path(path)
        config = cls.config_class.from_dict(read_json(path / "config.json", "config.json"))
        model = cls(config)
        model.load_weights(load_tensors(path / "model.safetensors", "model.safetensors"))
        return model.to(map_location)
