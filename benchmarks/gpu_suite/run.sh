#!/usr/bin/env bash
# The checks and timings only a GPU can give, in one call on a lent CUDA machine:
#
#   bash benchmarks/gpu_suite/run.sh            # from the repository root; writes under $OUT
#
# 1. what the machine is (nvidia-smi, torch, CUDA), 2. the CUDA-only tests (the composed
# training path over NCCL with FSDP2's bf16 policy and compiled blocks: tests/test_cuda_paths.py;
# the Triton attention kernel on the GPU: tests/test_flash_attention.py), 3. the timings:
# FlashAttention backends against SDPA up to T = 16k (benchmarks/flash_attention.py --gpu) and a
# training step's throughput and MFU against transformers' GPT-2 (benchmarks/train_step.py --gpu).
# The machine's python3 holds torch; minillm is used from this tree (PYTHONPATH), nothing is
# installed. Its torch may be older than pyproject's floor (the parallel strategy needs 2.13's
# all_gather_single): the first step prints both, and a test that needs the newer API fails
# saying so. Each step's output goes to $OUT/<step>.txt; the last lines are a summary table.
set -uo pipefail
OUT=${OUT:-build/gpu_suite}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
declare -a SUMMARY

step() {  # step NAME TIMEOUT_S COMMAND...: run, keep its output, note its exit status and time
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    SUMMARY+=("$(printf '%-18s rc=%-3s %4ss  %s' "$name" "$rc" "$((SECONDS - start))" "$(tail -1 "$OUT/$name.txt")")")
}

step environment 60 bash -c "nvidia-smi; $PY -c 'import torch, sys; print(sys.version); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0)); \
import re; print(\"pyproject floor:\", re.search(r\"torch>=[0-9.]+\", open(\"pyproject.toml\").read()).group())'"
step cuda_tests 900 "$PY" -m pytest -q -p no:cacheprovider -o addopts= tests/test_cuda_paths.py \
    tests/test_flash_attention.py
step flash_attention 900 "$PY" benchmarks/flash_attention.py --gpu --json "$OUT/flash_attention.json"
step train_step 900 "$PY" benchmarks/train_step.py --gpu

printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
