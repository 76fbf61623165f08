"""Load any model folder of the course without knowing its class beforehand."""

from __future__ import annotations

from pathlib import Path

import torch

from minillm.io import read_json
from minillm.models.base import LanguageModel
from minillm.models.gpt import GPT
from minillm.models.neural import MLPLM, RNNLM
from minillm.models.recurrent import RWKV, LinearAttentionLM, Mamba

__all__ = ["load_model", "model_class"]

# chapter 18's configs name their class in `arch` (they also have d_model): tried first
_ARCHS: dict[str, type[LanguageModel]] = {
    "linear_attention": LinearAttentionLM, "rwkv": RWKV, "mamba": Mamba}
# the field only that class's config has, in the order they are tried
_SIGNATURES: tuple[tuple[str, type[LanguageModel]], ...] = (
    ("d_model", GPT), ("cell", RNNLM), ("n_context", MLPLM))


def model_class(config: dict) -> type[LanguageModel]:
    """The class a config.json belongs to: its `arch` (chapter 18's recurrent models), else a
    field only that class's config has."""
    if "arch" in config:
        if config["arch"] not in _ARCHS:
            raise ValueError(f"config.json has arch={config['arch']!r}; known: {sorted(_ARCHS)}")
        return _ARCHS[config["arch"]]
    for field, cls in _SIGNATURES:
        if field in config:
            return cls
    raise ValueError(f"config.json with fields {sorted(config)} is none of the course's models "
                     "(GPT: d_model, RNNLM: cell, MLPLM: n_context, recurrent: arch); is this a "
                     "model folder?")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LanguageModel:
    """A GPT, RNN LM, MLP LM or recurrent LM (chapter 18) from a folder with config.json and model.safetensors.

    Args:
        path: the model folder (a checkpoint or an export).
        map_location: where the weights go.

    Returns:
        The model, its class read from config.json.
    """
    config = read_json(Path(path) / "config.json", "config.json")
    return model_class(config).from_checkpoint(path, map_location)
