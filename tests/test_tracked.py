import math

import pytest
import torch

from minillm.models import GPT, GPTConfig
from minillm.training import TrainConfig, Trainer
from minillm.training.tracked import moe_stats, tracked_fit


def _trainer(**moe):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, context_length=8, d_model=16, n_layer=2, n_head=2,
                          d_ff=32, **moe))
    tokens = torch.randint(0, 32, (2000,))
    config = TrainConfig(max_steps=7, batch_size=4, warmup_steps=1, eval_batches=2,
                         eval_interval=0, device="cpu", progress=False)
    return Trainer(model, tokens[:1500], tokens[1500:], config)


def test_tracked_fit_records_curves_and_router_load():
    trainer = _trainer(n_expert=4, top_k=2, capacity_factor=1.0)
    curves = tracked_fit(trainer, eval_interval=3)
    assert curves["step"] == [3, 6, 7]
    assert all(b > a for a, b in zip(curves["seconds"], curves["seconds"][1:], strict=False))
    assert all(0 < v < math.log2(32) + 1 for v in curves["val_bpb"])
    for load in curves["load"]:                       # (layers, experts), shares sum to 1
        assert len(load) == 2 and len(load[0]) == 4
        assert all(sum(row) == pytest.approx(1.0) for row in load)
    assert all(0 <= d <= 1 for row in curves["dropped"] for d in row)


def test_tracked_fit_dense_model_has_no_router_stats():
    trainer = _trainer()
    curves = tracked_fit(trainer, eval_interval=5)
    assert curves["step"] == [5, 7]
    assert curves["load"] == [[], []]
    assert moe_stats(trainer.model(torch.zeros(1, 4, dtype=torch.long)).routing) == {
        "load": [], "dropped": [], "entropy": []}
    with pytest.raises(ValueError, match="eval_interval"):
        tracked_fit(trainer, 0)
