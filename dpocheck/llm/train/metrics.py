"""Per-step metrics of preference training: where the policy sits relative to U and to the RLHF optimum.

Pure functions of the per-pair margins δ_θ (policy), δ_ref (reference), β and, where known, Δr*, all computed by
the theory functions (:mod:`dpocheck.theory.pairs`); every key is suffixed with the log-prob convention the
margins are in (``/sum`` or ``/mean``):

``share_in_u``
    share of pairs in U, δ_ref < δ_θ < 0 (C3, Def. 3.3): DPO loss below log 2 yet y_l preferred;
``ranking_accuracy``
    share with δ_θ > 0 (the policy ranks y_w first);
``implicit_reward_accuracy``
    share with δ_θ > δ_ref — what TRL logs as ``rewards/accuracies`` (implicit reward margin > 0), not a
    ranking accuracy;
``grad_weight_in_u`` / ``grad_weight_outside_u``
    mean DPO gradient weight β·σ(β(δ_ref − δ_θ)) over the pairs inside / outside U (C4, Prop. 3.4); omitted
    when that set is empty (never NaN);
``share_rlhf_side``
    share of the pairs with known Δr* where sign δ_θ = sign δ*, δ* = δ_ref + Δr*/β the RLHF optimum's margin
    (C1); omitted when no pair has Δr*.

and, from the log-probs themselves (:func:`displacement_metrics`; likelihood displacement, Razin et al. 2024,
PAPER §6: U says whether the policy prefers the right response, these whether it got there by lowering y_w):

``chosen_logp_shift`` / ``rejected_logp_shift``
    mean over pairs of Δ_w = log π_θ(y_w|x) − log π_ref(y_w|x) and of Δ_l (per token in the ``mean`` convention);
``share_displaced``
    share with Δ_w < 0 (the chosen response lost probability);
``share_both_fell``
    share with Δ_w < 0 and Δ_l < 0;
``share_displaced_ranked_correct``
    share with Δ_w < 0 while δ_θ > 0 (ranked right by displacing y_w).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpocheck.theory import (
    both_likelihoods_fell,
    delta_opt,
    dpo_gradient_weight,
    in_undesirable_space,
    likelihood_displaced,
    logp_shift,
)

METRIC_NAMES = (
    "share_in_u",
    "ranking_accuracy",
    "implicit_reward_accuracy",
    "grad_weight_in_u",
    "grad_weight_outside_u",
    "share_rlhf_side",
)
DISPLACEMENT_METRIC_NAMES = (
    "chosen_logp_shift",
    "rejected_logp_shift",
    "share_displaced",
    "share_both_fell",
    "share_displaced_ranked_correct",
)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def preference_metrics(
    delta_theta: Any, delta_ref: Any, beta: float, delta_reward: Any = None, convention: str = "sum"
) -> dict[str, float]:
    """The metrics of the module docstring over a set of pairs, keyed ``<name>/<convention>``.

    ``delta_reward`` may hold NaN (or be None) where Δr* is unknown. Empty input gives an empty dict.
    """
    d, dref = _np(delta_theta), _np(delta_ref)
    if d.shape != dref.shape:
        raise ValueError(f"delta_theta and delta_ref differ in shape: {d.shape} vs {dref.shape}")
    if d.size == 0:
        return {}
    in_u = np.asarray(in_undesirable_space(d, dref), dtype=bool)
    weight = np.asarray(dpo_gradient_weight(d, dref, beta), dtype=np.float64)
    out = {
        "share_in_u": float(in_u.mean()),
        "ranking_accuracy": float((d > 0).mean()),
        "implicit_reward_accuracy": float((d > dref).mean()),
    }
    if in_u.any():
        out["grad_weight_in_u"] = float(weight[in_u].mean())
    if (~in_u).any():
        out["grad_weight_outside_u"] = float(weight[~in_u].mean())
    if delta_reward is not None:
        dr = _np(delta_reward)
        known = np.isfinite(dr)
        if known.any():
            d_star = np.asarray(delta_opt(dref[known], dr[known], beta), dtype=np.float64)
            out["share_rlhf_side"] = float((np.sign(d[known]) == np.sign(d_star)).mean())
    return {f"{k}/{convention}": v for k, v in out.items()}


def displacement_metrics(
    policy_logp_w: Any, policy_logp_l: Any, ref_logp_w: Any, ref_logp_l: Any, convention: str = "sum"
) -> dict[str, float]:
    """Likelihood-displacement metrics (module docstring) of aligned per-pair log-probs in one convention, keyed
    ``<name>/<convention>``; pairs with a non-finite value are left out; empty dict when none is left."""
    pw, pl, rw, rl = (_np(x) for x in (policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l))
    ok = np.isfinite(pw) & np.isfinite(pl) & np.isfinite(rw) & np.isfinite(rl)
    if not ok.any():
        return {}
    pw, pl, rw, rl = pw[ok], pl[ok], rw[ok], rl[ok]
    displaced = np.asarray(likelihood_displaced(pw, rw), dtype=bool)
    out = {
        "chosen_logp_shift": float(np.mean(logp_shift(pw, rw))),
        "rejected_logp_shift": float(np.mean(logp_shift(pl, rl))),
        "share_displaced": float(displaced.mean()),
        "share_both_fell": float(np.mean(both_likelihoods_fell(pw, rw, pl, rl))),
        "share_displaced_ranked_correct": float((displaced & (pw - pl > 0)).mean()),
    }
    return {f"{k}/{convention}": v for k, v in out.items()}


def pair_margins(logps: dict[str, Any], convention: str) -> Any:
    """δ = log π(y_w|x) − log π(y_l|x) in ``convention`` from a dict with ``chosen_logp_<conv>`` keys."""
    return logps[f"chosen_logp_{convention}"] - logps[f"rejected_logp_{convention}"]


def share_negative(rows: Any, convention: str) -> float:
    """Share of score rows with δ_ref < 0 in a convention: the pairs whose U is non-empty (C3); NaN for no rows."""
    if not rows:
        return float("nan")
    key = "logp_" + convention
    return sum(r["chosen_" + key] - r["rejected_" + key] < 0 for r in rows) / len(rows)
