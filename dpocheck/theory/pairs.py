"""Pair-level closed forms of PAPER.md (C1–C4, C8) and of likelihood displacement (PAPER §6): numpy and torch.

Every function is elementwise over pairs and broadcasts; `delta_*` are log-ratio margins
δ = log π(y_w|x) − log π(y_l|x) of some policy, `delta_reward` is Δr* = r*(y_w) − r*(y_l); `*_logp_*` are
sequence log-probabilities log π(y|x) in either convention (summed or per-token mean, PAPER §1).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from array_api_compat import is_torch_array

from ._array import Array, as_arrays, require_finite, require_positive_beta, sigmoid, to_numpy


def delta_opt(delta_ref: Any, delta_reward: Any, beta: float) -> Array:
    """δ of the RLHF optimum π* (key identity, C1): δ_{π*} = δ_ref + Δr*/β."""
    require_positive_beta(beta)
    _, (dref, dr) = as_arrays(delta_ref, delta_reward)
    require_finite("delta_ref", dref)
    require_finite("delta_reward", dr)
    return dref + dr / beta


def violation_margin(delta_ref: Any, delta_reward: Any, beta: float) -> Array:
    """β·δ_ref + Δr* = β·δ_{π*}; the assumption of C1 fails on a pair iff this is ≤ 0 (C2, Eq. 11)."""
    require_positive_beta(beta)
    _, (dref, dr) = as_arrays(delta_ref, delta_reward)
    require_finite("delta_ref", dref)
    require_finite("delta_reward", dr)
    return beta * dref + dr


def violation_mask(delta_ref: Any, delta_reward: Any, beta: float) -> Array:
    """True where Assumption 3.1 fails (C2, Eq. 11): δ_ref ≤ −Δr*/β, i.e. β·δ_ref + Δr* ≤ 0.

    The boundary β·δ_ref + Δr* = 0 (π* indifferent between y_w and y_l) counts as violated, since the assumption
    asks for a strict preference π*(y_w|x) > π*(y_l|x).
    """
    return violation_margin(delta_ref, delta_reward, beta) <= 0


def in_undesirable_space(delta_policy: Any, delta_ref: Any) -> Array:
    """True where the policy lies in U (C3, Def. 3.3, Eq. 14): δ_ref < δ_π < 0.

    Such a policy has DPO loss below log 2 (its value at π_ref) yet prefers y_l. This is the released code's
    `frac_in_U` criterion.
    """
    _, (d, dref) = as_arrays(delta_policy, delta_ref)
    require_finite("delta_policy", d)
    require_finite("delta_ref", dref)
    return (d > dref) & (d < 0)


def logp_shift(policy_logp: Any, ref_logp: Any) -> Array:
    """Δ = log π_θ(y|x) − log π_ref(y|x): how far training moved one response's log-probability (PAPER §6).

    Razin et al. 2024 ("Unintentional Unalignment: Likelihood Displacement in DPO", arXiv 2410.08847) call the
    preferred response *displaced* when Δ_w < 0 (:func:`likelihood_displaced`). Identity [ours, PAPER §6]:
    δ_θ − δ_ref = Δ_w − Δ_l, so every DPO-family loss of δ_θ − δ_ref sees only the difference of the two shifts,
    never their sign. In the per-token-mean convention Δ is the per-token shift, Δ^sum / |y| when the policy and
    the reference score the same tokens, so the sign of Δ is the same in both conventions.
    """
    _, (lp, lr) = as_arrays(policy_logp, ref_logp)
    require_finite("policy_logp", lp)
    require_finite("ref_logp", lr)
    return lp - lr


def likelihood_displaced(policy_logp_w: Any, ref_logp_w: Any) -> Array:
    """True where training displaced the preferred response: Δ_w = log π_θ(y_w|x) − log π_ref(y_w|x) < 0.

    Likelihood displacement (Razin et al. 2024, arXiv 2410.08847; PAPER §6). Independent of U (C3): with
    δ_ref = −2, Δ_w = 1, Δ_l = 0 the pair is in U (δ_θ = −1) and not displaced; with δ_ref = 1, Δ_w = −1,
    Δ_l = −3 it is displaced and outside U (δ_θ = 3).
    """
    return logp_shift(policy_logp_w, ref_logp_w) < 0


def both_likelihoods_fell(policy_logp_w: Any, ref_logp_w: Any, policy_logp_l: Any, ref_logp_l: Any) -> Array:
    """True where both responses lost log-probability, Δ_w < 0 and Δ_l < 0 (Razin et al. 2024; PAPER §6).

    Where δ_θ > δ_ref (the DPO loss fell below log 2) displacement implies this: Δ_w < 0 and Δ_l < Δ_w.
    """
    return likelihood_displaced(policy_logp_w, ref_logp_w) & (logp_shift(policy_logp_l, ref_logp_l) < 0)


def centered_hidden_embedding_similarity(hidden_w: Any, hidden_l: Any) -> Array:
    """CHES(x, y_w, y_l) = ⟨h_w, h_l⟩ − ‖h_w‖² = ⟨h_w, h_l − h_w⟩ over the last axis (Razin et al. 2024, Def. of
    CHES, arXiv 2410.08847; PAPER §6).

    ``hidden_w`` / ``hidden_l``: Σ_k h_k over each response's tokens, h_k the last-layer hidden state (the output
    head's input) at the position that predicts token k — from the last prompt token to the one before the last
    response token; with per-token means instead of sums this is the length-normalised CHES. High CHES predicts
    displacement of y_w (the authors filter the highest-CHES pairs). Computed as ⟨h_w, h_l − h_w⟩ (no cancellation
    of two large terms when h_l ≈ h_w).
    """
    xp, (hw, hl) = as_arrays(hidden_w, hidden_l)
    require_finite("hidden_w", hw)
    require_finite("hidden_l", hl)
    return xp.sum(hw * (hl - hw), axis=-1)


def undesirable_space_nonempty(delta_ref: Any) -> Array:
    """U is non-empty for a pair iff δ_ref < 0 (C3)."""
    _, (dref,) = as_arrays(delta_ref)
    require_finite("delta_ref", dref)
    return dref < 0


def dpo_gradient_weight(delta_policy: Any, delta_ref: Any, beta: float) -> Array:
    """|∂ℓ_DPO/∂δ_θ| = β·σ(β(δ_ref − δ_θ)) (C4, Prop. 3.4); β/2 at δ_θ = δ_ref, decreasing in δ_θ."""
    require_positive_beta(beta)
    xp, (d, dref) = as_arrays(delta_policy, delta_ref)
    return beta * sigmoid(xp, beta * (dref - d))


def exit_gradient_weight(delta_ref: Any, beta: float) -> Array:
    """DPO gradient weight where a trajectory leaves U (δ_θ = 0): β·σ(β·δ_ref) (C4).

    Under violation (β·δ_ref ≤ −Δr*) it is ≤ β·σ(−Δr*); it is positive for every finite δ_ref.
    """
    return dpo_gradient_weight(0.0, delta_ref, beta)


def escape_time(delta_ref: Any, beta: float) -> Array:
    """Gradient-flow time for a tabular softmax policy started at π_ref to leave U (C4, [ours]).

    With logits z and δ_θ = z_w − z_l, gradient flow on ℓ_DPO gives du/dt = 2β·σ(−βu) for u = δ_θ − δ_ref, so
    the time from u = 0 to u = |δ_ref| (δ_θ = 0) is T = (|δ_ref| + (e^{β|δ_ref|} − 1)/β) / (2β); T = 0 where
    δ_ref ≥ 0 (U empty). It grows like e^{β|δ_ref|}: where that exceeds float64 the value is +inf and a
    RuntimeWarning says so; :func:`log_escape_time` stays finite.
    """
    require_positive_beta(beta)
    xp, (dref,) = as_arrays(delta_ref)
    a = xp.where(dref < 0, -dref, xp.zeros_like(dref))
    with np.errstate(over="ignore"):
        t = (a + xp.expm1(beta * a) / beta) / (2.0 * beta)
    n_inf = int(np.sum(~np.isfinite(to_numpy(t))))
    if n_inf:
        warnings.warn(
            f"escape_time overflows float64 on {n_inf} pair(s) (β·|δ_ref| > ~709); use log_escape_time",
            RuntimeWarning,
            stacklevel=2,
        )
    return t


def log_escape_time(delta_ref: Any, beta: float) -> Array:
    """log T of :func:`escape_time` (C4), finite for every finite δ_ref; −inf where δ_ref ≥ 0 (T = 0).

    log T = log(a + expm1(βa)/β) − log 2β with a = |δ_ref|, and log expm1(y) = y + log(−expm1(−y)).
    """
    require_positive_beta(beta)
    xp, (dref,) = as_arrays(delta_ref)
    pos = dref < 0
    a = xp.where(pos, -dref, xp.ones_like(dref))
    y = beta * a
    log_expm1 = y + xp.log(-xp.expm1(-y))
    val = xp.logaddexp(xp.log(a), log_expm1 - math.log(beta)) - math.log(2.0 * beta)
    return xp.where(pos, val, xp.full_like(dref, -math.inf))


def log_cpo_margin(log_pi_ref_w: Any, log_pi_ref_l: Any, gamma: float) -> Array:
    """log m for the constrained-preference-optimization margin m = γ(1/π_ref(y_w) + 1/π_ref(y_l)) (C8, Thm 4.8).

    Computed as log γ + logaddexp(−log π_ref(y_w), −log π_ref(y_l)), finite even when 1/π_ref ~ e^{200}.
    γ = 0 gives −inf (DPO). With per-token mean log-probs, 1/π̄_ref is the response's perplexity.
    """
    if not (gamma >= 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be finite and >= 0; got {gamma!r}")
    xp, (lw, ll) = as_arrays(log_pi_ref_w, log_pi_ref_l)
    require_finite("log_pi_ref_w", lw)
    require_finite("log_pi_ref_l", ll)
    log_gamma = math.log(gamma) if gamma > 0 else -math.inf
    return log_gamma + xp.logaddexp(-lw, -ll)


def exp_checked(name: str, log_value: Any) -> Array:
    """exp(log_value), raising OverflowError naming the first pair whose value exceeds the dtype's range."""
    xp, (lv,) = as_arrays(log_value)
    if is_torch_array(lv):
        import torch

        limit = math.log(torch.finfo(lv.dtype).max)
    else:
        limit = math.log(np.finfo(lv.dtype).max)
    over = lv > limit
    if bool(xp.any(over)):
        a = to_numpy(lv)
        idx = tuple(int(i) for i in np.argwhere(a > limit)[0]) if a.ndim else ()
        raise OverflowError(
            f"{name} overflows at pair {idx}: log value {float(a[idx]):.6g} > {limit:.6g}; "
            f"use the log-space form log_{name} instead"
        )
    return xp.exp(lv)


