"""minillm: a small, tested library for building, training and studying language models.

    >>> from minillm import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=257, context_length=64, d_model=64, n_layer=2, n_head=2))

Layers, lowest first (a module imports only from its own layer or below; tests/test_layering.py
checks it): utils, io, optim -> data, tokenizers, kernels -> models -> generation, distributed ->
training -> scaling, ngram -> course, cli (and this file).
"""

from minillm.data import load_corpus
from minillm.generation import GenerationConfig, generate
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import BPETokenizer, ByteTokenizer
from minillm.training import TrainConfig, Trainer
from minillm.utils import choose_device, seed_everything

__version__ = "0.1.0"
__all__ = ["GPT", "GPTConfig", "BPETokenizer", "ByteTokenizer", "GenerationConfig", "TrainConfig",
           "Trainer", "choose_device", "generate", "load_corpus", "seed_everything",
           "__version__"]
