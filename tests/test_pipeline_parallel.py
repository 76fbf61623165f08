"""Pipeline parallelism over 2 and 4 gloo processes (stages), GPipe and 1F1B, m = 1..4.

Each world size launches `scripts/distributed/parallel_bench.py` once: the same tiny GPT (4
blocks, seeded) trains 3 AdamW steps as one process accumulating m micro-batches
("single_m{m}") and as p stages under each schedule ("pp_{schedule}_m{m}"). The stages' gathered
gradients equal the accumulation's (same per-micro-batch arithmetic; the tied embedding's two
halves are added in another order, so within 1e-6) and the weights after 3 steps within 1e-4.
torch's own pipelining (`torch.distributed.pipelining.PipelineStage` with `ScheduleGPipe` /
`Schedule1F1B`) runs on gloo/CPU with torch 2.13 and, driving our stages, gives the same
gradients. Two limits met on the way: torch's `Schedule1F1B` refuses m < p ("Number of
microbatches (1) must be greater than or equal to the number of stages (2)"), so those runs are
left out, and its `P2POp` refuses a wrapped `dist.isend` ("Invalid ``op``. Expected ``op`` to be
of type ``torch.distributed.isend``"), so its communication is not counted. The bubble formula
is checked against simulated timelines; the measured ones are checked for their structure.
"""


import matplotlib
import pytest
from parallel_reference import assert_tensors_close, run_parallel_bench
from safetensors.torch import load_file

from minillm.course.plotting import plot_timeline
from minillm.distributed.memory import parallel_comm_elements
from minillm.distributed.pipeline import (
    Event,
    bubble_fraction,
    check_pipeline,
    schedule,
    simulate_timeline,
    timeline_bubble,
)
from minillm.models import GPTConfig

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

MICRO = (1, 2, 3, 4)
COMMON = ["--runs", "single,pp,torch_pp", "--micro", ",".join(map(str, MICRO)), "--steps", "3",
          "--batch", "12", "--seq-len", "8", "--d-model", "16", "--n-layer", "4"]
CASES = {2: [], 4: ["--untied", "--mlp", "swiglu", "--d-ff", "24"]}  # 2: tied embeddings
TOKENS, D_MODEL, VOCAB = 12 * 8, 16, 67


@pytest.fixture(scope="module", params=sorted(CASES), ids=lambda n: f"{n}stages")
def run(request, tmp_path_factory):
    return run_parallel_bench(tmp_path_factory, "pp", request.param,
                              [*COMMON, *CASES[request.param]])


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
@pytest.mark.parametrize("m", MICRO)
def test_gradients_equal_gradient_accumulation(run, kind, m):
    n, out, results = run
    ours = load_file(str(out / f"pp_{kind}_m{m}.safetensors"))
    single = load_file(str(out / f"single_m{m}.safetensors"))
    assert_tensors_close(ours, single, "grad.", atol=1e-6)
    assert_tensors_close(ours, single, "weight.", atol=1e-4)
    last = results[f"pp_{kind}_m{m}"]["ranks"][-1]
    assert last["losses"] == pytest.approx(results[f"single_m{m}"]["ranks"][0]["losses"],
                                           abs=1e-6)
    psi = results["single_m1"]["params_per_rank"]
    for rank in results[f"pp_{kind}_m{m}"]["ranks"]:  # it really ran split over the stages
        assert rank["params_per_rank"] < psi


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
@pytest.mark.parametrize("m", MICRO)
def test_torch_pipelining_gives_the_same_gradients(run, kind, m):
    n, out, results = run
    name = f"torch_pp_{kind}_m{m}"
    if name not in results:
        assert kind == "1f1b" and m < n  # torch's Schedule1F1B needs m >= p
        return
    theirs = load_file(str(out / f"{name}.safetensors"))
    ours = load_file(str(out / f"pp_{kind}_m{m}.safetensors"))
    assert_tensors_close(theirs, ours, "grad.", atol=1e-6)
    # torch scales the gradients by 1/m after backward, ours scales each loss: last-bit
    # differences, which Adam's first step (g / (|g| + eps)) blows up where |g| ~ eps = 1e-8
    assert_tensors_close(theirs, ours, "weight.", atol=1e-3)


@pytest.mark.parametrize("m", MICRO)
def test_sends_are_the_activations_and_their_gradients(run, m):
    n, _, results = run
    tied = 0 if n == 4 else VOCAB  # 2 stages: tied embeddings, whose gradient halves are swapped
    for stage, rank in enumerate(results[f"pp_1f1b_m{m}"]["ranks"]):
        assert rank["comm_elements"] == parallel_comm_elements(
            "pp", n, n_layer=4, d_model=D_MODEL, tokens=TOKENS, stage=stage, tied_vocab=tied)


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_measured_timeline_follows_the_schedule(run, kind):
    n, _, results = run
    for m in MICRO:
        events = [Event(**e) for r in results[f"pp_{kind}_m{m}"]["ranks"] for e in r["events"]]
        for s in range(n):
            mine = [e for e in events if e.stage == s]
            assert [(e.kind, e.micro) for e in mine] == schedule(kind, n, s, m)
            assert all(a.end <= b.start for a, b in zip(mine, mine[1:], strict=False))
        at = {(e.kind, e.stage, e.micro): e for e in events}
        for s in range(1, n):  # a stage starts a micro-batch after its neighbour finished it
            for i in range(m):
                assert at[("F", s, i)].start >= at[("F", s - 1, i)].end
                assert at[("B", s - 1, i)].start >= at[("B", s, i)].end
        if m == 1:  # one micro-batch runs stage after stage: at most 1/p of the time is busy
            assert timeline_bubble(events) >= bubble_fraction(n, 1) - 1e-9


