"""Memory and communication of data-parallel training: the ZeRO paper's formulas, measured.

Per-rank bytes of the model state (Rajbhandari et al., arXiv:1910.02054, Figure 1) with Ψ
parameters, N_d data-parallel ranks, p bytes per parameter, g per gradient and K of optimizer
state per parameter (mixed-precision Adam: p = g = 2, K = 12 = fp32 master + m + v):

    stage 0 (DP)   pΨ + gΨ + KΨ
    stage 1        pΨ + gΨ + KΨ/N_d
    stage 2        pΨ + (g + K)Ψ/N_d
    stage 3        (p + g + K)Ψ/N_d

`state_bytes` measures the same three quantities from the live tensors of a model and its
optimizer (each storage counted once, so views into flat buffers and tied weights are not
double-counted; a DTensor counts its local shard).

Communication per step, in elements per rank, the paper's convention (§7): an all-reduce of Ψ
is a reduce-scatter (Ψ) plus an all-gather (Ψ), so DP and stages 1-2 move 2Ψ and stage 3, which
gathers the parameters for forward and again for backward, 3Ψ. `CommCounter` counts what the
collectives are handed while it is active, by wrapping the `torch.distributed` functions;
`ring_bytes_sent` is what a ring algorithm actually sends: (N-1)/N of that. Point-to-point
sends (`send`, `isend`: pipeline activations and their gradients) count their size.

`parallel_comm_elements` gives the same count for data, tensor and pipeline parallelism of a
GPT from its sizes (Megatron-LM, 1909.08053; Narayanan et al. 2021, 2104.04473).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["zero_memory_formula", "state_bytes", "CommCounter", "MIXED_PRECISION_ADAM",
           "FP32_ADAM", "parallel_comm_elements"]

MIXED_PRECISION_ADAM = {"param_bytes": 2, "grad_bytes": 2, "k": 12}  # the paper's setting
FP32_ADAM = {"param_bytes": 4, "grad_bytes": 4, "k": 8}              # fp32 training (m and v)


def zero_memory_formula(psi: float, n_d: int, stage: int, param_bytes: float = 2,
                        grad_bytes: float = 2, k: float = 12) -> dict[str, float]:
    """Per-rank bytes of parameters, gradients and optimizer states for a ZeRO stage.

    Args:
        psi: number of parameters Ψ.
        n_d: data-parallel degree N_d.
        stage: 0 (plain data parallelism), 1, 2 or 3.
        param_bytes, grad_bytes, k: bytes per parameter, per gradient, of optimizer state.

    Returns:
        {"params", "grads", "optimizer", "total"} in bytes.
    """
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"stage={stage!r}; ZeRO stages are 0 (DP), 1, 2 and 3")
    if n_d < 1:
        raise ValueError(f"n_d={n_d} must be >= 1")
    params = param_bytes * psi / (n_d if stage >= 3 else 1)
    grads = grad_bytes * psi / (n_d if stage >= 2 else 1)
    optimizer = k * psi / (n_d if stage >= 1 else 1)
    return {"params": params, "grads": grads, "optimizer": optimizer,
            "total": params + grads + optimizer}


def parallel_comm_elements(form: str, size: int, *, n_layer: int, d_model: int, tokens: int,
                           psi: int = 0, mlp: str = "gelu", stage: int = 0,
                           tied_vocab: int = 0) -> int:
    """Elements one rank hands to communication in one training step (`CommCounter`'s count).

    Args:
        form: "dp" (an all-reduce of the gradients: 2Ψ), "tp" (per block an all-reduce of
            the (tokens, d_model) activations after attention and after the MLP in forward, and
            of their input gradients in backward: 2 x 4 L tokens C, one more per block in
            backward for SwiGLU's second column-parallel matrix) or "pp" (stage `stage` sends
            its output activations forward and its input gradients backward: tokens C each,
            the first and last stages one of the two).
        size: the degree of that parallelism (N ranks, or p stages).
        n_layer, d_model: the GPT's L and C.
        tokens: tokens a step processes on this rank (batch x sequence length).
        psi: parameters a data-parallel rank all-reduces (its gradients).
        mlp: "gelu" or "swiglu".
        stage: for "pp", which stage.
        tied_vocab: for "pp" with tied embeddings, the vocabulary size: the first and last
            stages exchange the tied matrix's gradient (vocab x C).

    Returns:
        Elements (all-reduces counted twice, the ZeRO paper's convention).
    """
    if size <= 1:
        return 0
    if form == "dp":
        return 2 * psi
    if form == "tp":
        per_block = 4 + (mlp == "swiglu")
        return 2 * per_block * n_layer * tokens * d_model
    if form == "pp":
        edge = stage in (0, size - 1)
        tied = tied_vocab * d_model if edge else 0
        return (1 if edge else 2) * tokens * d_model + tied
    raise ValueError(f"form={form!r}; choose 'dp', 'tp' or 'pp'")


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t  # a DTensor's shard


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None
                ) -> dict[str, int]:
    """Bytes this rank holds in parameters, gradients and optimizer states, from live tensors.

    Args:
        model: the (wrapped or unwrapped) model.
        optimizer: its optimizer; its parameters count as parameters (ZeRO's shards) and its
            `state` tensors (Adam's m and v; not the 0-d step counters) as optimizer states.

    Returns:
        {"params", "grads", "optimizer", "total"} in bytes; a storage shared by several tensors
        (flat buffers, tied weights) counts once, under the first kind that holds it.
    """
    seen: set[int] = set()
    out = {"params": 0, "grads": 0, "optimizer": 0}

    def add(kind: str, t: torch.Tensor | None) -> None:
        if t is None or not isinstance(t, torch.Tensor):
            return
        t = _local(t)
        storage = t.untyped_storage()
        if storage.nbytes() == 0 or storage.data_ptr() in seen:
            return
        seen.add(storage.data_ptr())
        out[kind] += storage.nbytes()

    params = list(model.parameters())
    if optimizer is not None:
        params += [p for g in optimizer.param_groups for p in g["params"]]
    for p in params:
        add("params", p)
    for p in params:
        add("grads", p.grad)
    if optimizer is not None:
        inner = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer's local one
        for st in inner.state.values():
            for v in st.values():
                if isinstance(v, torch.Tensor) and v.ndim > 0:  # m and v, not step counters
                    add("optimizer", v)
    out["total"] = sum(out.values())
    return out


@dataclass
class CommCounter:
    """Count the elements this rank hands to collectives while active (`with CommCounter() as c`).

    Attributes:
        elements: per collective name, elements in the paper's convention: all-reduce counts
            2x its size, reduce-scatter its input, all-gather its output, broadcast its size.
        calls: per collective name, the number of calls.
        world_size: N, for `ring_bytes_sent`.
    """

    elements: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    world_size: int = 1

    _RULES = {  # name -> (position and keyword of the tensor that sets the size, multiplier)
        "all_reduce": (0, "tensor", 2), "reduce_scatter_tensor": (1, "input", 1),
        "all_gather_into_tensor": (0, "output_tensor", 1), "broadcast": (0, "tensor", 1),
        "reduce_scatter_single": (1, "input", 1), "all_gather_single": (0, "output_tensor", 1),
        "send": (0, "tensor", 1), "isend": (0, "tensor", 1),
    }  # (the *_single forms are what FSDP2 calls; sends are the pipeline's)

    @property
    def total(self) -> int:
        """All elements counted, in the paper's convention."""
        return sum(self.elements.values())

    def ring_bytes_sent(self) -> float:
        """Bytes a ring implementation sends from this rank: (N-1)/N of the counted bytes."""
        n = self.world_size
        return sum(self.bytes.values()) * (n - 1) / n

    def _wrap(self, name: str, fn):
        index, keyword, mult = self._RULES[name]

        @functools.wraps(fn)
        def counted(*args, **kwargs):
            t = args[index] if len(args) > index else kwargs.get(keyword)
            if isinstance(t, torch.Tensor):
                n = _local(t).numel()
                self.elements[name] = self.elements.get(name, 0) + mult * n
                self.bytes[name] = self.bytes.get(name, 0) + mult * n * t.element_size()
                self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        return counted

    @contextlib.contextmanager
    def _patched(self) -> Iterator[CommCounter]:
        originals = {name: getattr(dist, name) for name in self._RULES}
        if dist.is_initialized():
            self.world_size = dist.get_world_size()
        try:
            for name, fn in originals.items():
                setattr(dist, name, self._wrap(name, fn))
            yield self
        finally:
            for name, fn in originals.items():
                setattr(dist, name, fn)

    def __enter__(self) -> CommCounter:
        self._ctx = self._patched()
        return self._ctx.__enter__()

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)
