"""What every minillm language model shares: the loss, and the checkpoint contract.

A model is an `nn.Module` with a `config` (a dataclass with `to_dict`/`from_dict` and a
`context_length`) whose `forward(idx, targets=None)` returns an `LMOutput` (`out.logits`,
`out.loss`, ...): one typed result whatever was asked, as Hugging Face models return theirs. A checkpoint is a
folder with `config.json` and `model.safetensors`, written atomically (see `minillm.io`); the
trainer adds its own state beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from minillm.io import atomic_folder, atomic_write_json, load_tensors, read_json, save_tensors

__all__ = ["LMOutput", "LanguageModel", "MLPOutput", "lm_loss"]


class MLPOutput(NamedTuple):
    """What a feed-forward layer with side outputs returns (a dense MLP returns the bare
    tensor): a mixture of experts' output, its auxiliary losses and its routing."""

    hidden: torch.Tensor                  # (B, T, C)
    aux_losses: dict[str, torch.Tensor]   # name -> scalar, already times its coefficient
    routing: Any = None                   # a mixture of experts' `Routing` (detached)


@dataclass
class LMOutput:
    """What a language model's forward returns.

    Attributes:
        logits: (B, T, vocab_size) next-token scores.
        loss: mean next-token cross-entropy in nats when targets were given, else None. It
            holds the language-modelling loss only: `aux_losses` are separate.
        aux_losses: auxiliary losses of this forward, already times their coefficients, keyed
            by name (a mixture of experts' "moe_balance" and "moe_z", summed over its layers);
            empty for a dense model. The trainer's default loss adds them (`total_loss`).
        hidden_states: (B, T, d_model) the final hidden states, after the final norm (what
            the output head reads; contrastive search and reward heads use them).
        routing: one `minillm.models.moe.Routing` per MoE layer, in layer order (detached:
            for diagnostics such as load per expert and dropped share); empty when dense.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    hidden_states: torch.Tensor | None = None
    routing: tuple[Any, ...] = ()

    @property
    def aux_loss(self) -> torch.Tensor | None:
        """The sum of `aux_losses`, or None when there are none."""
        return sum(self.aux_losses.values()) if self.aux_losses else None

    def total_loss(self) -> torch.Tensor:
        """`loss` plus every auxiliary loss: what training backpropagates."""
        if self.loss is None:
            raise ValueError("this output has no loss: call the model with targets")
        aux = self.aux_loss
        return self.loss if aux is None else self.loss + aux


def lm_loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
    """Mean next-token cross-entropy in nats (float32); targets of -100 are ignored."""
    if targets is None:
        return None
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)


class LanguageModel(nn.Module):
    """Base class: subclasses set `config_class` and build themselves from a config."""

    config_class: type
    # the embedding an output head `lm_head.weight` shares when `config.tie_embeddings` is set
    tied_embedding: str | None = None

    def _tied(self) -> bool:
        return self.tied_embedding is not None and bool(
            getattr(getattr(self, "config", None), "tie_embeddings", False))

    def weights_state_dict(self, state: dict[str, torch.Tensor] | None = None
                           ) -> dict[str, torch.Tensor]:
        """The tensors to save, from `state` or this model's state dict, a tied
        `lm_head.weight` left out (safetensors refuses aliases; loading restores it)."""
        sd = dict(state) if state is not None else self.state_dict()
        if self._tied():
            sd.pop("lm_head.weight", None)
        return sd

    def load_weights(self, tensors: dict[str, torch.Tensor], source: str | Path | None = None,
                     fix: str | None = None) -> None:
        """Load tensors whose names, shapes and dtypes fit this model, all of them finite.

        Args:
            tensors: name -> tensor (e.g. `load_tensors(folder / "model.safetensors")`).
            source: the file they came from, named in every error.
            fix: what to do when names or shapes do not fit (the caller knows: a folder whose
                config.json and weights disagree needs re-saving, a resume needs the sizes of
                the run that wrote it).

        Raises:
            ValueError: a missing, unexpected or misshapen tensor; a floating-point weight
                saved as integers; a weight holding NaN or infinity. One line, naming the file
                and the tensor.
        """
        if self._tied() and self.tied_embedding in tensors:  # a tied head is saved once
            tensors = {"lm_head.weight": tensors[self.tied_embedding], **tensors}
        where = f"{source}: " if source is not None else ""
        fix = fix or ("build the model from the config the weights were saved with (their "
                      "folder's config.json)")
        expected = set(self.state_dict())
        missing, unexpected = expected - set(tensors), set(tensors) - expected
        if missing or unexpected:
            raise ValueError(f"{where}weights do not fit this config: missing "
                             f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; {fix}")
        own = self.state_dict()
        wrong = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                 if tensors[k].shape != v.shape]
        if wrong:
            raise ValueError(f"{where}weights do not fit this config: shapes (saved vs model) "
                             f"differ for {wrong[:3]}; {fix}")
        for k, v in own.items():
            t = tensors[k]
            if v.is_floating_point() and not t.is_floating_point():
                raise ValueError(f"{where}tensor {k} is {t.dtype}, but this weight is floating "
                                 f"point ({v.dtype}); the file holds no usable weights: "
                                 "re-save it from a trained model")
            # float8 has no isfinite kernel: check its values in float32
            finite = torch.isfinite(t.float() if t.element_size() == 1 else t) \
                if t.is_floating_point() else None
            if finite is not None and not finite.all():
                raise ValueError(f"{where}tensor {k} holds NaN or infinity (the run that saved "
                                 "it diverged); load an earlier checkpoint")
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
        weights = path / "model.safetensors"
        model.load_weights(load_tensors(weights, "model.safetensors"), source=weights, fix=(
            f"the folder's config.json and model.safetensors disagree: re-save {path}"))
        return model.to(map_location)
