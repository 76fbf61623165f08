"""`quantize_model(model, scheme)`: swap the `nn.Linear`s of any minillm model for quantized
ones, and save / load the result through safetensors (the files really are smaller).

Schemes (a `QuantScheme`, or its name):

| name                 | weights                          | activations / compute                  |
|----------------------|----------------------------------|----------------------------------------|
| "w8a8"               | int8 absmax per output channel   | int8 per token (dynamic), int32 matmul |
| "w8a8-static"        | int8 absmax per output channel   | int8, one calibrated scale per tensor  |
| "llm.int8"           | int8 vector-wise                 | int8 + fp outlier columns (|x| >= 6)   |
| "smoothquant"        | int8 of W diag(s), α = 0.5       | int8 per tensor of x / s               |
| "rtn{b}[-g{g}]"      | b-bit zero-point groups, packed  | fp (dequantized on the fly)            |
| "gptq{b}[-g{g}][-act]"| the same format, GPTQ codes     | fp                                     |
| "nf4"                | NF4, blocks of 64, double quant  | fp                                     |
| "fp8"                | FP8 E4M3, fp32 scale per row     | fp                                     |
| "fp8-w8a8"           | FP8 E4M3, fp32 scale per row     | E4M3, one dynamic scale per tensor     |

b in {2, 3, 4, 8}; g divides the row (32, 64, 128); no -g: one group per row. The output head
(tied to the token embedding in the course model) and the embeddings stay in floating point.
A quantized checkpoint is a folder: config.json, quantization.json (the scheme) and
model.safetensors holding the packed codes, scales and the unquantized tensors.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from minillm.io import atomic_folder, atomic_write_json, load_tensors, read_json, save_tensors
from minillm.models import GPT
from minillm.quantization.calibration import calibrate, check_calibration, linear_layers
from minillm.quantization.formats import check_bits, check_group_size
from minillm.quantization.fp8 import Fp8Linear
from minillm.quantization.gptq import gptq_quantize
from minillm.quantization.int4 import WEIGHT_BITS, WeightOnlyLinear
from minillm.quantization.int8 import Int8Linear
from minillm.quantization.llm_int8 import LLMInt8Linear
from minillm.quantization.nf4 import NF4Linear
from minillm.quantization.qat import _set_module
from minillm.quantization.smoothquant import SmoothQuantLinear

__all__ = ["QuantScheme", "parse_scheme", "quantize_model", "save_quantized", "load_quantized",
           "state_nbytes", "METHODS"]

METHODS = ("w8a8", "llm.int8", "smoothquant", "rtn", "gptq", "nf4", "fp8")


@dataclass
class QuantScheme:
    method: str                      # one of METHODS
    bits: int = 8                    # rtn / gptq: 2, 3, 4 or 8
    group_size: int | None = None    # rtn / gptq: None = one group per row
    activations: str = "dynamic"     # w8a8: "dynamic" / "static"; smoothquant: "tensor" / "token";
                                     # fp8: "none" / "tensor" / "token"
    threshold: float = 6.0           # llm.int8: outlier magnitude
    alpha: float | None = 0.5        # smoothquant: migration strength (None: unsmoothed)
    act_order: bool = False          # gptq
    damp: float = 0.01               # gptq: fraction of mean diag(H)
    blocksize: int = 128             # gptq: lazy-batch columns
    skip: tuple[str, ...] = field(default=("lm_head",))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; choose one of {list(METHODS)}")
        if self.method in ("rtn", "gptq"):
            check_bits(self.bits, WEIGHT_BITS)
        if self.method == "fp8" and self.activations not in ("none", "tensor", "token"):
            raise ValueError(f"activations={self.activations!r} for fp8; choose 'none' "
                             "(weights only), 'tensor' or 'token'")
        if self.group_size is not None:
            check_group_size(self.group_size, self.group_size)  # positive integer
        self.skip = tuple(self.skip)

    @property
    def needs_calibration(self) -> bool:
        return self.method == "gptq" or (self.method == "smoothquant" and self.alpha is not None) or (
            self.method == "w8a8" and self.activations == "static")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skip"] = list(self.skip)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QuantScheme:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def parse_scheme(scheme: str | QuantScheme) -> QuantScheme:
    """A `QuantScheme` from a name such as "rtn4-g128", "gptq3-g64-act", "nf4", "llm.int8"."""
    if isinstance(scheme, QuantScheme):
        return scheme
    fixed = {"w8a8": QuantScheme("w8a8"), "w8a8-static": QuantScheme("w8a8", activations="static"),
             "llm.int8": QuantScheme("llm.int8"), "smoothquant": QuantScheme(
                 "smoothquant", activations="tensor"), "nf4": QuantScheme("nf4", bits=4),
             "fp8": QuantScheme("fp8", activations="none"),
             "fp8-w8a8": QuantScheme("fp8", activations="tensor")}
    if scheme in fixed:
        return fixed[scheme]
    m = re.fullmatch(r"(rtn|gptq)(\d+)(?:-g(\d+))?(-act)?", scheme)
    if not m or (m.group(4) and m.group(1) == "rtn"):
        raise ValueError(f"unknown scheme {scheme!r}; use one of {sorted(fixed)} or "
                         "'rtn{bits}[-g{group}]' / 'gptq{bits}[-g{group}][-act]', e.g. 'rtn4-g128'")
    return QuantScheme(m.group(1), bits=int(m.group(2)),
                       group_size=int(m.group(3)) if m.group(3) else None,
                       act_order=bool(m.group(4)))


def _empty_module(lin: nn.Linear, s: QuantScheme) -> nn.Module:
    i, o, b = lin.in_features, lin.out_features, lin.bias is not None
    if s.method == "w8a8":
        return Int8Linear(i, o, b, s.activations)
    if s.method == "llm.int8":
        return LLMInt8Linear(i, o, b, s.threshold)
    if s.method == "smoothquant":
        return SmoothQuantLinear(i, o, b, s.alpha, s.activations)
    if s.method == "nf4":
        return NF4Linear(i, o, b)
    if s.method == "fp8":
        return Fp8Linear(i, o, b, s.activations)
    return WeightOnlyLinear(i, o, b, s.bits, s.group_size)


def _quantized_module(lin: nn.Linear, s: QuantScheme, stats: dict | None) -> nn.Module:
    if s.method == "w8a8":
        return Int8Linear.from_linear(lin, s.activations, stats and stats["absmax"])
    if s.method == "llm.int8":
        return LLMInt8Linear.from_linear(lin, s.threshold)
    if s.method == "smoothquant":
        return SmoothQuantLinear.from_linear(lin, stats and stats["absmax"], s.alpha, s.activations)
    if s.method == "nf4":
        return NF4Linear.from_linear(lin)
    if s.method == "fp8":
        return Fp8Linear.from_linear(lin, s.activations)
    if s.method == "rtn":
        return WeightOnlyLinear.from_linear(lin, s.bits, s.group_size)
    packed = gptq_quantize(lin.weight, stats["H"], s.bits, s.group_size, s.blocksize, s.damp,
                           s.act_order)
    return WeightOnlyLinear.from_packed(packed, lin.bias)


def _stage(name: str) -> str:
    m = re.match(r"(.*?blocks\.\d+)\.", name)   # GPTQ goes block by block
    return m.group(1) if m else name


@torch.no_grad()
def quantize_model(model: nn.Module, scheme: str | QuantScheme, calibration=None,
                   empty: bool = False) -> nn.Module:
    """Replace the model's linear layers (all but `scheme.skip`) by quantized ones, in place.

    Args:
        model: a minillm model (any module whose linears should be quantized).
        scheme: a `QuantScheme` or a name ("w8a8", "llm.int8", "rtn4-g128", "gptq4-g128", ...).
        calibration: (B, T) token ids or a list of them; needed by "w8a8-static",
            "smoothquant" and GPTQ. GPTQ quantizes block after block, each on the inputs
            produced by the already quantized blocks before it (as in the paper).
        empty: build the quantized modules without values (for loading a checkpoint).
    Returns:
        the model, with `model.quantization_scheme` set and, for GPTQ, the seconds each layer
        took in `model.quantization_times`.
    """
    s = parse_scheme(scheme)
    layers = linear_layers(model, s.skip)
    if not layers:
        raise ValueError(f"the model has no nn.Linear to quantize (skip={list(s.skip)})")
    if s.needs_calibration and not empty:
        calibration = check_calibration(calibration)
    times: dict[str, float] = {}
    if empty:
        for name, lin in layers.items():
            _set_module(model, name, _empty_module(lin, s).to(lin.weight.device))
    elif s.method == "gptq":
        stages: dict[str, dict[str, nn.Linear]] = {}
        for name, lin in layers.items():
            stages.setdefault(_stage(name), {})[name] = lin
        for group in stages.values():
            stats = calibrate(model, calibration, group, hessian=True)
            for name, lin in group.items():
                t = time.perf_counter()
                _set_module(model, name, _quantized_module(lin, s, stats[name]).to(
                    lin.weight.device))
                times[name] = time.perf_counter() - t
    else:
        stats = calibrate(model, calibration, layers) if s.needs_calibration else {}
        for name, lin in layers.items():
            _set_module(model, name, _quantized_module(lin, s, stats.get(name)).to(
                lin.weight.device))
    model.quantization_scheme = s
    model.quantization_times = times
    return model


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    sd = model.weights_state_dict() if hasattr(model, "weights_state_dict") else model.state_dict()
    return {k: v.contiguous() for k, v in sd.items()}


def state_nbytes(model: nn.Module) -> int:
    """Bytes of the tensors a checkpoint of this model stores (tied weights once)."""
    return sum(t.numel() * t.element_size() for t in _tensors(model).values())


def save_quantized(model: nn.Module, path: str | Path) -> None:
    """Write config.json, quantization.json and model.safetensors into `path`, atomically."""
    scheme = getattr(model, "quantization_scheme", None)
    if scheme is None:
        raise ValueError("the model is not quantized: call quantize_model(model, scheme) first "
                         "(or save a float model with model.save)")
    with atomic_folder(path) as tmp:
        atomic_write_json(Path(tmp) / "config.json", model.config.to_dict())
        atomic_write_json(Path(tmp) / "quantization.json", scheme.to_dict())
        save_tensors(Path(tmp) / "model.safetensors", _tensors(model))


def load_quantized(path: str | Path, model_class: type = GPT,
                   map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save_quantized` (same outputs as before saving)."""
    path = Path(path)
    config = model_class.config_class.from_dict(read_json(path / "config.json", "config.json"))
    scheme = QuantScheme.from_dict(read_json(path / "quantization.json", "quantization.json"))
    model = quantize_model(model_class(config), scheme, empty=True)
    weights = path / "model.safetensors"
    model.load_weights(load_tensors(weights, "model.safetensors"), source=weights, fix=(
        f"the folder's config.json, quantization.json and weights disagree: re-save {path}"))
    return model.to(map_location).eval()
