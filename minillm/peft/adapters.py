"""Adapter files: only the adapter's tensors (safetensors) and its config (JSON), loaded onto a base.

    save_adapter(model, "out/adapter")                      # adapter_model.safetensors + config
    load_adapter(GPT.from_checkpoint(base), "out/adapter")  # the same model again
    save_adapter(model, "out/peft", peft_gpt2=True)         # Hugging Face PEFT's layout

A folder holds `adapter_model.safetensors` (the A, B factors, DoRA magnitudes and trained
token rows, nothing of the base) and `adapter_config.json`. In minillm's layout the tensors
carry minillm's module names (`blocks.0.attn.qkv.lora_A.weight`); with `peft_gpt2=True` they
carry those of PEFT on a Hugging Face GPT-2 (`base_model.model.transformer.h.0.attn.c_attn.
lora_A.weight`, config in `LoraConfig`'s schema), so `PeftModel.from_pretrained` loads it onto
the exported model. GPT-2's Conv1D stores its weight transposed, but PEFT's A and B are plain
linear layers of the same shapes as ours: only the names change. `load_adapter` reads both.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from minillm.io import atomic_folder, atomic_write_json, load_tensors, read_json, save_tensors
from minillm.models.convert.hf_gpt2 import hf_gpt2_module_name
from minillm.peft.lora import (
    DEFAULT,
    LoraConfig,
    LoRALinear,
    TrainableTokens,
    adapter_modules,
    apply_lora,
)
from minillm.peft.qlora import quantize_base
from minillm.quantization.nf4 import NF4Linear

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "adapter_state_dict", "load_adapter",
           "save_adapter"]

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
TOKENS_KEY = "tok_emb.trainable_tokens_delta"
PEFT_TOKENS_KEY = "transformer.wte.token_adapter.trainable_tokens_delta"
# minillm's tensor suffix -> PEFT's
PEFT_SUFFIX = {"lora_A.weight": "lora_A.weight", "lora_B.weight": "lora_B.weight",
               "lora_magnitude": "lora_magnitude_vector"}


def adapter_state_dict(model: nn.Module, adapter_name: str | None = None
                       ) -> dict[str, torch.Tensor]:
    """The tensors of one adapter (default: the active one) under minillm's names."""
    name = adapter_name or getattr(model, "active_adapter", None)
    if name is None or name not in getattr(model, "lora_configs", {}):
        raise ValueError(f"adapter_name={name!r} is not in the model (apply_lora first); it has "
                         f"{sorted(getattr(model, 'lora_configs', {}))}")
    out: dict[str, torch.Tensor] = {}
    for prefix, m in adapter_modules(model):
        if isinstance(m, LoRALinear) and name in m.lora_A:
            out.update({f"{prefix}.{k}": p.detach() for k, p in m.adapter_parameters(name).items()})
        elif isinstance(m, TrainableTokens) and name in m.trainable_tokens_delta:
            out[f"{prefix}.trainable_tokens_delta"] = m.trainable_tokens_delta[name].detach()
    return out


def _to_peft(tensors: dict[str, torch.Tensor], config: LoraConfig
             ) -> tuple[dict[str, torch.Tensor], dict]:
    out, modules = {}, set()
    for key, t in tensors.items():
        if key == TOKENS_KEY:
            out[PEFT_PREFIX + PEFT_TOKENS_KEY] = t
            continue
        suffix = next(s for s in PEFT_SUFFIX if key.endswith("." + s))
        module = hf_gpt2_module_name(key[: -len(suffix) - 1], to_hf=True)
        modules.add(module)
        out[f"{PEFT_PREFIX}{module}.{PEFT_SUFFIX[suffix]}"] = t
    peft_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": None,
        "r": config.r, "lora_alpha": config.alpha, "lora_dropout": config.dropout,
        "target_modules": sorted(modules), "fan_in_fan_out": True, "bias": "none",
        "use_rslora": config.use_rslora, "use_dora": config.use_dora,
        "init_lora_weights": True if config.init == "kaiming" else "gaussian",
        "trainable_token_indices": config.trainable_token_indices, "inference_mode": True}
    return out, peft_config


def _peft_token_indices(peft_config: dict) -> list[int] | None:
    """PEFT's `trainable_token_indices`: a list (the input embedding) or {module: list}."""
    indices = peft_config.get("trainable_token_indices")
    if isinstance(indices, dict):
        if set(indices) - {"wte", "transformer.wte"}:
            raise ValueError(f"trainable_token_indices={indices}: only GPT-2's token embedding "
                             "(wte) has trainable rows in minillm")
        indices = next(iter(indices.values()), None)
    return list(indices) if indices else None


