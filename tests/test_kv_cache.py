"""KV cache: prefill + incremental steps give the full forward's logits, for MHA/GQA/MQA."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.generation import generate
from minillm.models import GPT, GPTConfig
from minillm.models import config as config_module
from minillm.models.kv_cache import KVCache, kv_cache_nbytes

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(n_kv_head=4, attn_impl="sdpa", positions="learned"):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=61, context_length=32, d_model=32, n_layer=2, n_head=4,
                         n_kv_head=n_kv_head, attn_impl=attn_impl, positions=positions)).eval()


# every position scheme the config knows (only "learned" today; new ones are picked up here)
POSITIONS = config_module.POSITIONS


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
@pytest.mark.parametrize("attn_impl", ["sdpa", "naive"])
def test_prefill_then_steps_equals_full_forward(n_kv_head, attn_impl, positions):
    model = _model(n_kv_head, attn_impl, positions)
    x = torch.randint(0, 61, (2, 20))
    with torch.no_grad():
        full = model(x).logits
        cache = KVCache.for_model(model, batch_size=2)
        parts = [model(x[:, :8], cache=cache).logits, model(x[:, 8:11], cache=cache).logits]
        parts += [model(x[:, t:t + 1], cache=cache).logits for t in range(11, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_cached_and_uncached_generation_give_identical_tokens(n_kv_head, positions):
    model = _model(n_kv_head, positions=positions)
    x = torch.randint(0, 61, (3, 5))
    for kwargs in [dict(do_sample=False), dict(num_beams=3, do_sample=False),
                   dict(penalty_alpha=0.6, top_k=4),
                   dict(do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(0))]:
        a = generate(model, x, 20, use_cache=True, **{k: v for k, v in kwargs.items()})
        if "generator" in kwargs:
            kwargs["generator"] = torch.Generator().manual_seed(0)
        b = generate(model, x, 20, use_cache=False, **kwargs)
        assert torch.equal(a, b), kwargs


def test_cache_stores_kv_heads_not_query_heads():
    mha, gqa = _model(4), _model(1)
    assert KVCache.for_model(gqa, 2).nbytes * 4 == KVCache.for_model(mha, 2).nbytes
    c = KVCache.for_model(mha, 2, max_length=10)
    assert c.keys.shape == (2, 2, 4, 10, 8)
    assert c.nbytes == 2 * 2 * 2 * 4 * 10 * 8 * 4  # K and V, layers, batch, heads, T, D, fp32
    assert c.nbytes == c.keys.numel() * 4 * 2
    # Llama-2-7B (32 layers, 32 heads of 128) at 4096 tokens in fp16: 2 GiB per sequence
    assert kv_cache_nbytes(32, 32, 128, 4096) == 2 * 2**30


def test_overflow_crop_and_reorder():
    model = _model()
    cache = KVCache.for_model(model, batch_size=2, max_length=6)
    x = torch.randint(0, 61, (2, 6))
    with torch.no_grad():
        model(x[:, :4], cache=cache)
        with pytest.raises(ValueError, match="overflow"):
            model(x[:, :3], cache=cache)
    cache.length = 4  # the failed call wrote nothing past max_length; keep the 4 tokens
    keys = cache.keys[:, :, :, :4].clone()
    cache.reorder(torch.tensor([1, 1, 0]))
    assert cache.batch_size == 3
    assert torch.equal(cache.keys[:, 2, :, :4], keys[:, 0]) and torch.equal(
        cache.keys[:, 0, :, :4], keys[:, 1])
    cache.crop(2)
    assert cache.length == 2
    with pytest.raises(ValueError, match="crop length=5"):
        cache.crop(5)


def test_gpt_forward_still_checks_the_context():
    model = _model()
    cache = KVCache.for_model(model, batch_size=1)
    with torch.no_grad():
        model(torch.zeros(1, 30, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="context_length=32"):
            model(torch.zeros(1, 3, dtype=torch.long), cache=cache)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.sampled_from([4, 2, 1]))
def test_any_chunking_of_the_sequence_gives_the_same_logits(chunks, n_kv_head):
    model = _model(n_kv_head)
    total = sum(chunks)  # at most 30 tokens: inside the model's context of 32
    x = torch.randint(0, 61, (1, total), generator=torch.Generator().manual_seed(total))
    cache, parts, start = KVCache.for_model(model, batch_size=1), [], 0
    with torch.no_grad():
        full = model(x).logits
        for n in chunks:
            parts.append(model(x[:, start:start + n], cache=cache).logits)
            start += n
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
