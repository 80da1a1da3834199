"""Stationary points: population Bradley–Terry optima of each loss (C5) and the exact CPO objective (C8, Prop. H.2).

Population reading (C5a): with q = σ(Δr*) the share of raters preferring y_w, a pair's population loss is
L(δ) = q·ℓ(δ; pair) + (1 − q)·ℓ(−δ; swapped pair), the swapped pair having y_w and y_l exchanged
(δ_ref → −δ_ref, per-response quantities swapped). For the logistic losses L is convex in δ, so its stationary point
is found by a vectorised bracketing bisection on dL/dδ; DPO and IPO have closed forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from ._array import require_positive_beta
from .bandit import TabularBandit
from .registry import PER_PAIR_PARAMS, get_loss, loss_and_grad, swap_delta_params


def population_loss_derivative(
    loss_name: str, delta: Any, delta_ref: Any, delta_reward: Any, beta: float, **params: Any
) -> np.ndarray:
    """dL/dδ of the population loss q·ℓ(δ; pair) + (1 − q)·ℓ(−δ; swapped pair), q = σ(Δr*) (C5a)."""
    d = np.asarray(delta, dtype=np.float64)
    dref = np.asarray(delta_ref, dtype=np.float64)
    q = expit(np.asarray(delta_reward, dtype=np.float64))
    g_fwd = loss_and_grad(loss_name, d, dref, beta, **params).grad
    g_rev = loss_and_grad(loss_name, -d, -dref, beta, **swap_delta_params(params)).grad
    return q * np.asarray(g_fwd) - (1 - q) * np.asarray(g_rev)


def population_stationary_delta(
    loss_name: str, delta_ref: Any, delta_reward: Any, beta: float, *, tol: float = 1e-12, **params: Any
) -> np.ndarray:
    """δ minimising the population BT loss of `loss_name` for each pair (C5a; C8/C10 for the margin losses).

    Closed forms: DPO → δ_ref + Δr*/β (= δ_{π*}, whatever its sign); IPO → δ_ref + (2q − 1)/(2β).
    Other logistic losses: bisection on the increasing derivative to `tol` (absolute, in δ).
    The hinge loss has no unique stationary point and raises ValueError; so do dpop and dpo_nll, which depend on
    log π(y_w) too (see :func:`dpocheck.theory.displacement.population_face_stationary_delta`).
    """
    require_positive_beta(beta)
    if get_loss(loss_name).needs_policy_chosen:
        raise ValueError(
            f"{loss_name} depends on log π(y_w), not on δ alone: use "
            "dpocheck.theory.displacement.population_face_stationary_delta"
        )
    dref = np.asarray(delta_ref, dtype=np.float64)
    dr = np.asarray(delta_reward, dtype=np.float64)
    if loss_name == "dpo":
        return dref + dr / beta
    if loss_name == "ipo":
        return dref + (2 * expit(dr) - 1) / (2 * beta)
    if loss_name == "hinge":
        raise ValueError("the hinge loss's population minimiser is a set, not a point; use a logistic loss")
    per_pair = {k: v for k, v in params.items() if k in PER_PAIR_PARAMS}
    hyper = {k: v for k, v in params.items() if k not in PER_PAIR_PARAMS}  # scalars: gamma, tau, alpha
    shape = np.broadcast_shapes(dref.shape, dr.shape, *(np.shape(v) for v in per_pair.values()))
    dref_b = np.broadcast_to(dref, shape)
    dr_b = np.broadcast_to(dr, shape)
    p_b = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), shape) for k, v in per_pair.items()} | hyper

    def deriv(d: np.ndarray) -> np.ndarray:
        return population_loss_derivative(loss_name, d, dref_b, dr_b, beta, **p_b)

    center = dref_b + dr_b / beta
    return minimise_convex_1d(deriv, center - 1.0, center + 1.0, tol, loss_name)


def minimise_convex_1d(
    deriv: Any, lo: np.ndarray, hi: np.ndarray, tol: float, name: str, *, zero_counts_as_positive: bool = False
) -> np.ndarray:
    """Element-wise minimiser of convex 1-D functions from their (non-decreasing) derivative: widen [lo, hi]
    until deriv(lo) < 0 ≤ deriv(hi) (doubling steps), then bisect to ``tol`` relative to max(1, |x|).

    ``zero_counts_as_positive``: a zero derivative sends the bisection left (use it where the derivative is
    one-sided at a kink that may be the minimiser). ArithmeticError naming ``name`` when no bracket is found.
    """
    up = (lambda x: deriv(x) >= 0) if zero_counts_as_positive else (lambda x: deriv(x) > 0)
    step = np.ones(np.shape(lo))
    for _ in range(200):
        bad_lo = up(lo)
        bad_hi = deriv(hi) < 0
        if not (bad_lo.any() or bad_hi.any()):
            break
        step = np.where(bad_lo | bad_hi, 2 * step, step)
        lo = np.where(bad_lo, lo - step, lo)
        hi = np.where(bad_hi, hi + step, hi)
    else:
        raise ArithmeticError(f"{name}: no bracket for the population stationary point")
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        pos = up(mid)
        hi = np.where(pos, mid, hi)
        lo = np.where(pos, lo, mid)
        if np.all(hi - lo <= tol * np.maximum(1.0, np.abs(mid))):
            break
    return 0.5 * (lo + hi)


def cpo_paper_stationary_delta(delta_ref: Any, delta_reward: Any, beta: float, margin: Any) -> np.ndarray:
    """The paper's stationary point of the CPO margin loss (C8): δ = δ_ref + (Δr* + m)/β."""
    require_positive_beta(beta)
    return (
        np.asarray(delta_ref, dtype=np.float64)
        + (np.asarray(delta_reward, dtype=np.float64) + np.asarray(margin, dtype=np.float64)) / beta
    )