def _from_peft(tensors: dict[str, torch.Tensor], peft_config: dict
               ) -> tuple[dict[str, torch.Tensor], LoraConfig]:
    if peft_config.get("peft_type") != "LORA":
        raise ValueError(f"peft_type={peft_config.get('peft_type')!r}: only LORA adapters load")
    back = {v: k for k, v in PEFT_SUFFIX.items()}
    out, modules = {}, []
    for key, t in tensors.items():
        name = key.removeprefix(PEFT_PREFIX)
        if name == PEFT_TOKENS_KEY:
            out[TOKENS_KEY] = t
            continue
        suffix = next((s for s in back if name.endswith("." + s)), None)
        if suffix is None:
            raise ValueError(f"tensor {key!r} is not a LoRA factor or DoRA magnitude")
        module = hf_gpt2_module_name(name[: -len(suffix) - 1], to_hf=False)
        modules.append(module)
        out[f"{module}.{back[suffix]}"] = t
    init = peft_config.get("init_lora_weights", True)
    config = LoraConfig(r=int(peft_config["r"]), alpha=float(peft_config["lora_alpha"]),
                        target_modules=sorted(set(modules)),
                        dropout=float(peft_config.get("lora_dropout", 0.0)),
                        init="gaussian" if init == "gaussian" else "kaiming",
                        use_rslora=bool(peft_config.get("use_rslora", False)),
                        use_dora=bool(peft_config.get("use_dora", False)),
                        trainable_token_indices=_peft_token_indices(peft_config))
    return out, config


def save_adapter(model: nn.Module, folder: str | Path, adapter_name: str | None = None,
                 peft_gpt2: bool = False, extra_files: dict[str, dict] | None = None) -> Path:
    """Write the adapter (not the base) into `folder`, atomically.

    Args:
        adapter_name: which adapter (default: the active one).
        peft_gpt2: write PEFT's names and config for the model exported to GPT-2.
        extra_files: more JSON files for the folder (e.g. tokenizer.json, training.json).
    Returns:
        The safetensors file's path.
    """
    name = adapter_name or model.active_adapter
    tensors = adapter_state_dict(model, name)
    config = model.lora_configs[name]
    if peft_gpt2:
        tensors, meta = _to_peft(tensors, config)
    else:
        meta = {"format": "minillm-lora", "adapter_name": name, "config": config.to_dict(),
                "quantized_base": getattr(model, "quantized_base", None)}
    with atomic_folder(folder) as tmp:
        save_tensors(Path(tmp) / ADAPTER_WEIGHTS, tensors)
        atomic_write_json(Path(tmp) / ADAPTER_CONFIG, meta)
        for file, content in (extra_files or {}).items():
            atomic_write_json(Path(tmp) / file, content)
    return Path(folder) / ADAPTER_WEIGHTS


def load_adapter(model: nn.Module, folder: str | Path, adapter_name: str = DEFAULT
                 ) -> nn.Module:
    """Add the adapter saved in `folder` (minillm's or PEFT's GPT-2 layout) to `model` as
    `adapter_name` and activate it; a QLoRA adapter quantizes a float base first (NF4 of the
    same weights is deterministic, so the base is the one it was trained on). Returns the model.

    Raises:
        ValueError: the tensors do not fit the model (names or shapes, listed).
    """
    folder = Path(folder)
    meta = read_json(folder / ADAPTER_CONFIG, ADAPTER_CONFIG)
    tensors = load_tensors(folder / ADAPTER_WEIGHTS, "the adapter weights")
    if "peft_type" in meta:
        tensors, config = _from_peft(tensors, meta)
    else:
        config = LoraConfig.from_dict(meta["config"])
        quantized = meta.get("quantized_base")
        if quantized and not any(isinstance(m, NF4Linear) for m in model.modules()):
            quantize_base(model, **quantized)
    apply_lora(model, config, adapter_name)
    own = adapter_state_dict(model, adapter_name)
    if set(own) != set(tensors):
        raise ValueError(f"{folder}: the adapter does not fit this model: missing "
                         f"{sorted(set(own) - set(tensors))[:4]}, unexpected "
                         f"{sorted(set(tensors) - set(own))[:4]}; load it onto the base it was "
                         "trained on")
    with torch.no_grad():
        for key, t in tensors.items():
            if own[key].shape != t.shape:
                raise ValueError(f"{folder}: {key} has shape {tuple(t.shape)} but the model "
                                 f"{tuple(own[key].shape)}; load it onto the base it was "
                                 "trained on")
            own[key].copy_(t)
    return model
