"""One model trained by several processes: PyTorch DDP, the processes started by ``torchrun``.

``torchrun --nproc_per_node N -m mmfer cv STORE --distributed ...`` starts N copies of ``mmfer cv``; each
reads the same fold (the store is memory-mapped, so the copies share the page cache), takes every N-th
length bucket of each epoch's shuffled batches, and DDP averages the gradients, so one step sees N
batches. Validation and the early-stopping decision are computed by every process on the same
(all-reduced, hence identical) weights, so they agree without talking; only rank 0 writes files.

Backend: NCCL with one GPU per process, else gloo on CPU (set ``GLOO_SOCKET_IFNAME=lo`` and
``--master_addr 127.0.0.1`` to keep a single-machine run on loopback).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mmfer.errors import MmferError

TORCHRUN_HINT = ("--distributed runs under torchrun, one process per GPU (or CPU share): "
                 "torchrun --nproc_per_node N -m mmfer cv STORE --distributed ...")


@dataclass(frozen=True)
class Group:
    rank: int
    world: int
    local_rank: int
    local_world: int

    @property
    def leader(self) -> bool:
        return self.rank == 0


_GROUP: Group | None = None


def start(device: str = "auto") -> Group:
    """Join the process group torchrun describes in the environment (idempotent)."""
    global _GROUP
    if _GROUP is not None:
        return _GROUP
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise MmferError(TORCHRUN_HINT)
    import torch
    import torch.distributed as dist

    gpu = device != "cpu" and torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if gpu:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo")
    _GROUP = Group(dist.get_rank(), dist.get_world_size(), local_rank,
                   int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())))
    return _GROUP


def current() -> Group | None:
    """The process group this process trains in, or None (an ordinary single-process run)."""
    return _GROUP


def barrier() -> None:
    if _GROUP is not None:
        import torch.distributed as dist

        dist.barrier()


def stop() -> None:
    global _GROUP
    if _GROUP is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        _GROUP = None


def my_share(groups: list, group: Group | None) -> list:
    """This process's batches of an epoch: every ``world``-th, the list first padded by wrapping around so
    that every process takes the same number of steps (a process with one step fewer would hang DDP)."""
    if group is None or group.world == 1 or not groups:
        return groups
    n = -(-len(groups) // group.world) * group.world
    padded = [groups[i % len(groups)] for i in range(n)]
    return padded[group.rank::group.world]
