"""Weight conversion from other libraries' checkpoints (Hugging Face Mixtral)."""

from minillm.models.convert.mixtral import config_from_hf_mixtral, state_dict_from_hf_mixtral

__all__ = ["config_from_hf_mixtral", "state_dict_from_hf_mixtral"]
