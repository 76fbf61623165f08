"""GPT-2 interop: identical logits with transformers' GPT2LMHeadModel, both directions."""

import pytest
import torch
from hf_reference import lazy_module

from minillm.models import GPT, GPTConfig
from minillm.training import configure_optimizer

transformers = lazy_module("transformers")


def _hf(vocab=97, ctx=32, d=48, layers=2, heads=4):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=ctx, n_embd=d, n_layer=layers,
                                  n_head=heads, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _max_diff(hf, ours, x):
    with torch.no_grad():
        return (hf(x).logits - ours(x).logits).abs().max().item()


def test_hf_to_minillm_random_init():
    hf = _hf()
    ours = GPT.from_hf_gpt2(hf).eval()
    x = torch.randint(0, 97, (3, 32))
    assert _max_diff(hf, ours, x) <= 1e-5


def test_hf_state_dict_only_needs_n_head():
    hf = _hf(d=48, heads=4)
    ours = GPT.from_hf_gpt2(hf.state_dict(), n_head=4).eval()
    assert ours.config.n_head == 4 and ours.config.n_layer == 2
    assert _max_diff(hf, ours, torch.randint(0, 97, (2, 20))) <= 1e-5


def test_minillm_to_hf_after_training_steps():
    torch.manual_seed(1)
    ours = GPT(GPTConfig(vocab_size=97, context_length=32, d_model=48, n_layer=2, n_head=4))
    opt = configure_optimizer(ours, lr=3e-3)
    for _ in range(5):
        x = torch.randint(0, 97, (4, 32))
        loss = ours(x[:, :-1], x[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    ours.eval()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**ours.hf_gpt2_config())).eval()
    missing, unexpected = hf.load_state_dict(ours.to_hf_gpt2_state_dict(), strict=False)
    assert not unexpected and all("attn.bias" in k or "masked_bias" in k for k in missing)
    x = torch.randint(0, 97, (3, 32))
    assert _max_diff(hf, ours, x) <= 1e-5
    # and back again: the round trip is exact
    again = GPT.from_hf_gpt2(hf).eval()
    for (k1, v1), (k2, v2) in zip(ours.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


def test_hf_after_training_steps_loads_into_minillm():
    hf = _hf()
    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=3e-3)
    for _ in range(5):
        x = torch.randint(0, 97, (4, 32))
        hf(x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    hf.eval()
    ours = GPT.from_hf_gpt2(hf).eval()
    assert _max_diff(hf, ours, torch.randint(0, 97, (3, 32))) <= 1e-5


def test_non_gpt2_configs_refuse_to_export():
    m = GPT(GPTConfig(vocab_size=50, context_length=8, d_model=32, n_layer=1, n_head=4, n_kv_head=2))
    with pytest.raises(ValueError, match="cannot be expressed as GPT-2"):
        m.to_hf_gpt2_state_dict()


def test_attention_weights_equal_gpt2_output_attentions_and_store_nothing():
    hf = _hf()
    hf.config._attn_implementation = "eager"   # the written-out softmax, which returns weights
    ours = GPT.from_hf_gpt2(hf).eval()
    x = torch.randint(0, 97, (2, 20))
    before = {name: dict(vars(m)) for name, m in ours.named_modules()}
    with torch.no_grad():
        out, weights = ours.attention_weights(x)
        theirs = hf(x, output_attentions=True).attentions
    assert len(weights) == len(theirs) == 2
    for w, t in zip(weights, theirs, strict=True):
        assert w.shape == t.shape == (2, 4, 20, 20)
        torch.testing.assert_close(w, t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits, ours(x).logits)   # the forward is the model's own
    after = {name: dict(vars(m)) for name, m in ours.named_modules()}
    assert all(before[n].keys() == after[n].keys() for n in before)
    assert not ours.blocks[0].attn._forward_hooks                # the hooks are removed
