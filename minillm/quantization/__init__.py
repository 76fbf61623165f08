"""Quantization: number formats, LLM.int8(), SmoothQuant, group-wise int4/int3, NF4, GPTQ, FP8,
QAT, and planted outlier features.

    >>> from minillm.quantization import quantize_model, save_quantized, load_quantized
    >>> quantize_model(model, "gptq4-g128", calibration=tokens)      # doctest: +SKIP

Layer: above `models` (it swaps a model's `nn.Linear`s), below peft / generation / training.

The entry points are exported here; everything else is imported from its module
(e.g. `minillm.quantization.calibration`).
"""

from minillm.quantization.calibration import calibrate
from minillm.quantization.fp8 import Fp8Linear
from minillm.quantization.gptq import gptq_quantize
from minillm.quantization.int4 import WeightOnlyLinear, bits_per_weight
from minillm.quantization.int8 import Int8Linear
from minillm.quantization.llm_int8 import LLMInt8Linear
from minillm.quantization.modules import (
    QuantScheme,
    load_quantized,
    quantize_model,
    save_quantized,
    state_nbytes,
)
from minillm.quantization.nf4 import NF4Linear
from minillm.quantization.outliers import plant_outliers
from minillm.quantization.qat import FakeQuantLinear, prepare_qat
from minillm.quantization.smoothquant import SmoothQuantLinear

__all__ = ["bits_per_weight", "calibrate", "FakeQuantLinear", "Fp8Linear", "gptq_quantize",
           "Int8Linear", "LLMInt8Linear", "load_quantized", "NF4Linear", "plant_outliers",
           "prepare_qat", "quantize_model",
           "QuantScheme", "save_quantized", "SmoothQuantLinear", "state_nbytes",
           "WeightOnlyLinear"]
