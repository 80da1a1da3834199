"""An independent torch reference for the released code's three loss branches (PAPER.md C10).

Written from PAPER.md C10's description of the authors' training code (a TRL 0.9 DPOTrainer fork selecting the
branch with ``easy_version``), kept deliberately literal: the same operations in the same order as described —
``-logsigmoid`` of a linear argument, ``clamp(min=0)`` for the clip branch and the naive ``log(1 + exp(·))`` of the
adaptive margin (no stable softplus) — and in torch, not through :mod:`dpocheck.theory`. Claim C10 compares the
theory layer's losses with these. Inputs are per-token mean log-probs (summed log-prob / completion length), the
quantity the released losses consume. Nothing here is used for training.
"""

from __future__ import annotations

from typing import Any

#: Defaults of the released configuration (PAPER.md C10): β, γ, τ, α and the branch.
RELEASED_CONFIG_DEFAULTS = {"beta": 0.1, "gamma": 0.5, "tau": 2.0, "alpha": 1.0, "easy_version": "clip"}
#: The released demo configuration (PAPER.md C10).
RELEASED_DEMO_CONFIG = {"beta": 2.5, "gamma": 0.05, "easy_version": "easy"}


def _margins(pol_w: Any, pol_l: Any, ref_w: Any, ref_l: Any) -> tuple[Any, Any]:
    """(δ_θ, δ_ref) from the four per-token mean log-probs."""
    return pol_w - pol_l, ref_w - ref_l


def easy_branch(pol_w: Any, pol_l: Any, ref_w: Any, ref_l: Any, beta: float, gamma: float) -> tuple[Any, Any]:
    """`easy`: a = γ(1/ℓ̄_ref(y_w) + 1/ℓ̄_ref(y_l)); loss −logsigmoid(β·δ_θ − (β·δ_ref + a)). Returns (loss, a)."""
    import torch.nn.functional as F

    d_pol, d_ref = _margins(pol_w, pol_l, ref_w, ref_l)
    a = gamma * (1.0 / ref_w + 1.0 / ref_l)
    offset = beta * d_ref + a
    return -F.logsigmoid(beta * d_pol - offset), a


def clip_branch(pol_w: Any, pol_l: Any, ref_w: Any, ref_l: Any, beta: float) -> Any:
    """`clip` (the released default): loss −logsigmoid(β(δ_θ − clamp(δ_ref, min=0)))."""
    import torch
    import torch.nn.functional as F

    d_pol, d_ref = _margins(pol_w, pol_l, ref_w, ref_l)
    return -F.logsigmoid(beta * (d_pol - torch.clamp(d_ref, min=0.0)))


def adaptive_branch(
    pol_w: Any, pol_l: Any, ref_w: Any, ref_l: Any, beta: float, gamma: float, tau: float, alpha: float
) -> tuple[Any, Any]:
    """Adaptive softplus: a = (1/τ)·log(1 + exp(τ(γ − δ_ref))); loss −logsigmoid(β·δ_θ − (β·δ_ref + (β/α)·a)).

    Returns (loss, a). The naive log(1 + exp(·)) overflows to inf once τ(γ − δ_ref) exceeds ~709 in float64
    (~88 in float32); :func:`dpocheck.theory.released_adaptive_margin` uses a stable softplus instead.
    """
    import torch
    import torch.nn.functional as F

    d_pol, d_ref = _margins(pol_w, pol_l, ref_w, ref_l)
    a = (1.0 / tau) * torch.log(1 + torch.exp(tau * (gamma - d_ref)))
    offset = beta * d_ref + (beta / alpha) * a
    return -F.logsigmoid(beta * d_pol - offset), a


def frac_in_u(pol_w: Any, pol_l: Any, ref_w: Any, ref_l: Any) -> Any:
    """The logged `frac_in_U`: share of pairs with δ_θ < 0 and δ_θ > δ_ref (Def. 3.3)."""
    d_pol, d_ref = _margins(pol_w, pol_l, ref_w, ref_l)
    return ((d_pol < 0) & (d_pol > d_ref)).double().mean()
