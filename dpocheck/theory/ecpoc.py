"""Exact E-CPOC solution (C9): the RLHF objective under hard constraints δ_π ≥ ε on every pair.

Per context x: maximise Σ_y π(y)·r*(y) − β·KL(π‖π_ref) subject to π(y_w) ≥ e^ε·π(y_l) for every pair in x.
The constraints are linear in π and the objective strictly concave, so the problem is convex. Its dual,
min_{λ ≥ 0} β·logsumexp_y(log π_ref(y) + (r*(y) + (Aᵀλ)(y))/β) with rows a_i = e_{w_i} − e^ε·e_{l_i}, is smooth;
π_λ(y) ∝ π_ref(y)·exp((r*(y) + Σ_i λ_i(1[y = w_i] − e^ε·1[y = l_i]))/β). We solve it by exact
cyclic coordinate descent in log space, polish the active set exactly, and report the KKT residuals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import nnls
from scipy.special import logsumexp

from .bandit import TabularBandit

LAMBDA_CAP = 1e12  # multipliers beyond this mean the constraints force some probability to 0


@dataclass(frozen=True)
class ECPOCSolution:
    """E-CPOC optimum (C9). log_pi (X, Y); multipliers (N,) per pair; delta (N,) the solution's δ_π;
    primal_residual max_i [ε − δ_i]_+; complementarity max_i |λ_i·(π(y_w) − e^ε·π(y_l))| / π(y_w);
    dual_residual max_i [−λ_i]_+; stationarity: the spread of log π − log π_ref − (r* + Aᵀλ)/β over responses,
    relative to the size of those terms; feasible: the solver converged, every constraint holds within tol and no
    multiplier hit LAMBDA_CAP; objective: Σ_x (E_π[r*] − β·KL) over contexts; cyclic_contexts: contexts whose
    pairs contain a preference cycle, which for ε > 0 no full-support policy can satisfy (left at π*,
    multipliers NaN, feasible = False); converged: every other context's KKT residual (kkt_residual, the worst,
    relative to the size of the margins) is within tol — when False the solution is no verdict on C9."""

    log_pi: np.ndarray
    multipliers: np.ndarray
    delta: np.ndarray
    primal_residual: float
    complementarity: float
    dual_residual: float
    stationarity: float
    feasible: bool
    objective: float
    cyclic_contexts: tuple[int, ...] = ()
    converged: bool = True
    kkt_residual: float = 0.0


def reward_shift(pairs: np.ndarray, multipliers: np.ndarray, epsilon: float, shape: tuple[int, int]) -> np.ndarray:
    """(Aᵀλ)(x, y) = Σ_i λ_i(1[y = w_i] − e^ε·1[y = l_i]) over the pairs of context x (NaN multipliers count as 0).

    The E-CPOC policy is the RLHF optimum (C1) for the reward r* + Aᵀλ (C9).
    """
    lam = np.nan_to_num(np.asarray(multipliers, dtype=np.float64))
    shift = np.zeros(shape)
    np.add.at(shift, (pairs[:, 0], pairs[:, 1]), lam)
    np.add.at(shift, (pairs[:, 0], pairs[:, 2]), -math.exp(epsilon) * lam)
    return shift


def _policy(lpref: np.ndarray, r: np.ndarray, A: np.ndarray, lam: np.ndarray, beta: float) -> np.ndarray:
    z = lpref + (r + A.T @ lam) / beta
    return z - logsumexp(z)


def _active_set_solve(
    M: np.ndarray, d_star: np.ndarray, beta: float, epsilon: float, violation: Any
) -> np.ndarray | None:
    """Dual active-set method on the log-form KKT system (exact linear solves, scale-free).

    Start from S = ∅ (π*, λ = 0); while some constraint is violated, add the most violated one, k, to the working
    set and solve δ_S(λ_S) = ε exactly (M_SS·λ_S = β(ε − δ*_S)). If that system is inconsistent (k is implied by
    constraints of S with a different target, as in chains a ≻ b ≻ c with small ε), swap k for the member of S whose
    removal restores consistency with λ ≥ 0; while a multiplier is negative, drop the most negative. Returns λ when
    every KKT condition holds to 1e-13, None when it stalls (the caller then falls back to coordinate descent).
    """
    m = len(d_star)
    scale = max(1.0, abs(epsilon))
    abs_m = np.abs(M)

    def solve(T: np.ndarray) -> tuple[np.ndarray, bool]:
        lam = np.zeros(m)
        if T.any():
            rhs = beta * (epsilon - d_star[T])
            lam[T] = np.linalg.lstsq(M[np.ix_(T, T)], rhs, rcond=None)[0]
            ok = np.max(np.abs(M[np.ix_(T, T)] @ lam[T] - rhs)) <= 1e-12 * max(1.0, float(np.max(np.abs(rhs))))
            return lam, bool(ok)
        return lam, True

    S = np.zeros(m, dtype=bool)
    lam = np.zeros(m)
    for _ in range(8 * m + 8):
        if violation(lam) <= 1e-13:
            return lam
        d = d_star + M @ lam / beta
        mag = np.maximum(scale, np.abs(d_star) + abs_m @ lam / beta)  # rounding floor of δ, as in _kkt_violation
        slack = np.where(S, np.inf, (d - epsilon) / mag)
        if not slack.min() < -1e-14:
            return None
        k = int(np.argmin(slack))
        T = S.copy()
        T[k] = True
        new, ok = solve(T)
        if not ok:
            best = None
            for j in np.flatnonzero(S):
                U = T.copy()
                U[j] = False
                cand, ok_u = solve(U)
                if ok_u and cand.min() >= 0:
                    v = violation(cand)
                    if best is None or v < best[0]:
                        best = (v, U, cand)
            if best is None:
                return None
            _, T, new = best
        while T.any() and new[T].min() < 0:
            T[int(np.argmin(np.where(T, new, np.inf)))] = False
            new, ok = solve(T)
            if not ok:
                return None
        S, lam = T, new
    return lam if violation(lam) <= 1e-13 else None


def _active_set_polish(
    lam: np.ndarray,
    delta: np.ndarray,
    M: np.ndarray,
    d_star: np.ndarray,
    beta: float,
    epsilon: float,
    violation: Any,
) -> np.ndarray | None:
    """Guess the active set from the iterate (λ > 0, or δ within a tolerance of ε), solve it exactly.

    On a guessed active set S, λ_S ≥ 0 solves M_SS·λ_S = β(ε − δ*_S) (non-negative least squares, which copes
    with redundant constraints); the candidate is returned when it satisfies every KKT condition to 1e-13.
    """
    scale = max(1.0, abs(epsilon))
    tried: set[bytes] = set()
    for tol in (0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1e-2, 1e-1):
        S = (lam > 0) | (delta - epsilon <= tol * scale)
        for _ in range(2 * len(lam) + 2):  # add violated constraints, drop those whose multiplier came out 0
            key = S.tobytes()
            if not S.any() or key in tried:
                break
            tried.add(key)
            lam_s = nnls(M[np.ix_(S, S)], beta * (epsilon - d_star[S]), maxiter=100 * len(lam))[0]
            cand = np.zeros_like(lam)
            cand[S] = lam_s
            if violation(cand) <= 1e-13:
                return cand
            d = d_star + M @ cand / beta
            mag = np.maximum(scale, np.abs(d_star) + np.abs(M) @ cand / beta)
            S = (cand > 0) | (d - epsilon < -1e-14 * mag)
    return None


def _kkt_violation(lam: np.ndarray, M: np.ndarray, d_star: np.ndarray, beta: float, epsilon: float) -> float:
    """Worst KKT residual of λ in δ-form, relative to the size of the numbers involved.

    δ(λ) = δ* + M·λ/β; primal: [ε − δ_i]_+; complementarity: |δ_i − ε| where λ_i > 0. Each residual is divided by
    max(1, |ε|, |δ*_i| + (|M|·λ)_i/β), the magnitude whose rounding error bounds how well δ_i can be known in
    float64: with log π_ref ~ −1e4 or multipliers ~ 1e4 an absolute 1e-13 is below the rounding error of δ_i
    itself, and no iterate could ever pass it.
    """
    d = d_star + M @ lam / beta
    mag = np.maximum(max(1.0, abs(epsilon)), np.abs(d_star) + np.abs(M) @ lam / beta)
    res = np.maximum(epsilon - d, np.abs(np.where(lam > 0, d - epsilon, 0.0)))
    return float(np.max(res / mag)) if len(res) else 0.0


def _solve_context(
    d_star: np.ndarray,
    beta: float,
    w_idx: np.ndarray,
    l_idx: np.ndarray,
    n_responses: int,
    epsilon: float,
    max_sweeps: int = 20000,
) -> tuple[np.ndarray, float]:
    """Multipliers λ ≥ 0 minimising the dual for one context, and their KKT residual (see :func:`_kkt_violation`).

    d_star holds δ* = δ_ref + Δr*/β per pair (the key identity, C1), never a difference of two normalised log π*
    entries (those lose every digit when a reward in the context is ~1e17). In log form the constraints are
    linear in λ: δ(λ) = δ* + M·λ/β with M[i, j] = A[j, w_i] − A[j, l_i], so the exact minimiser of the dual along
    one coordinate is closed-form: moving λ_i by t shifts δ_i by t(1 + e^ε)/β, hence
    t = max(−λ_i, β(ε − δ_i)/(1 + e^ε)) (the single-pair solution). Cyclic exact coordinate descent (Hildreth's
    method for the KL projection) runs on δ itself, so it is scale-free and works where π* puts e^{-40} (or
    e^{-1e4}) on a response and gradient methods stall. Every few sweeps the active set S = {λ > 0} is solved
    exactly (M_SS·λ_S = β(ε − δ*_S)) and kept when it satisfies every KKT condition to machine precision.
    """
    m = len(w_idx)
    e = math.exp(epsilon)
    A = np.zeros((m, n_responses))
    A[np.arange(m), w_idx] += 1.0
    A[np.arange(m), l_idx] -= e
    M = A[:, w_idx].T - A[:, l_idx].T

    def violation(lam: np.ndarray) -> float:
        return _kkt_violation(lam, M, d_star, beta, epsilon)

    exact = _active_set_solve(M, d_star, beta, epsilon, violation)
    if exact is not None:
        return exact, violation(exact)
    lam = np.zeros(m)
    d = d_star.copy()
    for sweep in range(max_sweeps):
        for i in range(m):
            t = max(-lam[i], beta * (epsilon - d[i]) / (1.0 + e))
            lam[i] += t
            d += M[:, i] * (t / beta)
        if sweep % 5 == 4 or sweep == max_sweeps - 1:
            if violation(lam) <= 1e-13:
                break
            cand = _active_set_polish(lam, d_star + M @ lam / beta, M, d_star, beta, epsilon, violation)
            if cand is not None:
                return cand, violation(cand)
            d = d_star + M @ lam / beta  # re-synchronise the running margins
    return lam, violation(lam)


def has_preference_cycle(w: np.ndarray, l: np.ndarray) -> bool:
    """True when the directed graph y_w → y_l of one context's pairs has a cycle (Kahn's topological sort)."""
    nodes = np.union1d(w, l)
    index = {int(v): i for i, v in enumerate(nodes)}
    indeg = np.zeros(len(nodes), dtype=int)
    out: list[list[int]] = [[] for _ in nodes]
    for a, b in zip(w.tolist(), l.tolist(), strict=True):
        out[index[a]].append(index[b])
        indeg[index[b]] += 1
    queue = [i for i in range(len(nodes)) if indeg[i] == 0]
    seen = 0
    while queue:
        i = queue.pop()
        seen += 1
        for j in out[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                queue.append(j)
    return seen < len(nodes)


class ECPOCNotConverged(ArithmeticError):
    """The E-CPOC solver stopped with KKT residuals above its tolerance: its policy is no verdict on C9."""


def ecpoc_solve(bandit: TabularBandit, epsilon: float = 0.0, *, tol: float = 1e-9) -> ECPOCSolution:
    """Solve E-CPOC exactly (C9) on every context; see the module docstring for the dual.

    Pair margins are computed in log form, δ = δ* + M·λ/β with δ* = δ_ref + Δr*/β (key identity, C1), so they
    stay exact when log π_ref is ~ −1e4 or a reward is ~ 1e17 (where differencing log π entries of that size
    would lose every digit). `converged` is False when some context's KKT residual (relative to the size of its
    margins, see :func:`_kkt_violation`) exceeds `tol`; then `feasible` is False too and says nothing about C9.
    """
    if not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be finite, got {epsilon!r}")
    beta = bandit.beta
    X, Y = bandit.log_pi_ref.shape
    p = bandit.pairs
    log_pi = bandit.log_pi_opt().copy()
    d_star = bandit.delta_opt()
    delta = d_star.copy()
    lam_all = np.zeros(len(p))
    e = math.exp(epsilon)
    cyclic = []
    worst = 0.0
    for x in np.unique(p[:, 0]) if len(p) else []:
        idx = np.flatnonzero(p[:, 0] == x)
        if epsilon > 0 and has_preference_cycle(p[idx, 1], p[idx, 2]):
            cyclic.append(int(x))
            lam_all[idx] = np.nan
            continue
        lam, violation = _solve_context(d_star[idx], beta, p[idx, 1], p[idx, 2], Y, epsilon)
        worst = max(worst, violation)
        lam_all[idx] = lam
        A = np.zeros((len(idx), Y))
        A[np.arange(len(idx)), p[idx, 1]] += 1.0
        A[np.arange(len(idx)), p[idx, 2]] -= e
        delta[idx] = d_star[idx] + (A[:, p[idx, 1]].T - A[:, p[idx, 2]].T) @ lam / beta
        r = bandit.reward[x]
        log_pi[x] = _policy(bandit.log_pi_ref[x], r - r.max(), A, lam, beta)
    primal = float(np.max(np.maximum(epsilon - delta, 0.0))) if len(p) else 0.0
    ok = ~np.isnan(lam_all)
    # λ_i·(π(y_w) − e^ε·π(y_l))/π(y_w) = λ_i·(1 − e^{ε−δ_i}): the same residual, without underflowing π.
    comp = float(np.max(np.abs(lam_all[ok] * np.expm1(epsilon - delta[ok])))) if ok.any() else 0.0
    # Stationarity: log π − log π_ref − (r + Aᵀλ)/β must be constant within each context (relative to the size
    # of the terms, which bounds the rounding error of the check itself).
    resid = 0.0
    shift = reward_shift(p, lam_all, epsilon, (X, Y))
    for x in range(X):
        terms = (bandit.reward[x] - bandit.reward[x].max() + shift[x]) / beta
        v = log_pi[x] - bandit.log_pi_ref[x] - terms
        mag = 1.0 + float(np.max(np.abs(bandit.log_pi_ref[x])) + np.max(np.abs(terms)))
        resid = max(resid, float(np.ptp(v)) / mag)
    pi = np.exp(log_pi)
    kl = np.sum(pi * (log_pi - bandit.log_pi_ref), axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        objective = float(np.sum(np.sum(pi * bandit.reward, axis=1) - beta * kl))
    converged = worst <= tol
    capped = bool(np.any(lam_all[ok] >= LAMBDA_CAP * (1 - 1e-9)))
    feasible = converged and primal <= tol and not cyclic and not capped
    dual = float(np.max(np.maximum(-lam_all[ok], 0.0))) if ok.any() else 0.0
    return ECPOCSolution(
        log_pi, lam_all, delta, primal, comp, dual, resid, feasible, objective, tuple(cyclic), converged, worst
    )


def ecpoc_single_pair_closed_form(
    log_pi_ref: np.ndarray, reward: np.ndarray, beta: float, w: int, l: int, epsilon: float = 0.0
) -> tuple[np.ndarray, float]:
    """Closed form for one context with one pair (C9): λ = [β(ε − δ*)]_+ / (1 + e^ε), where δ* = δ_{π*}.

    Then log π = log π* + λ(1[y = w] − e^ε·1[y = l])/β − (normaliser), so δ_π = max(δ*, ε). Returns (log π, λ).
    """
    lpref = np.asarray(log_pi_ref, dtype=np.float64)
    r = np.asarray(reward, dtype=np.float64)
    z = lpref + r / beta
    d_opt = z[w] - z[l]
    lam = max(0.0, beta * (epsilon - d_opt)) / (1.0 + math.exp(epsilon))
    z = z.copy()
    z[w] += lam / beta
    z[l] -= math.exp(epsilon) * lam / beta
    return z - logsumexp(z), lam
