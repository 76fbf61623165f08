"""The design space of GPTConfig (positions, norms, MLPs, GQA, masks) on the one GPT."""

import itertools

import pytest
import torch
from hf_reference import lazy_module

from minillm.models import GPT, GPTConfig
from minillm.models.config import ATTN_MASKS, MLPS, NORM_PLACEMENTS, NORMS, POSITIONS

transformers = lazy_module("transformers")


def _llama(n_kv_head=2, rope_scaling=None, tie=False):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=n_kv_head, max_position_embeddings=64,
        rms_norm_eps=1e-6, rope_scaling=rope_scaling, tie_word_embeddings=tie,
        bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # make the norms non-trivial so that they are really compared
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])   # MHA, GQA, MQA
def test_llama_configuration_matches_llama_for_causal_lm(n_kv_head):
    hf = _llama(n_kv_head)
    ours = GPT.from_hf_llama(hf).eval()
    c = ours.config
    assert (c.positions, c.norm, c.mlp, c.bias, c.n_kv_head) == ("rope", "rmsnorm", "swiglu", False, n_kv_head)
    x = torch.randint(0, 97, (3, 40))
    with torch.no_grad():
        diff = (hf(x).logits - ours(x).logits).abs().max().item()
    assert diff <= 1e-5


def test_llama_with_linear_rope_scaling_and_tied_embeddings():
    hf = _llama(rope_scaling={"rope_type": "linear", "factor": 2.0}, tie=True)
    ours = GPT.from_hf_llama(hf).eval()
    assert ours.config.rope_scaling == "linear" and ours.config.tie_embeddings
    x = torch.randint(0, 97, (2, 50))
    with torch.no_grad():
        assert (hf(x).logits - ours(x).logits).abs().max().item() <= 1e-5


@pytest.mark.parametrize("factor,original", [(4.0, 16), (2.0, 32)])
def test_llama_with_yarn_rope_scaling_matches_transformers(factor, original):
    hf = _llama(rope_scaling={"rope_type": "yarn", "factor": factor,
                              "original_max_position_embeddings": original})
    ours = GPT.from_hf_llama(hf).eval()
    assert ours.config.rope_scaling == "yarn" and ours.config.rope_original_context == original
    x = torch.randint(0, 97, (2, 60))
    with torch.no_grad():
        assert (hf(x).logits - ours(x).logits).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="non-default beta_fast"):
        GPT.from_hf_llama(_llama(rope_scaling={"rope_type": "yarn", "factor": 4.0, "beta_fast": 16,
                                               "original_max_position_embeddings": 16}))


def test_llama_kv_cache_matches_hf_generate_greedy():
    from minillm.generation import generate

    hf = _llama()
    ours = GPT.from_hf_llama(hf).eval()
    x = torch.randint(3, 97, (1, 7))
    ref = hf.generate(x, max_new_tokens=12, do_sample=False, eos_token_id=None)
    assert torch.equal(generate(ours, x, 12, do_sample=False), ref)


GRID = list(itertools.product(POSITIONS, NORMS, NORM_PLACEMENTS, MLPS, ATTN_MASKS))


@pytest.mark.parametrize("positions,norm,placement,mlp,mask", GRID)
def test_every_option_builds_trains_and_round_trips(tmp_path, positions, norm, placement, mlp, mask):
    torch.manual_seed(0)
    n_kv = [4, 2, 1][GRID.index((positions, norm, placement, mlp, mask)) % 3]
    cfg = GPTConfig(vocab_size=31, context_length=16, d_model=32, n_layer=2, n_head=4,
                    n_kv_head=n_kv, positions=positions, norm=norm, norm_placement=placement,
                    mlp=mlp, attn_mask=mask, bias=mlp == "gelu", tie_embeddings=norm == "layernorm")
    model = GPT(cfg)
    x = torch.randint(0, 31, (2, 16))
    kw = {"prefix_length": 5} if mask == "prefix" else {}
    loss = model(x[:, :-1], x[:, 1:], **kw).loss
    loss.backward()
    torch.optim.AdamW(model.parameters(), lr=1e-2).step()
    assert torch.isfinite(loss)
    model.save(tmp_path / "m")
    again = GPT.from_checkpoint(tmp_path / "m")
    assert again.config == cfg
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x, **kw).logits, model.eval()(x, **kw).logits)


