"""DoRA: weight-decomposed low-rank adaptation (the math; `LoRALinear` carries it).

Liu et al. 2024, arXiv:2402.09353, eq. (5). A weight is split into a magnitude per output
row and a direction; LoRA's update moves the direction only, and the magnitude is trained
on its own:

    W' = m * (W + ΔW) / ||W + ΔW||_r          ΔW = s·BA,  ||·||_r: the L2 norm of each row

m starts at ||W||_r, so with B = 0 the adapted layer equals the base. Per the paper's §4.3,
the norm is treated as a constant in the backward pass (detached): "it saves memory and
barely changes the gradient". The output of a layer with bias b is

    y = W'x + b = (m / n) * (Wx + s·BAx) + b,        n = ||W + ΔW||_r (detached)

Departures: none from the paper. Here the norm runs over the rows of the (out, in) matrix
(each output feature's incoming weights), as in the paper's "column" of the transposed
(in, out) layout and as in Hugging Face PEFT.
"""

from __future__ import annotations

import torch

__all__ = ["dora_merged_weight", "dora_scale", "row_norm", "undo_dora_merge"]


def row_norm(weight: torch.Tensor) -> torch.Tensor:
    """||W||_r: the L2 norm of each output row of an (out, in) weight. Returns (out,)."""
    return torch.linalg.vector_norm(weight, dim=1)


def dora_scale(magnitude: torch.Tensor, weight: torch.Tensor, delta: torch.Tensor
               ) -> torch.Tensor:
    """m / ||W + ΔW||_r, the norm detached (§4.3). Returns (out,)."""
    return magnitude / row_norm(weight + delta).detach()


def dora_merged_weight(weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """W' = m (W + ΔW) / ||W + ΔW||_r. Returns (W', the row norms used), the norms being what
    `undo_dora_merge` needs to recover W."""
    norm = row_norm(weight + delta)
    return (magnitude / norm).unsqueeze(1) * (weight + delta), norm


def undo_dora_merge(merged: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor,
                    norm: torch.Tensor) -> torch.Tensor:
    """W from W' = (m / n) (W + ΔW): W = W' n / m - ΔW."""
    return merged * (norm / magnitude).unsqueeze(1) - delta
