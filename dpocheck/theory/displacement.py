"""Where DPOP and DPO + NLL put a pair's margin, relative to U (C3) and to π*'s δ* (PAPER §6).

Setting: a tabular softmax policy, one context, one pair (y_w, y_l), two-sided Bradley–Terry population labels
q = σ(Δr*) (C5a's reading: the pair is labelled y_w ≻ y_l with probability q, y_l ≻ y_w otherwise; the swapped label
makes y_l the chosen response, so DPOP penalises displacing y_l and the NLL term is on y_l). With hard labels none of
the three losses (DPO, DPOP, DPO + NLL) has a stationary point: the y_l logit's derivative is β·σ(·)·(1 + λ·1[Δ_w <
0]·π(y_l)) > 0 for DPOP and β·σ(·) + α·π(y_l) > 0 for DPO + NLL (checked in ``dpocheck proofs``, S6).

For fixed δ the population loss depends on the rest of the policy only through log π(y_w) and log π(y_l), which it
wants large; so its infimum lies on the face π(y_w) + π(y_l) = 1, where log π(y_w) = −softplus(−δ) and
log π(y_l) = −softplus(δ). On that face the loss is a convex function of δ (softplus of convex arguments) with one
minimiser, found here by bisection on its derivative, built from the registry's exact derivatives:
dL/dδ = q·(g + g_w·σ(−δ)) − (1 − q)·(g' + g'_w·σ(δ)), (g, g_w) of the pair at (δ, log π(y_w)) and (g', g'_w) of the
swapped pair at (−δ, log π(y_l)).

Exact statements (proved in ``dpocheck proofs``, S6.*):

* DPOP ≥ DPO pointwise, equal where no chosen response is displaced. Its minimiser lies between δ_ref and δ*; for
  λ > 0 it is δ* exactly iff π_ref(y_w)·e^{[Δr*]₊/β} + π_ref(y_l)·e^{[−Δr*]₊/β} ≤ 1 (room to reach δ* without
  displacing either response; impossible on two responses unless Δr* = 0), and on a two-response context it is δ_ref
  exactly iff λ·σ(sgn(Δr*)·δ_ref) ≥ e^{|Δr*|} − 1 (:func:`dpop_stays_at_reference`).
* DPO + NLL (one-token responses, weight a = α on either label): dL/dδ = β(σ(β(δ − δ_ref)) − q) + a(σ(δ) − q), so
  its minimiser lies between δ* and Δr* (the NLL's own optimum σ(δ) = q); for Δr* > 0 it is ≥ 0 iff α ≥
  :func:`dpo_nll_alpha_star`. With more than two responses the NLL drains the others (∂L/∂z_k = a·π(y_k) > 0): no
  interior stationary point, the infimum is this face value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from ._array import require_positive_beta
from .registry import ReferencePairs, get_loss
from .stationary import minimise_convex_1d


def _face_logps(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log π(y_w), log π(y_l)) on the face π(y_w) + π(y_l) = 1: (−softplus(−δ), −softplus(δ))."""
    return -np.logaddexp(0.0, -delta), -np.logaddexp(0.0, delta)


def _face_precompute(spec: Any, ref_logp_w: Any, ref_logp_l: Any, beta: float, params: dict) -> tuple[dict, dict]:
    ref = ReferencePairs.single_token(np.asarray(ref_logp_w, np.float64), np.asarray(ref_logp_l, np.float64))
    return spec.precompute(ref, beta, **params), spec.precompute(ref.swapped(), beta, **params)


def _face_derivative(spec: Any, d: np.ndarray, q: np.ndarray, beta: float, fwd: dict, rev: dict) -> np.ndarray:
    lw, ll = _face_logps(d)
    f = spec.apply(d, beta, policy_logp_w=lw, **fwd)
    r = spec.apply(-d, beta, policy_logp_w=ll, **rev)
    gw = 0.0 if f.grad_logp_w is None else f.grad_logp_w * expit(-d)
    gl = 0.0 if r.grad_logp_w is None else r.grad_logp_w * expit(d)
    return q * (np.asarray(f.grad) + gw) - (1 - q) * (np.asarray(r.grad) + gl)


def population_face_derivative(
    loss_name: str, delta: Any, ref_logp_w: Any, ref_logp_l: Any, delta_reward: Any, beta: float, **params: Any
) -> np.ndarray:
    """dL/dδ of the two-sided BT population loss q·ℓ(pair) + (1 − q)·ℓ(swapped pair) on the face π(y_w) + π(y_l) = 1
    (module docstring), for any registry loss; one-token responses (tokens 1), numpy float64.

    At DPOP's kinks this is the derivative the registry defines (the non-displaced side's): the right derivative
    for the pair's kink, the left one for the swapped pair's.
    """
    spec = get_loss(loss_name)
    fwd, rev = _face_precompute(spec, ref_logp_w, ref_logp_l, beta, params)
    q = expit(np.asarray(delta_reward, dtype=np.float64))
    return _face_derivative(spec, np.asarray(delta, dtype=np.float64), q, beta, fwd, rev)


