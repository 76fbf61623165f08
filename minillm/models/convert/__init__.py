"""Weight conversion between minillm's models and Hugging Face's GPT-2, LLaMA, Mixtral, RWKV
and Mamba.

transformers is never imported here: a state dict is a dict of tensors. `GPT.from_hf_gpt2`,
`GPT.from_hf_llama` and `GPT.to_hf_gpt2_state_dict` are the usual way in.
"""

from minillm.models.convert.hf_gpt2 import (
    config_from_hf_gpt2,
    hf_gpt2_config,
    hf_gpt2_module_name,
    state_dict_from_hf_gpt2,
    state_dict_to_hf_gpt2,
)
from minillm.models.convert.hf_llama import config_from_hf_llama, state_dict_from_hf_llama
from minillm.models.convert.hf_mamba import (
    config_from_hf_mamba,
    from_hf_mamba,
    state_dict_from_hf_mamba,
)
from minillm.models.convert.hf_rwkv import (
    config_from_hf_rwkv,
    from_hf_rwkv,
    state_dict_from_hf_rwkv,
)
from minillm.models.convert.mixtral import config_from_hf_mixtral, state_dict_from_hf_mixtral

__all__ = ["config_from_hf_gpt2", "config_from_hf_llama", "hf_gpt2_config", "hf_gpt2_module_name",
           "state_dict_from_hf_gpt2", "state_dict_from_hf_llama", "state_dict_to_hf_gpt2",
           "config_from_hf_mixtral", "state_dict_from_hf_mixtral", "config_from_hf_mamba",
           "from_hf_mamba", "state_dict_from_hf_mamba", "config_from_hf_rwkv", "from_hf_rwkv",
           "state_dict_from_hf_rwkv"]
