"""The policy forward of a packed batch, with gradients: sequence log-probs in both conventions (C3, C4).

One pass per batch runs each pair's prompt once (the packed scorer's layout and kernel,
:func:`dpocheck.llm.scoring.kernels.packed_row_sums`, which returns float64 sums of float32 token log-probs and
computes logits only at scored positions), so with the same weights it returns the packed scorer's numbers; here
autograd records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpocheck.llm.scoring.kernels import forward_kwargs, packed_attention_mask, packed_row_sums


def _unwrap(model: Any) -> Any:
    """The module under DistributedDataParallel-style wrappers (their forward hides the model's signature)."""
    inner = model
    while hasattr(inner, "module") and not hasattr(inner, "config"):
        inner = inner.module
    return inner


def policy_logps(model: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
    """Per-pair log π_θ(y_w|x) and log π_θ(y_l|x) of a collated batch, summed and per-token mean (float64, [B]).

    Returns ``chosen_logp_sum``, ``rejected_logp_sum``, ``chosen_logp_mean``, ``rejected_logp_mean`` (carrying
    gradients when grad mode is on), ``chosen_tokens``/``rejected_tokens`` (int64) and ``finite`` ([B] bool:
    every token log-prob of both responses finite). ``batch`` comes from
    :class:`~dpocheck.llm.train.collator.PackedPreferenceCollator`.
    """
    import torch

    inner = _unwrap(model)
    if inner is not model and getattr(model, "_dpocheck_kwargs", None) is None:
        try:
            model._dpocheck_kwargs = forward_kwargs(inner)
        except AttributeError:  # pragma: no cover - exotic wrappers
            pass
    dtype = next(inner.parameters()).dtype
    mask = batch["attention_mask"]
    if mask.dtype != dtype:
        mask = packed_attention_mask(batch["segment_ids"], dtype)
    keep, which = batch["score_mask"], batch["score_which"]
    sums, finite = packed_row_sums(model, batch["input_ids"], mask, batch["position_ids"], keep, which)
    counts = torch.stack([(keep & (which == 0)).sum(1), (keep & (which == 1)).sum(1)], dim=1)
    means = sums / counts.to(sums.dtype)
    return {
        "chosen_logp_sum": sums[:, 0],
        "rejected_logp_sum": sums[:, 1],
        "chosen_logp_mean": means[:, 0],
        "rejected_logp_mean": means[:, 1],
        "chosen_tokens": counts[:, 0],
        "rejected_tokens": counts[:, 1],
        "finite": finite.all(dim=1),
    }
