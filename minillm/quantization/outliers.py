"""Plant outlier features in a small model without changing what it computes.

Dettmers et al. 2022 (LLM.int8(), arXiv:2208.07339, §4) find that from about 6.7B parameters a
few *feature dimensions* of the hidden state carry values up to 20x larger than the rest, at
the inputs of most layers and most tokens. A 1M-parameter model has none, so the integer
schemes built against them have nothing to fix. This module puts them in the way large models
carry them — at the outputs of the LayerNorms that feed the linear layers — while leaving the
model's function unchanged:

    LayerNorm: y_j = γ_j x̂_j + β_j          next layer: z = W y + b = Σ_j W_{:,j} y_j + b

Multiplying γ_j and β_j by c multiplies y_j by c; dividing column j of W by c gives the same z.
So in full precision the model is the same function (up to float rounding, ~1e-6 relative),
but every quantizer that sees y (the activations of `attn.qkv` and `mlp.fc`) now meets values
c times larger on the chosen dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["plant_outliers", "norm_linear_pairs"]


def norm_linear_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Linear]]:
    """(LayerNorm, the linear it feeds) for every block of a minillm GPT: norm1 -> attn.qkv and
    norm2 -> mlp.fc."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError("plant_outliers needs a minillm GPT-style model with .blocks")
    pairs = []
    for block in blocks:
        for norm_name, lin_path in (("norm1", ("attn", "qkv")), ("norm2", ("mlp", "fc"))):
            norm = getattr(block, norm_name)
            lin = getattr(getattr(block, lin_path[0]), lin_path[1])
            if not isinstance(lin, nn.Linear) or getattr(norm, "weight", None) is None:
                raise ValueError(f"{norm_name} -> {'.'.join(lin_path)} is not an affine norm "
                                 "feeding an nn.Linear; plant outliers before quantizing")
            pairs.append((norm, lin))
    return pairs


@torch.no_grad()
def plant_outliers(model: nn.Module, dims: Sequence[int], factor: float = 20.0) -> nn.Module:
    """Scale the LayerNorm gain (and bias) of every block by `factor` on `dims` and divide the
    next linear layer's input columns `dims` by it, in place: the same function in full
    precision, with outlier features `factor` times larger at the inputs of qkv and fc.

    Args:
        model: a minillm GPT (blocks with norm1 -> attn.qkv and norm2 -> mlp.fc), unquantized.
        dims: the feature dimensions (indices into d_model) to make outliers.
        factor: how much larger (LLM.int8() reports up to 20x in large models).
    Returns:
        the model.
    """
    if factor <= 0:
        raise ValueError(f"factor={factor} must be positive")
    pairs = norm_linear_pairs(model)
    width = pairs[0][1].in_features
    idx = torch.as_tensor(list(dims), dtype=torch.long)
    if idx.numel() == 0 or idx.min() < 0 or idx.max() >= width or idx.unique().numel() != idx.numel():
        raise ValueError(f"dims={list(dims)} must be distinct indices in [0, {width})")
    for norm, lin in pairs:
        norm.weight[idx] *= factor
        if getattr(norm, "bias", None) is not None:
            norm.bias[idx] *= factor
        lin.weight[:, idx] /= factor
    return model
