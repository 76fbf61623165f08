"""Models: the one configurable GPT and its parts, the KV cache, and the neural LMs of ch. 02."""

from minillm.models.attention import CausalSelfAttention, causal_mask, naive_attention
from minillm.models.base import LanguageModel, lm_loss
from minillm.models.config import GPTConfig
from minillm.models.gpt import GPT
from minillm.models.kv_cache import KVCache, kv_cache_nbytes
from minillm.models.layers import MLP, Block
from minillm.models.neural import MLPLM, RNNLM, MLPLMConfig, RNNLMConfig

__all__ = ["GPT", "GPTConfig", "Block", "CausalSelfAttention", "KVCache", "LanguageModel", "MLP",
           "MLPLM", "MLPLMConfig", "RNNLM", "RNNLMConfig", "causal_mask", "kv_cache_nbytes",
           "lm_loss", "naive_attention"]