def cpo_margin(log_pi_ref_w: Any, log_pi_ref_l: Any, gamma: float) -> Array:
    """The margin m = γ(1/π_ref(y_w) + 1/π_ref(y_l)) of C8; raises OverflowError rather than returning inf."""
    return exp_checked("cpo_margin", log_cpo_margin(log_pi_ref_w, log_pi_ref_l, gamma))


def log_gamma_star_pair(delta_ref: Any, delta_reward: Any, beta: float, log_pi_ref_w: Any, log_pi_ref_l: Any) -> Array:
    """log of the per-pair γ* of Eq. 27: [−β·δ_ref − Δr*]_+ / (1/π_ref(y_w) + 1/π_ref(y_l)) (C8, Thm 4.9).

    −inf where the pair needs no margin (β·δ_ref + Δr* > 0). On a violated pair the boundary value
    β·δ_ref + Δr* = 0 needs γ* = 0 in the strict sense γ > γ*, so it is −inf too.
    """
    xp, (vm, lw, ll) = as_arrays(violation_margin(delta_ref, delta_reward, beta), log_pi_ref_w, log_pi_ref_l)
    need = -vm
    safe = xp.where(need > 0, need, xp.ones_like(need))
    with np.errstate(divide="ignore"):
        val = xp.log(safe) - xp.logaddexp(-lw, -ll)
    return xp.where(need > 0, val, xp.full_like(need, -math.inf))


def gamma_star_pair(delta_ref: Any, delta_reward: Any, beta: float, log_pi_ref_w: Any, log_pi_ref_l: Any) -> Array:
    """Per-pair γ* (Eq. 27): the smallest γ whose approximate CPO stationary δ is ≥ 0 on that pair (0 if none)."""
    return exp_checked(
        "gamma_star_pair", log_gamma_star_pair(delta_ref, delta_reward, beta, log_pi_ref_w, log_pi_ref_l)
    )


def gamma_star(delta_ref: Any, delta_reward: Any, beta: float, log_pi_ref_w: Any, log_pi_ref_l: Any) -> float:
    """γ* of Eq. 27 over a dataset: max over pairs of the per-pair value (Thm 4.9: γ > γ* avoids U)."""
    g = gamma_star_pair(delta_ref, delta_reward, beta, log_pi_ref_w, log_pi_ref_l)
    xp, (g,) = as_arrays(g)
    return float(xp.max(g)) if math.prod(g.shape) else 0.0
