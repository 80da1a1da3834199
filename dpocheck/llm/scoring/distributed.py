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


def dist_timeout_seconds() -> float:
    """Collective timeout in seconds: ``DPOCHECK_DIST_TIMEOUT`` (a positive number), default 600."""
    from dpocheck.errors import InputError

    raw = os.environ.get("DPOCHECK_DIST_TIMEOUT", "600")
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"DPOCHECK_DIST_TIMEOUT: expected seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise InputError(f"DPOCHECK_DIST_TIMEOUT: expected a positive finite number, got {raw!r}")
    return value


def init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed under torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on the CPU."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        timeout = timedelta(seconds=dist_timeout_seconds())
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl", timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
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


def raise_if_any_rank_failed(error: BaseException | None) -> None:
    """Checkpoint: if any rank passes an error, every rank raises ``InputError`` with the first failing rank's message.

    Call it where ranks can fail independently (input validation, resume check) instead of a bare barrier, so the
    healthy ranks stop with the same message rather than waiting until the collective timeout. No-op (re-raising
    ``error`` if given) when torch.distributed is not initialised.
    """
    import torch.distributed as dist

    from dpocheck.errors import InputError

    if not (dist.is_available() and dist.is_initialized()):
        if error is not None:
            raise error
        return
    messages: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}")
    failed = [(rank, msg) for rank, msg in enumerate(messages) if msg is not None]
    if failed:
        rank, msg = failed[0]
        raise InputError(f"rank {rank} failed: {msg}") from error
