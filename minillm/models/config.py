"""`GPTConfig`: every architectural choice of the one GPT model, validated.

Chapters switch these fields to compare designs; they never fork the model. The defaults are
GPT-2's choices (learned positions, pre-LayerNorm, tanh-GELU MLP, tied embeddings, biases,
causal mask). A LLaMA is `positions="rope", norm="rmsnorm", mlp="swiglu", bias=False,
tie_embeddings=False` with `n_kv_head < n_head` (see `GPT.from_hf_llama`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from minillm.kernels import attention_backends
from minillm.utils import check_finite_fields, config_from_dict

__all__ = ["GPTConfig", "check_moe_args", "swiglu_hidden_size"]

POSITIONS = ("none", "learned", "sinusoidal", "rope", "alibi")
NORMS = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post")
MLPS = ("gelu", "swiglu")
ATTN_MASKS = ("causal", "prefix", "bidirectional")
ROPE_SCALINGS = ("none", "linear", "ntk", "yarn")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {choices}")


def swiglu_hidden_size(d_model: int, multiple_of: int = 32) -> int:
    """LLaMA's SwiGLU hidden-size rule: 2/3 of 4d, rounded up to a multiple of `multiple_of`."""
    return multiple_of * math.ceil(8 * d_model / 3 / multiple_of)


def check_moe_args(n_expert: int, top_k: int, capacity_factor: float | None,
                   router_jitter: float = 0.0, n_shared_expert: int = 0) -> None:
    """ValueError naming the field and the fix for a bad MoE setting."""
    if not isinstance(n_expert, int) or n_expert < 1:
        raise ValueError(f"n_expert={n_expert!r} must be a positive integer (0 = dense MLP)")
    if not isinstance(top_k, int) or not 1 <= top_k <= n_expert:
        raise ValueError(f"top_k={top_k!r} must be between 1 and n_expert={n_expert}: a token "
                         "cannot choose more experts than there are; lower top_k or add experts")
    if capacity_factor is not None and not (isinstance(capacity_factor, (int, float))
                                            and capacity_factor > 0):
        raise ValueError(f"capacity_factor={capacity_factor!r} must be > 0 (Switch uses 1.0-2.0)"
                         " or None to drop no tokens")
    if not 0 <= router_jitter < 1:
        raise ValueError(f"router_jitter={router_jitter} must be in [0, 1) (Switch: 1e-2)")
    if not isinstance(n_shared_expert, int) or n_shared_expert < 0:
        raise ValueError(f"n_shared_expert={n_shared_expert!r} must be a non-negative integer")


