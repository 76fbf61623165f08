"""Helpers shared by the RLHF tests (test_reward, test_ppo, test_grpo).

    from rl_checks import close, tiny_gpt
"""

import torch

from minillm.models import GPT, GPTConfig


def close(a, b, tol: float = 1e-6) -> None:
    """Assert that two tensors (or numbers, or nested lists) hold the same values, whatever
    their shapes, to `tol` absolute and relative."""
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    assert a.numel() == b.numel(), (a.shape, b.shape)
    torch.testing.assert_close(a.flatten(), b.flatten(), atol=tol, rtol=tol)


def tiny_gpt(vocab_size: int, seed: int = 0) -> GPT:
    """A seeded 2-layer GPT, d_model 32, context 64, in eval mode."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=64, d_model=32, n_layer=2,
                         n_head=2)).eval()
