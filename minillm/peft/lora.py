"""LoRA: low-rank adaptation of frozen linear layers, merged or not, several adapters per model.

Hu et al. 2021, arXiv:2106.09685, eq. (3). A frozen weight W (out, in) is adapted by a
low-rank product, and only A and B are trained:

    h = W x + s · B A x,     A: (r, in),  B: (out, r),  r << min(in, out)

with the scaling s = α / r (rsLoRA, Kalajdzievski 2023, arXiv:2312.03732: s = α / √r, which
keeps the update's scale steady as r grows). A starts Kaiming-uniform (as `nn.Linear` and
Hugging Face PEFT do; or Gaussian with std 1/r), B starts at zero: the adapted model starts
exactly as the base. Merging folds the update into the weight, W ← W + s·BA, so inference
costs nothing extra; unmerging subtracts it again (exact to float rounding).

`apply_lora(model, LoraConfig(...))` wraps every `nn.Linear` whose name matches `target_modules`
the way PEFT matches them: a list of names matches a module whose name equals one or ends
with "." + one; a string is a regular expression the whole name must match. Everything but
the active adapter's weights is frozen. DoRA (`use_dora=True`, `minillm.peft.dora`) adds a
trained magnitude per output row. New tokens (e.g. a chat template's) can have their embedding
rows trained too (`trainable_token_indices`, the tied output head follows), as PEFT's option of
that name does: their rows are *replaced* by trained values, the rest stay frozen.

Departures from PEFT: one active adapter at a time (PEFT can sum several); merging is refused
for a quantized base (dequantize it first, `minillm.peft.qlora.dequantize_base`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from minillm.peft.dora import dora_merged_weight, dora_scale, row_norm, undo_dora_merge
from minillm.quantization.nf4 import NF4Linear

__all__ = ["LoraConfig", "LoRALinear", "TrainableTokens", "adapter_modules", "apply_lora",
           "match_target", "merge_adapter", "set_adapter", "trainable_parameters",
           "unmerge_adapter"]

INITS = ("kaiming", "gaussian")
DEFAULT = "default"


@dataclass
class LoraConfig:
    r: int = 8                                   # rank of the update BA
    alpha: float = 8.0                           # scaling numerator: s = alpha / r (or / sqrt r)
    target_modules: list[str] | str = field(default_factory=lambda: ["attn.qkv"])
    dropout: float = 0.0                         # dropout on the adapter's input
    init: str = "kaiming"                        # A's init: "kaiming" (uniform) or "gaussian"
    use_rslora: bool = False                     # s = alpha / sqrt(r)
    use_dora: bool = False                       # weight-decomposed (magnitude + direction)
    trainable_token_indices: list[int] | None = None  # embedding rows to train (new tokens)

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"r={self.r!r} must be a positive integer (the adapter's rank); "
                             "try r=8")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"alpha={self.alpha} must be positive and finite (s = alpha / r)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r}; choose one of {INITS}")
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = list(self.target_modules)
            if not self.target_modules:
                raise ValueError("target_modules=[] adapts nothing; name modules (e.g. "
                                 "['attn.qkv', 'attn.proj']) or give a regex string")
        if self.trainable_token_indices is not None:
            self.trainable_token_indices = sorted({int(i) for i in self.trainable_token_indices})

    @property
    def scaling(self) -> float:
        """s = alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LoraConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown LoRA config fields {sorted(unknown)}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def match_target(name: str, target_modules: Sequence[str] | str) -> bool:
    """PEFT's rule: a regex string must match the whole name; a list entry must equal the name
    or be a dotted suffix of it ("attn.qkv" matches "blocks.0.attn.qkv", not "blocks.0.xqkv")."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


class LoRALinear(nn.Module):
    """A frozen linear layer (`nn.Linear`, or `NF4Linear` for QLoRA) plus named adapters.

    State names follow PEFT: `base_layer.weight`, `lora_A.<adapter>.weight` (r, in),
    `lora_B.<adapter>.weight` (out, r), `lora_magnitude.<adapter>` (out,) for DoRA.
    """

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.lora_magnitude = nn.ParameterDict()
        self.scaling: dict[str, float] = {}
        self.active_adapter: str | None = None
        self.merged_adapter: str | None = None
        self._merge_norm: torch.Tensor | None = None  # DoRA: the row norms used at merge time

    def add_adapter(self, name: str, config: LoraConfig) -> None:
        """Add adapter `name` (A initialised, B zero, DoRA magnitude = ||W||_r) and activate it."""
        w = self.base_layer.weight if isinstance(self.base_layer, nn.Linear) else None
        device = w.device if w is not None else self.base_layer.packed.device
        self.lora_A[name] = nn.Linear(self.in_features, config.r, bias=False, device=device)
        self.lora_B[name] = nn.Linear(config.r, self.out_features, bias=False, device=device)
        if config.init == "kaiming":  # nn.Linear's own (PEFT's init_lora_weights=True)
            nn.init.kaiming_uniform_(self.lora_A[name].weight, a=math.sqrt(5))
        else:
            nn.init.normal_(self.lora_A[name].weight, std=1.0 / config.r)
        nn.init.zeros_(self.lora_B[name].weight)
        self.lora_dropout[name] = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.scaling[name] = config.scaling
        if config.use_dora:
            self.lora_magnitude[name] = nn.Parameter(row_norm(self.base_weight().detach()))
        self.active_adapter = name

    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight (as PEFT forwards it), without the adapter."""
        return self.base_weight()

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def base_weight(self) -> torch.Tensor:
        """The frozen weight (out, in) in floating point (an NF4 base is dequantized)."""
        if isinstance(self.base_layer, NF4Linear):
            return self.base_layer.dequantized_weight()
        return self.base_layer.weight

    def delta_weight(self, name: str | None = None) -> torch.Tensor:
        """ΔW = s · B A (out, in) of adapter `name` (default: the active one)."""
        name = name or self.active_adapter
        return self.scaling[name] * (self.lora_B[name].weight @ self.lora_A[name].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        name = self.active_adapter
        if name is None or self.merged_adapter is not None:
            return y
        h = self.lora_dropout[name](x)
        lora = self.lora_B[name](self.lora_A[name](h.to(self.lora_A[name].weight.dtype)))
        lora = lora * self.scaling[name]
        if name not in self.lora_magnitude:
            return y + lora.to(y.dtype)
        weight = self.base_weight().to(lora.dtype)
        scale = dora_scale(self.lora_magnitude[name], weight, self.delta_weight(name))
        # y = Wx + b already; add (m/n - 1) W x' + (m/n) s BA x' (x' = x after dropout)
        if h is x:  # no dropout: Wx is the base output less its bias
            bias = self.base_layer.bias
            wx = y if bias is None else y - bias
        else:
            wx = F.linear(h, weight)
        return y + ((scale - 1) * wx + scale * lora).to(y.dtype)

    def merge(self) -> None:
        """Fold the active adapter into the base weight (W ← W + ΔW; DoRA: W ← W')."""
        if self.merged_adapter is not None or self.active_adapter is None:
            return
        if not isinstance(self.base_layer, nn.Linear):
            raise ValueError(f"cannot merge into a {type(self.base_layer).__name__} base: its "
                             "weights are quantized; call minillm.peft.dequantize_base(model) "
                             "first, then merge")
        name = self.active_adapter
        with torch.no_grad():
            w = self.base_layer.weight
            delta = self.delta_weight(name).to(w.dtype)
            if name in self.lora_magnitude:
                merged, self._merge_norm = dora_merged_weight(w, delta, self.lora_magnitude[name])
                w.copy_(merged)
            else:
                w.add_(delta)
        self.merged_adapter = name

    def unmerge(self) -> None:
        """Take the merged adapter back out of the base weight."""
        name = self.merged_adapter
        if name is None:
            return
        with torch.no_grad():
            w = self.base_layer.weight
            delta = self.delta_weight(name).to(w.dtype)
            if name in self.lora_magnitude:
                w.copy_(undo_dora_merge(w, delta, self.lora_magnitude[name], self._merge_norm))
                self._merge_norm = None
            else:
                w.sub_(delta)
        self.merged_adapter = None

    def adapter_parameters(self, name: str) -> dict[str, nn.Parameter]:
        """Adapter `name`'s parameters under their saved names (without the adapter name)."""
        params = {"lora_A.weight": self.lora_A[name].weight, "lora_B.weight": self.lora_B[name].weight}
        if name in self.lora_magnitude:
            params["lora_magnitude"] = self.lora_magnitude[name]
        return params

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"adapters={list(self.lora_A)}, active={self.active_adapter!r}")


