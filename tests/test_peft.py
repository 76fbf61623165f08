"""LoRA, DoRA and QLoRA against Hugging Face PEFT on the course GPT exported to GPT-2 (same A/B
weights, same logits unmerged and merged, adapters loading both ways), and against the papers'
formulas on hand-computed values."""

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from hf_reference import lazy_module

from minillm.models import GPT, GPTConfig
from minillm.peft import (
    ADAPTER_WEIGHTS,
    LoraConfig,
    LoRALinear,
    adapter_state_dict,
    apply_lora,
    apply_qlora,
    dequantize_base,
    frozen_base_nbytes,
    load_adapter,
    merge_adapter,
    save_adapter,
    set_adapter,
    trainable_parameters,
    unmerge_adapter,
)
from minillm.quantization import NF4Linear

peft = lazy_module("peft")
transformers = lazy_module("transformers")

CFG = dict(vocab_size=97, context_length=32, d_model=64, n_layer=2, n_head=4, dropout=0.0)
# our module suffix -> GPT-2's (written out here, independently of the package's converter)
HF_NAME = {"attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc",
           "mlp.proj": "mlp.c_proj"}


def _gpt(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**CFG, **kw})).eval()


def _hf(ours: GPT):
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        **ours.hf_gpt2_config(), bos_token_id=0, eos_token_id=0)).eval()
    missing, unexpected = hf.load_state_dict(ours.to_hf_gpt2_state_dict(), strict=False)
    assert not unexpected and all("attn.bias" in k or "masked_bias" in k for k in missing)
    return hf


def _randomise(model: GPT, seed=1) -> None:
    """Give every adapter a non-zero B (and DoRA magnitude) so that it changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                for b in m.lora_B.values():
                    b.weight.copy_(torch.randn(b.weight.shape, generator=g) * 0.1)
                for mag in m.lora_magnitude.values():
                    mag.mul_(1 + 0.2 * torch.rand(mag.shape, generator=g))


def _peft_twin(ours: GPT, config: LoraConfig, **base_kw):
    """The base (`_gpt(**base_kw)`) exported to GPT-2 with PEFT's LoRA on the same modules,
    our A/B copied in."""
    targets = config.target_modules
    hf = peft.get_peft_model(_hf(_gpt(**base_kw)), peft.LoraConfig(
        r=config.r, lora_alpha=config.alpha, target_modules=[HF_NAME[t] for t in targets],
        lora_dropout=0.0, fan_in_fan_out=True, use_rslora=config.use_rslora,
        use_dora=config.use_dora))
    params = dict(hf.named_parameters())
    with torch.no_grad():
        for i in range(ours.config.n_layer):
            for t in targets:
                layer = ours.blocks[i].get_submodule(t)
                hf_prefix = f"base_model.model.transformer.h.{i}.{HF_NAME[t]}"
                params[f"{hf_prefix}.lora_A.default.weight"].copy_(layer.lora_A["default"].weight)
                params[f"{hf_prefix}.lora_B.default.weight"].copy_(layer.lora_B["default"].weight)
                if config.use_dora:
                    params[f"{hf_prefix}.lora_magnitude_vector.default.weight"].copy_(
                        layer.lora_magnitude["default"])
    return hf.eval()


def _grads_match(model: GPT, twin, config: LoraConfig) -> None:
    """One backward of the same loss in both: the adapters' gradients agree."""
    y = torch.roll(X, -1, dims=1)
    loss = model(X, y).loss
    loss.backward()
    logits = twin(X).logits
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    params = dict(twin.named_parameters())
    for i in range(model.config.n_layer):
        for t in config.target_modules:
            layer = model.blocks[i].get_submodule(t)
            hf_prefix = f"base_model.model.transformer.h.{i}.{HF_NAME[t]}"
            pairs = [(layer.lora_A["default"].weight, "lora_A.default.weight"),
                     (layer.lora_B["default"].weight, "lora_B.default.weight")]
            if config.use_dora:
                pairs.append((layer.lora_magnitude["default"],
                              "lora_magnitude_vector.default.weight"))
            for ours, name in pairs:
                torch.testing.assert_close(ours.grad, params[f"{hf_prefix}.{name}"].grad,
                                           rtol=1e-4, atol=1e-6)


def _logits(model, x):
    with torch.no_grad():
        out = model(x)
        return out.logits


X = torch.randint(0, 97, (3, 32), generator=torch.Generator().manual_seed(7))


