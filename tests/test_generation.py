import pytest
import torch

from minillm.generation import generate, sample_next


def test_greedy_is_argmax_and_deterministic(tiny_model):
    x = torch.randint(0, 61, (2, 5))
    out = generate(tiny_model, x, 8, temperature=0)
    assert out.shape == (2, 13) and torch.equal(out[:, :5], x)
    # each new token is the argmax of the model's prediction given what precedes it
    logits, _ = tiny_model.eval()(out[:, :-1])
    assert torch.equal(logits[:, 4:].argmax(-1), out[:, 5:])


def test_sampling_is_reproducible_with_a_generator(tiny_model):
    x = torch.randint(0, 61, (1, 3))
    a = generate(tiny_model, x, 10, temperature=1.0, generator=torch.Generator().manual_seed(5))
    b = generate(tiny_model, x, 10, temperature=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_top_k_only_samples_from_the_k_largest():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0, -2.0]])
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, 1.0, top_k=2, generator=g).item() for _ in range(200)}
    assert draws == {1, 3}


def test_generation_beyond_the_context_crops(tiny_model):
    out = generate(tiny_model, torch.zeros(1, 16, dtype=torch.long), 5, temperature=0)
    assert out.shape == (1, 21)


def test_bad_arguments_raise(tiny_model):
    with pytest.raises(ValueError, match="empty prompt"):
        generate(tiny_model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="temperature=-1"):
        generate(tiny_model, torch.zeros(1, 2, dtype=torch.long), 3, temperature=-1)
    with pytest.raises(ValueError, match="top_k=0"):
        generate(tiny_model, torch.zeros(1, 2, dtype=torch.long), 3, top_k=0)


def test_eos_stops_generation(tiny_model):
    x = torch.zeros(1, 2, dtype=torch.long)
    first = generate(tiny_model, x, 1, temperature=0)[0, -1].item()
    out = generate(tiny_model, x, 10, temperature=0, eos_token_id=first)
    assert out.shape == (1, 3)
