"""minillm: a small, tested library for building, training and studying language models.

    >>> from minillm import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=257, context_length=64, d_model=64, n_layer=2, n_head=2))

Layers, lowest first (a lower one never imports a higher one): utils, io, data, tokenizers ->
models -> quantization -> training, distributed, scaling -> generation -> course, cli.
"""

from minillm.data import ByteTokenizer, load_corpus
from minillm.generation import generate
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import BPETokenizer
from minillm.training import TrainConfig, Trainer
from minillm.utils import choose_device, seed_everything

__version__ = "0.1.0"
__all__ = ["GPT", "GPTConfig", "BPETokenizer", "ByteTokenizer", "TrainConfig", "Trainer", "choose_device",
           "generate", "load_corpus", "seed_everything", "__version__"]
