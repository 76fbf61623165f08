"""Beyond the Transformer (chapter 18): causal linear attention, RWKV-4 and Mamba, language
models that train in parallel and decode with a fixed-size state instead of a KV cache."""

from minillm.models.recurrent.base import RecurrentLM
from minillm.models.recurrent.linear_attention import (
    LinearAttentionConfig,
    LinearAttentionLM,
    elu_feature_map,
    linear_attention_parallel,
    linear_attention_recurrent,
)
from minillm.models.recurrent.mamba import (
    Mamba,
    MambaConfig,
    selective_scan_chunked,
    selective_scan_recurrent,
    selective_scan_step,
)
from minillm.models.recurrent.rwkv import (
    RWKV,
    RWKVConfig,
    token_shift,
    wkv_chunked,
    wkv_recurrent,
    wkv_step,
)
from minillm.models.recurrent.state import RecurrentState, decoding_state_nbytes

__all__ = ["LinearAttentionConfig", "LinearAttentionLM", "Mamba", "MambaConfig", "RWKV",
           "RWKVConfig", "RecurrentLM", "RecurrentState", "decoding_state_nbytes", "elu_feature_map",
           "linear_attention_parallel", "linear_attention_recurrent", "selective_scan_chunked",
           "selective_scan_recurrent", "selective_scan_step", "token_shift",
           "wkv_chunked", "wkv_recurrent", "wkv_step"]
