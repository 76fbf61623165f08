"""Models: the one configurable GPT and its parts, the KV cache, the neural LMs of ch. 02 and
the recurrent LMs of ch. 18 (linear attention, RWKV, Mamba)."""

from minillm.models.attention import (
    CausalSelfAttention,
    build_attention_mask,
    causal_mask,
    naive_attention,
)
from minillm.models.base import LanguageModel, lm_loss
from minillm.models.config import GPTConfig
from minillm.models.gpt import GPT
from minillm.models.kv_cache import KVCache, kv_cache_nbytes
from minillm.models.layers import Block
from minillm.models.loading import load_model
from minillm.models.mlp import GeluMLP, SwiGLU
from minillm.models.neural import MLPLM, RNNLM, MLPLMConfig, RNNLMConfig
from minillm.models.norms import RMSNorm
from minillm.models.recurrent import (
    RWKV,
    LinearAttentionConfig,
    LinearAttentionLM,
    Mamba,
    MambaConfig,
    RecurrentState,
    RWKVConfig,
    decoding_state_nbytes,
)

__all__ = ["GPT", "GPTConfig", "Block", "CausalSelfAttention", "GeluMLP", "KVCache",
           "LanguageModel", "LinearAttentionConfig", "LinearAttentionLM", "MLPLM", "MLPLMConfig",
           "Mamba", "MambaConfig", "RMSNorm", "RNNLM", "RNNLMConfig", "RWKV", "RWKVConfig",
           "RecurrentState", "SwiGLU", "build_attention_mask", "causal_mask",
           "decoding_state_nbytes", "kv_cache_nbytes", "lm_loss", "load_model", "naive_attention"]
