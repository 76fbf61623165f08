"""A scaling sweep: train a grid of small byte-level GPTs at fixed compute budgets.

The design follows Chinchilla's IsoFLOP profiles (Hoffmann et al. 2022, arXiv:2203.15556,
§3.2): for each compute budget C we train several model shapes, each for exactly as many
tokens as the budget allows,

    D = C / flops_per_token(model),      flops_per_token ≈ 6 N   (forward + backward),

with a cosine schedule that ends at the end of *that* run (Chinchilla's point against reading
shorter runs off a longer run's curve). Every finished run is appended as one JSON line, so a
killed sweep keeps its finished points and a restart skips them.

Departures from the paper, all forced by a 2-core CPU:
- tiny models (d_model 16-128, 1-3 layers, context 64) on the byte-level Shakespeare corpus,
  about 1.5-2 decades of N instead of 70M-16B;
- one seed per point and one learning rate for every size (the paper tunes neither per point
  either, but its models are far from each other in width);
- the largest budgets see the 4.4 MB corpus several times (multi-epoch), which flatters
  neither the small models nor the fit.

`data/scaling/run_sweep.py` calls `run_sweep(default_sweep_config(), ...)`; the chapter loads
its output with `load_sweep`.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from minillm.data import load_corpus
from minillm.io import atomic_write_json, json_safe
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import ByteTokenizer
from minillm.training import TrainConfig, Trainer, evaluate_loss
from minillm.utils import seed_everything

__all__ = ["SweepConfig", "RunSpec", "default_sweep_config", "make_model_config", "plan_sweep",
           "sweep_points", "train_point", "run_sweep", "load_sweep", "write_csv", "CSV_FIELDS"]


@dataclass
class SweepConfig:
    budgets: tuple[float, ...] = (3e10, 1e11, 3e11, 1e12, 3e12)  # training FLOPs per IsoFLOP
    shapes: tuple[tuple[int, int], ...] = (                          # (d_model, n_layer)
        (8, 1), (12, 1), (16, 1), (32, 1), (32, 2), (48, 2), (64, 2), (64, 3), (96, 3), (128, 3))
    head_dim: int = 16                 # n_head = d_model // head_dim (one head below head_dim)
    context_length: int = 64           # tokens per training window (T)
    batch_size: int = 16               # windows per step: 1024 tokens per step
    lr: float = 3e-3                   # peak AdamW learning rate, every size
    min_lr_ratio: float = 0.1          # cosine floor = lr * min_lr_ratio
    warmup_fraction: float = 0.05      # warm-up steps = this fraction of the run ...
    max_warmup_steps: int = 100        # ... capped here
    weight_decay: float = 0.1
    seed: int = 0                      # model init and data stream, the same for every point
    eval_tokens: int = 32768           # fixed slice at the start of the validation split
    min_steps: int = 30                # skip points that would train for fewer steps
    min_tokens_per_param: float = 0.8  # skip points far off either side of any optimum
    max_tokens_per_param: float = 2000.0
    curve_points: int = 64             # training-loss curve: one logged point every steps // this
    skip: tuple[tuple[float, int, int], ...] = field(default_factory=tuple)  # (C, d, L) left out

    def __post_init__(self) -> None:
        if not self.budgets or any(c <= 0 for c in self.budgets):
            raise ValueError(f"budgets={self.budgets} must be a non-empty tuple of positive FLOPs")
        for d, n_layer in self.shapes:
            if (d >= self.head_dim and d % self.head_dim) or d <= 0 or n_layer <= 0:
                raise ValueError(f"shape (d_model={d}, n_layer={n_layer}) needs d_model divisible "
                                 f"by head_dim={self.head_dim} (or below it: one head) and "
                                 "n_layer >= 1")
        for name in ("context_length", "batch_size", "eval_tokens", "min_steps", "curve_points"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if not 0 < self.min_tokens_per_param < self.max_tokens_per_param:
            raise ValueError(f"min_tokens_per_param={self.min_tokens_per_param} must be positive "
                             f"and below max_tokens_per_param={self.max_tokens_per_param}")
        self.budgets = tuple(float(c) for c in self.budgets)
        self.shapes = tuple(tuple(s) for s in self.shapes)
        self.skip = tuple(tuple(s) for s in self.skip)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length


def default_sweep_config() -> SweepConfig:
    """The committed recipe behind data/scaling/sweep.jsonl (about 20 min on one CPU core)."""
    return SweepConfig()


@dataclass
class RunSpec:
    budget: float      # target training FLOPs of this point's IsoFLOP profile
    d_model: int
    n_layer: int
    steps: int         # optimizer steps: D = steps * tokens_per_step

    @property
    def name(self) -> str:
        mantissa, exponent = f"{self.budget:.15e}".split("e")  # 3e10 -> "3e10", 1.5e11 -> "1.5e11"
        tag = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"C{tag}_d{self.d_model}_L{self.n_layer}"


def make_model_config(d_model: int, n_layer: int, config: SweepConfig) -> GPTConfig:
    """The GPT of one sweep point: byte vocabulary, learned positions, tied embeddings;
    d_model // head_dim heads, or one head of width d_model when d_model < head_dim."""
    return GPTConfig(vocab_size=ByteTokenizer().vocab_size, context_length=config.context_length,
                     d_model=d_model, n_layer=n_layer,
                     n_head=max(1, d_model // config.head_dim))


def sweep_points(config: SweepConfig) -> list[dict]:
    """Every (budget, shape) pair of the recipe, cheapest budget first, with the reason it is
    left out of the sweep or None: "skip" (listed in `config.skip`), "min_steps" (fewer than
    `min_steps` optimizer steps), "min_tokens_per_param" / "max_tokens_per_param" (tokens per
    parameter, all parameters counted, outside those bounds). Each dict: budget, d_model,
    n_layer, steps, n_params, tokens_per_param, dropped."""
    points = []
    for budget in sorted(config.budgets):
        for d, n_layer in config.shapes:
            model = GPT(make_model_config(d, n_layer, config))
            steps = round(budget / model.flops_per_token() / config.tokens_per_step)
            n_params = model.num_params(False)
            tokens_per_param = steps * config.tokens_per_step / n_params
            if (budget, d, n_layer) in config.skip:
                dropped = "skip"
            elif steps < config.min_steps:
                dropped = "min_steps"
            elif tokens_per_param < config.min_tokens_per_param:
                dropped = "min_tokens_per_param"
            elif tokens_per_param > config.max_tokens_per_param:
                dropped = "max_tokens_per_param"
            else:
                dropped = None
            points.append({"budget": budget, "d_model": d, "n_layer": n_layer, "steps": steps,
                           "n_params": n_params, "tokens_per_param": tokens_per_param,
                           "dropped": dropped})
    return points


def plan_sweep(config: SweepConfig) -> list[RunSpec]:
    """Every (budget, shape) point whose token count is sensible, cheapest budget first
    (`sweep_points` says why each other point is left out)."""
    return [RunSpec(p["budget"], p["d_model"], p["n_layer"], p["steps"])
            for p in sweep_points(config) if p["dropped"] is None]


def train_point(spec: RunSpec, train_tokens: torch.Tensor, val_tokens: torch.Tensor,
                config: SweepConfig, device: str = "cpu") -> dict:
    """Train one point from scratch and return its record (N, D, C, loss and the recipe).

    The loss is `evaluate_loss` over the first `config.eval_tokens` tokens of `val_tokens`
    (every token scored once, in windows of `context_length`), in nats per byte.

    The record keeps the run's training curve: `curve_steps` (every `steps // curve_points`
    steps and the last), `curve_flops` (training FLOPs done by then: step × tokens per step ×
    flops_per_token) and `curve_loss` (the mean training loss over the steps since the previous
    logged point, i.e. a boxcar-smoothed curve; 5 decimals) — Chinchilla's Approach 1 reads
    its envelope off these (`minillm.scaling.fits.fit_envelope`).
    """
    seed_everything(config.seed, libraries=("torch",))
    model = GPT(make_model_config(spec.d_model, spec.n_layer, config))
    warmup = min(config.max_warmup_steps, max(1, int(config.warmup_fraction * spec.steps)))
    tcfg = TrainConfig(max_steps=spec.steps, batch_size=config.batch_size, lr=config.lr,
                       min_lr=config.lr * config.min_lr_ratio, warmup_steps=warmup,
                       weight_decay=config.weight_decay, eval_interval=0,
                       log_interval=max(1, spec.steps // config.curve_points), seed=config.seed,
                       device=device,
                       progress=False)
    trainer = Trainer(model, train_tokens, None, tcfg)
    start = time.perf_counter()
    history = trainer.fit()
    seconds = time.perf_counter() - start
    val_loss = evaluate_loss(model, val_tokens, batch_size=64, max_tokens=config.eval_tokens)
    tokens = spec.steps * config.tokens_per_step
    return {
        "name": spec.name, "budget": spec.budget, "d_model": spec.d_model,
        "n_layer": spec.n_layer, "n_head": model.config.n_head, "steps": spec.steps,
        "n_params": model.num_params(non_embedding=False),
        "n_params_non_embedding": model.num_params(non_embedding=True),
        "flops_per_token": model.flops_per_token(), "tokens": tokens,
        "flops": tokens * model.flops_per_token(), "val_loss": val_loss,
        "train_loss": history[-1]["loss"], "seconds": seconds,
        "curve_steps": [h["step"] for h in history],
        "curve_flops": [h["step"] * config.tokens_per_step * model.flops_per_token()
                        for h in history],
        "curve_loss": [round(h["lm_loss"], 5) for h in history],
    }


CSV_FIELDS = ("name", "budget", "d_model", "n_layer", "n_head", "steps", "n_params",
              "n_params_non_embedding", "flops_per_token", "tokens", "flops", "val_loss",
              "train_loss", "seconds")


def run_sweep(config: SweepConfig, out_path: str | Path, device: str = "cpu",
              log: bool = True) -> list[dict]:
    """Run every planned point not already in `out_path` (JSON lines), appending each record as
    soon as it finishes; returns all records. Writes `<out_path stem>_config.json` beside it."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": asdict(config), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    meta_path = out_path.with_name(out_path.stem + "_config.json")
    done = {r["name"]: r for r in load_sweep(out_path)} if out_path.exists() else {}
    if done and meta_path.exists():
        earlier = json.loads(meta_path.read_text()).get("config")
        if earlier != json.loads(json.dumps(asdict(config))):
            raise ValueError(f"{out_path} holds runs of another sweep config ({meta_path}); "
                             "resuming would mix them: write to a new file")
    atomic_write_json(meta_path, meta)
    tokenizer = ByteTokenizer()
    train = tokenizer.encode_tensor(load_corpus("shakespeare", "train"))
    val = tokenizer.encode_tensor(load_corpus("shakespeare", "validation"))
    plan = plan_sweep(config)
    for i, spec in enumerate(plan):
        if spec.name in done:
            continue
        record = train_point(spec, train, val, config, device=device)
        done[spec.name] = record
        torn = out_path.exists() and out_path.read_bytes()[-1:] not in (b"", b"\n")
        with out_path.open("a") as f:  # after a torn line (a killed write), start a new one
            f.write(("\n" if torn else "") + json.dumps(json_safe(record), allow_nan=False) + "\n")
        if log:
            print(f"[{i + 1}/{len(plan)}] {spec.name}: N={record['n_params']} "
                  f"D={record['tokens']:.3g} loss={record['val_loss']:.4f} "
                  f"({record['seconds']:.0f}s)", flush=True)
    return [done[s.name] for s in plan if s.name in done]


def load_sweep(path: str | Path) -> list[dict]:
    """Records of a sweep file (JSON lines); a torn last line from a killed run is ignored."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_csv(records: list[dict], path: str | Path) -> None:
    """The records as CSV with the columns of `CSV_FIELDS` (floats to 6 significant digits)."""
    def fmt(v):
        return f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else str(v)
    lines = [",".join(CSV_FIELDS)]
    lines += [",".join(fmt(r[k]) for k in CSV_FIELDS) for r in records]
    Path(path).write_text("\n".join(lines) + "\n")