# ------------------------------------------------------------ exact stationary point of the CPO objective


@dataclass(frozen=True)
class CPOObjectiveStationary:
    """Interior stationary point of E_π[r*] − β·KL(π‖π_ref) + γ·E_D[δ_π] (C8, Def. 4.7), per context.

    log_pi: (X, Y) log-policy (NaN rows where no interior stationary point exists); exists: (X,) bool;
    foc_residual: (N,) per-pair residual of β(δ − δ_ref) − Δr* − γ·w_x(1/π(y_w) + 1/π(y_l)) (exact only for
    contexts with a single pair, w_x the pair weight); pair_weight: (N,) the weight of each pair in E_D.
    """

    log_pi: np.ndarray
    exists: np.ndarray
    foc_residual: np.ndarray
    pair_weight: np.ndarray


def _exp_capped(v: float) -> float:
    """e^v, +inf instead of OverflowError for large v."""
    return math.exp(v) if v < 709.0 else math.inf


def _root(f: Any, lo: float, hi: float) -> float:
    """Root of an increasing f on [lo, hi]; an end point is returned when rounding already puts f ≥ 0 at lo
    (or ≤ 0 at hi), where brentq would refuse the bracket."""
    if f(lo) >= 0:
        return lo
    if f(hi) <= 0:
        return hi
    return brentq(f, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)


def _solve_coordinate(t: float, c: float, beta: float) -> float:
    """Solve β·s − c·e^{−s} = t for s on the branch where the left side increases (local maximum branch)."""
    if c == 0:
        return t / beta
    log_abs_c = math.log(abs(c))
    sign = 1.0 if c > 0 else -1.0

    def f(s: float) -> float:  # c·e^{−s} as sign·e^{log|c| − s}: no overflow for subnormal γ
        return beta * s - sign * _exp_capped(log_abs_c - s) - t

    if c > 0:
        # The root lies in (t/β, (t + c·e^{−t/β})/β]; at lo = t/β, f is −c·e^{−lo} < 0 up to rounding of β·(t/β) − t.
        lo = t / beta
        if f(lo) >= 0:
            return lo  # c·e^{−lo} is below the rounding of t: the root is lo to working precision
        hi = lo + 1.0
        while f(hi) < 0:
            hi = lo + 2 * (hi - lo)
        return _root(f, lo, hi)
    s0 = log_abs_c - math.log(beta)
    g0 = beta * (s0 + 1.0) - t  # |c|·e^{−s0} = β exactly at the branch minimum
    if g0 > 0:
        # At ν = ν_max the branch minimum sits exactly on the target; allow for rounding there.
        if g0 <= 64 * np.finfo(float).eps * max(abs(t), beta * abs(s0), beta, 1.0):
            return s0
        raise ArithmeticError("no root on the increasing branch")
    if g0 == 0:
        return s0
    hi = max(t / beta, s0) + 1e-12
    while f(hi) < 0:
        hi = s0 + 2 * (hi - s0) + 1.0
    return _root(f, s0, hi)


