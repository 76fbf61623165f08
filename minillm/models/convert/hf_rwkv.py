"""Weight conversion from Hugging Face's `RwkvForCausalLM` (RWKV-4) to minillm's `RWKV`.

Names (HF -> minillm); the token-shift mixes are (1, 1, C) in HF and (C,) here:

    rwkv.embeddings                          -> embed
    rwkv.blocks.0.pre_ln                     -> ln0
    rwkv.blocks.i.ln1 / ln2                  -> blocks.i.ln1 / ln2
    rwkv.blocks.i.attention.time_decay       -> blocks.i.time_mix.time_decay  (w = exp of it)
    rwkv.blocks.i.attention.time_first       -> blocks.i.time_mix.time_first  (u)
    rwkv.blocks.i.attention.time_mix_{key,value,receptance} -> blocks.i.time_mix.mix_{k,v,r}
    rwkv.blocks.i.attention.{key,value,receptance,output}   -> blocks.i.time_mix.(same)
    rwkv.blocks.i.feed_forward.time_mix_{key,receptance}    -> blocks.i.channel_mix.mix_{k,r}
    rwkv.blocks.i.feed_forward.{key,receptance,value}       -> blocks.i.channel_mix.(same)
    rwkv.ln_out / head                       -> ln_out / lm_head

transformers is never imported here: the model is read through its `config` and state dict.
"""

from __future__ import annotations

import torch

from minillm.models.recurrent.rwkv import RWKV, RWKVConfig

__all__ = ["config_from_hf_rwkv", "from_hf_rwkv", "state_dict_from_hf_rwkv"]


def config_from_hf_rwkv(hf_config, **overrides) -> RWKVConfig:
    """The `RWKVConfig` of a Hugging Face `RwkvConfig`.

    Args:
        hf_config: a `transformers.RwkvConfig` (or anything with its attributes).
        **overrides: RWKVConfig fields to set (e.g. `chunk`).

    Returns:
        The config (context_length is HF's `context_length`, the length it trained on).

    Raises:
        ValueError: a setting minillm's RWKV does not reproduce (named in the message).
    """
    n_layer = hf_config.num_hidden_layers
    rescale = getattr(hf_config, "rescale_every", 0) or 0
    if 0 < rescale < n_layer:
        raise ValueError(f"RwkvConfig.rescale_every={rescale} halves the residual stream every "
                         f"{rescale} of its {n_layer} blocks at inference (an fp16 trick, with "
                         "LayerNorm's eps not exactly invariant to it); minillm leaves it out: "
                         "set hf_model.config.rescale_every = 0 before converting")
    eps = hf_config.layer_norm_epsilon
    if abs(eps - 1e-5) > 1e-12:
        raise ValueError(f"RwkvConfig.layer_norm_epsilon={eps}: HF's final ln_out always uses "
                         "1e-5, minillm one eps for every norm; convert a model with 1e-5")
    kwargs = dict(vocab_size=hf_config.vocab_size, context_length=hf_config.context_length,
                  d_model=hf_config.hidden_size, n_layer=n_layer,
                  d_attn=hf_config.attention_hidden_size or 0,
                  d_ff=hf_config.intermediate_size or 0, norm_eps=eps,
                  tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)))
    kwargs.update(overrides)
    return RWKVConfig(**kwargs)


_BLOCK = {"ln1": "ln1", "ln2": "ln2",
          "attention.time_decay": "time_mix.time_decay",
          "attention.time_first": "time_mix.time_first",
          "attention.time_mix_key": "time_mix.mix_k",
          "attention.time_mix_value": "time_mix.mix_v",
          "attention.time_mix_receptance": "time_mix.mix_r",
          "attention.key": "time_mix.key", "attention.value": "time_mix.value",
          "attention.receptance": "time_mix.receptance", "attention.output": "time_mix.output",
          "feed_forward.time_mix_key": "channel_mix.mix_k",
          "feed_forward.time_mix_receptance": "channel_mix.mix_r",
          "feed_forward.key": "channel_mix.key", "feed_forward.receptance": "channel_mix.receptance",
          "feed_forward.value": "channel_mix.value"}


def state_dict_from_hf_rwkv(model_or_state_dict, config: RWKVConfig) -> dict[str, torch.Tensor]:
    """RWKV's weights under minillm's names (copies).

    Args:
        model_or_state_dict: a `RwkvForCausalLM` or its state dict.
        config: the converted config (`config_from_hf_rwkv`).

    Returns:
        name -> tensor for `RWKV.load_weights`.
    """
    sd = model_or_state_dict
    if not isinstance(sd, dict):
        sd = sd.state_dict()
    out = {"embed.weight": sd["rwkv.embeddings.weight"]}
    for p in ("weight", "bias"):
        out[f"ln0.{p}"] = sd[f"rwkv.blocks.0.pre_ln.{p}"]
        out[f"ln_out.{p}"] = sd[f"rwkv.ln_out.{p}"]
    for i in range(config.n_layer):
        for hf, ours in _BLOCK.items():
            for p in ("weight", "bias", ""):
                key = f"rwkv.blocks.{i}.{hf}" + (f".{p}" if p else "")
                if key in sd:
                    name = f"blocks.{i}.{ours}" + (f".{p}" if p else "")
                    out[name] = sd[key].reshape(-1) if "mix" in hf else sd[key]
    if not config.tie_embeddings:
        out["lm_head.weight"] = sd["head.weight"]
    return {k: v.detach().clone() for k, v in out.items()}


def from_hf_rwkv(hf_model, **overrides) -> RWKV:
    """A minillm `RWKV` with the weights of a Hugging Face `RwkvForCausalLM`: the same logits
    (to float rounding) and, through `minillm.generation.generate`, the same greedy tokens.

    Args:
        hf_model: a `transformers.RwkvForCausalLM`.
        **overrides: RWKVConfig fields to set.

    Returns:
        The model, in eval mode, on the CPU, in float32.
    """
    config = config_from_hf_rwkv(hf_model.config, **overrides)
    model = RWKV(config)
    model.load_weights({k: v.float().cpu() for k, v in
                        state_dict_from_hf_rwkv(hf_model, config).items()})
    return model.eval()
