"""Recipe: every course model with shipped weights through lm-evaluation-harness on the course's
tasks (data/eval_tasks), with standard errors -> data/evaluation/leaderboard.json.

    nice -n 15 env OMP_NUM_THREADS=1 MINILLM_NUM_THREADS=1 python data/evaluation/leaderboard.py \
        [--models shakespeare_sft,...] [--limit N]

Models (`MODELS`): the shipped checkpoints of data/checkpoints (byte-level base d192 and d128,
BPE base, LSTM, MLP, SFT d192 and d128), chapter 19's distilled student (data/distill/
student_kd), and the SFT models quantized on the fly (d128 in NF4; d192 in round-to-nearest
int4, groups of 64: NF4's double-quantized blocks do not divide the d192 model's matrices). Course models without shipped weights (chapter 12's PPO/GRPO policies, chapter 13's DPO
policies, chapter 14's LoRA adapters, chapter 18's recurrent models) are listed in the JSON's
"not_shipped" with where their results live instead.

Each model is evaluated with `minillm.evaluation.run.run_eval` (lm-eval's `simple_evaluate`
with the `minillm` backend), zero-shot, on all of `TASKS`; results are written after each model
(a killed run keeps what it finished).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from minillm.data import data_dir
from minillm.evaluation.run import EvalConfig, run_eval
from minillm.io import atomic_write_json, json_safe
from minillm.models import load_model
from minillm.quantization import quantize_model
from minillm.tokenizers import tokenizer_for_model
from minillm.utils import configure_threads

HERE = Path(__file__).resolve().parent
OUT = HERE / "leaderboard.json"
TASKS = ["shakespeare_speaker_mc", "shakespeare_speaker_chat_mc", "shakespeare_speaker_gen",
         "shakespeare_play_mc", "shakespeare_sft_exact"]
CHECKPOINTS = data_dir() / "checkpoints"
# name -> (folder, quantization scheme or None, what it is)
MODELS = {
    "shakespeare_mlp": (CHECKPOINTS / "shakespeare_mlp", None, "ch02 MLP LM (byte)"),
    "shakespeare_lstm": (CHECKPOINTS / "shakespeare_lstm", None, "ch02 LSTM LM (byte)"),
    "shakespeare_byte_d128": (CHECKPOINTS / "shakespeare_byte_d128", None, "ch06 GPT base d128"),
    "shakespeare_byte": (CHECKPOINTS / "shakespeare_byte", None, "ch06 GPT base d192"),
    "shakespeare_bpe": (CHECKPOINTS / "shakespeare_bpe", None, "ch04/06 GPT base, BPE"),
    "student_kd": (data_dir() / "distill" / "student_kd", None, "ch19 distilled student"),
    "shakespeare_sft_d128": (CHECKPOINTS / "shakespeare_sft_d128", None, "ch11 SFT d128"),
    "shakespeare_sft": (CHECKPOINTS / "shakespeare_sft", None, "ch11 SFT d192"),
    "shakespeare_sft_d128_nf4": (CHECKPOINTS / "shakespeare_sft_d128", "nf4",
                                 "ch15 SFT d128, NF4"),
    "shakespeare_sft_int4": (CHECKPOINTS / "shakespeare_sft", "rtn4-g64",
                             "ch15 SFT d192, int4 RTN g64"),
}
NOT_SHIPPED = {
    "PPO / GRPO policies (ch12)": "data/rlhf/ppo.json, grpo_*.json (curves and scores only)",
    "DPO policies (ch13)": "data/dpo/runs*.json (scores only)",
    "LoRA adapters (ch14)": "data/lora/rank_sweep.json (scores only)",
    "recurrent models (ch18)": "data/recurrent/runs.json (scores only)",
    "n-gram models (ch01)": "built from counts in chapter 01; no lm-eval adapter (a count "
                            "model over bytes is scored by bits/byte there)",
    "reward model (ch12)": "data/rlhf/reward_model ships, but it is a scalar scorer, not a "
                           "language model: chapter 21 uses it as the judge",
}


def load(name: str):
    folder, scheme, _ = MODELS[name]
    model = load_model(folder, map_location="cpu").eval()
    tok = tokenizer_for_model(folder, model.config.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())     # before quantization
    if scheme:
        quantize_model(model, scheme)
    return model, tok, n_params


def evaluate(name: str, tasks: list[str], limit: int | None = None, batch_size: int = 32) -> dict:
    model, tok, n_params = load(name)
    t0 = time.perf_counter()
    res = run_eval(EvalConfig(checkpoint=name, tasks=",".join(tasks), limit=limit,
                              batch_size=batch_size, device="cpu"), model=model, tokenizer=tok)
    return {"about": MODELS[name][2], "quantization": MODELS[name][1],
            "parameters": n_params,
            "seconds": round(time.perf_counter() - t0, 1), "results": res["results"],
            "n-samples": res["n-samples"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="tasks to (re)run; results of other tasks already in the file stay")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    configure_threads()
    torch.manual_seed(0)
    out = Path(args.out)
    board = json.loads(out.read_text()) if out.is_file() else {}
    board.update({"tasks": TASKS, "limit": args.limit, "not_shipped": NOT_SHIPPED,
                  "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s), "
                             "shared 2-core VM", "torch": torch.__version__})
    board.setdefault("models", {})
    for name in args.models.split(","):
        t0 = time.perf_counter()
        new = evaluate(name, args.tasks.split(","), args.limit)
        old = board["models"].get(name, {})
        for key in ("results", "n-samples"):
            new[key] = {**old.get(key, {}), **new[key]}
        new["seconds"] = round(old.get("seconds", 0) + new["seconds"], 1)
        board["models"][name] = new
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
        atomic_write_json(out, json_safe(board))
    return 0


if __name__ == "__main__":
    sys.exit(main())