def cpo_objective_stationary_policy(
    bandit: TabularBandit, gamma: float, *, weighting: str = "mean"
) -> CPOObjectiveStationary:
    """Exact interior stationary point of the CPO objective (C8, Def. 4.7) on each context's simplex.

    Per context the Lagrange condition is β·log π(y) − c_y/π(y) = r*(y) + β·log π_ref(y) − ν with
    c_y = γ·Σ_i w_i(1[y = w_i] − 1[y = l_i]); each coordinate is solved on its increasing branch (the local maximum
    near π_ref) and ν by bisection so that Σ_y π(y) = 1. weighting="mean" gives each of a context's pairs weight
    1/n_x (E_D conditional on x); "sum" gives weight 1. For γ > 0 the objective is unbounded above (π(y_l) → 0), so
    this is a local, not global, maximum; for γ too large no interior stationary point exists (exists = False).
    """
    require_positive_beta(bandit.beta)
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    beta = bandit.beta
    p = bandit.pairs
    X, Y = bandit.log_pi_ref.shape
    counts = np.bincount(p[:, 0], minlength=X).astype(np.float64)
    if weighting == "mean":
        weight = 1.0 / counts[p[:, 0]]
    elif weighting == "sum":
        weight = np.ones(len(p))
    else:
        raise ValueError("weighting must be 'mean' or 'sum'")
    c = np.zeros((X, Y))
    np.add.at(c, (p[:, 0], p[:, 1]), gamma * weight)
    np.add.at(c, (p[:, 0], p[:, 2]), -gamma * weight)
    b = bandit.reward + beta * bandit.log_pi_ref
    log_pi = np.full((X, Y), np.nan)
    exists = np.zeros(X, dtype=bool)
    for x in range(X):
        neg = c[x] < 0
        # log(−c) − log β exactly as _solve_coordinate forms s0: −c/β can be subnormal (γ ~ 1e-313), where the
        # quotient loses precision and ν_max would disagree with the branch minimum by ~1e-10
        nu_max = np.min(b[x, neg] - beta * (np.log(-c[x, neg]) - math.log(beta) + 1)) if neg.any() else math.inf

        def solve(nu: float, x: int = x) -> np.ndarray:
            return np.array([_solve_coordinate(b[x, y] - nu, c[x, y], beta) for y in range(Y)])

        def excess(nu: float, solve=solve) -> float:
            s = solve(nu)
            m = s.max()
            return m + math.log(np.exp(s - m).sum())  # log Σ π − 0

        if math.isfinite(nu_max) and excess(nu_max) > 0:
            continue  # even the smallest admissible mass exceeds 1: no interior stationary point
        nu0 = beta * float(np.logaddexp.reduce(b[x] / beta))
        hi = min(nu0, nu_max) if math.isfinite(nu_max) else nu0
        step = 1.0
        while excess(hi) > 0:
            hi = min(hi + step, nu_max) if math.isfinite(nu_max) else hi + step
            step *= 2
        lo = hi - 1.0
        step = 1.0
        while excess(lo) < 0:
            lo -= step
            step *= 2
        nu = _root(lambda v, excess=excess: -excess(v), lo, hi)  # excess decreases in ν
        s = solve(nu)
        log_pi[x] = s - np.logaddexp.reduce(s)
        exists[x] = True
    lw = log_pi[p[:, 0], p[:, 1]]
    ll = log_pi[p[:, 0], p[:, 2]]
    d = lw - ll
    with np.errstate(over="ignore", invalid="ignore"):
        foc = beta * (d - bandit.delta_ref()) - bandit.delta_reward() - gamma * weight * (np.exp(-lw) + np.exp(-ll))
    return CPOObjectiveStationary(log_pi, exists, foc, weight)


def cpo_approximation_error(bandit: TabularBandit, gamma: float) -> dict[str, np.ndarray]:
    """Exact CPO stationary δ against the 1/π ≈ 1/π_ref approximation δ_ref + (Δr* + m)/β (C8, Prop. H.2).

    Returns per-pair arrays: delta_exact, delta_approx, error (approx − exact), margin_exact
    γ(1/π_γ(y_w) + 1/π_γ(y_l)) and margin_approx γ(1/π_ref(y_w) + 1/π_ref(y_l)), for contexts with one pair each
    the FOC is exact; with several pairs per context the per-pair weight (1/n_x) scales γ.
    """
    sol = cpo_objective_stationary_policy(bandit, gamma)
    p = bandit.pairs
    lw_ref, ll_ref = bandit.log_pi_ref_pairs()
    g = gamma * sol.pair_weight
    with np.errstate(divide="ignore", over="ignore"):
        # m = γ_i(1/π_ref(y_w) + 1/π_ref(y_l)) through log space; +inf (not NaN) where it exceeds float64, 0 at γ = 0.
        m_approx = np.exp(np.log(g) + np.logaddexp(-lw_ref, -ll_ref))
        delta_approx = bandit.delta_ref() + (bandit.delta_reward() + m_approx) / bandit.beta
        lw = sol.log_pi[p[:, 0], p[:, 1]]
        ll = sol.log_pi[p[:, 0], p[:, 2]]
        delta_exact = lw - ll
        # contexts without an interior stationary point have NaN rows: their margin is NaN, not computed
        known = ~(np.isnan(lw) | np.isnan(ll))
        margin_exact = np.full(lw.shape, np.nan)
        g_known = np.broadcast_to(g, lw.shape)[known]
        margin_exact[known] = np.exp(np.log(g_known) + np.logaddexp(-lw[known], -ll[known]))
    return {
        "delta_exact": delta_exact,
        "delta_approx": delta_approx,
        "error": delta_approx - delta_exact,
        "margin_exact": margin_exact,
        "margin_approx": m_approx,
        "exists": sol.exists[p[:, 0]],
    }
