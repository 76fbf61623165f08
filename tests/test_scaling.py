import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.models import GPT, GPTConfig
from minillm.scaling import (
    ChinchillaFit,
    IsoFLOPFit,
    compute_optimal,
    fit_chinchilla,
    fit_isoflops,
    fit_power_law,
    flops_6nd,
    training_flops,
)
from minillm.scaling.fits import chinchilla_objective, fit_isoflop_parabola, huber, pareto_frontier
from minillm.scaling.flops import allocations_for_budget, param_counts
from minillm.scaling.sweep import SweepConfig, load_sweep, plan_sweep, run_sweep, write_csv

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def chinchilla_loss(n, d, p=TRUE):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


# ---- FLOPs accounting ---------------------------------------------------------------------------
def test_training_flops_is_kaplans_count_times_three():
    cfg = GPTConfig(vocab_size=257, context_length=64, d_model=32, n_layer=2, n_head=2)
    model = GPT(cfg)
    counts = param_counts(model)
    emb = 257 * 32 + 64 * 32
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] - counts["non_embedding"] == emb
    n_matmul = counts["non_embedding"] + 257 * 32  # the tied head is a matmul per token
    # Kaplan et al. Table 1: forward 2N + 2 n_layer n_ctx d per token; training is 3x that
    expected = 1000 * 3 * (2 * n_matmul + 2 * 2 * 64 * 32)
    assert training_flops(model, 1000) == pytest.approx(expected)
    assert flops_6nd(10, 100) == 6000


def test_allocations_spend_the_budget():
    pairs = allocations_for_budget(6e12, [1e5, 1e6])
    assert pairs == [(1e5, 1e7), (1e6, 1e6)]
    exact = allocations_for_budget(1e12, [1e5], flops_per_token=[7e5])
    assert exact[0][1] == pytest.approx(1e12 / 7e5)
    with pytest.raises(ValueError, match="budget"):
        allocations_for_budget(-1, [1])


# ---- Kaplan power laws --------------------------------------------------------------------------
def test_known_power_law_is_recovered():
    rng = np.random.default_rng(0)
    n = np.logspace(4, 9, 12)
    loss = (8.8e13 / n) ** 0.076 * np.exp(rng.normal(0, 0.002, n.size))
    fit = fit_power_law(n, loss)
    assert fit.exponent == pytest.approx(0.076, rel=0.03)
    assert abs(math.log10(fit.scale) - math.log10(8.8e13)) < 0.5
    assert abs(fit.exponent - 0.076) < 4 * fit.exponent_se
    assert fit.r2 > 0.99
    np.testing.assert_allclose(fit.predict(n), loss, rtol=0.01)


def test_exact_power_law_has_zero_uncertainty():
    n = np.logspace(3, 6, 5)
    fit = fit_power_law(n, (1e7 / n) ** 0.1)
    assert fit.exponent == pytest.approx(0.1, rel=1e-10)
    assert fit.scale == pytest.approx(1e7, rel=1e-8)
    assert fit.exponent_se < 1e-10


def test_pareto_frontier_keeps_the_lower_envelope():
    x = [1, 2, 2, 3, 4, 5]
    loss = [5.0, 4.0, 3.0, 3.5, 2.0, 2.5]
    assert pareto_frontier(x, loss).tolist() == [0, 2, 4]


# ---- Chinchilla Approach 3 ----------------------------------------------------------------------
def test_huber_objective_matches_a_hand_computation():
    # two runs; theta = (a, b, e, alpha, beta)
    theta = torch.tensor([math.log(400.0), math.log(400.0), math.log(1.7), 0.3, 0.3],
                         dtype=torch.float64)
    n, d, obs = [1e6, 1e8], [1e9, 1e10], [2.0, 1.9]
    pred = [1.7 + 400 / n[i] ** 0.3 + 400 / d[i] ** 0.3 for i in range(2)]
    # pred = [2.0048..., 1.7924...]: residuals 0.0024 (> delta, linear) and -0.057 (linear)
    r = [math.log(pred[i]) - math.log(obs[i]) for i in range(2)]
    delta = 1e-3
    by_hand = sum(0.5 * x * x if abs(x) <= delta else delta * (abs(x) - delta / 2) for x in r)
    got = chinchilla_objective(theta, torch.tensor(np.log(n)), torch.tensor(np.log(d)),
                               torch.tensor(np.log(obs)), delta)
    assert got.item() == pytest.approx(by_hand, rel=1e-12)
    # independent reference: torch's own Huber loss (same definition, sum reduction)
    r64 = torch.tensor(r, dtype=torch.float64)
    ref = torch.nn.functional.huber_loss(r64, torch.zeros_like(r64), reduction="sum", delta=delta)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)