# ---- LoRA by hand ---------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["kaiming", "gaussian"])
def test_wrapped_model_starts_identical_and_a_follows_its_init(init):
    base = _gpt()
    before = _logits(base, X)
    model = apply_lora(base, LoraConfig(r=4, alpha=8, target_modules=["attn.qkv", "mlp.fc"],
                                        init=init))
    assert torch.equal(_logits(model, X), before)   # B = 0: exactly the base
    a = model.blocks[0].attn.qkv.lora_A["default"].weight
    assert torch.count_nonzero(model.blocks[0].attn.qkv.lora_B["default"].weight) == 0
    if init == "kaiming":  # kaiming_uniform_(a=sqrt 5): U(-1/sqrt(in), 1/sqrt(in))
        bound = 1 / math.sqrt(64)
        assert a.abs().max() <= bound and a.abs().max() > 0.9 * bound
    else:
        assert abs(a.std().item() - 1 / 4) < 0.04


@pytest.mark.parametrize("rslora", [False, True])
def test_forward_is_wx_plus_scaled_bax_by_hand(rslora):
    model = apply_lora(_gpt(), LoraConfig(r=4, alpha=12, target_modules=["attn.proj"],
                                          use_rslora=rslora))
    _randomise(model)
    layer = model.blocks[1].attn.proj
    s = 12 / (2.0 if rslora else 4.0)                 # alpha / sqrt(r) or alpha / r
    assert layer.scaling["default"] == s
    w, b = layer.base_layer.weight, layer.base_layer.bias
    a, bb = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(5, 64)
    expected = x @ w.T + b + s * (x @ a.T) @ bb.T
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.delta_weight(), s * bb @ a)


def test_only_adapter_weights_are_trainable_and_counted():
    model = apply_lora(_gpt(), LoraConfig(r=4, target_modules=["attn.qkv", "mlp.proj"]))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    # per layer r (in + out): qkv 4 (64 + 192), mlp.proj 4 (256 + 64)
    assert trainable_parameters(model) == 2 * (4 * (64 + 192) + 4 * (256 + 64))
    loss = model(X[:, :-1], X[:, 1:]).loss
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def test_regex_target_and_suffix_rule_match_as_peft():
    model = apply_lora(_gpt(), LoraConfig(target_modules=r"blocks\.1\.(attn\.qkv|mlp\.fc)"))
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, LoRALinear))
    assert wrapped == ["blocks.1.attn.qkv", "blocks.1.mlp.fc"]
    model = apply_lora(_gpt(), LoraConfig(target_modules=["proj"]))   # both "proj"s, not "qkv"
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, LoRALinear))
    assert wrapped == [f"blocks.{i}.{t}" for i in range(2) for t in ("attn.proj", "mlp.proj")]


# ---- parity with PEFT -----------------------------------------------------------------------
@pytest.mark.parametrize("rslora", [False, True])
def test_same_logits_as_peft_unmerged_and_merged(rslora):
    config = LoraConfig(r=4, alpha=16, target_modules=["attn.qkv", "mlp.fc", "mlp.proj"],
                        use_rslora=rslora)
    model = apply_lora(_gpt(), config)
    _randomise(model)
    twin = _peft_twin(model, config)
    ours = _logits(model, X)
    assert (ours - _logits(_gpt(), X)).abs().max() > 1e-2         # the adapter does something
    torch.testing.assert_close(_logits(twin, X), ours, rtol=1e-5, atol=1e-5)
    _grads_match(model, twin, config)
    base_weight = model.blocks[0].mlp.fc.base_layer.weight.clone()
    merge_adapter(model)
    merged = twin.merge_and_unload().eval()
    torch.testing.assert_close(_logits(model, X), ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_logits(merged, X), _logits(model, X), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged.transformer.h[0].mlp.c_fc.weight.T,
                               model.blocks[0].mlp.fc.base_layer.weight, rtol=0, atol=1e-6)
    unmerge_adapter(model)
    torch.testing.assert_close(model.blocks[0].mlp.fc.base_layer.weight, base_weight,
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(model, X), ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["lora", "dora", "new_tokens"])
def test_adapter_saved_by_minillm_loads_into_peft_and_back(tmp_path, variant):
    config = LoraConfig(r=4, alpha=8, target_modules=["attn.qkv", "attn.proj"],
                        use_dora=variant == "dora",
                        trainable_token_indices=[3, 95, 96] if variant == "new_tokens" else None)
    model = apply_lora(_gpt(), config)
    _randomise(model)
    if variant == "new_tokens":   # the rows change the embedding and the tied head alike
        with torch.no_grad():
            model.tok_emb.trainable_tokens_delta["default"].normal_(std=0.5)
        assert (_logits(model, X)[..., 95:] - _logits(_gpt(), X)[..., 95:]).abs().max() > 0.1
    ours = _logits(model, X)
    save_adapter(model, tmp_path / "peft", peft_gpt2=True)
    twin = peft.PeftModel.from_pretrained(_hf(_gpt()), str(tmp_path / "peft")).eval()
    torch.testing.assert_close(_logits(twin, X), ours, rtol=1e-5, atol=1e-5)
    # PEFT writes it again; minillm loads that onto a fresh base
    twin.save_pretrained(str(tmp_path / "from_peft"))
    back = load_adapter(_gpt(), tmp_path / "from_peft")
    torch.testing.assert_close(_logits(back, X), ours, rtol=1e-5, atol=1e-5)
    # minillm's own layout round-trips bit for bit
    save_adapter(model, tmp_path / "ours")
    again = load_adapter(_gpt(), tmp_path / "ours")
    assert torch.equal(_logits(again, X), ours)


