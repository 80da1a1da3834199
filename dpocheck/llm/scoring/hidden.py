"""Hidden-state sums of scored responses and the CHES fields of a score row (Razin et al. 2024; PAPER §6).

CHES, the centered hidden embedding similarity of "Unintentional Unalignment: Likelihood Displacement in DPO"
(Razin et al. 2024, arXiv 2410.08847), is ⟨Σ_k h_k(y_w), Σ_k h_k(y_l)⟩ − ‖Σ_k h_k(y_w)‖², with h_k the last-layer
hidden state that predicts response token k: the state the output head reads at the positions from the last prompt
token to the one before the response's last token. Those are exactly the positions the log-prob kernels
(:mod:`~dpocheck.llm.scoring.kernels`) score, so the kernels sum the hidden states they already hold
(:func:`segment_vector_sums`, float64) and :func:`ches_fields` turns the two sums of a pair into the row's
``ches_sum`` and, with per-token means instead of sums, ``ches_mean`` (the length-normalised form). The formula is
the theory layer's one definition, :func:`dpocheck.theory.centered_hidden_embedding_similarity`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpocheck.theory import centered_hidden_embedding_similarity

#: the score-row fields of CHES (None where the model was scored through its own forward: no hidden states)
CHES_FIELDS = ("ches_sum", "ches_mean")


def segment_vector_sums(x: Any, slot: Any, n_slots: int, chunk: int = 2048, dense: bool | None = None) -> Any:
    """float64 per-slot sums of the rows of ``x`` [N, d] (``slot`` [N], non-decreasing): a [n_slots, d] tensor.

    CPU: ``index_add_`` (sequential, deterministic). CUDA: a float64 one-hot matmul per ``chunk`` rows (float64
    ``index_add_`` uses atomics there, whose order varies run to run). Only ``chunk`` rows are upcast at a time.
    ``dense`` forces one way (default: by device).
    """
    import torch

    out = torch.zeros((n_slots, x.shape[-1]), dtype=torch.float64, device=x.device)
    ids = torch.arange(n_slots, device=x.device)[:, None]
    matmul = x.device.type == "cuda" if dense is None else dense
    for i in range(0, x.shape[0], chunk):
        rows, where = x[i : i + chunk].double(), slot[i : i + chunk]
        if matmul:
            out += (where[None, :] == ids).double() @ rows
        else:
            out.index_add_(0, where, rows)
    return out


def ches_fields(chosen: Any, rejected: Any) -> dict[str, float | None]:
    """``ches_sum`` and ``ches_mean`` of a pair from its two :class:`~dpocheck.llm.scoring.kernels.SequenceScore`
    (``hidden_sum`` and ``tokens``); both None when either response has no hidden-state sum."""
    hw, hl = chosen.hidden_sum, rejected.hidden_sum
    if hw is None or hl is None:
        return dict.fromkeys(CHES_FIELDS)
    hw, hl = np.asarray(hw, dtype=np.float64), np.asarray(hl, dtype=np.float64)
    if not (np.isfinite(hw).all() and np.isfinite(hl).all()):
        return dict.fromkeys(CHES_FIELDS)
    return {
        "ches_sum": float(centered_hidden_embedding_similarity(hw, hl)),
        "ches_mean": float(centered_hidden_embedding_similarity(hw / chosen.tokens, hl / rejected.tokens)),
    }
