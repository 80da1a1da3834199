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

from .bandit import TabularBandit, policy_delta

LAMBDA_CAP = 1e12  # multipliers beyond this mean the constraints force some probability to 0


@dataclass(frozen=True)
class ECPOCSolution:
    """E-CPOC optimum (C9). log_pi (X, Y); multipliers (N,) per pair; delta (N,) the solution's δ_π;
    primal_residual max_i [ε − δ_i]_+; complementarity max_i |λ_i·(π(y_w) − e^ε·π(y_l))| / scale;
    dual_residual max_i [−λ_i]_+; feasible: every constraint holds within tol and no multiplier hit LAMBDA_CAP;
    objective: Σ_x (E_π[r*] − β·KL) over contexts; cyclic_contexts: contexts whose pairs contain a preference cycle,
    which for ε > 0 no full-support policy can satisfy (left at π*, multipliers NaN, feasible = False)."""

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
        slack = np.where(S, np.inf, d - epsilon)
        if not slack.min() < -1e-14 * scale:
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
            S = (cand > 0) | (d < epsilon - 1e-14 * scale)
    return None


def _solve_context(
    lpref: np.ndarray,
    r: np.ndarray,
    beta: float,
    w_idx: np.ndarray,
    l_idx: np.ndarray,
    epsilon: float,
    max_sweeps: int = 20000,
) -> np.ndarray:
    """Multipliers λ ≥ 0 minimising the dual for one context.

    In log form the constraints are linear in λ: δ(λ) = δ* + M·λ/β with M[i, j] = A[j, w_i] − A[j, l_i], so the
    exact minimiser of the dual along one coordinate is closed-form: moving λ_i by t shifts δ_i by t(1 + e^ε)/β,
    hence t = max(−λ_i, β(ε − δ_i)/(1 + e^ε)) (the single-pair solution). Cyclic exact coordinate descent
    (Hildreth's method for the KL projection) is scale-free in log space, so it works where π* puts e^{-40} on a
    response and gradient methods stall. Every few sweeps the active set S = {λ > 0} is solved exactly
    (M_SS·λ_S = β(ε − δ*_S)) and kept when it satisfies every KKT condition to machine precision.
    """
    m = len(w_idx)
    e = math.exp(epsilon)
    z_star = lpref + r / beta
    d_star = z_star[w_idx] - z_star[l_idx]
    A = np.zeros((m, len(lpref)))
    A[np.arange(m), w_idx] += 1.0
    A[np.arange(m), l_idx] -= e
    M = A[:, w_idx].T - A[:, l_idx].T

    def violation(lam: np.ndarray) -> float:
        d = d_star + M @ lam / beta
        scale = max(1.0, abs(epsilon))
        return float(np.max(np.concatenate([epsilon - d, np.abs(np.where(lam > 0, d - epsilon, 0.0))]))) / scale

    exact = _active_set_solve(M, d_star, beta, epsilon, violation)
    if exact is not None:
        return exact
    lam = np.zeros(m)
    z = z_star.copy()
    for sweep in range(max_sweeps):
        for i in range(m):
            t = max(-lam[i], beta * (epsilon - (z[w_idx[i]] - z[l_idx[i]])) / (1.0 + e))
            lam[i] += t
            z[w_idx[i]] += t / beta
            z[l_idx[i]] -= e * t / beta
        if sweep % 5 == 4 or sweep == max_sweeps - 1:
            if violation(lam) <= 1e-13:
                break
            cand = _active_set_polish(lam, d_star + M @ lam / beta, M, d_star, beta, epsilon, violation)
            if cand is not None:
                return cand
            z = z_star + A.T @ lam / beta  # re-synchronise the running logits
    return lam


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


def ecpoc_solve(bandit: TabularBandit, epsilon: float = 0.0, *, tol: float = 1e-9) -> ECPOCSolution:
    """Solve E-CPOC exactly (C9) on every context; see the module docstring for the dual."""
    if not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be finite, got {epsilon!r}")
    beta = bandit.beta
    X, Y = bandit.log_pi_ref.shape
    p = bandit.pairs
    log_pi = bandit.log_pi_opt().copy()
    lam_all = np.zeros(len(p))
    e = math.exp(epsilon)
    cyclic = []
    for x in np.unique(p[:, 0]) if len(p) else []:
        idx = np.flatnonzero(p[:, 0] == x)
        if epsilon > 0 and has_preference_cycle(p[idx, 1], p[idx, 2]):
            cyclic.append(int(x))
            lam_all[idx] = np.nan
            continue
        A = np.zeros((len(idx), Y))
        A[np.arange(len(idx)), p[idx, 1]] += 1.0
        A[np.arange(len(idx)), p[idx, 2]] -= e
        lam = _solve_context(bandit.log_pi_ref[x], bandit.reward[x], beta, p[idx, 1], p[idx, 2], epsilon)
        lam_all[idx] = lam
        log_pi[x] = _policy(bandit.log_pi_ref[x], bandit.reward[x], A, lam, beta)
    delta = policy_delta(log_pi, p)
    pi = np.exp(log_pi)
    slack = pi[p[:, 0], p[:, 1]] - e * pi[p[:, 0], p[:, 2]]
    scale = np.maximum(pi[p[:, 0], p[:, 1]], 1e-300)
    primal = float(np.max(np.maximum(epsilon - delta, 0.0))) if len(p) else 0.0
    ok = ~np.isnan(lam_all)
    comp = float(np.max(np.abs(lam_all[ok] * slack[ok] / scale[ok]))) if ok.any() else 0.0
    # Stationarity: log π − log π_ref − (r + Aᵀλ)/β must be constant within each context.
    resid = 0.0
    for x in range(X):
        idx = np.flatnonzero(p[:, 0] == x) if len(p) else np.array([], dtype=int)
        shift = np.zeros(Y)
        np.add.at(shift, p[idx, 1], np.nan_to_num(lam_all[idx]))
        np.add.at(shift, p[idx, 2], -e * np.nan_to_num(lam_all[idx]))
        v = log_pi[x] - bandit.log_pi_ref[x] - (bandit.reward[x] + shift) / beta
        resid = max(resid, float(np.ptp(v)))
    kl = np.sum(pi * (log_pi - bandit.log_pi_ref), axis=1)
    objective = float(np.sum(np.sum(pi * bandit.reward, axis=1) - beta * kl))
    feasible = primal <= tol and not cyclic and not bool(np.any(lam_all[ok] >= LAMBDA_CAP * (1 - 1e-9)))
    dual = float(np.max(np.maximum(-lam_all[ok], 0.0))) if ok.any() else 0.0
    return ECPOCSolution(log_pi, lam_all, delta, primal, comp, dual, resid, feasible, objective, tuple(cyclic))


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
