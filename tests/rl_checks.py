"""Helpers shared by the RLHF tests (test_reward, test_ppo, test_grpo, test_reinforce,
test_rlhf_details).

    from rl_checks import RecordingReward, close, tiny_gpt, without_times
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


class RecordingReward:
    """A stand-in proxy (mean token id of the response / 64) that remembers every call as
    (rollout, scores)."""

    def __init__(self):
        self.calls = []

    def __call__(self, rollout, texts):
        del texts
        mask = rollout.response_mask.float()
        scores = (rollout.responses.float() * mask).sum(-1) / mask.sum(-1) / 64.0
        self.calls.append((rollout, scores.clone()))
        return scores


def without_times(history: list[dict]) -> list[dict]:
    """A trainer's history without its wall times (keys ending in "_s"), for equality checks."""
    return [{k: v for k, v in h.items() if not k.endswith("_s")} for h in history]


def check_resume(make_trainer, folder):
    """Run a trainer 3 steps straight, and another 2 steps + checkpoint + resume + 1 step; assert
    both end with the same policy and history (wall times aside). Returns (straight, resumed)."""
    straight = make_trainer()
    straight.fit(3)
    first = make_trainer()
    first.fit(2, checkpoint=folder)
    resumed = make_trainer()
    resumed.resume(folder)
    assert resumed.step_count == 2
    resumed.fit(1)
    for k, v in straight.policy.state_dict().items():
        torch.testing.assert_close(resumed.policy.state_dict()[k], v, atol=0, rtol=0)
    assert without_times(resumed.history) == without_times(straight.history)
    return straight, resumed