def test_huber_is_quadratic_inside_and_linear_outside():
    r = torch.tensor([0.0, 5e-4, -1e-3, 2e-3, -0.1], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.5 * 25e-8, 0.5e-6, 1e-3 * 1.5e-3, 1e-3 * (0.1 - 5e-4)],
                            dtype=torch.float64)
    torch.testing.assert_close(huber(r, 1e-3), expected)


def test_objective_is_vectorised_over_parameter_vectors():
    log_n, log_d = torch.tensor([13.0, 15.0]), torch.tensor([20.0, 22.0])
    log_y = torch.tensor([0.7, 0.6])
    thetas = torch.tensor([[6.0, 6.0, 0.5, 0.3, 0.3], [5.0, 7.0, 0.4, 0.4, 0.2]])
    batched = chinchilla_objective(thetas, log_n, log_d, log_y)
    one_by_one = torch.stack([chinchilla_objective(t, log_n, log_d, log_y) for t in thetas])
    torch.testing.assert_close(batched, one_by_one)


def _synthetic_runs(noise, seed=0):
    rng = np.random.default_rng(seed)
    n = np.repeat(np.logspace(7, 10.5, 7), 6)
    d = np.tile(np.logspace(8.5, 12.5, 6), 7)
    loss = chinchilla_loss(n, d) * np.exp(rng.normal(0, noise, n.size))
    return n, d, loss


def test_fit_chinchilla_recovers_known_parameters_from_noisy_runs():
    n, d, loss = _synthetic_runs(noise=0.002)
    fit = fit_chinchilla(n, d, loss, n_refine=8)
    for key in ("E", "alpha", "beta"):
        assert getattr(fit, key) == pytest.approx(TRUE[key], rel=0.03), key
    for key in ("A", "B"):  # prefactors trade off against the exponents: a looser check
        assert getattr(fit, key) == pytest.approx(TRUE[key], rel=0.15), key
    assert fit.objective < 1e-3
    np.testing.assert_allclose(fit.predict(n, d), chinchilla_loss(n, d), rtol=0.01)


def test_fit_chinchilla_noiseless_is_exact_and_bootstrap_brackets_the_truth():
    n, d, loss = _synthetic_runs(noise=0.0)
    fit = fit_chinchilla(n, d, loss, n_refine=4)
    for key, value in TRUE.items():
        assert getattr(fit, key) == pytest.approx(value, rel=1e-3), key
    noisy = fit_chinchilla(*_synthetic_runs(noise=0.003, seed=1), n_refine=4, n_bootstrap=8,
                           ci=0.9, seed=0)
    assert noisy.bootstrap.shape == (8, 5)
    for key in ("E", "alpha", "beta"):
        lo, hi = noisy.ci[key]
        assert lo <= getattr(noisy, key) <= hi
        assert lo < TRUE[key] * 1.1 and hi > TRUE[key] * 0.9


def test_fit_chinchilla_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        fit_chinchilla([1, 2, 3, 4, -5], [1] * 5, [1] * 5)
    with pytest.raises(ValueError, match=">= 5 runs"):
        fit_chinchilla([1, 2], [1, 2], [1, 2])
    with pytest.raises(ValueError, match="lengths"):
        fit_chinchilla([1, 2, 3, 4, 5], [1] * 4, [1] * 5)


