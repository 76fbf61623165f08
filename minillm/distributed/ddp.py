"""Data parallelism written out: bucketed gradient all-reduce launched from gradient hooks.

Every rank holds the whole model and trains on its own slice of the global batch. Averaging the
gradients over the N ranks makes every rank take the same optimizer step as one process on the
whole batch (Li et al. 2020, "PyTorch Distributed", arXiv:2006.15704):

    g = (1/N) sum_r g_r        (all-reduce of the local gradients g_r)

What makes it fast, and what this module shows:
- **buckets**: many small all-reduces cost one latency each; parameters are grouped, in the
  reverse of their registration order (roughly the order backward produces their gradients),
  into buckets of about `bucket_cap_mb`, each reduced as one flat tensor;
- **overlap**: a bucket's all-reduce is launched (asynchronously) from the gradient hook of its
  last parameter, while backward is still computing the gradients of earlier layers; one
  callback at the end of backward waits for all buckets and copies the averages back;
- **no_sync**: on gradient-accumulation micro-steps nothing is communicated; gradients
  accumulate locally and the next synchronised backward reduces their sum.

Like torch, the first bucket is small (1 MiB) so communication starts early in backward.
Departures from `torch.nn.parallel.DistributedDataParallel`: buckets are fixed at construction
(torch rebuilds them after the first step from the observed gradient order); parameters that
get no gradient are reduced as zeros when backward ends (torch needs find_unused_parameters).
Like torch, each gradient is multiplied by 1/N before the sum, so the two agree bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["BucketedDDP", "NoSyncSwitch", "make_buckets"]


def make_buckets(params: list[nn.Parameter], bucket_cap_mb: float,
                 first_bucket_cap_mb: float | None = None) -> list[list[nn.Parameter]]:
    """Group parameters, last registered first, into buckets of at most ~`bucket_cap_mb`.

    Args:
        params: parameters in registration order (each once).
        bucket_cap_mb: bucket size in MiB; a parameter larger than that gets a bucket alone.
        first_bucket_cap_mb: a smaller cap for the first bucket (the last layers, whose
            gradients backward produces first), so that the first all-reduce starts early
            (torch DDP: 1 MiB); None: the first bucket is like the others.

    Returns:
        A list of buckets, each a list of parameters of one dtype.
    """
    if bucket_cap_mb <= 0:
        raise ValueError(f"bucket_cap_mb={bucket_cap_mb} must be positive")
    if first_bucket_cap_mb is not None and first_bucket_cap_mb <= 0:
        raise ValueError(f"first_bucket_cap_mb={first_bucket_cap_mb} must be positive (or None)")
    buckets: list[list[nn.Parameter]] = []
    size = 0.0
    for p in reversed(params):
        nbytes = p.numel() * p.element_size()
        first = len(buckets) == 1 and first_bucket_cap_mb is not None
        cap = (first_bucket_cap_mb if first else bucket_cap_mb) * 2**20
        if not buckets or size + nbytes > cap or buckets[-1][0].dtype != p.dtype:
            buckets.append([])
            size = 0.0
        buckets[-1].append(p)
        size += nbytes
    return buckets


class _Bucket:
    def __init__(self, params: list[nn.Parameter]):
        self.params = params
        self.ready = 0                        # parameters whose gradient has arrived
        self.work: dist.Work | None = None    # the in-flight all-reduce
        self.flat: torch.Tensor | None = None

    def launch(self, world_size: int, group) -> None:
        """Flatten the gradients (times 1/N) and start their all-reduce asynchronously."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self.flat = torch.cat([g.reshape(-1) for g in grads]).mul_(1.0 / world_size)
        self.work = dist.all_reduce(self.flat, op=dist.ReduceOp.SUM, group=group, async_op=True)

    def finish(self) -> None:
        """Wait for the all-reduce and write the averages back into each `.grad`."""
        assert self.work is not None and self.flat is not None
        self.work.wait()
        offset = 0
        for p in self.params:
            n = p.numel()
            avg = self.flat[offset:offset + n].view_as(p)
            if p.grad is None:
                p.grad = avg.clone()
            else:
                p.grad.copy_(avg)
            offset += n
        self.ready, self.work, self.flat = 0, None, None


class NoSyncSwitch:
    """`no_sync()`: backward inside the block accumulates gradients locally and communicates
    nothing (the gradient hooks read `require_sync`); shared by `BucketedDDP` and ZeRO."""

    require_sync = True

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        previous, self.require_sync = self.require_sync, False
        try:
            yield
        finally:
            self.require_sync = previous


class BucketedDDP(NoSyncSwitch, nn.Module):
    """Wrap a module so that backward averages its gradients over all ranks.

    Args:
        module: the model; its parameters are broadcast from rank 0 so all replicas start equal.
        bucket_cap_mb: bucket size in MiB (torch's default is 25).
        first_bucket_cap_mb: the first bucket's (torch's default is 1): the all-reduce of the
            last layers' gradients then starts while backward is still early, instead of the
            whole of a small model waiting in one bucket until backward ends.
        process_group: the group to reduce over (default: the whole world).

    Use it like the module: `loss = ddp(x, y).loss; loss.backward()` leaves averaged gradients.
    """

    def __init__(self, module: nn.Module, bucket_cap_mb: float = 25.0, process_group=None,
                 first_bucket_cap_mb: float | None = 1.0):
        super().__init__()
        if not dist.is_initialized():
            raise RuntimeError("BucketedDDP needs a process group: call "
                               "torch.distributed.init_process_group (or launch with torchrun)")
        self.module = module
        self.group = process_group
        self.world_size = dist.get_world_size(process_group)
        self.require_sync = True
        self._callback_queued = False
        params = [p for p in module.parameters() if p.requires_grad]  # a tied weight once
        src = 0 if process_group is None else dist.get_global_rank(process_group, 0)
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t, src=src, group=process_group)
        self.buckets = [_Bucket(b) for b in make_buckets(params, bucket_cap_mb,
                                                           first_bucket_cap_mb)]
        self._bucket_of = {id(p): b for b in self.buckets for p in b.params}
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in params]

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _on_grad(self, param: nn.Parameter) -> None:
        """Runs inside backward, right after `param.grad` was accumulated."""
        if not self.require_sync:
            return
        if not self._callback_queued:  # once per backward: finish every bucket at its end
            torch.autograd.Variable._execution_engine.queue_callback(self._finish_backward)
            self._callback_queued = True
        bucket = self._bucket_of[id(param)]
        bucket.ready += 1
        if bucket.ready == len(bucket.params):
            bucket.launch(self.world_size, self.group)   # overlaps the rest of backward

    def _finish_backward(self) -> None:
        self._callback_queued = False
        for bucket in self.buckets:
            if bucket.work is None:  # some parameter got no gradient this step: reduce zeros
                bucket.launch(self.world_size, self.group)
        for bucket in self.buckets:
            bucket.finish()