def _changed_positions(mask, edit_at, **kw):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=31, context_length=12, d_model=32, n_layer=2, n_head=4,
                      attn_mask=mask)).eval()
    a = torch.randint(0, 31, (1, 12))
    b = a.clone()
    b[0, edit_at] = (b[0, edit_at] + 1) % 31
    with torch.no_grad():
        return ((m(a, **kw).logits - m(b, **kw).logits).abs().amax(-1) > 1e-6)[0].tolist()


def test_masks_decide_who_sees_whom():
    # causal: an edit at 5 changes positions >= 5 only
    assert _changed_positions("causal", 5) == [False] * 5 + [True] * 7
    # prefix of 6: an edit inside the prefix reaches every position, also earlier ones ...
    assert _changed_positions("prefix", 3, prefix_length=6) == [True] * 12
    # ... but an edit after the prefix stays invisible to what precedes it
    assert _changed_positions("prefix", 8, prefix_length=6) == [False] * 8 + [True] * 4
    # bidirectional: everything sees everything
    assert _changed_positions("bidirectional", 9) == [True] * 12
    with pytest.raises(ValueError, match="needs forward"):
        _changed_positions("prefix", 3)


def test_naive_and_sdpa_agree_for_every_position_scheme_and_mask():
    for positions, mask in itertools.product(POSITIONS, ATTN_MASKS):
        torch.manual_seed(0)
        kw = dict(vocab_size=31, context_length=16, d_model=32, n_layer=1, n_head=4, n_kv_head=2,
                  positions=positions, attn_mask=mask)
        naive, fused = GPT(GPTConfig(**kw, attn_impl="naive")).eval(), GPT(GPTConfig(**kw)).eval()
        fused.load_state_dict(naive.state_dict())
        x = torch.randint(0, 31, (2, 16))
        extra = {"prefix_length": torch.tensor([3, 7])} if mask == "prefix" else {}
        with torch.no_grad():
            torch.testing.assert_close(naive(x, **extra).logits, fused(x, **extra).logits, atol=1e-5, rtol=1e-5)


def test_learned_positions_cannot_extrapolate_but_the_others_can():
    learned = GPT(GPTConfig(vocab_size=31, context_length=8, d_model=32, n_layer=1, n_head=4))
    with pytest.raises(ValueError, match="cannot extrapolate"):
        learned(torch.zeros(1, 4, dtype=torch.long), position_ids=torch.arange(6, 10))
    for positions in ("none", "sinusoidal", "rope", "alibi"):
        m = GPT(GPTConfig(vocab_size=31, context_length=64, d_model=32, n_layer=1, n_head=4,
                          positions=positions))
        assert not hasattr(m, "pos_emb")
        assert m(torch.zeros(1, 64, dtype=torch.long)).logits.shape == (1, 64, 31)


def test_gpt2_defaults_are_unchanged_and_exportable():
    cfg = GPTConfig()
    assert (cfg.positions, cfg.norm, cfg.norm_placement, cfg.mlp, cfg.attn_mask, cfg.bias,
            cfg.tie_embeddings) == ("learned", "layernorm", "pre", "gelu", "causal", True, True)
    with pytest.raises(ValueError, match="cannot be expressed as GPT-2"):
        GPT(GPTConfig(d_model=32, n_head=4, positions="rope")).to_hf_gpt2_state_dict()


