"""Training on several processes (``torchrun``): this rank and the world, each rank's share of an epoch, one
decision for all ranks, and a digest that shows every rank ended with the same weights.
"""

from __future__ import annotations

import os

__all__ = ["dist_context", "shard", "broadcast", "weights_digest"]


def dist_context():
    """(rank, world, local_rank); initialises torch.distributed under torchrun."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def weights_digest(module) -> str:
    """sha256 of a module's state (names, shapes, values): equal on every DDP rank after training."""
    import hashlib

    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def shard(batches: list, rank: int, world: int) -> list:
    """The share of an epoch's batches for this rank; every rank gets the same number of steps (DDP needs it):
    the list is padded with its first batches up to a multiple of ``world``.
    """
    if world <= 1 or not batches:
        return batches
    pad = (-len(batches)) % world
    full = batches + batches[:pad] if pad <= len(batches) else batches * (1 + pad // len(batches))
    full = full[: len(batches) + pad]
    return full[rank::world]


def broadcast(obj, world: int):
    """Rank 0's value of ``obj`` on every rank (DDP); ``obj`` unchanged when not distributed."""
    if world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
