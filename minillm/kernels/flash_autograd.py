"""The autograd wrapper that both FlashAttention implementations (PyTorch tiles, Triton kernels)
share: forward saves Q, K, V, O and the log-sum-exp only, backward recomputes the probabilities.

An implementation gives its two passes:

    forward_pass(q, k, v, *, mask, causal, scale, <tile sizes>) -> (out, lse)
    backward_pass(q, k, v, out, lse, d_out, d_lse, *, mask, causal, scale, <tile sizes>)
        -> (dq, dk, dv)

and the names of its two tile sizes (the PyTorch version says block_q/block_k, the Triton one
block_m/block_n, after the papers they follow). Both outputs are differentiable: a gradient into
the log-sum-exp (d_lse) is passed on to the backward pass, which folds it into D.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["flash_attention_function"]


def flash_attention_function(name: str, forward_pass: Callable, backward_pass: Callable,
                             tiles: tuple[str, str]) -> type[torch.autograd.Function]:
    """An `autograd.Function` whose `apply(q, k, v, mask, causal, scale, tile_1, tile_2)` returns
    (out, lse) from `forward_pass` and whose backward calls `backward_pass`.

    Args:
        name: the class name (shown in tracebacks and in `grad_fn`).
        forward_pass, backward_pass: the implementation's passes (signatures above).
        tiles: the keyword names of its two tile sizes, e.g. ("block_q", "block_k").

    Returns:
        The Function class.
    """

    class FlashAttentionFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, mask, causal, scale, tile_1, tile_2):
            options = {"causal": causal, "scale": scale, tiles[0]: tile_1, tiles[1]: tile_2}
            out, lse = forward_pass(q, k, v, mask=mask, **options)
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.mask = mask  # the caller's tensor (constant); not counted as saved activations
            ctx.options = options
            return out, lse

        @staticmethod
        def backward(ctx, d_out, d_lse):
            q, k, v, out, lse = ctx.saved_tensors
            if d_out is None:  # only the log-sum-exp was used
                d_out = torch.zeros_like(out)
            dq, dk, dv = backward_pass(q, k, v, out, lse, d_out, d_lse, mask=ctx.mask,
                                       **ctx.options)
            return dq, dk, dv, None, None, None, None, None

    FlashAttentionFunction.__name__ = FlashAttentionFunction.__qualname__ = name
    FlashAttentionFunction.__module__ = forward_pass.__module__
    FlashAttentionFunction.__doc__ = (
        f"Forward saves Q, K, V, O and the log-sum-exp ({forward_pass.__name__}); backward "
        f"recomputes the probabilities ({backward_pass.__name__}).")
    return FlashAttentionFunction