# ---- compute-optimal allocation and IsoFLOPs ------------------------------------------------
def test_compute_optimal_is_the_minimum_on_the_isoflop_line():
    fit = ChinchillaFit(**TRUE, objective=0.0, n_points=0)
    c = 5.76e23  # Chinchilla's Gopher budget
    n_opt, d_opt = compute_optimal(c, fit)
    assert 6 * n_opt * d_opt == pytest.approx(c)
    grid = np.logspace(9, 12, 20001)
    best = grid[np.argmin(fit.predict(grid, c / (6 * grid)))]
    assert n_opt == pytest.approx(best, rel=1e-3)
    assert fit.a == pytest.approx(0.28 / 0.62) and fit.a + fit.b == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(alpha=st.floats(0.1, 1.0), beta=st.floats(0.1, 1.0), log_a=st.floats(0, 10),
       log_b=st.floats(0, 10), log_c=st.floats(10, 25))
def test_compute_optimal_spends_exactly_the_budget(alpha, beta, log_a, log_b, log_c):
    fit = ChinchillaFit(E=1.0, A=math.exp(log_a), B=math.exp(log_b), alpha=alpha, beta=beta,
                        objective=0.0, n_points=0)
    c = 10.0**log_c
    n, d = compute_optimal(c, fit)
    assert 6 * n * d == pytest.approx(c, rel=1e-9)
    # the first-order condition: alpha A / N^alpha = beta B / D^beta at the optimum
    assert alpha * fit.A / n**alpha == pytest.approx(beta * fit.B / d**beta, rel=1e-6)


def test_isoflop_parabola_vertex():
    n = np.exp(np.linspace(10, 14, 7))
    loss = 2.0 + 0.05 * (np.log(n) - 12.3) ** 2
    prof = fit_isoflop_parabola(n, loss, budget=1e15)
    assert math.log(prof.n_opt) == pytest.approx(12.3)
    assert prof.loss_opt == pytest.approx(2.0)
    with pytest.raises(ValueError, match="opens downwards"):
        fit_isoflop_parabola(n, 3.0 - 0.05 * (np.log(n) - 12.3) ** 2, budget=1.0)


def test_isoflops_recover_the_exponent_of_the_parametric_law():
    budgets, ns, losses = [], [], []
    for c in np.logspace(18, 22, 5):
        n_opt, _ = compute_optimal(c, ChinchillaFit(**TRUE, objective=0.0, n_points=0))
        grid = n_opt * np.logspace(-0.6, 0.6, 9)
        ns += list(grid)
        losses += list(chinchilla_loss(grid, c / (6 * grid)))
        budgets += [c] * grid.size
    budgets.append(1e10)  # one profile that brackets no minimum is skipped
    ns.append(1e3)
    losses.append(3.0)
    fit = fit_isoflops(ns, losses, budgets)
    assert isinstance(fit, IsoFLOPFit) and fit.skipped == [1e10]
    assert fit.a == pytest.approx(0.28 / 0.62, abs=0.01)
    assert fit.a + fit.b == pytest.approx(1.0)
    n, d = compute_optimal(1e20, fit)
    assert 6 * n * d == pytest.approx(1e20)
    with pytest.raises(ValueError):
        fit_isoflops(ns, losses, budgets, skip_unbracketed=False)


def test_isoflops_window_ignores_a_cliff_far_from_the_minimum():
    x = np.linspace(10, 14, 9)                        # ln N, steps of 0.5
    loss = 2.0 + 0.05 * (x - 11.0) ** 2 + np.where(x > 12.2, 1.0, 0.0)   # a cliff at large N
    budgets = np.full(9, 1e15)
    runs = (np.exp(np.r_[x, x + 1]), np.r_[loss, 2.0 + 0.05 * (x - 12.0) ** 2],
            np.r_[budgets, np.full(9, 1e16)])         # a second, clean profile
    # all runs: the cliff drags the vertex below the smallest model (ln N 9.68 < 10)
    assert math.log(fit_isoflop_parabola(np.exp(x), loss, 1e15).n_opt) < 10.0
    # within a factor e^1.1 of the lowest run (ln N = 11): ln N 10 .. 12, the parabola is exact
    two = fit_isoflops(*runs, window=math.exp(1.1))
    assert [math.log(p.n_opt) for p in two.profiles] == pytest.approx([11.0, 13.0])
    assert [p.n_points for p in two.profiles] == [5, 5]
    with pytest.raises(ValueError, match="window"):
        fit_isoflops(np.exp(x), loss, budgets, window=1.0)