class TrainableTokens(nn.Module):
    """An embedding (or its tied output head) whose rows `indices` are trained, the rest frozen.

    The rows are replaced, not added to: W' = W with W'[indices] = delta. A tied head
    (`tied_to` the embedding's wrapper) shares that wrapper's delta and holds no tensors itself.
    """

    def __init__(self, base_layer: nn.Module, indices: Sequence[int],
                 tied_to: TrainableTokens | None = None):
        super().__init__()
        if tied_to is None:
            self.base_layer = base_layer
            self.register_buffer("indices", torch.tensor(list(indices), dtype=torch.long,
                                                         device=base_layer.weight.device))
            self.trainable_tokens_delta = nn.ParameterDict()
            self.active_adapter: str | None = None
        self.is_head = isinstance(base_layer, nn.Linear)
        object.__setattr__(self, "tied_to", tied_to)  # not a submodule: its tensors live there

    def add_adapter(self, name: str) -> None:
        if self.tied_to is not None:
            return
        self.trainable_tokens_delta[name] = nn.Parameter(
            self.base_layer.weight.detach()[self.indices].clone())
        self.active_adapter = name

    @property
    def weight(self) -> torch.Tensor:
        """The embedding matrix in use: the base with the trained rows put in."""
        owner = self.tied_to or self
        w = owner.base_layer.weight
        if owner.active_adapter is None:
            return w
        return w.index_copy(0, owner.indices, owner.trainable_tokens_delta[owner.active_adapter])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_head:
            return F.linear(x, self.weight.to(x.dtype))
        return F.embedding(x, self.weight)


