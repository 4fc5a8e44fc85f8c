"""Data-parallel training under ``torchrun`` (DDP): gloo on CPU, nccl on GPU.

``torchrun --nproc_per_node=N`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; :func:`setup` reads
them and joins the process group (a run started without torchrun is a world of one). How N
processes reproduce one process:

* every rank computes the same global batch of step ``s`` (``BatchOrder`` is a pure function of
  seed and step) and takes its contiguous slice ``tensor_split(batch, N)[rank]``;
* each rank's loss is its *summed* token loss divided by the global token count and multiplied by
  ``N``, so DDP's gradient *average* equals the gradient of the global mean — even when shards
  hold different numbers of target tokens;
* gradients are identical on every rank after the all-reduce, so clipping and AdamW steps agree.

What differs is only the float summation order (up to tolerance), and dropout: each rank draws its
own masks, so with ``dropout > 0`` the N-process run matches one process in distribution, not bit
for bit. One visible consequence of summation order: the key projections' biases have a zero
gradient in exact arithmetic (softmax ignores the constant ``q·b`` they add to a row), so AdamW
turns rounding noise there into steps of about ``lr`` that differ between runs; they do not change
what the model computes. Checkpoints, metrics and the progress bar belong to rank 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import available_device

__all__ = ["Distributed", "setup", "teardown", "shard", "check_batch_size"]


@dataclass
class Distributed:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def broadcast(self, obj):
        """``obj`` from rank 0, on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup(device: str) -> Distributed:
    """Join the torchrun process group if there is one; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    requested = available_device(device)  # a device this machine lacks fails here, clearly
    wants_cuda = requested.type == "cuda"
    if world_size == 1:
        return Distributed(0, 1, requested)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if wants_cuda:
        torch.cuda.set_device(local_rank)
        rank_device = torch.device("cuda", local_rank)
    else:
        rank_device = requested
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
        owns = True
    return Distributed(dist.get_rank(), dist.get_world_size(), rank_device, owns)


def teardown(context: Distributed) -> None:
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def check_batch_size(batch_size: int, context: Distributed) -> None:
    """Every rank must get examples from each global batch."""
    if batch_size < context.world_size:
        raise ValueError(
            f"batch_size ({batch_size}) must be >= the number of processes "
            f"({context.world_size}) so that every rank gets examples"
        )


def shard(indices: torch.Tensor, context: Distributed) -> torch.Tensor:
    """This rank's contiguous slice of a global batch."""
    if context.world_size == 1:
        return indices
    check_batch_size(len(indices), context)
    return torch.tensor_split(indices, context.world_size)[context.rank]
