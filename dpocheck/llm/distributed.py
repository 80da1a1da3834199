"""torch.distributed helpers for running ``dpocheck score`` under ``torchrun`` (one process per device).

Without ``torchrun`` (or with ``WORLD_SIZE=1``) everything here is a no-op and the run is single-process.
"""

from __future__ import annotations

import os


def dist_info() -> tuple[int, int]:
    """(rank, world_size): from torch.distributed when initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed under torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on the CPU."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return dist_info()


def barrier() -> None:
    """Wait for every rank (no-op when torch.distributed is not initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish_distributed() -> None:
    """Destroy the process group, if one was initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