def adapter_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every `LoRALinear` and (owning) `TrainableTokens` in the model."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear) or (isinstance(module, TrainableTokens)
                                              and module.tied_to is None):
            yield name, module


def _set_child(model: nn.Module, name: str, child: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, child)


def _add_trainable_tokens(model: nn.Module, indices: list[int], adapter_name: str) -> None:
    emb = model.tok_emb
    if not isinstance(emb, TrainableTokens):
        if max(indices) >= emb.num_embeddings or min(indices) < 0:
            raise ValueError(f"trainable_token_indices={indices} must lie in [0, "
                             f"{emb.num_embeddings}) (the vocabulary)")
        emb = TrainableTokens(model.tok_emb, indices)
        head = model.lm_head
        model.tok_emb = emb
        if isinstance(head, nn.Linear) and head.weight is emb.base_layer.weight:
            model.lm_head = TrainableTokens(head, indices, tied_to=emb)
    elif emb.indices.tolist() != indices:
        raise ValueError(f"trainable_token_indices={indices} differ from the model's "
                         f"{emb.indices.tolist()}: every adapter trains the same rows")
    emb.add_adapter(adapter_name)


def apply_lora(model: nn.Module, config: LoraConfig, adapter_name: str = DEFAULT) -> nn.Module:
    """Wrap the target linear layers of `model` with LoRA, in place, add adapter
    `adapter_name`, make it the active one, and freeze everything else.

    Args:
        model: any module (a `GPT`); its `nn.Linear` / `NF4Linear` layers are candidates.
        config: the adapter's `LoraConfig`.
        adapter_name: a new name (several adapters can live side by side; `set_adapter`).

    Returns:
        The same model.

    Raises:
        ValueError: no module matches `target_modules` (the error lists candidates); the name
            is taken; a target shares its weight with another module (a tied head).
    """
    if any(adapter_name in m.lora_A for _, m in adapter_modules(model)
           if isinstance(m, LoRALinear)):
        raise ValueError(f"adapter_name={adapter_name!r} already exists; pick another name")
    if any(isinstance(m, LoRALinear) and m.merged_adapter for _, m in adapter_modules(model)):
        raise ValueError("an adapter is merged into the base: unmerge_adapter(model) first")
    candidates: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            candidates[name] = module
        elif isinstance(module, (nn.Linear, NF4Linear)) and not name.endswith(".base_layer") \
                and ".lora_" not in name:
            candidates[name] = module
    targets = [n for n in candidates if match_target(n, config.target_modules)]
    if not targets:
        raise ValueError(f"target_modules={config.target_modules!r} matches no linear layer; "
                         f"the model has e.g. {list(candidates)[:6]}: name them (a suffix such "
                         "as 'attn.qkv' or a regex for the whole name)")
    for name in targets:
        module = candidates[name]
        if not isinstance(module, LoRALinear):
            weight = getattr(module, "weight", None)
            shared = weight is not None and any(
                p is weight for n, m in model.named_modules() if n != name
                for p in m.parameters(recurse=False))
            if shared:
                raise ValueError(f"{name}'s weight is shared with another module (tied "
                                 "embeddings): adapting it would change both; leave it out of "
                                 "target_modules (use trainable_token_indices for new tokens)")
            module = LoRALinear(module)
            _set_child(model, name, module)
        module.add_adapter(adapter_name, config)
    if config.trainable_token_indices:
        _add_trainable_tokens(model, config.trainable_token_indices, adapter_name)
    model.lora_configs = {**getattr(model, "lora_configs", {}), adapter_name: config}
    set_adapter(model, adapter_name)
    return model