def test_saved_adapter_is_only_the_adapter_tensors(tmp_path):
    model = apply_lora(_gpt(), LoraConfig(r=2, target_modules=["attn.qkv"]))
    path = save_adapter(model, tmp_path / "a")
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    header.pop("__metadata__", None)
    # A (2, 64) and B (192, 2) per layer, float32
    tensor_bytes = 2 * (2 * 64 + 192 * 2) * 4
    assert sum(t.numel() * t.element_size() for t in adapter_state_dict(model).values()) == \
        tensor_bytes
    assert len(data) == 8 + header_len + tensor_bytes
    assert header_len < 1024 and len(header) == 4
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["config"]["r"] == 2


def test_named_adapters_switch_and_train_alone(tmp_path):
    model = apply_lora(_gpt(), LoraConfig(r=2, target_modules=["attn.qkv"]), "first")
    _randomise(model, seed=1)
    first = _logits(model, X)
    apply_lora(model, LoraConfig(r=4, target_modules=["attn.qkv", "mlp.fc"]), "second")
    _randomise(model, seed=2)   # re-draws "first" too: read it back from a saved copy
    set_adapter(model, "first")
    save_adapter(model, tmp_path / "first")
    first = _logits(model, X)
    set_adapter(model, "second")
    second = _logits(model, X)
    assert (first - second).abs().max() > 1e-2
    assert all("second" in n for n, p in model.named_parameters() if p.requires_grad)
    set_adapter(model, "first")
    assert torch.equal(_logits(model, X), first)
    assert all(".first." in n for n, p in model.named_parameters() if p.requires_grad)
    assert torch.equal(_logits(load_adapter(_gpt(), tmp_path / "first"), X), first)
    with pytest.raises(ValueError, match="third"):
        set_adapter(model, "third")


# ---- DoRA -----------------------------------------------------------------------------------
def test_dora_matches_peft_use_dora_and_the_paper_formula():
    config = LoraConfig(r=4, alpha=8, target_modules=["attn.qkv", "mlp.proj"], use_dora=True)
    model = apply_lora(_gpt(), config)
    assert torch.equal(_logits(model, X), _logits(_gpt(), X))          # m = ||W||: identical
    _randomise(model)
    layer = model.blocks[0].attn.qkv
    w, b = layer.base_layer.weight, layer.base_layer.bias
    v = w + 2.0 * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    w_dora = layer.lora_magnitude["default"][:, None] * v / v.norm(dim=1, keepdim=True)
    x = torch.randn(5, 64)
    torch.testing.assert_close(layer(x), x @ w_dora.T + b, rtol=1e-5, atol=1e-5)
    twin = _peft_twin(model, config)
    ours = _logits(model, X)
    torch.testing.assert_close(_logits(twin, X), ours, rtol=1e-5, atol=1e-5)
    _grads_match(model, twin, config)   # the norm is a constant of the backward in both (§4.3)
    model.zero_grad(set_to_none=True)
    base_weight = w.clone()
    merge_adapter(model)
    torch.testing.assert_close(_logits(model, X), ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_logits(twin.merge_and_unload().eval(), X), ours,
                               rtol=1e-5, atol=1e-5)
    unmerge_adapter(model)
    torch.testing.assert_close(layer.base_layer.weight, base_weight, rtol=0, atol=1e-6)
    # the magnitude is trained; the norm is a constant of the backward pass (§4.3)
    loss = model(X[:, :-1], X[:, 1:]).loss
    loss.backward()
    assert layer.lora_magnitude["default"].grad is not None
    assert layer.base_layer.weight.grad is None