# ---- the sweep ----------------------------------------------------------------------------------
def test_default_plan_spans_the_required_range():
    from minillm.scaling.sweep import default_sweep_config, make_model_config

    cfg = default_sweep_config()
    plan = plan_sweep(cfg)
    sizes = {GPT(make_model_config(s.d_model, s.n_layer, cfg)).num_params(False) for s in plan}
    assert math.log10(max(sizes) / min(sizes)) >= 1.5
    assert len({s.budget for s in plan}) >= 4
    assert all(s.steps >= cfg.min_steps for s in plan)


def test_sweep_config_validates():
    with pytest.raises(ValueError, match="head_dim"):
        SweepConfig(shapes=((20, 1),))
    with pytest.raises(ValueError, match="budgets"):
        SweepConfig(budgets=())


@pytest.mark.usefixtures("one_thread")
def test_run_sweep_records_points_and_resumes(tmp_path):
    cfg = SweepConfig(budgets=(2e8, 4e8), shapes=((16, 1),), context_length=16, batch_size=4,
                      eval_tokens=512, min_steps=1, min_tokens_per_param=0.01)
    out = tmp_path / "sweep.jsonl"
    records = run_sweep(cfg, out, log=False)
    assert len(records) == 2
    r = records[0]
    assert r["flops"] == pytest.approx(r["tokens"] * r["flops_per_token"])
    assert r["tokens"] == r["steps"] * 64
    assert 0 < r["val_loss"] < 6
    assert json.loads((tmp_path / "sweep_config.json").read_text())["config"]["batch_size"] == 4
    with out.open("a") as f:
        f.write('{"torn')  # a killed run leaves half a line
    again = run_sweep(cfg, out, log=False)  # nothing left to train
    assert [a["val_loss"] for a in again] == [r["val_loss"] for r in records]
    assert len(load_sweep(out)) == 2
    write_csv(records, tmp_path / "sweep.csv")
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("name,budget")


# ---- edge cases: nearly flat fits, negative slopes, torn sweep files --------------------
def test_nearly_flat_power_laws_fit_and_predict():
    x = np.array([1e6, 1e7, 1e8])
    for loss in (np.array([3.00, 2.99, 2.98]), np.array([2.0, 2.0, 2.0])):
        fit = fit_power_law(x, loss)  # x_c = exp(intercept / alpha) overflows here
        np.testing.assert_allclose(fit.predict(x), loss, rtol=1e-3)
    with pytest.raises(ValueError, match="needs at least two x values"):
        fit_power_law([1e6] * 3, [3.0, 2.9, 2.8])


def test_isoflops_with_a_slightly_negative_slope():
    rows = []
    for c in (1e15, 1e16, 1e17):
        n_opt = 1e6 * (c / 1e15) ** -0.01
        rows += [(n, 3 + 0.1 * (math.log(n) - math.log(n_opt)) ** 2, c) for n in (1e5, 1e6, 1e7)]
    n, loss, c = map(np.array, zip(*rows, strict=True))
    assert fit_isoflops(n, loss, c).a == pytest.approx(-0.01, abs=1e-9)


def test_fit_chinchilla_needs_something_to_refine():
    n, d = np.array([1e5, 2e5, 4e5, 8e5, 1.6e6]), np.array([1e7, 3e7, 1e7, 3e7, 1e8])
    with pytest.raises(ValueError, match="n_refine=0 must be a positive integer"):
        fit_chinchilla(n, d, 2 + 1e2 / n ** 0.3 + 1e3 / d ** 0.3, n_refine=0)