def set_adapter(model: nn.Module, adapter_name: str) -> None:
    """Activate `adapter_name` in every adapted layer; only its weights stay trainable.

    Raises:
        ValueError: no such adapter, or an adapter is merged (unmerge first).
    """
    configs = getattr(model, "lora_configs", {})
    if adapter_name not in configs:
        raise ValueError(f"adapter_name={adapter_name!r} is not in the model; it has "
                         f"{sorted(configs)}")
    modules = list(adapter_modules(model))
    if any(isinstance(m, LoRALinear) and m.merged_adapter for _, m in modules):
        raise ValueError("an adapter is merged into the base: unmerge_adapter(model) before "
                         "switching adapters")
    for p in model.parameters():
        p.requires_grad_(False)
    for _, m in modules:
        if isinstance(m, LoRALinear):
            m.active_adapter = adapter_name if adapter_name in m.lora_A else None
            if m.active_adapter:
                for p in m.adapter_parameters(adapter_name).values():
                    p.requires_grad_(True)
        elif adapter_name in m.trainable_tokens_delta:
            m.active_adapter = adapter_name
            m.trainable_tokens_delta[adapter_name].requires_grad_(True)
        else:
            m.active_adapter = None
    model.active_adapter = adapter_name


def merge_adapter(model: nn.Module) -> nn.Module:
    """Fold the active adapter into every adapted base weight (zero extra latency).
    Raises ValueError for a quantized base (dequantize_base first)."""
    for _, m in adapter_modules(model):
        if isinstance(m, LoRALinear):
            m.merge()
    return model


def unmerge_adapter(model: nn.Module) -> nn.Module:
    """Undo `merge_adapter` (to float rounding)."""
    for _, m in adapter_modules(model):
        if isinstance(m, LoRALinear):
            m.unmerge()
    return model


def trainable_parameters(model: nn.Module) -> int:
    """How many parameters require a gradient (tied ones once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