# ---- QLoRA ----------------------------------------------------------------------------------
def test_qlora_equals_lora_on_the_dequantized_weights_and_costs_4_bits():
    kw = dict(d_model=128, n_head=4)          # 128 x 128 blocks fit NF4's 64 x 256 grouping
    config = LoraConfig(r=4, alpha=8, target_modules=["attn.qkv", "mlp.fc"])
    q = apply_qlora(_gpt(**kw), config)
    _randomise(q)
    assert isinstance(q.blocks[0].attn.qkv.base_layer, NF4Linear)
    assert isinstance(q.blocks[0].attn.proj, NF4Linear)             # frozen, quantized, no LoRA
    # reference: a float model whose weights ARE the dequantized NF4 ones, same adapter
    ref = _gpt(**kw)
    with torch.no_grad():
        for name, m in q.named_modules():
            if isinstance(m, NF4Linear):
                ref.get_submodule(name.removesuffix(".base_layer")).weight.copy_(
                    m.dequantized_weight())
    ref = apply_lora(ref, config)
    for name, t in adapter_state_dict(q).items():
        with torch.no_grad():
            adapter_state_dict(ref)[name].copy_(t)
    torch.testing.assert_close(_logits(q, X), _logits(ref, X), rtol=1e-5, atol=1e-5)
    # memory of the frozen base: codes 4 bits + 8-bit constants per 64 + fp32 per 64*256
    mem = frozen_base_nbytes(q)
    n = 2 * (128 * 384 + 128 * 128 + 128 * 512 * 2)
    assert mem["weights"] == n
    assert mem["nf4_bytes"] == n // 2 + n // 64 + 4 * n // (64 * 256) + 4 * 8   # 8 offsets
    assert 4.1 <= mem["bits_per_weight"] <= 4.5
    # only the adapter learns; merging needs a float base first
    loss = q(X[:, :-1], X[:, 1:]).loss
    loss.backward()
    assert {n for n, p in q.named_parameters() if p.grad is not None} == \
        {n for n, p in q.named_parameters() if ".lora_" in n}
    with pytest.raises(ValueError, match="dequantize_base"):
        merge_adapter(q)
    before = _logits(q, X)
    merge_adapter(dequantize_base(q))
    torch.testing.assert_close(_logits(q, X), before, rtol=1e-5, atol=1e-5)


# ---- bad input ------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="matches no linear layer"):
        apply_lora(_gpt(), LoraConfig(target_modules=["attn.q_proj"]))
    for r in (0, -2):
        with pytest.raises(ValueError, match=f"r={r}"):
            LoraConfig(r=r)
    with pytest.raises(ValueError, match="tied"):
        apply_lora(_gpt(), LoraConfig(target_modules=["lm_head"]))
    model = apply_lora(_gpt(), LoraConfig(r=2))
    with pytest.raises(ValueError, match="already exists"):
        apply_lora(model, LoraConfig(r=2))
    save_adapter(model, tmp_path / "a")
    with pytest.raises(ValueError, match="shape"):
        load_adapter(_gpt(d_model=32), tmp_path / "a")
    merge_adapter(model)
    with pytest.raises(ValueError, match="unmerge"):
        set_adapter(model, "default")


# ---- new tokens -----------------------------------------------------------------------------
def test_trainable_token_rows_train_alone_and_the_tied_head_follows(tmp_path):
    model = apply_lora(_gpt(), LoraConfig(r=2, trainable_token_indices=[95, 96]))
    assert torch.equal(_logits(model, X), _logits(_gpt(), X))
    emb = model.tok_emb
    with torch.no_grad():
        emb.trainable_tokens_delta["default"].add_(1.0)
    w = emb.weight
    base = _gpt().tok_emb.weight
    assert torch.equal(w[:95], base[:95]) and torch.equal(w[95:], base[95:] + 1.0)
    hidden = torch.randn(2, 64)
    torch.testing.assert_close(model.lm_head(hidden), hidden @ w.T)   # the head is tied to it
    assert trainable_parameters(model) == 2 * 2 * (64 + 192) + 2 * 64
    assert model.num_params() == _gpt().num_params() + trainable_parameters(model)
    save_adapter(model, tmp_path / "t")
    assert ADAPTER_WEIGHTS in {p.name for p in (tmp_path / "t").iterdir()}
    assert torch.equal(_logits(load_adapter(_gpt(), tmp_path / "t"), X), _logits(model, X))


