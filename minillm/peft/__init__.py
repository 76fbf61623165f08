"""Parameter-efficient fine-tuning: LoRA (merge, several adapters), DoRA, QLoRA on NF4.

    >>> from minillm.peft import LoraConfig, apply_lora, merge_adapter, save_adapter
    >>> apply_lora(model, LoraConfig(r=8, alpha=16, target_modules=["attn.qkv"]))  # doctest: +SKIP
    >>> save_adapter(model, "out/adapter")          # only A, B: a small file   # doctest: +SKIP

Layer: above `models` and `quantization` (it wraps their linear layers), below generation /
training / alignment, which train and serve the adapted models.
"""

from minillm.peft.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    adapter_state_dict,
    load_adapter,
    save_adapter,
)
from minillm.peft.dora import dora_merged_weight, dora_scale, row_norm, undo_dora_merge
from minillm.peft.lora import (
    LoraConfig,
    LoRALinear,
    TrainableTokens,
    adapter_modules,
    apply_lora,
    match_target,
    merge_adapter,
    set_adapter,
    trainable_parameters,
    unmerge_adapter,
)
from minillm.peft.qlora import apply_qlora, dequantize_base, frozen_base_nbytes, quantize_base

__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "LoRALinear", "LoraConfig", "TrainableTokens",
    "adapter_modules", "adapter_state_dict", "apply_lora", "apply_qlora", "dequantize_base",
    "dora_merged_weight", "dora_scale", "frozen_base_nbytes", "load_adapter", "match_target",
    "merge_adapter", "quantize_base", "row_norm", "save_adapter", "set_adapter",
    "trainable_parameters", "undo_dora_merge", "unmerge_adapter",
]
