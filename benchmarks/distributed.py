"""Step time and per-rank memory: one process, DDP, ZeRO-1/2/3 and FSDP over gloo processes.

Every configuration trains the same GPT (the course model's width by default) for a few steps
through `minillm.distributed.workbench`, launched with `minillm.distributed.launch`; memory is
the per-rank bytes of parameters + gradients + Adam states after the last step, measured from
the live tensors. Reported ratios: own DDP / torch DDP step time (target >= 0.9x throughput,
i.e. time ratio <= 1.11) and own ZeRO-3 / FSDP2.

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

STRATEGIES = "own_ddp,ddp,zero1,zero2,zero3,fsdp"


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
                launch(["-m", "minillm.distributed.workbench", "--out", str(out), "--strategies",
                        ",".join(order), *common], world, timeout=600,
                       env={"OMP_NUM_THREADS": "1"})
                for name, r in json.loads((out / "results.json").read_text()).items():
                    if name not in res or r["step_s"] < res[name]["step_s"]:
                        res[name] = r
            everything[world] = res
            for name, r in res.items():
                mem = max(m["total"] for m in r["memory"])
                rows.append((world, name, r["step_s"] * 1e3, mem / 2**20, r["comm_total"] / r["psi"]))
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
    if a.json:
        Path(a.json).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
