#!/usr/bin/env bash
# The checks and timings only a GPU can give, in one call on a lent CUDA machine (~8 min, H100):
#
#   bash benchmarks/gpu_suite/run.sh             # from the repository root; writes under $OUT,
#                                                # then the GPU section of docs/benchmarks.md
#   bash benchmarks/gpu_suite/run.sh --dry-run   # every step on the CPU with tiny shapes (~1 min):
#                                                # a typo cannot wait for the GPU (tests/test_gpu_suite.py)
#
# 1. what the machine is (nvidia-smi, torch, CUDA), 2. the CUDA-only tests (the composed
# training path over NCCL with FSDP2's bf16 policy and compiled blocks: tests/test_cuda_paths.py;
# the Triton attention kernel on the GPU: tests/test_flash_attention.py), 3. the timings:
# flash_triton vs SDPA vs naive, forward and forward+backward TFLOP/s, T = 1k-16k, d = 64 and
# 128, causal and not (benchmarks/flash_attention.py --gpu); GPT-2 124M's bf16 training step
# with torch.compile, tokens/s and MFU (benchmarks/train_step.py --gpu); the MoE layer (grouped
# and loop dispatch) vs a dense MLP of equal active parameters (benchmarks/moe.py --device cuda);
# quantized matmuls and decoding (benchmarks/quantization.py --device cuda).
# The machine's python3 holds torch; minillm is used from this tree (PYTHONPATH), nothing is
# installed. Its torch may be older than pyproject's floor (the parallel strategy needs 2.13's
# all_gather_single): the first step prints both, and a test that needs the newer API fails
# saying so. Each step's output goes to $OUT/<step>.txt; $OUT/summary.txt lists every step's exit
# status and seconds, $OUT/report.md gathers the outputs (a GPU run also writes it into
# docs/benchmarks.md between the gpu-suite markers). Exit status: the number of failed steps.
set -uo pipefail
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT=${OUT:-build/gpu_suite}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
declare -a SUMMARY
FAILED=0

step() {  # step NAME TIMEOUT_S COMMAND...: run, keep its output, note its exit status and time
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    [[ $rc -ne 0 ]] && FAILED=$((FAILED + 1))
    SUMMARY+=("$(printf '%-18s rc=%-3s %4ss  %s' "$name" "$rc" "$((SECONDS - start))" "$(tail -1 "$OUT/$name.txt")")")
}

ENV_PY='import torch, sys, re; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"); print("pyproject floor:", re.search(r"torch>=[0-9.]+", open("pyproject.toml").read()).group())'
if [[ $DRY -eq 1 ]]; then
    step environment 60 "$PY" -c "$ENV_PY"
    step cuda_tests 120 "$PY" -m pytest -q -p no:cacheprovider -o addopts= --collect-only \
        tests/test_cuda_paths.py tests/test_flash_attention.py
    step flash_attention 120 env TRITON_INTERPRET=1 "$PY" benchmarks/flash_attention.py --dry-run \
        --threads 1 --json "$OUT/flash_attention.json"
    step train_step 120 "$PY" benchmarks/train_step.py --dry-run --threads 1
    step moe 120 "$PY" benchmarks/moe.py --dry-run --threads 1
    step quantization 120 "$PY" benchmarks/quantization.py --dry-run --threads 1
else
    step environment 30 bash -c "nvidia-smi; $PY -c '$ENV_PY'"
    step cuda_tests 120 "$PY" -m pytest -q -p no:cacheprovider -o addopts= tests/test_cuda_paths.py \
        tests/test_flash_attention.py
    step flash_attention 210 "$PY" benchmarks/flash_attention.py --gpu --json "$OUT/flash_attention.json"
    step train_step 120 "$PY" benchmarks/train_step.py --gpu --rounds 3
    step moe 40 "$PY" benchmarks/moe.py --device cuda --tokens 16384 --d-model 1024 --d-ff 2048 \
        --skip-a2a
    step quantization 60 "$PY" benchmarks/quantization.py --device cuda
fi

printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
REPORT_ARGS=("$OUT")
[[ $DRY -eq 0 ]] && REPORT_ARGS+=(--write-docs docs/benchmarks.md)
"$PY" benchmarks/gpu_suite/report.py "${REPORT_ARGS[@]}" || FAILED=$((FAILED + 1))
exit $FAILED
