"""Tensor parallelism (and data x tensor parallelism) over 2 and 4 gloo processes.

Each world size launches `scripts/distributed/parallel_bench.py` once: the same tiny GPT (seeded)
trains 3 AdamW steps as one process on rank 0 ("single_m1") and tensor-parallel over all ranks
("tp"; at 4 processes also "dp_tp", a 2 x 2 mesh). The shards' logits, loss and gathered
gradients equal one process's within float summation order, the weights after 3 steps within
1e-4; the gathered weights saved as a one-process checkpoint reload and re-shard to the same
logits. torch's own tensor parallelism (`parallelize_module` with `ColwiseParallel` /
`RowwiseParallel` over `init_device_mesh("cpu", (N,))`) runs on gloo/CPU with torch 2.13: on one
block (attention with its fused QKV rows reordered so that torch's even chunks are our
per-head shards, and the MLP) its outputs and gradients equal ours exactly.
"""


import pytest
import torch
from parallel_reference import assert_tensors_close, run_parallel_bench
from safetensors.torch import load_file

from minillm.distributed.memory import parallel_comm_elements
from minillm.distributed.tensor_parallel import check_tensor_parallel, column_shard_rows
from minillm.models import GPT, GPTConfig

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

COMMON = ["--steps", "3", "--batch", "4", "--seq-len", "8", "--d-model", "16", "--n-layer", "2",
          "--micro", "1"]
CASES = {  # world size -> the model (both: 4 query heads)
    2: ["--runs", "single,tp,torch_tp", "--n-kv-head", "2"],              # GQA, GELU, tied
    4: ["--runs", "single,tp,dp_tp,torch_tp", "--mlp", "swiglu", "--d-ff", "24", "--untied",
        "--positions", "rope"],                                             # SwiGLU, RoPE
}


@pytest.fixture(scope="module", params=sorted(CASES), ids=lambda n: f"{n}proc")
def run(request, tmp_path_factory):
    return run_parallel_bench(tmp_path_factory, "tp", request.param,
                              [*COMMON, *CASES[request.param]])


def _tensors(out, name):
    return load_file(str(out / f"{name}.safetensors"))


@pytest.mark.parametrize("name", ["tp", "dp_tp"])
def test_gradients_and_weights_follow_one_process(run, name):
    n, out, results = run
    if name not in results:
        pytest.skip(f"{name} runs at 4 processes")
    ours, single = _tensors(out, name), _tensors(out, "single_m1")
    assert_tensors_close(ours, single, "grad.", atol=1e-6)
    assert_tensors_close(ours, single, "weight.", atol=1e-4)
    psi = results["single_m1"]["params_per_rank"]
    for rank in results[name]["ranks"]:  # it really ran split: smaller shards, traffic
        assert rank["params_per_rank"] < psi
        assert rank["comm_elements"] > 0


def test_logits_and_loss_equal_one_process(run):
    _, out, results = run
    ours, single = _tensors(out, "tp"), _tensors(out, "single_m1")
    torch.testing.assert_close(ours["logits"], single["logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours["loss"], single["loss"], rtol=0, atol=1e-6)
    for rank in results["tp"]["ranks"]:  # every rank holds the full loss at every step
        assert rank["losses"] == pytest.approx(results["single_m1"]["ranks"][0]["losses"],
                                               abs=1e-5)


def test_shards_are_one_nth_of_the_matrices(run):
    n, _, results = run
    full = GPT.from_checkpoint(_checkpoint(run))
    split = 0  # the blocks' matrices and the column-parallel layers' biases
    for name, p in full.blocks.named_parameters():
        column_bias = name.endswith("bias") and not name.endswith("proj.bias") and "norm" not in name
        split += p.numel() if p.ndim == 2 or column_bias else 0
    psi = sum(p.numel() for p in full.parameters())
    for rank in results["tp"]["ranks"]:
        assert rank["params_per_rank"] == psi - split + split // n


def _checkpoint(run):
    return run[1] / "tp_checkpoint"


def test_gathered_weights_are_a_one_process_checkpoint(run):
    _, out, results = run
    model = GPT.from_checkpoint(_checkpoint(run))
    weights = _tensors(out, "tp")
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[f"weight.{k}"]), k
    for rank in results["tp"]["ranks"]:  # reloaded and re-sharded: the same logits
        assert rank["reload_logits_diff"] < 1e-6


def test_one_all_reduce_per_sublayer_forward_and_backward(run):
    n, _, results = run
    cfg = GPT.from_checkpoint(_checkpoint(run)).config.to_dict()
    tokens = 4 * 8
    for rank in results["tp"]["ranks"]:
        assert rank["comm_elements"] == parallel_comm_elements(
            "tp", n, n_layer=cfg["n_layer"], d_model=cfg["d_model"], tokens=tokens,
            mlp=cfg["mlp"])
        per_block = 4 + (cfg["mlp"] == "swiglu")
        assert rank["comm_calls"] == {"all_reduce": per_block * cfg["n_layer"]}
    if "dp_tp" in results:  # TP on half the batch, then DP's all-reduce of the local grads
        for rank in results["dp_tp"]["ranks"]:
            assert rank["comm_elements"] == parallel_comm_elements(
                "tp", 2, n_layer=cfg["n_layer"], d_model=cfg["d_model"], tokens=tokens // 2,
                mlp=cfg["mlp"]) + parallel_comm_elements("dp", 2, n_layer=0, d_model=0,
                                                         tokens=0, psi=rank["params_per_rank"])


def test_equals_torch_tensor_parallel_on_a_block(run):
    n, _, results = run
    for rank in results["torch_tp"]:
        assert rank["output"] < 1e-6 and rank["input_grad"] < 1e-6, rank
        assert rank["param_grads"] < 1e-6, rank
        assert rank["shard_rows"][0] == rank["shard_rows"][1]


# ---- one process: the shard layout and the errors ------------------------------------------
def test_fused_qkv_rows_are_split_per_head():
    # 4 query heads, 2 kv heads of size 1: q rows 0-3, k rows 4-5, v rows 6-7
    assert column_shard_rows([4, 2, 2], 2, 0).tolist() == [0, 1, 4, 6]
    assert column_shard_rows([4, 2, 2], 2, 1).tolist() == [2, 3, 5, 7]


@pytest.mark.parametrize("field, value, match", [
    ("n_head", 6, "n_head=6 is not divisible by the tensor-parallel size 4"),
    ("n_kv_head", 2, "n_kv_head=2 is not divisible by the tensor-parallel size 4"),
    ("d_ff", 30, "d_ff=30 is not divisible by the tensor-parallel size 4"),
    ("positions", "alibi", "positions='alibi' is not supported"),
    ("dropout", 0.1, "needs dropout=0"),
    ("n_expert", 4, "expert_parallel"),
])
def test_sizes_that_do_not_split_are_refused(field, value, match):
    cfg = dict(vocab_size=32, d_model=24, n_head=4, n_layer=1, d_ff=32)
    if field == "n_head":
        cfg["n_kv_head"] = 6
    cfg[field] = value
    with pytest.raises(ValueError, match=match):
        check_tensor_parallel(GPTConfig(**cfg), 4)
