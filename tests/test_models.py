import pytest
import torch

from minillm.models import GPT, GPTConfig, causal_mask, naive_attention


@pytest.mark.parametrize("field,value,message", [
    ("d_model", 100, "d_model=100 is not divisible by n_head=3"),
    ("n_kv_head", 2, "n_kv_head=2 must be a positive divisor of n_head=3"),
    ("dropout", 1.5, "dropout=1.5 must be in"),
    ("positions", "rope?", "positions='rope\\?' is not supported"),
    ("attn_impl", "magic", "attn_impl='magic' is not supported"),
    ("n_layer", 0, "n_layer=0 must be a positive integer"),
])
def test_config_validation_names_field_value_and_fix(field, value, message):
    kwargs = dict(d_model=96, n_head=3)
    kwargs[field] = value
    with pytest.raises(ValueError, match=message):
        GPTConfig(**kwargs)


def test_config_round_trips_through_dict_and_rejects_unknown_fields():
    c = GPTConfig(d_model=64, n_head=2)
    assert GPTConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown fields"):
        GPTConfig.from_dict({**c.to_dict(), "n_embd": 3})


def test_naive_and_sdpa_attention_agree(tiny_config):
    torch.manual_seed(0)
    naive = GPT(GPTConfig(**{**tiny_config.to_dict(), "attn_impl": "naive"})).eval()
    fused = GPT(GPTConfig(**{**tiny_config.to_dict(), "attn_impl": "sdpa"})).eval()
    fused.load_state_dict(naive.state_dict())
    x = torch.randint(0, tiny_config.vocab_size, (3, 16))
    torch.testing.assert_close(naive(x).logits, fused(x).logits, atol=1e-5, rtol=1e-5)


def test_naive_attention_matches_torch_sdpa():
    q, k, v = torch.randn(3, 2, 4, 5, 8).unbind(0)
    out, w = naive_attention(q, k, v, causal_mask(5, 5))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, ref)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 5))
    assert (w.triu(1) == 0).all()  # no weight on the future


def test_the_model_is_causal(tiny_model):
    tiny_model.eval()
    x = torch.randint(0, 61, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 61  # change only the future of position 9
    torch.testing.assert_close(tiny_model(x).logits[:, :10], tiny_model(y).logits[:, :10])
    assert not torch.allclose(tiny_model(x).logits[:, 10:], tiny_model(y).logits[:, 10:])


def test_grouped_query_attention_builds_and_trains_a_step():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=50, context_length=8, d_model=32, n_layer=1, n_head=4, n_kv_head=2))
    assert m.blocks[0].attn.qkv.out_features == (4 + 2 * 2) * 8
    x = torch.randint(0, 50, (2, 8))
    loss = m(x, x).loss
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_too_long_input_raises_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="input has 17 tokens but context_length=16"):
        tiny_model(torch.zeros(1, 17, dtype=torch.long))


def test_parameter_count_and_flops(tiny_config):
    m = GPT(tiny_config)
    C, L, V, T, F = 32, 2, 61, 16, 128
    per_block = (C * 3 * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C) + 4 * C
    assert m.num_params(non_embedding=True) == L * per_block + 2 * C
    assert m.num_params(non_embedding=False) == L * per_block + 2 * C + V * C + T * C
    n = m.num_params() + V * C
    assert m.flops_per_token() == 6 * n + 6 * L * T * C


def test_initialisation_scales_residual_projections(tiny_config):
    torch.manual_seed(0)
    cfg = GPTConfig(**{**tiny_config.to_dict(), "d_model": 256, "n_layer": 8, "n_head": 4})
    m = GPT(cfg)
    assert abs(m.blocks[0].mlp.fc.weight.std().item() - 0.02) < 0.002
    assert abs(m.blocks[0].attn.proj.weight.std().item() - 0.02 / 4) < 0.0005
    assert m.lm_head.weight is m.tok_emb.weight


def test_loss_at_init_is_near_uniform(tiny_model):
    x, y = torch.randint(0, 61, (2, 8, 16))
    loss = tiny_model(x, y).loss
    assert abs(loss.item() - torch.log(torch.tensor(61.0)).item()) < 0.1
