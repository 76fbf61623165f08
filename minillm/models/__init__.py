"""Models: the one configurable GPT and its parts."""

from minillm.models.attention import CausalSelfAttention, causal_mask, naive_attention
from minillm.models.config import GPTConfig
from minillm.models.gpt import GPT
from minillm.models.layers import MLP, Block

__all__ = ["GPT", "GPTConfig", "Block", "CausalSelfAttention", "MLP", "causal_mask",
           "naive_attention"]
