"""Weight conversion from Hugging Face's `LlamaForCausalLM` to a LLaMA-style minillm GPT.

A LLaMA is minillm's GPT with `positions="rope"`, `norm="rmsnorm"`, `mlp="swiglu"`,
`bias=False`, untied embeddings (usually) and grouped-query attention (`n_kv_head`). Names:

    model.embed_tokens                     -> tok_emb
    model.layers.i.input_layernorm         -> blocks.i.norm1
    model.layers.i.self_attn.{q,k,v}_proj  -> blocks.i.attn.qkv   (the three stacked)
    model.layers.i.self_attn.o_proj        -> blocks.i.attn.proj
    model.layers.i.post_attention_layernorm-> blocks.i.norm2
    model.layers.i.mlp.{gate,up,down}_proj -> blocks.i.mlp.{gate,up,proj}
    model.norm / lm_head                   -> norm_f / lm_head
"""

from __future__ import annotations

import torch

from minillm.models.config import GPTConfig

__all__ = ["config_from_hf_llama", "state_dict_from_hf_llama"]


def config_from_hf_llama(hf_config, **overrides) -> GPTConfig:
    """The `GPTConfig` of a Hugging Face `LlamaConfig`.

    Args:
        hf_config: a `transformers.LlamaConfig` (or anything with its attributes).
        **overrides: GPTConfig fields to set.

    Returns:
        A LLaMA-style config (RoPE, RMSNorm, SwiGLU, no biases).

    Raises:
        ValueError: a LLaMA variant minillm does not express (named in the message).
    """
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in ("default", "linear", "yarn"):
        raise ValueError(f"LLaMA rope_scaling type {rope_type!r} is not supported; "
                         "minillm converts 'default', 'linear' and 'yarn'")
    if rope_type == "yarn" and any(scaling.get(k) not in (None, d) for k, d in (
            ("beta_fast", 32), ("beta_slow", 1), ("attention_factor", None), ("mscale", None),
            ("mscale_all_dim", None), ("truncate", True))):
        raise ValueError("LLaMA YaRN with non-default beta_fast / beta_slow / attention_factor / "
                         "mscale / truncate is not supported; minillm converts the paper's defaults")
    theta = getattr(hf_config, "rope_theta", None)
    if theta is None:  # transformers >= 5 keeps it in rope_parameters
        theta = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    kwargs = dict(
        vocab_size=hf_config.vocab_size,
        context_length=hf_config.max_position_embeddings,
        d_model=hf_config.hidden_size,
        n_layer=hf_config.num_hidden_layers,
        n_head=hf_config.num_attention_heads,
        n_kv_head=hf_config.num_key_value_heads,
        d_ff=hf_config.intermediate_size,
        bias=False,
        tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        positions="rope",
        rope_base=float(theta),
        rope_scaling={"linear": "linear", "yarn": "yarn"}.get(rope_type, "none"),
        rope_scale=float(scaling.get("factor", 1.0)),
        rope_original_context=int(scaling.get("original_max_position_embeddings")
                                  or hf_config.max_position_embeddings)
        if rope_type == "yarn" else 0,
        norm="rmsnorm",
        norm_eps=hf_config.rms_norm_eps,
        mlp="swiglu",
    )
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise ValueError(f"LLaMA hidden_act={hf_config.hidden_act!r}; minillm's SwiGLU uses silu")
    if getattr(hf_config, "attention_bias", False) or getattr(hf_config, "mlp_bias", False):
        raise ValueError("LLaMA variants with attention_bias/mlp_bias are not supported")
    head_dim = getattr(hf_config, "head_dim", None)
    if head_dim is not None and head_dim != hf_config.hidden_size // hf_config.num_attention_heads:
        raise ValueError(f"LLaMA head_dim={head_dim} differs from hidden_size / "
                         f"num_attention_heads = {hf_config.hidden_size} / "
                         f"{hf_config.num_attention_heads}: minillm ties head_dim to d_model")
    kwargs.update(overrides)
    return GPTConfig(**kwargs)


def state_dict_from_hf_llama(model_or_state_dict, config: GPTConfig) -> dict[str, torch.Tensor]:
    """LLaMA's weights under minillm's names (q, k, v stacked into one qkv; copies).

    Args:
        model_or_state_dict: a `LlamaForCausalLM` or its state dict.
        config: the target config (from `config_from_hf_llama`).

    Returns:
        A state dict for `GPT(config).load_weights`.
    """
    sd = model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict") \
        else dict(model_or_state_dict)
    out = {
        "tok_emb.weight": sd["model.embed_tokens.weight"],
        "norm_f.weight": sd["model.norm.weight"],
    }
    for i in range(config.n_layer):
        p = f"model.layers.{i}."
        out[f"blocks.{i}.norm1.weight"] = sd[p + "input_layernorm.weight"]
        out[f"blocks.{i}.norm2.weight"] = sd[p + "post_attention_layernorm.weight"]
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
            [sd[p + f"self_attn.{n}_proj.weight"] for n in ("q", "k", "v")], dim=0)
        out[f"blocks.{i}.attn.proj.weight"] = sd[p + "self_attn.o_proj.weight"]
        out[f"blocks.{i}.mlp.gate.weight"] = sd[p + "mlp.gate_proj.weight"]
        out[f"blocks.{i}.mlp.up.weight"] = sd[p + "mlp.up_proj.weight"]
        out[f"blocks.{i}.mlp.proj.weight"] = sd[p + "mlp.down_proj.weight"]
    if not config.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}
