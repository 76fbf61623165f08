import pytest
import torch

from minillm.models import GPT, GPTConfig


@pytest.fixture
def tiny_config() -> GPTConfig:
    return GPTConfig(vocab_size=61, context_length=16, d_model=32, n_layer=2, n_head=4)


@pytest.fixture
def tiny_model(tiny_config) -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config)
