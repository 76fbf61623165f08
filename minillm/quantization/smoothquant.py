"""SmoothQuant: move the activations' outliers into the weights, then quantize both to int8.

Xiao et al. 2022, arXiv:2211.10438. Outliers live in a few *input channels* j of X, and are
consistent across tokens, so one per-channel factor s_j can divide them away if W's column j is
multiplied by it — the product is unchanged:

    Y = X W^T = (X diag(s)^-1) (W diag(s))^T,      s_j = max|X_j|^α / max|W_{:,j}|^(1-α)

α = 0.5 splits the difficulty evenly. After smoothing, even per-tensor int8 activations work
(SmoothQuant's W8A8 "O1-O3" settings), where LLM.int8() instead takes outliers out of the
integer matmul. Departure: we divide x by s inside the layer (one multiply per input) instead
of folding 1/s into the preceding LayerNorm, so any `nn.Linear` can be smoothed.
"""

from __future__ import annotations

import torch
from torch import nn

from minillm.quantization.formats import absmax_quantize
from minillm.quantization.int8 import Int8WeightLinear, quantize_activations

__all__ = ["smoothing_factors", "SmoothQuantLinear"]


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5
                      ) -> torch.Tensor:
    """s_j = max|X_j|^α / max|W_:,j|^(1-α) (in,), from calibration absmax per input channel."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha} must lie in [0, 1] (0.5 in the paper)")
    w_max = weight.detach().abs().amax(0).float().clamp(min=1e-5)
    a_max = act_absmax.float().clamp(min=1e-5)
    return (a_max.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)


class SmoothQuantLinear(Int8WeightLinear):
    """W8A8 linear on smoothed inputs: int8 W diag(s) per output channel; x / s quantized to
    int8 per tensor ("tensor", dynamic: the hard case SmoothQuant makes work) or per token."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 alpha: float | None = 0.5, activations: str = "tensor"):
        if activations not in ("tensor", "token"):
            raise ValueError(f"activations={activations!r}; choose 'tensor' or 'token'")
        super().__init__(in_features, out_features, bias)
        self.alpha, self.activations = alpha, activations
        self.register_buffer("smooth", torch.ones(in_features))

    @classmethod
    def from_linear(cls, linear: nn.Linear, act_absmax: torch.Tensor | None,
                    alpha: float | None = 0.5, activations: str = "tensor") -> SmoothQuantLinear:
        """Smooth with calibration statistics `act_absmax` (per input channel) and strength
        `alpha`; alpha=None is the unsmoothed baseline (s = 1: the same int8 arithmetic without
        the migration, no calibration needed)."""
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, alpha,
                activations)
        if alpha is None:
            s = torch.ones(linear.in_features, device=linear.weight.device)
        else:
            if act_absmax is None:
                raise ValueError("SmoothQuant needs calibration statistics (act_absmax) unless "
                                 "alpha=None (the unsmoothed baseline)")
            s = smoothing_factors(act_absmax, linear.weight, alpha)
        m.smooth.copy_(s)
        return m.load_weight(*absmax_quantize(linear.weight.detach().float() * s, 8, "channel"),
                             linear.bias)

    def dequantized_weight(self) -> torch.Tensor:
        return self.qweight.float() * self.weight_scale / self.smooth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.reshape(-1, x.shape[-1]).float() / self.smooth
        if self.activations == "tensor":
            qx, sx = quantize_activations(xs, xs.abs().amax().clamp(min=1e-8) / 127)
        else:
            qx, sx = quantize_activations(xs)
        return self.int8_output(qx, sx, x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, activations={self.activations}"