def test_sweep_names_are_distinct_and_a_torn_line_loses_nothing(tmp_path, monkeypatch):
    import minillm.scaling.sweep as sweep

    names = [s.name for s in plan_sweep(SweepConfig(budgets=(1.5e11, 2e11), shapes=((32, 1),)))]
    assert names == ["C1.5e11_d32_L1", "C2e11_d32_L1"]
    monkeypatch.setattr(sweep, "train_point", lambda spec, *a, **k: {
        "name": spec.name, "budget": spec.budget, "d_model": spec.d_model,
        "n_layer": spec.n_layer, "val_loss": 1.0})
    out = tmp_path / "sweep.jsonl"
    out.write_text('{"name": "torn')  # a write killed half-way
    run_sweep(SweepConfig(budgets=(1e11,), shapes=((32, 1),)), out, log=False)
    assert [r["name"] for r in load_sweep(out)] == ["C1e11_d32_L1"]


def test_run_sweep_refuses_to_mix_configs(tmp_path, monkeypatch):
    import minillm.scaling.sweep as sweep

    monkeypatch.setattr(sweep, "train_point", lambda spec, *a, **k: {
        "name": spec.name, "budget": spec.budget, "val_loss": 1.0})
    out = tmp_path / "sweep.jsonl"
    run_sweep(SweepConfig(budgets=(1e11,), shapes=((32, 1),)), out, log=False)
    run_sweep(SweepConfig(budgets=(1e11,), shapes=((32, 1),)), out, log=False)  # same: resumes
    with pytest.raises(ValueError, match="holds runs of another sweep config"):
        run_sweep(SweepConfig(budgets=(1e11,), shapes=((32, 1),), lr=1e-2), out, log=False)


def test_sweep_points_say_why_each_point_is_left_out():
    from minillm.scaling.sweep import make_model_config, sweep_points

    cfg = SweepConfig(budgets=(1e10, 1e12), shapes=((16, 1), (64, 2)), min_steps=30,
                      min_tokens_per_param=0.8, max_tokens_per_param=300.0,
                      skip=((1e12, 64, 2),))
    points = sweep_points(cfg)
    assert [(p["budget"], p["d_model"]) for p in points] == [(1e10, 16), (1e10, 64),
                                                             (1e12, 16), (1e12, 64)]
    for p in points:  # tokens per parameter from the FLOP count written out: 6N + 6 L T d
        n_total = GPT(make_model_config(p["d_model"], p["n_layer"], cfg)).num_params(False)
        n_head_in = n_total - cfg.context_length * p["d_model"]     # all but the position table
        per_token = 6 * n_head_in + 6 * p["n_layer"] * cfg.context_length * p["d_model"]
        steps = round(p["budget"] / per_token / (cfg.batch_size * cfg.context_length))
        assert p["steps"] == steps and p["n_params"] == n_total
        assert p["tokens_per_param"] == pytest.approx(steps * cfg.batch_size * cfg.context_length
                                                      / n_total)
    reasons = [p["dropped"] for p in points]
    # 1e10 FLOPs: d16 gets 193 steps (~23 tokens/param), d64 fewer than 30 steps;
    # 1e12: d16 sees ~2,300 tokens per parameter (> 300), d64 is listed in skip
    assert reasons == [None, "min_steps", "max_tokens_per_param", "skip"]
    assert [(s.budget, s.d_model) for s in plan_sweep(cfg)] == [(1e10, 16)]


