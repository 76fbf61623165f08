"""Chapter 08's controlled ablation: does Switch top-1 catch the dense model at equal FLOPs once
its gate, router decay and z-loss are fixed? (issue 37)

Usage (from the repository root; one torch thread):
    python data/moe/ablation.py                       # writes data/moe/ablation.json
    python data/moe/ablation.py --steps 100 --seeds 0 --out /tmp/a.json   # a quick look

The model, data stream, schedule and evaluation are run_moe.py's (`BASE`, `train_config`,
`evaluate_loss` on the first --eval-bytes of the validation plays), at fewer steps. Runs:

- `dense`: one GELU MLP of width 256 (the FLOPs every run here matches);
- `switch_e8`: chapter 08's Switch (8 experts of width 256, top-1, capacity factor 1.25, balance
  α = 0.01, z-loss β = 0.001, Switch's raw gate p_i, weight decay 0.1 on the router too);
- `switch_e8_renorm`: the same with the gate renormalised (`moe_renormalize=True`: the top-1
  weight is 1, so the expert's output is not shrunk by p_i);
- `switch_e8_controlled_z{β}`: renormalised gate, no weight decay on the router, z-loss β from
  `--z-sweep` (the "tuned z-loss": the sweep's runs are all kept, the chapter picks none).

Each for every seed of --seeds (the seed sets the initialisation and the batch order).

`--study drops` (writes data/moe/ablation_drops.json) asks the next question with the same
model, stream and scorer: is it the *dropped tokens* or the *tokens per expert*? Runs: `dense`;
`switch_e8` as above (capacity factor 1.25); `switch_e8_cf2.0`; `switch_e8_dropless` (no capacity
limit: nothing dropped, megablocks' dropless MoE); `switch_e2` and `switch_e4` (top-1 over 2 and 4
experts, capacity factor 1.25: each expert sees more tokens); and the balance without a loss:
`switch_e8_no_balance` (α = 0) and `switch_e8_bias` (α = 0, DeepSeek-V3's selection bias with
γ = 1e-3, `moe_bias_rate`); two controls: `switch_e1` (one expert: the MoE code path computing
the dense model) and `switch_e8_frozen_router` (the router keeps its random initial weights:
routing is never learnt) and `switch_e8_hash_dropless` (hash routing, Roller et al. 2021: each byte
value always goes to the same expert, a fixed random assignment, gate ≈ 1, nothing dropped:
routing that never moves). These runs go through `tracked_fit`, so each record also holds the
share of assignments dropped and the load per expert every 100 steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_moe import BASE, SWITCH, train_config  # noqa: E402

from minillm.data import load_corpus  # noqa: E402
from minillm.models import GPT, GPTConfig  # noqa: E402
from minillm.tokenizers import ByteTokenizer  # noqa: E402
from minillm.training import Trainer, evaluate_loss, tracked_fit  # noqa: E402


def runs(z_sweep: list[float]) -> dict[str, tuple[dict, bool]]:
    """name -> (GPTConfig overrides, weight decay on the router)."""
    out = {"dense": ({}, True), "switch_e8": (SWITCH, True),
           "switch_e8_renorm": ({**SWITCH, "moe_renormalize": True}, True)}
    for z in z_sweep:
        out[f"switch_e8_controlled_z{z:g}"] = ({**SWITCH, "moe_renormalize": True,
                                                "moe_z_coef": z}, False)
    return out


def drop_runs() -> dict[str, tuple[dict, bool]]:
    """The `--study drops` table: name -> (GPTConfig overrides, weight decay on the router)."""
    return {"dense": ({}, True), "switch_e8": (SWITCH, True),
            "switch_e8_cf2.0": ({**SWITCH, "capacity_factor": 2.0}, True),
            "switch_e8_dropless": ({**SWITCH, "capacity_factor": None}, True),
            "switch_e4": ({**SWITCH, "n_expert": 4}, True),
            "switch_e2": ({**SWITCH, "n_expert": 2}, True),
            "switch_e8_no_balance": ({**SWITCH, "moe_balance_coef": 0.0}, True),
            "switch_e8_bias": ({**SWITCH, "moe_balance_coef": 0.0, "moe_bias_rate": 1e-3}, True),
            "switch_e1": ({**SWITCH, "n_expert": 1}, True),
            "switch_e8_frozen_router": (SWITCH, True),      # frozen by name in `run`
            "switch_e8_hash_dropless": ({**SWITCH, "capacity_factor": None}, True)}  # by name


def hash_route(model: GPT, seed: int = 0) -> None:
    """Route every MoE layer by the input byte (Roller et al. 2021's hash layers): byte b goes
    to expert perm[b] % E for a fixed random permutation, with logits 10 for it and 0 for the
    others (gate ~1). A pre-hook hands each forward's token ids to the layers."""
    layers = [m for m in model.modules() if hasattr(m, "router")]
    perm = torch.randperm(model.config.vocab_size, generator=torch.Generator().manual_seed(seed))

    def remember(_model, args, kwargs):
        idx = args[0] if args else kwargs["idx"]
        for m in layers:
            m.hash_ids = idx

    for m in layers:
        table = 10.0 * torch.nn.functional.one_hot(perm % m.n_expert, m.n_expert).float()
        m.router_logits = lambda x, m=m, table=table: table[m.hash_ids]
    model.register_forward_pre_hook(remember, with_kwargs=True)


def no_router_decay(trainer: Trainer) -> int:
    """Move the routers from the decayed param group to the undecayed one (before any step)."""
    routers = {id(m.router) for m in trainer.model.modules() if hasattr(m, "router")}
    decay, keep = trainer.optimizer.param_groups[0], trainer.optimizer.param_groups[1]
    assert decay["weight_decay"] > 0 and keep["weight_decay"] == 0
    moved = [p for p in decay["params"] if id(p) in routers]
    decay["params"] = [p for p in decay["params"] if id(p) not in routers]
    keep["params"] = keep["params"] + moved
    return len(moved)


def run(overrides: dict, router_decay: bool, steps: int, seed: int, eval_bytes: int,
        train_ids: torch.Tensor, val_ids: torch.Tensor, track: int = 0,
        freeze_router: bool = False, hash_routing: bool = False) -> dict:
    """One run; with `track` > 0 trained by `tracked_fit` (routing curves every `track` steps);
    `freeze_router` keeps the routers at their initial weights (no gradient, no decay)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**BASE, **overrides}))
    for m in model.modules():
        if freeze_router and hasattr(m, "router"):
            m.router.requires_grad_(False)
    if hash_routing:
        hash_route(model, seed)
    trainer = Trainer(model, train_ids, val_ids, train_config(steps, seed))
    moved = 0 if router_decay else no_router_decay(trainer)
    t0 = time.perf_counter()
    curves = {}
    if track:
        curves = tracked_fit(trainer, track)
    else:
        trainer.fit()
    seconds = time.perf_counter() - t0
    bpb = evaluate_loss(model, val_ids, max_tokens=eval_bytes) / math.log(2)
    return {"seed": seed, "eval_bpb": bpb, "seconds": seconds, "routers_undecayed": moved,
            "flops_per_token": model.flops_per_token(), "params": model.num_params(),
            "active_params": model.num_active_params(),
            **{k: curves[k] for k in ("step", "val_bpb", "load", "dropped") if k in curves}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--z-sweep", type=float, nargs="+", default=[0.0, 1e-3])
    p.add_argument("--eval-bytes", type=int, default=65_536)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--study", choices=["gate", "drops"], default="gate",
                   help="gate: the gate/decay/z-loss ablation; drops: dropped tokens vs experts")
    p.add_argument("--only", nargs="+", default=None,
                   help="run these names only and keep --out's other runs")
    p.add_argument("--out", default=None,
                   help="default data/moe/ablation.json (gate), ablation_drops.json (drops)")
    args = p.parse_args()
    args.out = args.out or str(HERE / ("ablation.json" if args.study == "gate"
                                       else "ablation_drops.json"))
    torch.set_num_threads(args.threads)
    tok = ByteTokenizer()
    train_ids = tok.encode_tensor(load_corpus("shakespeare", "train"))
    val_ids = tok.encode_tensor(load_corpus("shakespeare", "validation"))
    table = runs(args.z_sweep) if args.study == "gate" else drop_runs()
    track = 100 if args.study == "drops" else 0
    kept = {}
    if args.only:
        kept = json.loads(Path(args.out).read_text())["runs"] if Path(args.out).exists() else {}
        kept = {k: v for k, v in kept.items() if k not in args.only}
    out = {"recipe": {"base": BASE, "train": train_config(args.steps, 0).to_dict(),
                      "seeds": args.seeds, "eval_bytes": args.eval_bytes,
                      "runs": {k: {"overrides": o, "router_weight_decay": d}
                               for k, (o, d) in table.items()}},
           "command": "python data/moe/ablation.py " + " ".join(sys.argv[1:]),
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "torch": torch.__version__,
                       "threads": args.threads, "load_average_at_start": os.getloadavg()},
           "runs": dict(kept), "summary": {}}
    for name, recs in kept.items():
        vals = [r["eval_bpb"] for r in recs]
        out["summary"][name] = {"mean": statistics.mean(vals), "n": len(vals),
                                "std": statistics.stdev(vals) if len(vals) > 1 else None}
    start = time.perf_counter()
    for seed in args.seeds:                    # seeds outer: a cut-short file has whole seeds
        for name, (overrides, decay) in table.items():
            if args.only and name not in args.only:
                continue
            rec = run(overrides, decay, args.steps, seed, args.eval_bytes, train_ids, val_ids,
                      track, freeze_router=name.endswith("frozen_router"),
                      hash_routing="_hash" in name)
            out["runs"].setdefault(name, []).append(rec)
            print(f"seed {seed} {name:30s} {rec['eval_bpb']:.4f} bits/byte {rec['seconds']:.0f} s",
                  flush=True)
            vals = [r["eval_bpb"] for r in out["runs"][name]]
            out["summary"][name] = {"mean": statistics.mean(vals), "n": len(vals),
                                    "std": statistics.stdev(vals) if len(vals) > 1 else None}
            out["wall_seconds"] = time.perf_counter() - start
            tmp = Path(args.out).with_suffix(".tmp")
            tmp.write_text(json.dumps(out, indent=1))
            os.replace(tmp, args.out)
    for name, s in out["summary"].items():
        print(f"{name:30s} {s['mean']:.4f} ± {s['std'] or 0:.4f} (n = {s['n']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
