"""The synthetic recall tasks of chapter 18 (minillm.data.synthetic)."""

import pytest
import torch

from minillm.data.synthetic import mqar_batch, recall_accuracy, selective_copying_batch
from minillm.models import GPT, GPTConfig


def test_mqar_asks_every_key_once_for_the_value_that_followed_it():
    g = torch.Generator().manual_seed(0)
    x, y = mqar_batch(16, n_pairs=5, n_keys=8, n_values=6, generator=g)
    assert x.shape == y.shape == (16, 15)
    for row, tgt in zip(x.tolist(), y.tolist(), strict=True):
        keys, values = row[0:10:2], row[1:10:2]
        assert len(set(keys)) == 5 and all(0 <= k < 8 for k in keys)
        assert all(8 <= v < 14 for v in values)
        assert tgt[:10] == [-100] * 10
        assert sorted(row[10:]) == sorted(keys)                   # every key asked once
        pairs = dict(zip(keys, values, strict=True))
        assert tgt[10:] == [pairs[q] for q in row[10:]]
    x2, _ = mqar_batch(16, n_pairs=5, n_keys=8, n_values=6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="n_pairs=9 must be in"):
        mqar_batch(2, n_pairs=9, n_keys=8)


def test_selective_copying_asks_for_the_data_in_order():
    x, y = selective_copying_batch(8, length=20, n_data=4, n_symbols=5,
                                   generator=torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (8, 24)
    for row, tgt in zip(x.tolist(), y.tolist(), strict=True):
        data = [t for t in row[:20] if t != 0]
        assert len(data) == 4 and all(2 <= t < 7 for t in data)
        assert row[20:] == [1] * 4 and tgt[20:] == data and tgt[:20] == [-100] * 20
    with pytest.raises(ValueError, match="n_data=30 must be in"):
        selective_copying_batch(2, length=20, n_data=30)


def test_recall_accuracy_scores_only_the_asked_positions():
    x, y = mqar_batch(4, n_pairs=3, n_keys=4, n_values=4, generator=torch.Generator().manual_seed(2))
    model = GPT(GPTConfig(vocab_size=8, context_length=9, d_model=16, n_layer=1, n_head=2))
    with torch.no_grad():   # every logit equal: the argmax is id 0, never a value
        model.lm_head.weight.zero_()
    assert recall_accuracy(model, x, y) == 0.0
    assert model.training
