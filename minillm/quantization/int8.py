"""W8A8: int8 weights and int8 activations multiplied by an integer kernel.

With per-output-channel weight scales s_w (out,) and activation scales s_x — one per token
(*dynamic*: computed from each input at run time) or one for the whole tensor (*static*: the
largest magnitude seen on calibration data, fixed before deployment) — a linear layer is

    y = x W^T + b ≈ s_x s_w^T ⊙ (q_x q_w^T) + b,        q_x q_w^T accumulated exactly in int32

(Jacob et al. 2018, arXiv:1712.05877; Dettmers et al. 2022, arXiv:2208.07339, §2). The integer
product runs in `torch._int_mm` (int8 x int8 -> int32) where PyTorch has it for the device and
shape, else in int32 arithmetic (exact, slow). Static per-tensor activation scales are what an
integer-only pipeline wants, and what outlier features break (chapter 15, LLM.int8()).
"""

from __future__ import annotations

import torch
from torch import nn

from minillm.quantization.formats import absmax_dequantize, absmax_quantize

__all__ = ["Int8Linear", "Int8WeightLinear", "int8_matmul", "quantize_activations",
           "int_mm_available"]

_INT_MM_OK: dict[str, bool] = {}


def int_mm_available(device: torch.device | str = "cpu") -> bool:
    """Whether `torch._int_mm` runs on this device (tried once on a small problem)."""
    key = str(torch.device(device).type)
    if key not in _INT_MM_OK:
        try:
            a = torch.ones(32, 32, dtype=torch.int8, device=device)
            _INT_MM_OK[key] = bool((torch._int_mm(a, a) == 32).all())
        except (RuntimeError, AttributeError, NotImplementedError):
            _INT_MM_OK[key] = False
    return _INT_MM_OK[key]


def int8_matmul(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """Exact int32 product a @ b_t.T of int8 matrices a (m, k) and b_t (n, k).

    `torch._int_mm` takes b (k, n); the transposed view of the (n, k) weight is what its CPU
    kernel is fastest on (no copy). On CUDA it needs m > 16 and k, n multiples of 8.
    """
    cuda_ok = a.shape[0] > 16 and a.shape[1] % 8 == 0 and b_t.shape[0] % 8 == 0
    if int_mm_available(a.device) and (a.device.type == "cpu" or cuda_ok):
        return torch._int_mm(a.contiguous(), b_t.t())
    if a.device.type == "cpu":
        return a.to(torch.int32) @ b_t.to(torch.int32).t()
    return (a.double() @ b_t.double().t()).to(torch.int32)  # exact for k < 2^53 / 127^2


def quantize_activations(x: torch.Tensor, static_scale: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax int8 activations: per token (dynamic) or with a calibrated per-tensor scale.

    Args:
        x: (N, C) activations.
        static_scale: a scalar tensor (max |x| on calibration data / 127); None = dynamic.
    Returns:
        q (N, C) int8 and scales (N, 1) float32.
    """
    if static_scale is None:
        return absmax_quantize(x, 8, "channel")
    q = torch.round(x.float() / static_scale).clamp(-127, 127).to(torch.int8)
    return q, static_scale.reshape(1, 1).expand(x.shape[0], 1)


class Int8WeightLinear(nn.Module):
    """What the int8-weight layers (W8A8 here, LLM.int8(), SmoothQuant) share: an `nn.Linear`'s
    weight as int8 codes `qweight` (out, in) with one float scale per output row, in the buffer
    named `scale_name` (of `scale_shape`), and its bias in floating point.

    Args:
        in_features, out_features, bias: as `nn.Linear`.
        scale_name: the scales' buffer (its key in saved checkpoints).
        scale_shape: its shape; None = (out_features, 1).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 scale_name: str = "weight_scale", scale_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.in_features, self.out_features, self.scale_name = in_features, out_features, scale_name
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer(scale_name, torch.ones(scale_shape or (out_features, 1)))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    def load_weight(self, qweight: torch.Tensor, scale: torch.Tensor,
                    bias: torch.Tensor | None) -> Int8WeightLinear:
        """Copy the int8 codes, their scales and the float bias in; returns the layer."""
        self.qweight.copy_(qweight)
        getattr(self, self.scale_name).copy_(scale)
        if bias is not None:
            self.bias.copy_(bias.detach())
        return self

    def int8_output(self, qx: torch.Tensor, sx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y = s_x s_w^T ⊙ (q_x q_w^T) + b from int8 activations qx (N, in) and their scales sx
        (N, 1), in x's dtype and leading shape (x: the layer's input)."""
        acc = int8_matmul(qx, self.qweight)                                  # (N, out) int32
        y = acc.float() * (sx * getattr(self, self.scale_name).reshape(1, -1))
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Int8Linear(Int8WeightLinear):
    """A linear layer with int8 weights (per output channel) and int8 activations.

    Args:
        in_features, out_features, bias: as `nn.Linear`.
        activations: "dynamic" (per token, at run time) or "static" (one calibrated scale).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activations: str = "dynamic"):
        if activations not in ("dynamic", "static"):
            raise ValueError(f"activations={activations!r}; choose 'dynamic' or 'static'")
        super().__init__(in_features, out_features, bias)
        self.activations = activations
        if activations == "static":
            self.register_buffer("input_scale", torch.ones(()))

    @classmethod
    def from_linear(cls, linear: nn.Linear, activations: str = "dynamic",
                    input_absmax: torch.Tensor | None = None) -> Int8Linear:
        """Quantize a trained `nn.Linear`; "static" needs `input_absmax` (per input channel or
        scalar: the largest |x| seen on calibration data)."""
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, activations)
        m.load_weight(*absmax_quantize(linear.weight.detach(), 8, "channel"), linear.bias)
        if activations == "static":
            if input_absmax is None:
                raise ValueError("activations='static' needs calibration statistics "
                                 "(input_absmax); run calibrate() on some data first")
            m.input_scale.copy_(input_absmax.max().clamp(min=1e-8) / 127)
        return m

    def dequantized_weight(self) -> torch.Tensor:
        return absmax_dequantize(self.qweight, self.weight_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        qx, sx = quantize_activations(x2, self.input_scale if self.activations == "static"
                                      else None)
        return self.int8_output(qx, sx, x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activations={self.activations}"