# ---- one process: the schedules, the formula, the errors, the figure ----------------------
@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p, m", [(1, 3), (2, 1), (2, 4), (4, 4), (4, 8), (3, 5)])
def test_bubble_formula_equals_the_simulated_timeline(kind, p, m):
    events = simulate_timeline(kind, p, m, t_forward=1.0, t_backward=2.0)
    assert len(events) == 2 * p * m
    assert timeline_bubble(events) == pytest.approx(bubble_fraction(p, m))


def test_one_f_one_b_holds_fewer_micro_batches_in_flight():
    p, m = 4, 8
    for s in range(p):
        for kind, limit in (("gpipe", m), ("1f1b", p - s)):
            live = peak = 0
            for k, _ in schedule(kind, p, s, m):
                live += 1 if k == "F" else -1
                peak = max(peak, live)
            assert peak == limit, (kind, s)
    assert schedule("1f1b", 4, 0, 4) == [("F", 0), ("F", 1), ("F", 2), ("F", 3), ("B", 0),
                                         ("B", 1), ("B", 2), ("B", 3)]
    assert schedule("1f1b", 4, 3, 2) == [("F", 0), ("B", 0), ("F", 1), ("B", 1)]
    assert bubble_fraction(4, 4) == 3 / 7


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_stage=3), "n_layer=4 is not divisible by 3 pipeline stages"),
    (dict(n_stage=8), "n_layer=4 blocks cannot fill 8 pipeline stages"),
    (dict(n_stage=2, batch=6, micro_batches=4), "batch=6 is not divisible by micro_batches=4"),
    (dict(n_stage=2, world_size=4), "world_size=4 but the pipeline has 2 stages"),
])
def test_bad_sizes_are_refused(kwargs, match):
    cfg = GPTConfig(vocab_size=32, d_model=16, n_head=2, n_layer=4)
    with pytest.raises(ValueError, match=match):
        check_pipeline(cfg, **kwargs)
    with pytest.raises(ValueError, match="schedule='zb'"):
        schedule("zb", 2, 0, 2)


def test_timeline_figure_draws_every_event():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = simulate_timeline("1f1b", 3, 4, t_forward=1e-3, t_backward=2e-3)
    ax = plot_timeline([e.__dict__ for e in events])
    assert len(ax.collections) == len(events) == 24
    assert "idle 0.33 (formula 0.33)" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["forward", "backward"]
    assert ax.get_xlabel().endswith("(ms)")
    plt.close(ax.figure)


@pytest.mark.parametrize("p", [2, 4, 8])
def test_interleaved_1f1b_simulated_bubble_is_its_formula(p):
    from minillm.distributed.pipeline import (
        interleaved_bubble_fraction,
        interleaved_schedule,
        simulate_interleaved,
    )
    for m in (p, 2 * p, 4 * p):
        for v in (1, 2, 3, 4):
            for d in range(p):  # every (micro-batch, chunk) forward and backward exactly once
                acts = interleaved_schedule(p, d, m, v)
                assert sorted(acts) == sorted((k, i, c) for k in "BF" for i in range(m)
                                              for c in range(v))
            bubble = timeline_bubble(simulate_interleaved(p, m, v, 1.0, 2.0))
            assert bubble == pytest.approx(interleaved_bubble_fraction(p, m, v), abs=1e-12)
    # one chunk is plain 1F1B; more chunks shrink the fill and drain
    assert interleaved_schedule(p, 0, 8, 1) == [(k, i, 0) for k, i in schedule("1f1b", p, 0, 8)]
    assert interleaved_bubble_fraction(p, 8, 1) == bubble_fraction(p, 8)
    assert interleaved_bubble_fraction(p, 8, 2) < bubble_fraction(p, 8)
    with pytest.raises(ValueError, match="divisible"):
        interleaved_schedule(p, 0, p + 1, 2)


def test_simulated_clock_takes_per_stage_times_and_a_send_cost():
    equal = timeline_bubble(simulate_timeline("1f1b", 4, 8, 1.0, 2.0))
    assert equal == pytest.approx(bubble_fraction(4, 8))
    assert timeline_bubble(simulate_timeline("1f1b", 4, 8, [1.0] * 4, [2.0] * 4)) == equal
    # a slower stage makes the others wait; a send cost delays every hand-over
    assert timeline_bubble(simulate_timeline("1f1b", 4, 8, [1, 1, 1, 2], [2, 2, 2, 4])) > equal
    assert timeline_bubble(simulate_timeline("1f1b", 4, 8, 1.0, 2.0, t_send=0.5)) > equal