def dpop_delta_star_reachable(ref_logp_w: Any, ref_logp_l: Any, delta_reward: Any, beta: float) -> np.ndarray:
    """Can a policy reach δ* = δ_ref + Δr*/β displacing neither response? π_ref(y_w)·e^{[Δr*]₊/β} +
    π_ref(y_l)·e^{[−Δr*]₊/β} ≤ 1 (then DPOP's population minimiser is δ*, like DPO's; strict inequality leaves
    mass for the other responses, i.e. a full-support minimiser)."""
    require_positive_beta(beta)
    rw, rl, dr = (np.asarray(v, dtype=np.float64) for v in (ref_logp_w, ref_logp_l, delta_reward))
    return np.logaddexp(rw + np.maximum(dr, 0.0) / beta, rl + np.maximum(-dr, 0.0) / beta) <= 0.0


def dpop_stays_at_reference(delta_ref: Any, delta_reward: Any, lam: Any) -> np.ndarray:
    """On a two-response context, DPOP's population minimiser is δ_ref exactly (the policy keeps π_ref) iff
    λ·σ(sgn(Δr*)·δ_ref) ≥ e^{|Δr*|} − 1: the one-sided derivatives at δ_ref are (β/2)[(1 − q)(1 + λσ(δ_ref)) − q]
    (right) and (β/2)[(1 − q) − q(1 + λσ(−δ_ref))] (left), q = σ(Δr*). Pal et al. 2024's default λ = 50 with
    δ_ref = 0 keeps π_ref up to |Δr*| = log 26 ≈ 3.26."""
    dref, dr, lam = (np.asarray(v, dtype=np.float64) for v in (delta_ref, delta_reward, lam))
    return lam * expit(np.sign(dr) * dref) >= np.expm1(np.abs(dr))


def dpo_nll_alpha_star(delta_ref: Any, delta_reward: Any, beta: float) -> np.ndarray:
    """For q = σ(Δr*) > ½: the smallest α for which DPO + NLL's population minimiser on a two-response context
    (one-token responses) has δ ≥ 0, i.e. is outside U: α* = max(0, β(σ(−β·δ_ref) − q)/(q − ½)) (dL/dδ at 0 is
    β(σ(−β·δ_ref) − q) + α(½ − q), and δ ≥ 0 ⇔ it is ≤ 0). NaN for q ≤ ½, where the NLL pulls towards Δr* ≤ 0:
    δ ≥ 0 then holds for α ≤ β(q − σ(−β·δ_ref))/(½ − q) only, and for no α when δ* < 0."""
    require_positive_beta(beta)
    dref, dr = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (delta_ref, delta_reward)))
    q = expit(dr)
    gap = expit(-beta * dref) - q  # β·gap = dL/dδ at δ = 0 without the NLL term
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(beta * gap / (q - 0.5), 0.0)
    return np.where(q > 0.5, ratio, np.nan)


def population_face_stationary_delta(
    loss_name: str,
    ref_logp_w: Any,
    ref_logp_l: Any,
    delta_reward: Any,
    beta: float,
    *,
    tol: float = 1e-12,
    **params: Any,
) -> np.ndarray:
    """The minimiser δ of the two-sided BT population loss of `loss_name` on the face π(y_w) + π(y_l) = 1 (module
    docstring), one context and one pair, one-token responses. For losses of δ alone it is
    :func:`~dpocheck.theory.population_stationary_delta`; for dpop and dpo_nll see the module docstring (dpop's
    closed-form cases δ* and δ_ref are returned exactly). Bisection to `tol` (relative to max(1, |δ|)).
    """
    require_positive_beta(beta)
    spec = get_loss(loss_name)
    if spec.family == "hinge":
        raise ValueError("the hinge loss's population minimiser is a set, not a point")
    rw, rl, dr = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (ref_logp_w, ref_logp_l, delta_reward)))
    dref = rw - rl
    star = dref + dr / beta

    fwd, rev = _face_precompute(spec, rw, rl, beta, params)
    q = expit(dr)

    def deriv(d: np.ndarray) -> np.ndarray:
        # At a kink this is one of the one-sided derivatives; convexity makes the bisection converge to the
        # minimiser either way (a kink that is the minimiser included).
        return _face_derivative(spec, d, q, beta, fwd, rev)

    lo, hi = np.minimum(dref, star) - 1.0, np.maximum(dref, star) + 1.0
    out = minimise_convex_1d(deriv, lo, hi, tol, loss_name, zero_counts_as_positive=True)
    if spec.family == "dpop":
        lam = spec.resolve(**params)["lam"]
        two_responses = np.abs(np.logaddexp(rw, rl)) <= 1e-12
        out = np.where(two_responses & dpop_stays_at_reference(dref, dr, lam), dref, out)
        out = np.where(dpop_delta_star_reachable(rw, rl, dr, beta), star, out)
    return out


__all__ = [
    "dpo_nll_alpha_star",
    "dpop_delta_star_reachable",
    "dpop_stays_at_reference",
    "population_face_derivative",
    "population_face_stationary_delta",
]
