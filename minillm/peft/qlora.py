"""QLoRA: LoRA on a frozen base held in 4-bit NormalFloat with double quantization.

Dettmers et al. 2023, arXiv:2305.14314, eq. (5):

    Y = X · doubleDequant(c1, c2, W_NF4) + X L1 L2 · s

The base weights are stored in NF4 (blocks of 64, `minillm.quantization.nf4`), their absmax
constants quantized again to 8 bits in blocks of 256; each forward dequantizes them to the
compute dtype (float32 on the CPU, bfloat16 under CUDA autocast), and only the LoRA factors,
kept in float, receive gradients. The frozen base costs 4 + 8/64 + 32/(64·256) ≈ 4.127 bits
per weight instead of 32 (`frozen_base_nbytes` measures it from the buffers).

Departures: no paged optimizers (a GPU memory feature); the output head (tied to the token
embedding in the course model) and the embeddings stay in floating point, as in
`minillm.quantization.modules`. A merged model needs a float base: `dequantize_base` first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from minillm.peft.lora import DEFAULT, LoraConfig, LoRALinear, apply_lora, match_target
from minillm.quantization.nf4 import NF4Linear

__all__ = ["apply_qlora", "dequantize_base", "frozen_base_nbytes", "quantize_base"]

BLOCK_LINEARS = r"blocks\.\d+\..*"  # every linear layer of the transformer blocks


def quantize_base(model: nn.Module, modules: Sequence[str] | str = BLOCK_LINEARS,
                  blocksize: int = 64, absmax_blocksize: int = 256) -> nn.Module:
    """Replace the matching `nn.Linear`s (PEFT-style names, see `match_target`) by frozen
    `NF4Linear`s with double quantization, in place. Returns the model.

    Raises:
        ValueError: nothing matches, or a layer's size does not fit the blocks (named).
    """
    found = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and match_target(n, modules)
             and ".lora_" not in n and not n.endswith(".base_layer")]
    found += [(n[: -len(".base_layer")], m) for n, m in model.named_modules()
              if n.endswith(".base_layer") and isinstance(m, nn.Linear)
              and match_target(n[: -len(".base_layer")], modules)]
    if not found:
        raise ValueError(f"modules={modules!r} matches no nn.Linear to quantize")
    for name, linear in found:
        q = NF4Linear.from_linear(linear, blocksize, True, absmax_blocksize)
        holder = model.get_submodule(name)
        if isinstance(holder, LoRALinear):
            holder.base_layer = q
        else:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, q)
    return model


def apply_qlora(model: nn.Module, config: LoraConfig, adapter_name: str = DEFAULT,
                quantize_modules: Sequence[str] | str = BLOCK_LINEARS, blocksize: int = 64,
                absmax_blocksize: int = 256) -> nn.Module:
    """QLoRA in one call: the block linears to NF4 (`quantize_base`), then LoRA on the
    `config.target_modules` (`apply_lora`). Returns the model, changed in place."""
    quantize_base(model, quantize_modules, blocksize, absmax_blocksize)
    model.quantized_base = {"modules": quantize_modules, "blocksize": blocksize,
                            "absmax_blocksize": absmax_blocksize}  # saved with the adapter
    return apply_lora(model, config, adapter_name)


def frozen_base_nbytes(model: nn.Module) -> dict[str, float]:
    """Memory of the NF4 base weights, counted from their buffers (biases left out).

    Returns:
        {"nf4_bytes": packed codes + quantized constants + second-level scales + offsets,
         "weights": how many weights they hold, "fp32_bytes": the same weights in float32,
         "bits_per_weight": 8 * nf4_bytes / weights}.
    """
    nbytes, weights = 0, 0
    for m in model.modules():
        if isinstance(m, NF4Linear):
            weights += m.in_features * m.out_features
            for name in ("packed", "absmax", "absmax_scale", "absmax_offset"):
                t = getattr(m, name, None)
                if t is not None:
                    nbytes += t.numel() * t.element_size()
    if not weights:
        raise ValueError("the model has no NF4 layers: quantize_base(model) or apply_qlora first")
    return {"nf4_bytes": nbytes, "weights": weights, "fp32_bytes": 4 * weights,
            "bits_per_weight": 8 * nbytes / weights}


def dequantize_base(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Replace every `NF4Linear` (bare or under a LoRA layer) by an `nn.Linear` holding its
    dequantized weights, frozen, in place; then `merge_adapter` can fold the adapter in."""
    for name, m in list(model.named_modules()):
        if not isinstance(m, NF4Linear):
            continue
        linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                           device=m.packed.device, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(m.dequantized_weight())
            if m.bias is not None:
                linear.bias.copy_(m.bias)
        linear.requires_grad_(False)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, linear)
    return model