# ---- through the Trainer and the command line ----------------------------------------------
@pytest.mark.parametrize("qlora", [False, True])
def test_sft_command_trains_and_saves_only_the_adapter(tmp_path, qlora, capsys):
    from minillm.alignment.recipe import load_model_and_tokenizer, prepare_chat_model
    from minillm.cli import main
    from minillm.data.sft import load_sft
    from minillm.io import load_tensors
    from minillm.tokenizers import ByteTokenizer

    data = tmp_path / "sft"
    data.mkdir()
    for split, n in (("train", 24), ("validation", 6), ("test", 6)):
        rows = [e for e in load_sft(split) if len(e.prompt) + len(e.response) < 100][:n]
        (data / f"{split}.jsonl").write_text("".join(
            json.dumps(vars(e)) + "\n" for e in rows), encoding="utf-8")
    tok = ByteTokenizer()
    torch.manual_seed(0)
    d = 128 if qlora else 32   # NF4's double quantization groups 64 x 256 weights
    base = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=128, d_model=d, n_layer=1,
                         n_head=2, tie_embeddings=True))
    base.save(tmp_path / "base", extra_files={"tokenizer.json": tok.to_dict()})
    out = tmp_path / "run"
    args = ["sft", "--checkpoint", str(tmp_path / "base"), "--data", str(data),
            "--output-dir", str(out), "--export-dir", str(out / "adapter"), "--text-rows", "0", "--max-steps", "3",
            "--batch-size", "2", "--warmup-steps", "1", "--lr", "1e-2", "--eval-steps", "0",
            "--device", "cpu", "--lora-r", "2", "--lora-targets", "attn.qkv,mlp.fc"]
    assert main(args + (["--qlora"] if qlora else [])) == 0
    summary = json.loads((out / "summary.json").read_text())
    # r (in + out) per adapted layer, plus the 3 chat tokens' rows
    assert summary["trainable_params"] == 2 * (d + 3 * d) + 2 * (d + 4 * d) + 3 * d
    assert summary["optimizer_state_bytes"] == 2 * 4 * summary["trainable_params"]   # m and v
    files = {p.name for p in (out / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= files
    assert "model.safetensors" not in files
    saved = load_tensors(out / "adapter" / "adapter_model.safetensors")
    assert sum(t.numel() for t in saved.values()) == summary["trainable_params"]
    # reload: the chat-prepared base plus the adapter is the trained model of the last checkpoint
    model, base_tok = load_model_and_tokenizer(tmp_path / "base")
    model, _ = prepare_chat_model(model, base_tok)
    load_adapter(model, out / "adapter")
    assert any(torch.count_nonzero(t) for k, t in saved.items() if "lora_B" in k)   # it trained
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    expected = _logits(model.eval(), x)
    # the trainer's last checkpoint holds base + adapter: the same weights, the same logits
    ckpt = load_tensors(next((out / "checkpoints").iterdir()) / "model.safetensors")
    model.load_weights(ckpt)
    assert torch.equal(_logits(model, x), expected)
    if qlora:
        assert 4.1 <= summary["frozen_base"]["bits_per_weight"] <= 4.5
    else:  # a LoRA run resumes from its checkpoint (base + adapter + Adam moments)
        assert main([*args[:args.index("--max-steps") + 1], "5",
                     *args[args.index("--max-steps") + 2:], "--resume"]) == 0
        assert json.loads((out / "summary.json").read_text())["step"] == 5
        assert "resumed from step 3" in capsys.readouterr().out


def test_sft_command_refuses_bad_lora_options(tmp_path, capsys):
    from minillm.cli import main

    ckpt = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "shakespeare_byte"
    base = ["sft", "--checkpoint", str(ckpt), "--output-dir",
            str(tmp_path / "out"), "--device", "cpu"]
    assert main([*base, "--lora-r", "4", "--lora-targets", "attn.q_proj"]) == 2
    assert "matches no linear layer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # a usage error: parse time, exit 2
        main([*base, "--qlora"])
    assert exited.value.code == 2 and "need --lora-r" in capsys.readouterr().err
    assert main([*base, "--lora-r", "-1"]) == 2
    assert "r=-1 must be a positive integer" in capsys.readouterr().err