@pytest.mark.parametrize("field,value,message", [
    ("norm_placement", "middle", "norm_placement='middle' is not supported"),
    ("attn_mask", "sliding", "attn_mask='sliding' is not supported"),
    ("rope_fraction", 0.0, "rope_fraction=0.0 must be in"),
    ("rope_scale", 0.5, "rope_scale=0.5 must be >= 1"),
    ("rope_scaling", "dynamic", "rope_scaling='dynamic' is not supported"),
    ("rope_original_context", -1, "rope_original_context=-1 must be a non-negative integer"),
])
def test_new_fields_are_validated(field, value, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(d_model=32, n_head=4, **{field: value})


def test_swiglu_hidden_size_rule():
    assert GPTConfig(d_model=4096, n_head=32, mlp="swiglu").d_ff == 10944   # 8d/3 up to 32
    assert GPTConfig(d_model=128, n_head=4).d_ff == 512


@pytest.mark.parametrize("positions", POSITIONS)
def test_left_padded_batches_decode_like_single_prompts(positions):
    """Padding must not shift positions: RoPE/ALiBi/learned count real tokens only."""
    from minillm.generation import generate, left_pad

    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=31, context_length=32, d_model=32, n_layer=2, n_head=4,
                      n_kv_head=2, positions=positions)).eval()
    prompts = [[3, 7, 1, 9, 4, 4], [5, 2], [8, 8, 8, 1]]
    ids, mask = left_pad(prompts, pad_token_id=0)
    batch = generate(m, ids, 8, do_sample=False, attention_mask=mask, pad_token_id=0)
    for row, p in enumerate(prompts):
        alone = generate(m, torch.tensor([p]), 8, do_sample=False)
        assert batch[row, -8:].tolist() == alone[0, -8:].tolist(), (positions, row)


# ---- edge cases: shifts and padding, half precision, what HF variants we refuse ---------
@pytest.mark.parametrize("positions", ["rope", "alibi", "none"])
@pytest.mark.parametrize("mask", ["causal", "bidirectional", "prefix"])
def test_relative_schemes_ignore_a_shift_and_left_padding(positions, mask):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, context_length=32, d_model=32, n_layer=2, n_head=4,
                          positions=positions, attn_mask=mask)).eval()
    x = torch.randint(0, 50, (1, 8), generator=torch.Generator().manual_seed(1))
    kw = {"prefix_length": 3} if mask == "prefix" else {}
    with torch.no_grad():
        plain = model(x, **kw).logits
        shifted = model(x, position_ids=torch.arange(5, 13), **kw).logits
        torch.testing.assert_close(shifted, plain, atol=1e-5, rtol=1e-5)
        if mask != "prefix":  # prefix_length counts columns, pads included
            padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], 1)
            am = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(x)], 1)
            torch.testing.assert_close(model(padded, attention_mask=am).logits[:, 3:], plain,
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_naive_alibi_runs_in_half_precision_like_sdpa(dtype):
    kw = dict(vocab_size=50, context_length=16, d_model=32, n_layer=1, n_head=4, positions="alibi")
    torch.manual_seed(0)
    naive = GPT(GPTConfig(**kw, attn_impl="naive")).eval().to(dtype)
    fused = GPT(GPTConfig(**kw)).eval().to(dtype)
    fused.load_state_dict(naive.state_dict())
    x = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(naive(x).logits.float(), fused(x).logits.float(), atol=2e-2, rtol=0)


def test_hf_variants_minillm_cannot_express_are_refused():
    for extra in [{"scale_attn_weights": False}, {"scale_attn_by_inverse_layer_idx": True}]:
        cfg = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1,
                                      n_head=4, **extra)
        with pytest.raises(ValueError, match="scale_attn"):
            GPT.from_hf_gpt2(transformers.GPT2LMHeadModel(cfg))
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=64, intermediate_size=96,
                                   num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=4, head_dim=32)
    with pytest.raises(ValueError, match="head_dim=32 differs"):
        GPT.from_hf_llama(transformers.LlamaForCausalLM(cfg))


def test_config_checks_only_what_applies_and_names_bad_values():
    GPTConfig(d_model=4, n_head=4, positions="learned")  # head_dim 1 is fine without RoPE
    with pytest.raises(ValueError, match="needs at least 2"):
        GPTConfig(d_model=4, n_head=4, positions="rope")
    with pytest.raises(ValueError, match="with NTK scaling needs at least 4"):
        GPTConfig(d_model=16, n_head=4, positions="rope", rope_fraction=0.5, rope_scaling="ntk",
                  rope_scale=2.0)
    for field, value in [("dropout", "0.1"), ("rope_base", "1e4"), ("rope_scale", float("nan")),
                         ("init_std", True)]:
        with pytest.raises(ValueError, match=f"{field}=.* must be a number"):
            GPTConfig(d_model=32, n_head=4, **{field: value})
    for bad in [[1, 2], None]:
        with pytest.raises(ValueError, match="must be a JSON object"):
            GPTConfig.from_dict(bad)
