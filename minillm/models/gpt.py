"""GPT: a decoder-only Transformer language model (Radford et al. 2019, GPT-2).

    h_0 = E[tokens] + P[positions]
    h_l = Block(h_{l-1})                       l = 1..n_layer, pre-norm
    logits = LN_f(h_L) E^T                     (tied embeddings)

Departures from / notes on GPT-2, all switchable in `GPTConfig`:
- defaults reproduce GPT-2 exactly (see `from_hf_gpt2`: identical logits);
- the QKV projection is a `Linear` (out, in); GPT-2's `Conv1D` stores (in, out);
- positions: P is a learned table (GPT-2), fixed sinusoids, or nothing at all — RoPE rotates
  queries and keys inside attention and ALiBi biases the scores instead (minillm.models.positions).
  Vaswani et al. scale the token embeddings up by sqrt(d) so that they are not drowned by the
  sinusoids (rms 1/sqrt(2)); with GPT-2's N(0, init_std) embeddings we scale the sinusoids down
  instead, to rms init_std, the scale of the learned table they replace (`sinusoid_scale`
  multiplies that: about 35 at init_std 0.02 is Vaswani's amplitude);
- RMSNorm, post-norm, SwiGLU, biases off, untied head: the LLaMA family (`from_hf_llama`);
- `n_kv_head < n_head` gives grouped-query attention (not in GPT-2);
- `attn_mask="prefix"` / `"bidirectional"` turn the decoder into a prefix-LM (which decodes,
  with a cache, taking the prompt as its prefix) or an encoder (which does not decode);
- `n_expert > 0` replaces every `moe_every`-th MLP by a Mixture of Experts (minillm.models.moe);
  its balance and z-losses come back in the output's `aux_losses` (`from_hf_mixtral`);
- `activation_checkpointing=True` recomputes each block in backward instead of storing its
  activations (Chen et al. 2016, arXiv:1604.06174);
- `attn_impl="naive"` keeps the written-out attention beside the fused one;
- `forward` returns one typed `LMOutput` (logits, loss, aux_losses, hidden_states, routing),
  whatever was asked, and stores nothing on the modules;
- for decoding, `forward` takes a `KVCache`, explicit `position_ids` and a left-padding
  `attention_mask` (Hugging Face's names and conventions);
- extension points: the attention kernel is looked up by name (`minillm.kernels`), each block's
  MLP comes from `build_mlp(config, layer_idx)`, and an MLP that returns an `MLPOutput` (a
  mixture of experts) has its auxiliary losses summed into the output's `aux_losses`;
- position tables (RoPE's cos/sin, the sinusoids) are computed once per forward, on the
  model's device, and shared by every layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from minillm.models.attention import build_attention_mask
from minillm.models.base import LanguageModel, LMOutput, lm_loss
from minillm.models.config import GPTConfig
from minillm.models.convert.hf_gpt2 import (
    config_from_hf_gpt2,
    hf_gpt2_config,
    state_dict_from_hf_gpt2,
    state_dict_to_hf_gpt2,
)
from minillm.models.convert.hf_llama import config_from_hf_llama, state_dict_from_hf_llama
from minillm.models.convert.mixtral import config_from_hf_mixtral, state_dict_from_hf_mixtral
from minillm.models.kv_cache import KVCache
from minillm.models.layers import Block
from minillm.models.moe import MoE
from minillm.models.norms import make_norm
from minillm.models.positions import RotaryEmbedding, positions_from_mask, sinusoidal_at

__all__ = ["GPT"]


class GPT(LanguageModel):
    config_class = GPTConfig
    tied_embedding = "tok_emb.weight"

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        if config.positions == "learned":
            self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        # RoPE's tables are computed here once per forward and shared by the layers
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_base, config.rope_fraction,
                                      config.rope_scaling, config.rope_scale,
                                      config.rope_original_context
                                      or round(config.context_length / config.rope_scale)) \
            if config.positions == "rope" else None
        # post-norm blocks end normalised already (the original Transformer has no final norm)
        self.norm_f = make_norm(config.norm, config.d_model, config.norm_eps, config.bias) \
            if config.norm_placement == "pre" else nn.Identity()
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 initialisation: N(0, 0.02); residual projections N(0, 0.02 / sqrt(2 n_layer))."""
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            if getattr(module, "residual_scale", False):
                std = std / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)

    # ---- forward -------------------------------------------------------------------------
    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
        cache: KVCache | None = None, position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None, prefix_length: int | torch.Tensor | None = None,
    ) -> LMOutput:
        """Args:
            idx: (B, T) token ids, T <= context_length.
            targets: optional (B, T) next-token ids; -100 marks positions to ignore.
            cache: optional KV cache holding the keys/values of the tokens before `idx`; it is
                extended by `idx`'s (decoding: prefill the prompt, then one token per call).
            position_ids: optional (B, T) or (T,) positions of `idx`'s tokens; default
                `past + arange(T)` with `past` the tokens already in the cache, or with an
                `attention_mask` the number of real tokens before each (as in Hugging Face).
            attention_mask: optional (B, past + T) 1 for real tokens, 0 for (left) padding;
                or a boolean (B, 1, T, past + T) mask used as given (True = may attend; it
                must hold causality itself), e.g. block-diagonal for packed documents (then
                pass position_ids that restart at each document: the default is 0..T-1).
            prefix_length: with attn_mask="prefix", how many leading tokens every position sees.

        Returns:
            `LMOutput`: logits (B, T, vocab_size); loss, the mean cross-entropy in nats (None
            without targets; auxiliary losses are not in it); aux_losses, summed key by key
            over the MoE layers ({} for a dense model); hidden_states (B, T, C) after the final
            norm; routing, one per MoE layer.
        """
        c = self.config
        T = idx.shape[1]
        past = cache.length if cache is not None else 0
        if past + T > c.context_length:
            raise ValueError(
                f"input has {past + T} tokens but context_length={c.context_length}; "
                "crop the input (keep the last context_length tokens) or use a model with a "
                "longer context"
            )
        if cache is not None and c.attn_mask == "bidirectional":
            raise ValueError("a KV cache needs a model that does not look ahead (attn_mask "
                             "'causal' or 'prefix'); this one is bidirectional")
        given_positions = position_ids is not None
        position_ids, key_positions = self._positions(T, past, idx.device, position_ids,
                                                      attention_mask)
        mask = build_attention_mask(c, T, past + T, idx.device, attention_mask, prefix_length,
                                    position_ids, key_positions)
        x = self.drop(self._embed(idx, position_ids, check_positions=given_positions))
        rope = self.rotary.tables(position_ids) if self.rotary is not None else None
        recompute = c.activation_checkpointing and self.training and torch.is_grad_enabled() \
            and cache is None
        aux_losses: dict[str, torch.Tensor] = {}
        routing = []
        for block in self.blocks:
            if recompute:  # Chen et al. 2016 (arXiv:1604.06174): store the input, recompute
                out = checkpoint(block, x, mask=mask, rope=rope, use_reentrant=False)
            else:
                out = block(x, mask=mask, cache=cache, rope=rope)
            x = out.hidden
            for name, value in out.aux_losses.items():
                aux_losses[name] = aux_losses[name] + value if name in aux_losses else value
            if out.routing is not None:
                routing.append(out.routing)
        if cache is not None:
            cache.advance(T)
        hidden = self.norm_f(x)
        logits = self.lm_head(hidden)                                          # (B, T, V)
        return LMOutput(logits, lm_loss(logits, targets), aux_losses, hidden, tuple(routing))

    def attention_weights(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                          **kwargs) -> tuple[LMOutput, list[torch.Tensor]]:
        """One forward, and the attention weights (B, H, T, T) of every layer in it, for
        heatmaps and probes. Each layer's input is caught by a forward hook and its weights
        recomputed by the written-out softmax (`CausalSelfAttention.weights`); the forward
        itself runs the configured kernel, and nothing is stored on the model.

        Args:
            idx, targets, **kwargs: as `forward` (without a cache).

        Returns:
            (the forward's `LMOutput`, [weights of layer 0, layer 1, ...]).
        """
        if kwargs.get("cache") is not None:
            raise ValueError("attention_weights runs without a KV cache: pass the whole sequence")
        weights: list[torch.Tensor] = []

        def keep(attn, args, kw, _out):
            weights.append(attn.weights(args[0], mask=kw.get("mask"), rope=kw.get("rope")))

        hooks = [b.attn.register_forward_hook(keep, with_kwargs=True) for b in self.blocks]
        try:
            out = self(idx, targets, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        return out, weights

    def _positions(self, T: int, past: int, device: torch.device,
                   position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The positions of the T new tokens, and for ALiBi those of every key (else None).

        Four cases: positions given; derived from a padding mask (count the real tokens
        before each, past and new alike); after a cache (past, past + 1, ...); or 0..T-1."""
        full_mask = attention_mask is not None and attention_mask.ndim == 4
        mask_positions = None if attention_mask is None or full_mask \
            else positions_from_mask(attention_mask)
        if position_ids is None and mask_positions is not None:
            position_ids = mask_positions[:, past:]   # <= past + T - 1 < context_length
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=device)
        if self.config.positions != "alibi":
            return position_ids, None
        if past == 0:  # keys sit where their queries sat
            return position_ids, position_ids
        if mask_positions is not None:
            return position_ids, mask_positions
        return position_ids, torch.arange(past + T, device=device)  # cached keys: 0, 1, ...

    def _embed(self, idx: torch.Tensor, position_ids: torch.Tensor,
               check_positions: bool) -> torch.Tensor:
        """Token embeddings plus the absolute position signal (learned or sinusoidal; RoPE
        and ALiBi act inside attention instead): (B, T) ids -> (B, T, C)."""
        c = self.config
        x = self.tok_emb(idx)                                                  # (B, T, C)
        if c.positions == "learned":
            # derived positions are < context_length by forward's check: only positions the
            # caller gave are read (a device sync), to refuse what the table cannot hold
            if check_positions and (last := int(position_ids.max())) >= c.context_length:
                raise ValueError(f"position {last} is beyond the learned "
                                 f"position table ({c.context_length} entries): a learned table "
                                 "cannot extrapolate; use positions='rope', 'alibi' or "
                                 "'sinusoidal' for longer inputs")
            x = x + self.pos_emb(position_ids)
        elif c.positions == "sinusoidal":  # scaled to the rms of a fresh learned table
            x = x + (c.sinusoid_scale * c.init_std * math.sqrt(2)) * sinusoidal_at(position_ids, c.d_model).to(x.dtype)
        return x

    # ---- accounting ----------------------------------------------------------------------
    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the token and position embeddings (Kaplan et
        al. 2020 count N this way). A tied output head is counted once."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if self.config.positions == "learned":
                n -= self.pos_emb.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def num_active_params(self, non_embedding: bool = True) -> int:
        """Parameters a token uses: `num_params` less the experts a token does not visit
        (E - top_k per MoE layer). Equal to `num_params` for a dense model."""
        idle = 0
        for m in self.modules():
            if isinstance(m, MoE):
                per_expert = sum(p[0].numel() for p in m.experts.parameters())
                idle += (m.n_expert - m.top_k) * per_expert
        return self.num_params(non_embedding) - idle

    def flops_per_token(self, seq_len: int | None = None, training: bool = True) -> float:
        """FLOPs to process one token, Kaplan et al. 2020 (Table 1): 2N per forward plus the
        context-dependent 2 * n_layer * T * C; training (forward + backward) is 3x that,
        6N + 6 * n_layer * T * C. N excludes embeddings but includes the output projection, a
        matmul like any other; for an MoE, N counts the active parameters only (the router and
        the top_k experts a token visits: `num_active_params`). (PaLM, App. B, counts both QK^T and AV over the full context,
        12 * n_layer * T * C; for T << 6 * C the difference is small.)"""
        c = self.config
        t = c.context_length if seq_len is None else seq_len
        n = self.num_active_params(non_embedding=True) + c.vocab_size * c.d_model
        forward = 2 * n + 2 * c.n_layer * t * c.d_model
        return 3 * forward if training else forward

    # ---- GPT-2 interop -------------------------------------------------------------------
    @classmethod
    def from_hf_gpt2(cls, model_or_state_dict, n_head: int | None = None, **overrides) -> GPT:
        """Build a GPT from a Hugging Face `GPT2LMHeadModel` or its state dict.

        A bare state dict does not say how many heads there are: pass `n_head`, or GPT-2's
        head width of 64 is assumed (n_head = d_model // 64).
        """
        config = config_from_hf_gpt2(model_or_state_dict, n_head=n_head, **overrides)
        model = cls(config)
        model.load_weights(state_dict_from_hf_gpt2(model_or_state_dict, config))
        return model

    @classmethod
    def from_hf_llama(cls, model, **overrides) -> GPT:
        """Build a LLaMA-style GPT from a Hugging Face `LlamaForCausalLM` (identical logits)."""
        config = config_from_hf_llama(model.config, **overrides)
        gpt = cls(config)
        gpt.load_weights(state_dict_from_hf_llama(model, config))
        return gpt

    @classmethod
    def from_hf_mixtral(cls, model, **overrides) -> GPT:
        """Build an MoE GPT from a Hugging Face `MixtralForCausalLM` (identical logits)."""
        config = config_from_hf_mixtral(model.config, **overrides)
        gpt = cls(config)
        gpt.load_weights(state_dict_from_hf_mixtral(model, config))
        return gpt

    def to_hf_gpt2_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under `GPT2LMHeadModel`'s names and layouts."""
        return state_dict_to_hf_gpt2(self)

    def hf_gpt2_config(self) -> dict:
        """Keyword arguments for `transformers.GPT2Config` describing this model."""
        return hf_gpt2_config(self.config)
