"""LLM.int8(): vector-wise int8 with a mixed-precision decomposition of outlier features.

Dettmers et al. 2022, arXiv:2208.07339, §3. Activations X (tokens, C) are quantized per row
(token) and weights W (out, C) per row (output channel), so the int32 product is rescaled by an
outer product of absmax values:

    X W^T ≈ (c_x c_w^T / 127²) ⊙ (q_x q_w^T)

Beyond ~6.7B parameters a few *feature dimensions* of X carry magnitudes up to 20x the rest;
one such value inflates its token's scale and crushes every other entry of the row to 0. The
decomposition takes the set O of columns holding any |x| >= threshold (6.0) out of the int8
product and multiplies them in floating point:

    X W^T ≈ X[:, O] W[:, O]^T  +  dequant(q_x[:, ¬O] q_w[:, ¬O]^T)

Departures, matching bitsandbytes (whose `Linear8bitLt` our tests compare with): only the int8
weights are stored, so W[:, O] is the *dequantized* int8 weight (the paper keeps those columns
in fp16); a token's scale c_x is taken after zeroing only the outlier entries themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from minillm.quantization.int8 import Int8WeightLinear, int8_matmul

__all__ = ["LLMInt8Linear", "vectorwise_quantize", "llm_int8_matmul", "outlier_columns"]


def outlier_columns(x: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """Indices of the feature dimensions (columns of x (N, C)) holding any |x| >= threshold."""
    return torch.nonzero((x.abs() >= threshold).any(0)).reshape(-1)


def vectorwise_quantize(x: torch.Tensor, threshold: float = 0.0
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Row-wise absmax int8 of x (N, C): q = round(x * 127 / max_row |x|).

    With threshold > 0 the outlier entries (|x| >= threshold) are left out of the row maxima
    and whole outlier columns get code 0 (they are multiplied in floating point instead).

    Returns:
        q (N, C) int8, row absmax (N,) float32 and the outlier columns (None without threshold).
    """
    cols = None
    if threshold > 0:
        outliers = x.abs() >= threshold
        cols = torch.nonzero(outliers.any(0)).reshape(-1)
        x = x.masked_fill(outliers, 0)
    absmax = x.abs().amax(-1).float()
    q = torch.round(x * (127.0 / absmax.unsqueeze(-1))).to(torch.int8)  # float32, as bnb
    if cols is not None and x.shape[0] > 1:
        q[:, cols] = 0
    return q, absmax, cols


def llm_int8_matmul(x: torch.Tensor, qweight: torch.Tensor, weight_absmax: torch.Tensor,
                    bias: torch.Tensor | None = None, threshold: float = 6.0) -> torch.Tensor:
    """y = x W^T + b with LLM.int8(): int8 for regular columns, floating point for outliers.

    Args:
        x: (N, C) activations; qweight (out, C) int8 and weight_absmax (out,) from
            `vectorwise_quantize(W)`; threshold: 0 turns the decomposition off.
    Returns:
        (N, out) in x's dtype.
    """
    qx, cx, cols = vectorwise_quantize(x, threshold)
    acc = int8_matmul(qx, qweight)
    y = acc.float() * (cx.unsqueeze(-1) * weight_absmax.unsqueeze(0)) * 6.200124e-05  # 1/127²
    if bias is not None:
        y = y + bias
    y = y.to(x.dtype)
    if cols is not None and cols.numel():
        w_out = (qweight[:, cols].float() * (weight_absmax.unsqueeze(-1) / 127)).to(x.dtype)
        y = y.addmm(x[:, cols], w_out.t())
    return y


class LLMInt8Linear(Int8WeightLinear):
    """`nn.Linear` replacement storing int8 weights; LLM.int8() at run time.

    After each forward, `last_outliers` holds the outlier columns that input had (statistics).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 threshold: float = 6.0):
        if threshold < 0:
            raise ValueError(f"threshold={threshold} must be >= 0 (0 = plain vector-wise int8)")
        super().__init__(in_features, out_features, bias, scale_name="weight_absmax",
                         scale_shape=(out_features,))
        self.threshold = threshold
        self.last_outliers: torch.Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, threshold: float = 6.0) -> LLMInt8Linear:
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, threshold)
        q, absmax, _ = vectorwise_quantize(linear.weight.detach().float())
        return m.load_weight(q, absmax, linear.bias)

    def dequantized_weight(self) -> torch.Tensor:
        return self.qweight.float() * (self.weight_absmax.unsqueeze(-1) / 127)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.threshold > 0:
            self.last_outliers = outlier_columns(x2.detach(), self.threshold)
        y = llm_int8_matmul(x2, self.qweight, self.weight_absmax, self.bias, self.threshold)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold}"
