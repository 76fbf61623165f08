"""Weight conversion between minillm's GPT and Hugging Face's `GPT2LMHeadModel`.

transformers is not imported: a state dict is a dict of tensors. GPT-2 stores its linear layers
as `Conv1D` with weight (in, out); minillm's `nn.Linear` stores (out, in), so those transpose.
Names map one to one:

    transformer.wte / wpe            <-> tok_emb / pos_emb
    transformer.h.i.ln_1 / ln_2      <-> blocks.i.norm1 / norm2
    transformer.h.i.attn.c_attn      <-> blocks.i.attn.qkv      (transposed)
    transformer.h.i.attn.c_proj      <-> blocks.i.attn.proj     (transposed)
    transformer.h.i.mlp.c_fc/c_proj  <-> blocks.i.mlp.fc/proj   (transposed)
    transformer.ln_f                 <-> norm_f
"""

from __future__ import annotations

import re

import torch

from minillm.models.config import GPTConfig

__all__ = ["config_from_hf_gpt2", "hf_gpt2_config", "hf_gpt2_module_name",
           "state_dict_from_hf_gpt2", "state_dict_to_hf_gpt2"]

_BLOCK = {
    "ln_1": "norm1", "ln_2": "norm2", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
    "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj",
}
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def _state_dict(model_or_state_dict) -> dict[str, torch.Tensor]:
    sd = model_or_state_dict
    if hasattr(sd, "state_dict"):
        sd = sd.state_dict()
    # GPT2Model (no head) has no "transformer." prefix; accept both.
    if not any(k.startswith("transformer.") for k in sd):
        sd = {f"transformer.{k}": v for k, v in sd.items()}
    return dict(sd)


