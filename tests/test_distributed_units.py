"""The one-process pieces of minillm.distributed: buckets, the ZeRO formulas against the paper's
Figure 1, per-rank state bytes, and the strategies' clear errors (the multi-process equality
tests are in test_distributed_strategies.py)."""

import pytest
import torch
from torch import nn

from minillm.distributed import DistInfo, get_strategy, strategy_names
from minillm.distributed.ddp import make_buckets
from minillm.distributed.memory import MIXED_PRECISION_ADAM, state_bytes, zero_memory_formula
from minillm.models import GPT, GPTConfig
from minillm.training import TrainConfig


def _params(*sizes):
    return [nn.Parameter(torch.zeros(n)) for n in sizes]


def test_buckets_run_last_parameter_first_and_respect_the_cap():
    ps = _params(100, 200, 300, 400)  # 4 bytes each: 400 .. 1600 bytes
    mb = 1 / 2**20  # one byte, in MiB
    buckets = make_buckets(ps, 2000 * mb)
    assert [[p.numel() for p in b] for b in buckets] == [[400], [300, 200], [100]]
    assert [p for b in buckets for p in b] == ps[::-1]


def test_a_small_first_bucket_starts_communication_early():
    ps = _params(*[64] * 10)  # ten 256-byte tensors
    mb = 1 / 2**20
    plain = make_buckets(ps, 2560 * mb)
    first = make_buckets(ps, 2560 * mb, first_bucket_cap_mb=512 * mb)
    assert [len(b) for b in plain] == [10]
    assert [len(b) for b in first] == [2, 8]  # the last two layers' gradients go out first
    with pytest.raises(ValueError, match="first_bucket_cap_mb"):
        make_buckets(ps, 1.0, first_bucket_cap_mb=0)
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        make_buckets(ps, 0)


def test_zero_formula_reproduces_the_papers_figure_one():
    # Rajbhandari et al. Figure 1: Psi = 7.5B, N_d = 64, K = 12 -> 120, 31.4, 16.6, 1.9 GB
    expected = {0: 120.0, 1: 31.4, 2: 16.6, 3: 1.88}
    for stage, gb in expected.items():
        total = zero_memory_formula(7.5e9, 64, stage, **MIXED_PRECISION_ADAM)["total"]
        assert total / 1e9 == pytest.approx(gb, rel=0.01), stage
    with pytest.raises(ValueError, match="stage"):
        zero_memory_formula(1, 2, 4)
    with pytest.raises(ValueError, match="n_d"):
        zero_memory_formula(1, 0, 1)


def test_state_bytes_counts_each_storage_once():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, context_length=16, d_model=16, n_layer=1, n_head=2))
    opt = torch.optim.AdamW(model.parameters())
    loss = model(torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))).loss
    loss.backward()
    opt.step()
    psi = sum(p.numel() for p in model.parameters())  # the tied head counted once
    mem = state_bytes(model, opt)
    assert mem["params"] == 4 * psi
    assert mem["grads"] == 4 * psi
    assert mem["optimizer"] == 8 * psi  # m and v (the 0-d step counters are not state bytes)


def test_sharded_strategies_refuse_one_process_and_unknown_names_are_listed():
    assert {"own_ddp", "zero1", "zero2", "zero3", "fsdp", "single", "ddp"} <= set(strategy_names())
    for name in ("own_ddp", "zero1", "zero3", "fsdp"):
        with pytest.raises(ValueError, match="torchrun --nproc_per_node"):
            get_strategy(name, DistInfo())
    with pytest.raises(ValueError, match="zero1"):
        get_strategy("zero4", DistInfo())
    with pytest.raises(ValueError, match="is not registered"):
        TrainConfig(strategy="zer03")
