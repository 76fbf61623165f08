"""Weight conversion from Hugging Face's `MixtralForCausalLM` (Jiang et al. 2024, 2401.04088).

A Mixtral is a LLaMA (RoPE, RMSNorm, grouped-query attention, no biases) whose every MLP is a
sparse MoE of `num_local_experts` SwiGLU experts, top-2 with renormalised weights and no
capacity limit: minillm's GPT with `n_expert=E, top_k=2, capacity_factor=None, moe_every=1`.
Mixtral renormalises the top-k weights for every k (at num_experts_per_tok=1 the weight is 1),
where the course's own models keep Switch's raw probability at k = 1: the converter sets
`moe_renormalize=True` so that a converted model keeps its source's convention.

    model.layers.i.mlp.gate.weight            (E, C)     -> blocks.i.mlp.router
    model.layers.i.mlp.experts.gate_up_proj   (E, 2F, C) -> blocks.i.mlp.experts.w_in | w_up
    model.layers.i.mlp.experts.down_proj      (E, C, F)  -> blocks.i.mlp.experts.w_out
    (attention, norms, embeddings and head as in minillm.models.convert.hf_llama)

Mixtral's `router_aux_loss_coef` multiplies a balance loss that is top_k times minillm's
(minillm.models.moe explains why), so it maps to `moe_balance_coef = coef * top_k`: the same
loss value. Mixtral has no router z-loss (`moe_z_coef=0`). Its router jitter also scales the
experts' input; minillm's jitters the router only (training only: logits are unaffected).
"""

from __future__ import annotations

import torch

from minillm.models.config import GPTConfig
from minillm.models.convert.hf_llama import config_from_hf_llama

__all__ = ["config_from_hf_mixtral", "state_dict_from_hf_mixtral"]


def config_from_hf_mixtral(hf_config, **overrides) -> GPTConfig:
    """A `GPTConfig` for a `transformers.MixtralConfig` (overrides win)."""
    window = getattr(hf_config, "sliding_window", None)
    if window is not None and window < hf_config.max_position_embeddings:
        raise ValueError(f"Mixtral sliding_window={window} is shorter than the context "
                         f"({hf_config.max_position_embeddings}); minillm attends over the "
                         "whole context: convert a model with sliding_window=None")
    top_k = hf_config.num_experts_per_tok
    moe = dict(n_expert=hf_config.num_local_experts, top_k=top_k, capacity_factor=None,
               moe_renormalize=True,
               moe_every=1, moe_balance_coef=float(hf_config.router_aux_loss_coef) * top_k,
               moe_z_coef=0.0, router_jitter=float(getattr(hf_config, "router_jitter_noise", 0.0)))
    moe.update(overrides)
    return config_from_hf_llama(hf_config, **moe)


def state_dict_from_hf_mixtral(model_or_state_dict, config: GPTConfig) -> dict[str, torch.Tensor]:
    """The tensors of a `MixtralForCausalLM` (or its state dict) under minillm's names."""
    sd = model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict") \
        else dict(model_or_state_dict)
    out = {"tok_emb.weight": sd["model.embed_tokens.weight"], "norm_f.weight": sd["model.norm.weight"]}
    F = config.expert_d_ff
    for i in range(config.n_layer):
        p, q = f"model.layers.{i}.", f"blocks.{i}."
        out[q + "norm1.weight"] = sd[p + "input_layernorm.weight"]
        out[q + "norm2.weight"] = sd[p + "post_attention_layernorm.weight"]
        out[q + "attn.qkv.weight"] = torch.cat(
            [sd[p + f"self_attn.{n}_proj.weight"] for n in ("q", "k", "v")], dim=0)
        out[q + "attn.proj.weight"] = sd[p + "self_attn.o_proj.weight"]
        gate_up = sd[p + "mlp.experts.gate_up_proj"]                     # (E, 2F, C)
        if gate_up.shape[1] != 2 * F:
            raise ValueError(f"layer {i}: gate_up_proj has {gate_up.shape[1]} rows, expected "
                             f"2 * expert_d_ff = {2 * F}")
        out[q + "mlp.router"] = sd[p + "mlp.gate.weight"].float()
        out[q + "mlp.experts.w_in"] = gate_up[:, :F]                     # gate
        out[q + "mlp.experts.w_up"] = gate_up[:, F:]                     # up
        out[q + "mlp.experts.w_out"] = sd[p + "mlp.experts.down_proj"]
    if not config.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}
