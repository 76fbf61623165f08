"""Quantization: number formats, LLM.int8(), SmoothQuant, group-wise int4/int3, NF4, GPTQ, QAT.

    >>> from minillm.quantization import quantize_model, save_quantized, load_quantized
    >>> quantize_model(model, "gptq4-g128", calibration=tokens)      # doctest: +SKIP

Layer: above `models` (it swaps a model's `nn.Linear`s), below peft / generation / training.
"""

from minillm.quantization.calibration import calibrate, linear_layers
from minillm.quantization.formats import (
    absmax_dequantize,
    absmax_quantize,
    pack_bits,
    unpack_bits,
    zeropoint_dequantize,
    zeropoint_quantize,
)
from minillm.quantization.gptq import gptq_quantize, hessian_from_inputs
from minillm.quantization.int4 import PackedWeight, WeightOnlyLinear, bits_per_weight, rtn_quantize
from minillm.quantization.int8 import (
    Int8Linear,
    int8_matmul,
    int_mm_available,
    quantize_activations,
)
from minillm.quantization.llm_int8 import (
    LLMInt8Linear,
    llm_int8_matmul,
    outlier_columns,
    vectorwise_quantize,
)
from minillm.quantization.modules import (
    QuantScheme,
    load_quantized,
    parse_scheme,
    quantize_model,
    save_quantized,
    state_nbytes,
)
from minillm.quantization.nf4 import NF4_LEVELS, NF4Linear, dynamic_map, nf4_levels, nf4_quantize
from minillm.quantization.qat import FakeQuantLinear, fake_quantize, prepare_qat
from minillm.quantization.smoothquant import SmoothQuantLinear, smoothing_factors

__all__ = [
    "FakeQuantLinear", "Int8Linear", "LLMInt8Linear", "NF4Linear", "NF4_LEVELS", "PackedWeight",
    "QuantScheme", "SmoothQuantLinear", "WeightOnlyLinear", "absmax_dequantize", "absmax_quantize",
    "bits_per_weight", "calibrate", "dynamic_map", "fake_quantize", "gptq_quantize",
    "hessian_from_inputs", "int8_matmul", "int_mm_available", "linear_layers", "llm_int8_matmul",
    "load_quantized", "nf4_levels", "nf4_quantize", "outlier_columns", "pack_bits",
    "parse_scheme", "prepare_qat", "quantize_activations", "quantize_model", "rtn_quantize",
    "save_quantized", "smoothing_factors", "state_nbytes", "unpack_bits", "vectorwise_quantize",
    "zeropoint_dequantize", "zeropoint_quantize",
]
