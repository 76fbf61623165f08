import os

import pytest
import torch
from hypothesis import settings

from minillm.models import GPT, GPTConfig

# Triton reads TRITON_INTERPRET when it is first imported, and the references (transformers,
# peft, bitsandbytes) import it on their own: on a machine without CUDA, turn the interpreter
# on before any test file can, so that the Triton kernels' tests run wherever they land.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# CI replays the same examples every run (a red build is reproducible and never a coin toss);
# a developer can explore fresh ones with HYPOTHESIS_PROFILE=explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    """Tests marked `network` download from PyPI, so a plain `pytest` (and `make test`) leaves
    them out; a marker expression that names them (`-m network`) decides for itself."""
    if "network" in config.getoption("markexpr"):
        return
    network = [item for item in items if item.get_closest_marker("network")]
    if network:
        config.hook.pytest_deselected(items=network)
        items[:] = [item for item in items if not item.get_closest_marker("network")]


@pytest.fixture
def tiny_config() -> GPTConfig:
    return GPTConfig(vocab_size=61, context_length=16, d_model=32, n_layer=2, n_head=4)


@pytest.fixture
def tiny_model(tiny_config) -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread than two on the shared 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
