"""Step time and per-rank memory: one process, DDP, ZeRO-1/2/3 and FSDP over gloo processes;
then tensor and pipeline parallelism beside DP: step time and communication per step.

Every configuration trains the same GPT (the course model's width by default) for a few steps
through `scripts/distributed/workbench.py`, launched with `minillm.distributed.launch`; memory is
the per-rank bytes of parameters + gradients + Adam states after the last step, measured from
the live tensors. Reported ratios: own DDP / torch DDP step time (target >= 0.9x throughput,
i.e. time ratio <= 1.11) and own ZeRO-3 / FSDP2.

The second table runs `scripts/distributed/parallel_bench.py` at the same world sizes on the same
tokens per step (world x batch sequences; TP and PP see the whole global batch, which DP splits):
tensor parallelism over all ranks, and pipeline parallelism with one stage per rank under GPipe
and 1F1B with `--micro` micro-batches. Communication is what every rank hands to collectives and
sends in one step (all-reduces counted twice, the ZeRO paper's convention; the busiest rank), in
MiB, beside the formula's (`minillm.distributed.memory.parallel_comm_elements`); the ratio is DP's
step time over theirs (above 1: faster than DP).

    python benchmarks/distributed.py                   # 1, 2 and 4 gloo processes
    python benchmarks/distributed.py --worlds 2 --steps 6 --d-model 64

On a machine with fewer cores than processes, ranks time-share the cores: absolute step times
then measure the machine more than the algorithm; the ratios between strategies at one world
size are what to read.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from minillm.distributed.launch import launch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "distributed"
STRATEGIES = "own_ddp,ddp,zero1,zero2,zero3,fsdp"
PARALLEL = {"tp": "TP", "pp_gpipe": "PP GPipe", "pp_1f1b": "PP 1F1B"}


def _parallel_rows(a, worlds: list[int], dp: dict, tmp: str) -> list[tuple]:
    """Launch the TP/PP runner per world; (procs, form, step ms, comm MiB, formula MiB, DP/x)."""
    from minillm.distributed.memory import parallel_comm_elements

    rows = []
    tied = 257  # the tied embedding's gradient travels between the first and last stage
    for world in worlds:
        out = Path(tmp) / f"parallel{world}"
        launch([str(SCRIPTS / "parallel_bench.py"), "--out", str(out), "--runs", "tp,pp",
                "--micro", str(a.micro), "--steps", str(a.steps), "--d-model", str(a.d_model),
                "--n-layer", str(a.n_layer), "--seq-len", str(a.seq_len), "--batch",
                str(world * a.batch), "--vocab", "257", "--n-head", "4"], world, timeout=600,
               env={"OMP_NUM_THREADS": "1"})
        res = json.loads((out / "results.json").read_text())
        tokens = world * a.batch * a.seq_len
        for name, label in PARALLEL.items():
            key = name if name == "tp" else f"{name}_m{a.micro}"
            r = res[key]
            mib = max(x["comm_bytes"] for x in r["ranks"]) / 2**20
            form = "tp" if name == "tp" else "pp"
            formula = max(parallel_comm_elements(form, world, n_layer=a.n_layer,
                                                 d_model=a.d_model, tokens=tokens, stage=s,
                                                 tied_vocab=tied) for s in range(world))
            rows.append((world, label, r["step_s"] * 1e3, mib, 4 * formula / 2**20,
                         dp[world]["own_ddp"]["step_s"] / r["step_s"]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", default="2,4")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=4, help="sequences per rank")
    p.add_argument("--strategies", default=STRATEGIES, help="comma-separated; ratios need "
                   "own_ddp,ddp and zero3,fsdp")
    p.add_argument("--rounds", type=int, default=1,
                   help="launch each world this many times and keep each strategy's best step "
                        "time (strategies alternate between rounds, so load drifts hit both)")
    p.add_argument("--micro", type=int, default=4, help="micro-batches of the pipeline rows")
    p.add_argument("--no-parallel", action="store_true", help="leave out the TP / PP table")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    common = ["--steps", str(a.steps), "--d-model", str(a.d_model), "--n-layer", str(a.n_layer),
              "--seq-len", str(a.seq_len), "--batch", str(a.batch), "--vocab", "257"]
    rows, everything = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(1, "single")] + [(int(w), a.strategies) for w in a.worlds.split(",")]
        for world, names in runs:
            res: dict = {}
            for k in range(a.rounds if world > 1 else 1):
                out = Path(tmp) / f"w{world}_{k}"
                order = names.split(",")
                order = order[k % len(order):] + order[:k % len(order)]  # rotate per round
                launch([str(SCRIPTS / "workbench.py"), "--out", str(out), "--strategies",
                        ",".join(order), *common], world, timeout=600,
                       env={"OMP_NUM_THREADS": "1"})
                for name, r in json.loads((out / "results.json").read_text()).items():
                    if name not in res or r["step_s"] < res[name]["step_s"]:
                        res[name] = r
            everything[world] = res
            for name, r in res.items():
                mem = max(m["total"] for m in r["memory"])
                rows.append((world, name, r["step_s"] * 1e3, mem / 2**20, r["comm_total"] / r["psi"]))
        worlds = [int(w) for w in a.worlds.split(",")]
        parallel = [] if a.no_parallel or "own_ddp" not in a.strategies else \
            _parallel_rows(a, worlds, everything, tmp)
    psi = everything[1]["single"]["psi"]
    print(f"GPT d_model={a.d_model} n_layer={a.n_layer}: Ψ = {psi:,} parameters; "
          f"{a.batch} x {a.seq_len} tokens per rank per step, fp32, gloo, 1 thread per rank")
    print(f"{'procs':>5} {'strategy':>9} {'step ms':>9} {'MiB/rank':>9} {'comm/Ψ':>7}")
    for world, name, ms, mib, comm in rows:
        print(f"{world:>5} {name:>9} {ms:>9.1f} {mib:>9.2f} {comm:>7.2f}")
    for world in everything:
        r = everything[world]
        if "ddp" in r and "own_ddp" in r:
            print(f"{world} procs: own DDP / torch DDP throughput = "
                  f"{r['ddp']['step_s'] / r['own_ddp']['step_s']:.2f}x")
        if "fsdp" in r and "zero3" in r:
            print(f"{world} procs: own ZeRO-3 / FSDP2 throughput = "
                  f"{r['fsdp']['step_s'] / r['zero3']['step_s']:.2f}x")
    if parallel:
        print(f"{'procs':>5} {'form':>9} {'step ms':>9} {'comm MiB':>9} {'formula':>8} "
              f"{'DP/this':>8}   (TP, PP: n_head=4, {a.micro} micro-batches)")
        for world in worlds:
            r = everything[world]["own_ddp"]
            print(f"{world:>5} {'DP':>9} {r['step_s'] * 1e3:>9.1f} "
                  f"{4 * r['comm_total'] / 2**20:>9.2f} {8 * r['psi'] / 2**20:>8.2f} {1:>8.2f}")
            for w, label, ms, mib, formula, ratio in parallel:
                if w == world:
                    print(f"{w:>5} {label:>9} {ms:>9.1f} {mib:>9.2f} {formula:>8.2f} {ratio:>8.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
