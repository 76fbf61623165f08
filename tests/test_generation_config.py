"""GenerationConfig: one validated place for decoding arguments, and generate's two ways in."""

import pytest
import torch

from minillm.generation import GenerationConfig, generate, stream
from minillm.models import GPT, GPTConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=37, context_length=24, d_model=16, n_layer=2, n_head=2)).eval()


def test_fields_are_checked_and_name_themselves():
    for kwargs, match in [({"temperature": -1}, "temperature=-1"), ({"top_k": 0}, "top_k=0"),
                          ({"top_p": 1.5}, "top_p=1.5"), ({"min_p": 2.0}, "min_p=2.0"),
                          ({"typical_p": 0.0}, "typical_p=0.0"), ({"num_beams": 0}, "num_beams=0"),
                          ({"repetition_penalty": 0.0}, "repetition_penalty=0.0"),
                          ({"max_new_tokens": -2}, "max_new_tokens=-2"),
                          ({"early_stopping": "soon"}, "early_stopping='soon'"),
                          ({"penalty_alpha": 1.5}, "penalty_alpha=1.5"),
                          ({"num_assistant_tokens": 0}, "num_assistant_tokens=0"),
                          ({"eos_token_id": 2.5}, "eos_token_id"),
                          ({"do_sample": True, "temperature": 0}, "must be > 0 when sampling"),
                          ({"do_sample": True, "num_beams": 2}, "beam sampling"),
                          ({"do_sample": True, "penalty_alpha": 0.5, "top_k": 4},
                           "contrastive search")]:
        with pytest.raises(ValueError, match=match):
            GenerationConfig(**kwargs)
    with pytest.raises(ValueError, match=r"unknown generation arguments \['topk'\]"):
        GenerationConfig().update(topk=3)
    with pytest.raises(ValueError, match="unknown fields"):
        GenerationConfig.from_dict({"max_length": 3})


def test_what_the_arguments_mean_together():
    assert GenerationConfig().sampling                                 # do_sample=None, T=1
    assert not GenerationConfig(temperature=0).sampling
    assert not GenerationConfig(num_beams=3).sampling                  # beams: deterministic
    c = GenerationConfig(penalty_alpha=0.6, top_k=4)
    assert c.contrastive and not c.sampling
    assert not GenerationConfig(penalty_alpha=0.6, top_k=1).contrastive
    assert GenerationConfig(eos_token_id=torch.tensor([3, 5])).stop_ids == [3, 5]
    assert GenerationConfig(eos_token_id=[3, 5]).pad_id == 3
    assert GenerationConfig(eos_token_id=3, pad_token_id=0).pad_id == 0
    assert GenerationConfig().pad_id == 0 and GenerationConfig().stop_ids == []
    assert [type(p).__name__ for p in GenerationConfig(
        temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.1).processors()] == [
        "RepetitionPenalty", "Temperature", "TopK", "TopP"]
    assert GenerationConfig(penalty_alpha=0.6, top_k=4).processors() == []  # top_k: candidates
    c = GenerationConfig(top_k=5, eos_token_id=[1, 2])
    assert GenerationConfig.from_dict(c.to_dict()) == c


def test_a_config_and_keywords_give_the_same_tokens(model):
    x = torch.randint(0, 37, (2, 4), generator=torch.Generator().manual_seed(1))
    for kwargs in [dict(do_sample=False), dict(num_beams=3, length_penalty=0.5),
                   dict(penalty_alpha=0.6, top_k=3), dict(temperature=0.8, top_p=0.9, top_k=10)]:
        cfg = GenerationConfig(max_new_tokens=6, **kwargs)
        a = generate(model, x, 6, generator=torch.Generator().manual_seed(0), **kwargs)
        b = generate(model, x, generation_config=cfg, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b), kwargs
    # keywords override the config's fields
    base = GenerationConfig(max_new_tokens=3, do_sample=True)
    assert torch.equal(generate(model, x, generation_config=base, do_sample=False, max_new_tokens=5),
                       generate(model, x, 5, do_sample=False))
    with pytest.raises(ValueError, match="unknown generation arguments"):
        generate(model, x, 3, num_beam=2)
    with pytest.raises(ValueError, match="use generate"):
        next(stream(model, x, 3, num_beams=2))
