"""data/lora/rank_sweep.py: the held-out sweep's run selection and its table (no training)."""

from __future__ import annotations

import importlib.util
import math
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("rank_sweep", ROOT / "data/lora/rank_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flag(args, name):
    return float(args[args.index(name) + 1])


def _without_alpha(args):
    i = args.index("--lora-alpha")
    return args[:i] + args[i + 2:]


def test_scale_runs_hold_alpha_and_meet_the_alpha_2r_series_at_r8(sweep):
    every = sweep.runs(100)
    scale = sweep.scale_runs()
    assert set(scale) == {"lora_r1_alpha16", "lora_r64_alpha16"}
    for name, args in scale.items():
        r, alpha = _flag(args, "--lora-r"), _flag(args, "--lora-alpha")
        assert alpha == 16 and name == f"lora_r{r:g}_alpha16"
        # the rest of the recipe is the alpha = 2r run's, flag for flag
        assert _without_alpha(args) == _without_alpha(every[f"lora_r{r:g}"])
    r8 = every["lora_r8"]
    assert _flag(r8, "--lora-alpha") == 16 and _flag(r8, "--lora-r") == 8   # the shared anchor


def test_t_quantiles_match_scipy(sweep):
    stats = pytest.importorskip("scipy.stats")
    for n, t in sweep.T975.items():
        assert t == pytest.approx(stats.t.ppf(0.975, n - 1), abs=1e-3)


def test_heldout_table_pairs_by_seed(sweep):
    # full's seeds differ a lot; LoRA's differences from full, seed by seed, are nearly constant:
    # a paired interval is narrow, an unpaired one would not be
    full = {1: 1.70, 2: 1.80, 3: 1.95}
    lora = {s: v + d for (s, v), d in zip(full.items(), (0.10, 0.11, 0.12), strict=True)}
    runs = {}
    for name, losses, extra in (("full", full, {}),
                                ("lora_r64_alpha16", lora, {"lora": {"r": 64, "alpha": 16.0}})):
        for seed, loss in losses.items():
            runs[f"{name}_s{seed}"] = {"name": name, "seed": seed, "trainable_params": 10,
                                       "test_response_nats_per_token": loss,
                                       "val_bits_per_byte_slice": 3.0 + seed / 10, **extra}
    table = sweep.heldout_table({"runs": runs, "base": {"test_response_nats_per_token": 3.3,
                                                        "val_bits_per_byte_slice": 2.5}})
    row = next(line for line in table.splitlines() if line.startswith("| lora_r64_alpha16"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "64, 16 (0.25)"
    diffs = [lora[s] - full[s] for s in full]
    half = 4.303 * statistics.stdev(diffs) / math.sqrt(3)
    assert cells[5] == f"{statistics.mean(diffs):.4f} ± {half:.4f}"
    assert half < 0.03   # paired: the seeds' spread of full itself (0.25) does not enter
