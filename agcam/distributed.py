"""Several processes for one evaluation: ``torchrun --nproc_per_node N script.py ...``.

Each process takes every ``world_size``-th image (:func:`shard_indices`), computes its results,
and rank 0 gathers them, puts them back in the single-process order and reports; the numbers are
the ones a single process gives. Launched without ``torchrun`` (no ``WORLD_SIZE`` in the
environment, or ``WORLD_SIZE=1``), everything here is a no-op and the script runs as one process.

Backend: ``nccl`` when the processes run on CUDA, ``gloo`` on CPU. Python objects (per-image
results) are gathered over a ``gloo`` group in either case, so they never go through the GPU.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: whether this module initialised a process group (and so must destroy it)
    initialized: bool = False
    _object_group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment, if any.

    ``device`` is the device the script resolved (``--device``); under ``torchrun`` a CUDA device
    becomes ``cuda:LOCAL_RANK``, one GPU per process.
    """
    world_size = env_world_size()
    if world_size <= 1:
        return DistContext(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    initialized = False
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
        initialized = True
    object_group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                       initialized=initialized, _object_group=object_group)


def shard_indices(num_items: int, rank: int = 0, world_size: int = 1) -> List[int]:
    """The items of process ``rank``: every ``world_size``-th, starting at ``rank``.

    Strided rather than contiguous, so that the shards differ in size by at most one item and
    each process sees a mix of classes (the validation set is sorted by name). Nothing is padded
    or repeated, unlike ``DistributedSampler``: every item is evaluated exactly once.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return list(range(rank, num_items, world_size))


def gather_to_main(items: List[Any], ctx: DistContext) -> Optional[List[Any]]:
    """Concatenate every process's list on rank 0 (in rank order); other ranks get ``None``.

    Single process: the list itself.
    """
    if not ctx.distributed:
        return list(items)
    gathered: List[Optional[List[Any]]] = [None] * ctx.world_size
    dist.all_gather_object(gathered, list(items), group=ctx._object_group)
    if not ctx.is_main:
        return None
    merged: List[Any] = []
    for part in gathered:
        merged.extend(part or [])
    return merged


def broadcast_from_main(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process (over the same ``gloo`` group as the gathers)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=ctx._object_group)
    return box[0]


def cleanup(ctx: DistContext) -> None:
    """Leave the process group this module joined."""
    if ctx.initialized and dist.is_initialized():
        if ctx._object_group is not None:
            dist.destroy_process_group(ctx._object_group)
        dist.destroy_process_group()
        ctx.initialized = False
