"""Load any model folder of the course without knowing its class beforehand."""

from __future__ import annotations

from pathlib import Path

import torch

from minillm.io import read_json
from minillm.models.base import LanguageModel
from minillm.models.gpt import GPT
from minillm.models.neural import MLPLM, RNNLM

__all__ = ["load_model", "model_class"]

# the field only that class's config has, in the order they are tried
_SIGNATURES: tuple[tuple[str, type[LanguageModel]], ...] = (
    ("d_model", GPT), ("cell", RNNLM), ("n_context", MLPLM))


def model_class(config: dict) -> type[LanguageModel]:
    """The class a config.json belongs to, told by a field only that class's config has."""
    for field, cls in _SIGNATURES:
        if field in config:
            return cls
    raise ValueError(f"config.json with fields {sorted(config)} is none of the course's models "
                     "(GPT: d_model, RNNLM: cell, MLPLM: n_context); is this a model folder?")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LanguageModel:
    """A GPT, RNN LM or MLP LM from a folder with config.json and model.safetensors.

    Args:
        path: the model folder (a checkpoint or an export).
        map_location: where the weights go.

    Returns:
        The model, its class read from config.json.
    """
    config = read_json(Path(path) / "config.json", "config.json")
    return model_class(config).from_checkpoint(path, map_location)