@dataclass
class GPTConfig:
    vocab_size: int = 257          # byte tokenizer: 256 bytes + <|endoftext|>
    context_length: int = 256      # longest sequence the model attends over (T)
    d_model: int = 128             # residual stream width (C)
    n_layer: int = 4               # Transformer blocks
    n_head: int = 4                # query heads; head_dim = d_model // n_head
    n_kv_head: int | None = None   # key/value heads (None = n_head: multi-head attention)
    d_ff: int | None = None        # MLP hidden width (None = 4 d; SwiGLU: 8d/3 rounded up to 32)
    dropout: float = 0.0           # on attention weights, residual branches and embeddings
    bias: bool = True              # biases in Linear layers and norms (GPT-2: True)
    tie_embeddings: bool = True    # output head shares the token embedding matrix
    positions: str = "learned"     # "none", "learned" (GPT-2), "sinusoidal", "rope", "alibi"
    sinusoid_scale: float = 1.0    # "sinusoidal": amplitude as a multiple of init_std (rms of a
                                   # fresh learned table); ~35 at init_std 0.02 is Vaswani's rms 1/sqrt(2)
    rope_base: float = 10000.0     # RoPE: theta_i = base^(-2i/d)
    rope_fraction: float = 1.0     # RoPE: share of each head's dims that rotate (GPT-NeoX: 0.25)
    rope_scaling: str = "none"     # RoPE for longer contexts: "linear" (interpolation), "ntk" or "yarn"
    rope_scale: float = 1.0        # RoPE: the context extension factor for rope_scaling
    rope_original_context: int = 0  # YaRN: the context the model was trained at (0 =
                                   # context_length / rope_scale)
    norm: str = "layernorm"        # "layernorm" or "rmsnorm"
    norm_placement: str = "pre"    # "pre" (GPT-2, LLaMA) or "post" (original Transformer, BERT)
    norm_eps: float = 1e-5         # epsilon inside the norm
    mlp: str = "gelu"              # "gelu" (GPT-2's tanh approximation) or "swiglu" (LLaMA)
    attn_impl: str = "sdpa"        # a minillm.kernels backend: naive, sdpa, flash_torch, flash_triton
    attn_mask: str = "causal"      # "causal" (decoder), "prefix" (prefix-LM) or "bidirectional"
    init_std: float = 0.02         # std of the normal initialisation (GPT-2)
    # Mixture of Experts (minillm.models.moe); n_expert=0 keeps every MLP dense
    n_expert: int = 0              # experts per MoE layer (E); 0 = dense model
    top_k: int = 2                 # experts per token (1: Switch, 2: GShard/Mixtral)
    expert_d_ff: int | None = None  # hidden width of each expert (None = d_ff)
    capacity_factor: float | None = None  # slots = ceil(cf * k * T / E) per sequence; None: no drops
    moe_every: int = 1             # layer i is MoE when i % moe_every == moe_every - 1 (Switch: 2)
    moe_balance_coef: float = 1e-2  # alpha of the load-balancing loss (Switch: 1e-2)
    moe_z_coef: float = 1e-3       # beta of the router z-loss (ST-MoE: 1e-3)
    router_jitter: float = 0.0     # multiplicative router-input noise while training (Switch)
    n_shared_expert: int = 0       # always-on experts of width expert_d_ff (DeepSeekMoE)
    moe_renormalize: bool | None = None  # gates sum to 1: None = for top_k > 1 only (Switch's raw
                                   # p_i at k = 1), True = every k (Mixtral), False = never
    moe_bias_rate: float = 0.0     # auxiliary-loss-free balancing (DeepSeek-V3): each training
                                   # forward moves a per-expert selection bias by this much
                                   # towards even load (V3: 1e-3); 0 = off
    activation_checkpointing: bool = False  # training: keep only each block's input and
                                   # recompute the block in backward (less memory, ~1 more fwd)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_head={self.n_head}; "
                f"pick n_head among the divisors of d_model"
            )
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if not isinstance(self.n_kv_head, int) or self.n_kv_head <= 0 or self.n_head % self.n_kv_head:
            raise ValueError(
                f"n_kv_head={self.n_kv_head!r} must be a positive divisor of n_head={self.n_head}"
            )
        if self.d_ff is None:
            self.d_ff = swiglu_hidden_size(self.d_model) if self.mlp == "swiglu" else 4 * self.d_model
        if not isinstance(self.d_ff, int) or self.d_ff <= 0:
            raise ValueError(f"d_ff={self.d_ff!r} must be a positive integer")
        for name in ("dropout", "norm_eps", "init_std", "rope_base", "rope_fraction",
                     "rope_scale", "sinusoid_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{name}={value!r} must be a number")
        check_finite_fields(self)  # every float field (infinity passes the check above)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps={self.norm_eps} must be positive")
        if self.init_std <= 0:
            raise ValueError(f"init_std={self.init_std} must be positive")
        if self.sinusoid_scale <= 0:
            raise ValueError(f"sinusoid_scale={self.sinusoid_scale} must be positive (1 = the rms "
                             "of a fresh learned table; about 35 = Vaswani et al.'s 1/sqrt(2))")
        if not isinstance(self.activation_checkpointing, bool):
            raise ValueError(f"activation_checkpointing={self.activation_checkpointing!r} "
                             "must be True or False")
        _check_choice("positions", self.positions, POSITIONS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        _check_choice("mlp", self.mlp, MLPS)
        _check_choice("attn_impl", self.attn_impl, tuple(attention_backends()))
        _check_choice("attn_mask", self.attn_mask, ATTN_MASKS)
        _check_choice("rope_scaling", self.rope_scaling, ROPE_SCALINGS)
        if self.rope_base <= 1:
            raise ValueError(f"rope_base={self.rope_base} must be > 1 (LLaMA uses 10000)")
        if not 0 < self.rope_fraction <= 1:
            raise ValueError(f"rope_fraction={self.rope_fraction} must be in (0, 1]")
        rot_dim = int(self.head_dim * self.rope_fraction) // 2 * 2
        need = 4 if self.rope_scaling == "ntk" else 2  # NTK's exponent is d / (d - 2)
        if self.positions == "rope" and rot_dim < need:
            raise ValueError(f"rope_fraction={self.rope_fraction} of head_dim={self.head_dim} "
                             f"rotates {rot_dim} dims; RoPE{' with NTK scaling' * (need == 4)} "
                             f"needs at least {need}: raise rope_fraction or the head size")
        if self.rope_scale < 1:
            raise ValueError(f"rope_scale={self.rope_scale} must be >= 1 (a context extension factor)")
        if not isinstance(self.rope_original_context, int) or self.rope_original_context < 0:
            raise ValueError(f"rope_original_context={self.rope_original_context!r} must be a "
                             "non-negative integer (0 = context_length / rope_scale)")

        self._check_moe()

    def _check_moe(self) -> None:
        if not isinstance(self.n_expert, int) or isinstance(self.n_expert, bool) or self.n_expert < 0:
            raise ValueError(f"n_expert={self.n_expert!r} must be 0 (dense) or a positive integer")
        if self.expert_d_ff is None:
            self.expert_d_ff = self.d_ff
        if self.n_expert == 0:
            return
        check_moe_args(self.n_expert, self.top_k, self.capacity_factor, self.router_jitter,
                       self.n_shared_expert)
        if not isinstance(self.expert_d_ff, int) or self.expert_d_ff <= 0:
            raise ValueError(f"expert_d_ff={self.expert_d_ff!r} must be a positive integer")
        if not isinstance(self.moe_every, int) or not 1 <= self.moe_every <= self.n_layer:
            raise ValueError(f"moe_every={self.moe_every!r} must be between 1 and "
                             f"n_layer={self.n_layer} (1: every layer is MoE)")
        if self.moe_renormalize not in (None, True, False):
            raise ValueError(f"moe_renormalize={self.moe_renormalize!r} must be None (for "
                             "top_k > 1 only), True (every k, Mixtral) or False (never)")
        for name in ("moe_balance_coef", "moe_z_coef", "moe_bias_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 turns it off)")

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Whether block `layer_idx` has an MoE layer instead of a dense MLP."""
        return self.n_expert > 0 and layer_idx % self.moe_every == self.moe_every - 1

    @property
    def head_dim(self) -> int:
        """d_model // n_head."""
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict (what config.json holds)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        """Read a config back; unknown fields are an error naming them."""
        return config_from_dict(cls, d, "model config")
