"""Chapter 20's shipped kNN-LM sweep: validation bits/byte of shakespeare_byte interpolated
with a nearest-neighbour lookup over its own hidden states (`minillm.retrieval.knn_lm`), for a
grid of λ, k and temperature, from one search at the largest k.

    python data/using/knn_sweep.py [--blocks 128] [--val-bytes 50000]

The datastore: --blocks pieces of 2,048 bytes spaced evenly through the training plays (the
whole split, 4.4M keys, would take about an hour of this machine's forward passes). The
queries: the first --val-bytes bytes of the validation plays. Search: faiss IVF (nlist 512,
nprobe 16). Writes data/using/knn_sweep.json.
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch

from minillm.data import data_dir, load_corpus
from minillm.models import load_model
from minillm.retrieval import (
    VectorIndex,
    interpolate_logprobs,
    knn_logprobs,
    spaced_blocks,
    window_states,
)
from minillm.tokenizers import ByteTokenizer

HERE = Path(__file__).resolve().parent
LAMBDAS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6]
KS = [1, 4, 16, 64, 256]
TEMPS = [1.0, 10.0, 100.0]


def states(model, text, tok):
    H, L, Y = [], [], []
    for h, lp, y in window_states(model, tok.encode(text), tok.eot_id):
        H.append(h)
        L.append(lp)
        Y.append(y)
    return torch.cat(H), torch.cat(L), torch.cat(Y)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--blocks", type=int, default=128)
    p.add_argument("--val-bytes", type=int, default=50_000)
    p.add_argument("--nlist", type=int, default=512)
    p.add_argument("--nprobe", type=int, default=16)
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model = load_model(data_dir() / "checkpoints" / "shakespeare_byte").eval()
    tok = ByteTokenizer()
    keys, _, values = states(model, spaced_blocks(load_corpus("shakespeare", "train"),
                                                  a.blocks, 2048), tok)
    val = load_corpus("shakespeare", "validation")[:a.val_bytes]
    hidden, logprobs, targets = states(model, val, tok)
    index = VectorIndex(keys, "l2", "faiss", a.nlist, a.nprobe)
    dist, ids = index.search(hidden, max(KS))
    n_bytes = len(val.encode())
    grid = []
    for T in TEMPS:
        for k in KS:
            knn = knn_logprobs(dist[:, :k], values[ids[:, :k]], model.config.vocab_size, T)
            for lam in LAMBDAS:
                lp = interpolate_logprobs(logprobs, knn, lam)
                bits = -lp.gather(1, targets[:, None]).sum().item() / math.log(2)
                grid.append({"T": T, "k": k, "lam": lam, "bits_per_byte": bits / n_bytes})
    out = {"recipe": "python data/using/knn_sweep.py", "blocks": a.blocks, "block_bytes": 2048,
           "datastore": len(values), "val_bytes": n_bytes, "nlist": a.nlist,
           "nprobe": a.nprobe, "seconds": round(time.time() - t0, 1), "grid": grid}
    (HERE / "knn_sweep.json").write_text(json.dumps(out, indent=0) + "\n")
    best = min(grid, key=lambda r: r["bits_per_byte"])
    print("wrote knn_sweep.json; base", grid[0]["bits_per_byte"], "best", best, out["seconds"])


if __name__ == "__main__":
    main()
