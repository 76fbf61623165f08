"""Weight conversion from Hugging Face's `MambaForCausalLM` to minillm's `Mamba`.

Names (HF -> minillm):

    backbone.embeddings                       -> embed
    backbone.layers.i.norm                    -> blocks.i.norm
    backbone.layers.i.mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj}
                                              -> blocks.i.mixer.(same)
    backbone.norm_f / lm_head                 -> norm_f / lm_head (tied to embed by default)

transformers is never imported here: the model is read through its `config` and state dict.
"""

from __future__ import annotations

import torch

from minillm.models.recurrent.mamba import Mamba, MambaConfig

__all__ = ["config_from_hf_mamba", "from_hf_mamba", "state_dict_from_hf_mamba"]


def config_from_hf_mamba(hf_config, context_length: int = 1024, **overrides) -> MambaConfig:
    """The `MambaConfig` of a Hugging Face `MambaConfig`.

    Args:
        hf_config: a `transformers.MambaConfig` (or anything with its attributes).
        context_length: the training window to record (HF's Mamba has none).
        **overrides: MambaConfig fields to set (e.g. `chunk`).

    Returns:
        The config.

    Raises:
        ValueError: a setting minillm's Mamba does not reproduce (named in the message).
    """
    act = getattr(hf_config, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"MambaConfig.hidden_act={act!r}; minillm's Mamba uses silu")
    expand = hf_config.intermediate_size // hf_config.hidden_size
    if expand * hf_config.hidden_size != hf_config.intermediate_size:
        raise ValueError(f"intermediate_size={hf_config.intermediate_size} is not a multiple of "
                         f"hidden_size={hf_config.hidden_size}; minillm's d_inner is expand * "
                         "d_model")
    kwargs = dict(vocab_size=hf_config.vocab_size, context_length=context_length,
                  d_model=hf_config.hidden_size, n_layer=hf_config.num_hidden_layers,
                  d_state=hf_config.state_size, expand=expand, d_conv=hf_config.conv_kernel,
                  dt_rank=int(hf_config.time_step_rank), conv_bias=bool(hf_config.use_conv_bias),
                  bias=bool(hf_config.use_bias), norm_eps=hf_config.layer_norm_epsilon,
                  tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", True)))
    kwargs.update(overrides)
    return MambaConfig(**kwargs)


def state_dict_from_hf_mamba(model_or_state_dict, config: MambaConfig) -> dict[str, torch.Tensor]:
    """Mamba's weights under minillm's names (copies).

    Args:
        model_or_state_dict: a `MambaForCausalLM` or its state dict.
        config: the converted config (`config_from_hf_mamba`).

    Returns:
        name -> tensor for `Mamba.load_weights`.
    """
    sd = model_or_state_dict
    if not isinstance(sd, dict):
        sd = sd.state_dict()
    out = {"embed.weight": sd["backbone.embeddings.weight"],
           "norm_f.weight": sd["backbone.norm_f.weight"]}
    prefix = "backbone.layers."
    for key, value in sd.items():
        if key.startswith(prefix):
            out["blocks." + key[len(prefix):]] = value
    if not config.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return {k: v.detach().clone() for k, v in out.items()}


def from_hf_mamba(hf_model, context_length: int = 1024, **overrides) -> Mamba:
    """A minillm `Mamba` with the weights of a Hugging Face `MambaForCausalLM`: the same logits
    (to float rounding) and, through `minillm.generation.generate`, the same greedy tokens.

    Args:
        hf_model: a `transformers.MambaForCausalLM`.
        context_length: the training window to record in the config.
        **overrides: MambaConfig fields to set.

    Returns:
        The model, in eval mode, on the CPU, in float32.
    """
    config = config_from_hf_mamba(hf_model.config, context_length, **overrides)
    model = Mamba(config)
    model.load_weights({k: v.float().cpu() for k, v in
                        state_dict_from_hf_mamba(hf_model, config).items()})
    return model.eval()