def config_from_hf_gpt2(model_or_state_dict, n_head: int | None = None, **overrides) -> GPTConfig:
    """The `GPTConfig` of a Hugging Face GPT-2 (a `GPT2LMHeadModel`, `GPT2Model` or state dict).

    Args:
        model_or_state_dict: the model (its `config` is read too) or a bare state dict.
        n_head: heads, for a bare state dict (default: GPT-2's head width 64).
        **overrides: GPTConfig fields to set (e.g. dropout).

    Returns:
        A config whose GPT loads these weights with identical logits.

    Raises:
        ValueError: not a GPT-2 state dict, or a GPT-2 variant minillm does not express.
    """
    hf_config = getattr(model_or_state_dict, "config", None)
    sd = _state_dict(model_or_state_dict)
    if "transformer.wte.weight" not in sd:
        raise ValueError("this does not look like a GPT-2 state dict: transformer.wte.weight missing")
    vocab_size, d_model = sd["transformer.wte.weight"].shape
    n_layer = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"transformer\.h\.(\d+)\.", k)))
    kwargs = dict(
        vocab_size=vocab_size,
        context_length=sd["transformer.wpe.weight"].shape[0],
        d_model=d_model,
        n_layer=n_layer,
        n_head=n_head or (hf_config.n_head if hf_config is not None else max(1, d_model // 64)),
        d_ff=sd["transformer.h.0.mlp.c_fc.weight"].shape[1],
        norm_eps=hf_config.layer_norm_epsilon if hf_config is not None else 1e-5,
        tie_embeddings="lm_head.weight" not in sd
        or sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
        or torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"]),
    )
    if hf_config is not None:
        act = getattr(hf_config, "activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT-2 activation_function={act!r} is not supported; minillm's "
                             "GPT-2 MLP uses the tanh approximation ('gelu_new')")
        if not getattr(hf_config, "scale_attn_weights", True) or getattr(
                hf_config, "scale_attn_by_inverse_layer_idx", False):
            raise ValueError("GPT-2 variants with scale_attn_weights=False or "
                             "scale_attn_by_inverse_layer_idx=True are not supported: minillm "
                             "scales attention scores by 1/sqrt(head_dim) only")
    kwargs.update(overrides)
    return GPTConfig(**kwargs)


def _map_blocks(sd: dict[str, torch.Tensor], n_layer: int, to_hf: bool) -> dict[str, torch.Tensor]:
    """The blocks' tensors renamed one way or the other; Conv1D weights transposed (the
    transpose is its own inverse, so one loop serves both directions)."""
    out = {}
    for i in range(n_layer):
        for hf, ours in _BLOCK.items():
            for kind in ("weight", "bias"):
                src, dst = f"transformer.h.{i}.{hf}.{kind}", f"blocks.{i}.{ours}.{kind}"
                if to_hf:
                    src, dst = dst, src
                w = sd[src]
                if kind == "weight" and hf in _CONV1D:
                    w = w.t()
                out[dst] = w.contiguous()
    return out


_TOP = {"transformer.wte.weight": "tok_emb.weight", "transformer.wpe.weight": "pos_emb.weight",
        "transformer.ln_f.weight": "norm_f.weight", "transformer.ln_f.bias": "norm_f.bias"}


_TOP_MODULES = {"transformer.wte": "tok_emb", "transformer.wpe": "pos_emb",
                "transformer.ln_f": "norm_f", "lm_head": "lm_head"}


def hf_gpt2_module_name(name: str, to_hf: bool = True) -> str:
    """A module's name in the other model: "blocks.0.attn.qkv" <-> "transformer.h.0.attn.c_attn"
    (`to_hf=False` goes back). Raises ValueError for a name GPT-2 has no counterpart of."""
    top = {v: k for k, v in _TOP_MODULES.items()} if to_hf else _TOP_MODULES
    if name in top:
        return top[name]
    block = {v: k for k, v in _BLOCK.items()} if to_hf else _BLOCK
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)" if to_hf else r"transformer\.h\.(\d+)\.(.+)", name)
    if m is None or m.group(2) not in block:
        raise ValueError(f"module {name!r} has no GPT-2 counterpart; known: {sorted(top)} and "
                         f"per-block {sorted(block)}")
    return (f"transformer.h.{m.group(1)}." if to_hf else f"blocks.{m.group(1)}.") + block[m.group(2)]


def state_dict_from_hf_gpt2(model_or_state_dict, config: GPTConfig) -> dict[str, torch.Tensor]:
    """GPT-2's weights under minillm's names and layouts (copies).

    Args:
        model_or_state_dict: a Hugging Face GPT-2 model or its state dict.
        config: the target config (from `config_from_hf_gpt2`).

    Returns:
        A state dict for `GPT(config).load_weights`.
    """
    sd = _state_dict(model_or_state_dict)
    out = {ours: sd[hf] for hf, ours in _TOP.items()}
    out.update(_map_blocks(sd, config.n_layer, to_hf=False))
    if not config.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return {k: v.detach().clone() for k, v in out.items()}


def _check_gpt2_compatible(config: GPTConfig) -> None:
    problems = []
    if config.positions != "learned":
        problems.append(f"positions={config.positions!r}")
    if config.norm != "layernorm":
        problems.append(f"norm={config.norm!r}")
    if config.mlp != "gelu":
        problems.append(f"mlp={config.mlp!r}")
    if not config.bias:
        problems.append("bias=False")
    if config.n_kv_head != config.n_head:
        problems.append(f"n_kv_head={config.n_kv_head} != n_head")
    if config.norm_placement != "pre":
        problems.append(f"norm_placement={config.norm_placement!r}")
    if config.attn_mask != "causal":
        problems.append(f"attn_mask={config.attn_mask!r}")
    if problems:
        raise ValueError(f"this model cannot be expressed as GPT-2: {', '.join(problems)}; "
                         "GPT-2 needs learned positions, pre-LayerNorm, GELU, biases, MHA and a "
                         "causal mask")


def state_dict_to_hf_gpt2(model) -> dict[str, torch.Tensor]:
    """A GPT's weights under `GPT2LMHeadModel`'s names and layouts (copies).

    Args:
        model: a minillm GPT with a GPT-2-compatible config.

    Returns:
        A state dict for `GPT2LMHeadModel.load_state_dict`.

    Raises:
        ValueError: the config uses a choice GPT-2 does not have (named in the message).
    """
    config = model.config
    _check_gpt2_compatible(config)
    sd = model.state_dict()
    out = {hf: sd[ours] for hf, ours in _TOP.items()}
    out["lm_head.weight"] = sd["lm_head.weight"]
    out.update(_map_blocks(sd, config.n_layer, to_hf=True))
    return {k: v.detach().clone() for k, v in out.items()}


def hf_gpt2_config(config: GPTConfig) -> dict:
    """Keyword arguments for `transformers.GPT2Config` describing `config`.

    Raises:
        ValueError: the config uses a choice GPT-2 does not have.
    """
    _check_gpt2_compatible(config)
    return dict(
        vocab_size=config.vocab_size, n_positions=config.context_length, n_embd=config.d_model,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=config.d_ff,
        activation_function="gelu_new", layer_norm_epsilon=config.norm_eps,
        resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        tie_word_embeddings=config.tie_embeddings,
    )