# ---- Chinchilla Approach 1: the envelope of training curves ------------------------------------
def test_envelope_by_hand():
    from minillm.scaling import fit_envelope

    # run 0 (N=10) is lower up to 2^1.5 FLOPs (1.75 vs 1.95, halfway in log C), run 1 (N=20) from 4
    grid = [1.0, 2.0, 2.0**1.5, 4.0, 8.0, 16.0]
    env = fit_envelope([10, 20], [[1, 2, 4], [2, 4, 8]], [[3.0, 2.0, 1.5], [2.5, 1.4, 1.0]],
                       grid=grid, fit_range=(2.0, 4.0))
    np.testing.assert_allclose(env.flops, grid[:5])               # 16: no run reaches it
    np.testing.assert_allclose(env.loss, [3.0, 2.0, 1.75, 1.4, 1.0])
    assert env.run.tolist() == [0, 0, 0, 1, 1]
    assert env.n_opt.tolist() == [10, 10, 10, 20, 20]
    np.testing.assert_allclose(env.d_opt, np.array(grid[:5]) / (6 * env.n_opt))
    # log N_opt = (ln10, ln10, ln20) at log C = ln2 (1, 1.5, 2): least-squares slope exactly 1
    assert env.a == pytest.approx(1.0) and env.b == pytest.approx(0.0, abs=1e-12)
    # the line passes through the mean point (C = 2^1.5, N = 10·2^(1/3)) with slope 1
    assert env.n_opt_at(4.0) == pytest.approx(10 * 2 ** (1 / 3) * 2**0.5)
    tokens = [[5.0, 6.0, 7.0], [1.0, 2.0, 4.0]]                       # given tokens win
    env2 = fit_envelope([10, 20], [[1, 2, 4], [2, 4, 8]], [[3.0, 2.0, 1.5], [2.5, 1.4, 1.0]],
                        tokens=tokens, grid=[2.0, 4.0])
    np.testing.assert_allclose(env2.d_opt, [6.0, 2.0])
    with pytest.raises(ValueError, match="increasing"):
        fit_envelope([10], [[1, 1, 2]], [[3.0, 2.0, 1.0]])
    with pytest.raises(ValueError, match="one curve per run"):
        fit_envelope([10, 20], [[1, 2]], [[3.0, 2.0]])


def test_envelope_recovers_the_optimum_of_a_known_law():
    from minillm.scaling import fit_envelope

    # every run's curve is the law itself, L(N, D) along D = C / 6N: the envelope's minimum over
    # N at fixed C is then the closed-form N_opt = G (C/6)^(β/(α+β)) (up to the N grid's step)
    ns = np.logspace(2, 7.5, 221)                                  # step 10^(1/40): 5.9%
    d = np.logspace(2, 10, 400)
    flops = [6 * n * d for n in ns]
    losses = [chinchilla_loss(n, d) for n in ns]
    env = fit_envelope(ns, flops, losses, grid=np.logspace(10, 15, 300), fit_range=(1e10, 1e15))
    s = TRUE["alpha"] + TRUE["beta"]
    g = (TRUE["alpha"] * TRUE["A"] / (TRUE["beta"] * TRUE["B"])) ** (1 / s)
    n_star = g * (env.flops / 6) ** (TRUE["beta"] / s)
    assert np.abs(np.log(env.n_opt / n_star)).max() < math.log(1.06)
    np.testing.assert_allclose(env.loss, chinchilla_loss(n_star, env.flops / (6 * n_star)),
                               rtol=1e-3)
    assert env.a == pytest.approx(TRUE["beta"] / s, abs=0.005)     # 0.452
    assert env.b == pytest.approx(TRUE["alpha"] / s, abs=0.005)
    # a curve that ends early does not count beyond its end (no extrapolation)
    short = fit_envelope([1e3, 1e6], [[1e6, 1e7], [1e6, 1e12]], [[1.0, 0.5], [2.0, 1.9]],
                         grid=[1e6, 1e7, 1e9])
    assert short.run.tolist() == [0, 0, 1]


def test_sweep_keeps_training_curves_and_small_widths(tmp_path):
    from minillm.scaling.sweep import make_model_config

    assert make_model_config(8, 1, SweepConfig(shapes=((8, 1),))).n_head == 1
    torch.set_num_threads(1)
    cfg = SweepConfig(budgets=(3e8,), shapes=((8, 1),), context_length=16, batch_size=4,
                      eval_tokens=512, min_steps=1, min_tokens_per_param=0.01, curve_points=8)
    (r,) = run_sweep(cfg, tmp_path / "sweep.jsonl", log=False)
    every = r["steps"] // 8
    assert r["curve_steps"] == [*range(every, r["steps"] + 1, every)] + (
        [] if r["steps"] % every == 0 else [r["steps"]])
    assert r["curve_flops"] == [s * 64 * r["flops_per_token"] for s in r["curve_steps"]]
    assert r["curve_flops"][-1] == r["flops"]
    assert len(r["curve_loss"]) == len(r["curve_steps"]) and r["curve_loss"][0] > r["curve_loss"][-1]
