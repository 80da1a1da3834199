"""Scoring in a multi-process run: every rank scores its share of the planned batches, the rows are gathered.

Under FSDP or ZeRO-3 the weights are sharded: a forward on one rank alone waits forever for the others'
all-gathers, and on 8 GPUs a main-process-only pass would leave seven idle. So the whole-set scoring of the U
callback (:mod:`.callback`) plans its batches once, exactly as a one-process run does, deals them round-robin
(rank r scores batches r, r + world, r + 2·world, …), and gathers the rows in the original order on every rank.
Each batch holds the same pairs as in a one-process run, so on the same weights the rows are those of a
one-process run (tested with 2 gloo processes). Every rank runs the same number of forwards (a rank past the
end of the plan scores the first batch again and drops it), as sharded weights require.

Under DDP each rank holds the whole model and the callback scores with the unwrapped module, so the share only
saves time; under FSDP the model is scored through its root forward (``dpocheck.llm.scoring.kernels`` routes
FSDP-sharded models there), under ZeRO-3 through DeepSpeed's per-module gathering hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def batch_share(n_batches: int, rank: int, world: int) -> list[int | None]:
    """The planned batches rank ``rank`` scores, round-robin, padded with None (a repeat to drop) so that every rank
    has ``ceil(n_batches / world)`` forwards."""
    rounds = -(-n_batches // world) if n_batches else 0
    return [b if (b := r * world + rank) < n_batches else None for r in range(rounds)]


def gather_in_order(local: Sequence[tuple[int, Any]], n: int, world: int) -> list[Any]:
    """The items of ``local`` ((position, item) pairs of this rank) of every rank, in position order 0..n−1.

    Collective: every rank of the group calls it; every rank gets the whole list.
    """
    if world > 1:
        import torch.distributed as dist

        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, list(local))
        merged = [item for part in parts for item in part]
    else:
        merged = list(local)
    out: list[Any] = [None] * n
    for pos, item in merged:
        out[pos] = item
    missing = [k for k, item in enumerate(out) if item is None]
    if missing:
        raise RuntimeError(f"distributed scoring lost rows at positions {missing[:10]}")
    return out
