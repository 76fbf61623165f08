"""Calibration: statistics of the inputs every linear layer sees on some data.

Static activation quantization and SmoothQuant need the largest |x| per input channel;
GPTQ needs the Hessian H = 2 X X^T / n of each layer's inputs. Both are gathered with forward
hooks while the model runs on calibration batches (token ids), so any minillm model works.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["linear_layers", "calibrate", "check_calibration"]


def linear_layers(model: nn.Module, skip: Iterable[str] = ("lm_head",)) -> dict[str, nn.Linear]:
    """The model's `nn.Linear` modules by name, without those whose last name part is in
    `skip` (the output head, tied to the embedding, stays in floating point by default)."""
    skip = set(skip)
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name.split(".")[-1] not in skip}


def check_calibration(batches) -> list[torch.Tensor]:
    """A list of (B, T) token tensors; ValueError if there is none or one is empty."""
    if batches is None:
        raise ValueError("this scheme needs calibration data: pass calibration=[token ids "
                         "(B, T), ...] (e.g. a few windows of the training text)")
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    batches = [b if b.dim() == 2 else b.reshape(1, -1) for b in batches]
    if not batches or any(b.numel() == 0 for b in batches):
        raise ValueError("calibration data is empty: pass at least one non-empty batch of "
                         "token ids")
    return batches


@torch.no_grad()
def calibrate(model: nn.Module, batches, layers: dict[str, nn.Module] | None = None,
              hessian: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Run the model on `batches` and record, for each linear layer, its inputs' per-channel
    absmax ("absmax", (in,)), token count ("n") and, with `hessian`, H = 2 X X^T / n ("H",
    float64 (in, in)).

    Args:
        model: any module whose forward takes token ids (B, T).
        batches: a (B, T) tensor or a list of them.
        layers: the modules to watch (default: `linear_layers(model)`).
    """
    batches = check_calibration(batches)
    layers = linear_layers(model) if layers is None else layers
    stats: dict[str, dict[str, torch.Tensor]] = {}

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
            s = stats.setdefault(name, {"absmax": torch.zeros(x.shape[1], device=x.device),
                                        "n": torch.zeros((), dtype=torch.long)})
            s["absmax"] = torch.maximum(s["absmax"], x.abs().amax(0).float())
            if hessian:
                xd = x.double()
                s["H"] = s.get("H", 0) + 2 * xd.t() @ xd
            s["n"] += x.shape[0]
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for b in batches:
            model(b.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if hessian:
        for s in stats.values():
            s["H"] = s["H"] / s["n"]
    return stats
