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

import numpy as np
from scipy.special import logsumexp

from .bandit import TabularBandit, policy_delta

LAMBDA_CAP = 1e12  # multipliers beyond this mean the constraints force some probability to 0


@dataclass(frozen=True)
class ECPOCSolution:
    """E-CPOC optimum (C9). log_pi (X, Y); multipliers (N,) per pair; delta (N,) the solution's δ_π;
    primal_residual max_i [ε − δ_i]_+; complementarity max_i |λ_i·(π(y_w) − e^ε·π(y_l))| / scale;
    dual_residual max_i [−λ_i]_+; feasible: every constraint holds within tol and no multiplier hit LAMBDA_CAP;
    objective: Σ_x (E_π[r*] − β·KL) over contexts."""

    log_pi: np.ndarray
    multipliers: np.ndarray
    delta: np.ndarray
    primal_residual: float
    complementarity: float
    dual_residual: float
    stationarity: float
    feasible: bool
    objective: float


def _policy(lpref: np.ndarray, r: np.ndarray, A: np.ndarray, lam: np.ndarray, beta: float) -> np.ndarray:
    z = lpref + (r + A.T @ lam) / beta
    return z - logsumexp(z)


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
            S = lam > 0
            if S.any():
                cand = np.zeros(m)
                cand[S] = np.linalg.lstsq(M[np.ix_(S, S)], beta * (epsilon - d_star[S]), rcond=None)[0]
                if np.all(cand >= 0) and violation(cand) <= 1e-13:
                    return cand
            z = z_star + A.T @ lam / beta  # re-synchronise the running logits
    return lam


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
    for x in np.unique(p[:, 0]) if len(p) else []:
        idx = np.flatnonzero(p[:, 0] == x)
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
    comp = float(np.max(np.abs(lam_all * slack / scale))) if len(p) else 0.0
    # Stationarity: log π − log π_ref − (r + Aᵀλ)/β must be constant within each context.
    resid = 0.0
    for x in range(X):
        idx = np.flatnonzero(p[:, 0] == x) if len(p) else np.array([], dtype=int)
        shift = np.zeros(Y)
        np.add.at(shift, p[idx, 1], lam_all[idx])
        np.add.at(shift, p[idx, 2], -e * lam_all[idx])
        v = log_pi[x] - bandit.log_pi_ref[x] - (bandit.reward[x] + shift) / beta
        resid = max(resid, float(np.ptp(v)))
    kl = np.sum(pi * (log_pi - bandit.log_pi_ref), axis=1)
    objective = float(np.sum(np.sum(pi * bandit.reward, axis=1) - beta * kl))
    feasible = primal <= tol and not bool(np.any(lam_all >= LAMBDA_CAP * (1 - 1e-9)))
    return ECPOCSolution(log_pi, lam_all, delta, primal, comp, 0.0, resid, feasible, objective)


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
