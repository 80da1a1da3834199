"""Shared by the claim checks: sympy symbols with their numerical domains, and numerical helpers (first-principles
log π*, population losses of the two-sided Bradley–Terry reading, offsets of a pair and its swap, solver calls)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp
from scipy.special import expit, logsumexp

from dpocheck import theory as th

from ..search import SolverError

# ------------------------------------------------------------------------------------------------ symbols
BETA = sp.Symbol("beta", positive=True)
GAMMA = sp.Symbol("gamma", positive=True)
DREF = sp.Symbol("delta_ref", real=True)
DR = sp.Symbol("Delta_r", real=True)
DELTA = sp.Symbol("delta", real=True)
A_POS = sp.Symbol("a", positive=True)  # a = |δ_ref| or |δ − δ_ref|
M = sp.Symbol("m", positive=True)
K = sp.Symbol("k", positive=True)  # q = 1/(1 + k) ∈ (0, 1): sympy then knows 0 < q < 1
U = sp.Symbol("u", real=True)
#: numerical range of every symbol, for the sympy-vs-numbers comparisons
DOM = {
    BETA: (0.01, 20.0),
    GAMMA: (1e-4, 10.0),
    DREF: (-30.0, 30.0),
    DR: (-15.0, 15.0),
    DELTA: (-30.0, 30.0),
    A_POS: (1e-6, 30.0),
    M: (1e-4, 20.0),
    K: (1e-4, 1e4),
    U: (-30.0, 30.0),
}

#: The released code's configurations (C10): its defaults, and the demo config (β, γ from the released demo; τ, α at
#: the defaults), with the loss hyper-parameters read from the loss registry.
RELEASED_ADAPTIVE_DEFAULTS = dict(th.get_loss("released_adaptive").defaults)
RELEASED_DEFAULT_LOSS_CONFIG = {"beta": th.RELEASED_DEFAULTS["beta"], **RELEASED_ADAPTIVE_DEFAULTS}
RELEASED_DEMO_LOSS_CONFIG = {
    **RELEASED_DEFAULT_LOSS_CONFIG,
    "beta": th.RELEASED_DEMO["beta"],
    "gamma": th.get_loss("cpo_margin").defaults["gamma"],
}


def np_log_pi_opt(log_pi_ref: np.ndarray, reward: np.ndarray, beta: float) -> np.ndarray:
    """First-principles log π* (independent of the theory layer's implementation)."""
    z = log_pi_ref + reward / beta
    return z - logsumexp(z, axis=1, keepdims=True)


def bandit_of(ex: dict[str, Any]) -> th.TabularBandit:
    return th.TabularBandit.from_json(ex)


def pop_stationary(name: str, dref: Any, dr: Any, beta: float, **params: Any) -> np.ndarray:
    """The theory layer's two-sided population stationary δ (C5a reading), as a 1-d float64 array."""
    dref = np.atleast_1d(np.asarray(dref, dtype=np.float64))
    dr = np.broadcast_to(np.asarray(dr, dtype=np.float64), dref.shape)
    return np.atleast_1d(np.asarray(th.population_stationary_delta(name, dref, dr, beta, **params), dtype=np.float64))


def population_loss(name: str, d: Any, dref: Any, dr: Any, beta: float, **params: Any) -> np.ndarray:
    """Two-sided Bradley–Terry population loss q·ℓ(δ; pair) + (1 − q)·ℓ(−δ; swapped pair), q = σ(Δr*) (C5a)."""
    q = expit(np.asarray(dr, dtype=np.float64))
    fwd = np.asarray(th.loss_and_grad(name, d, dref, beta, **params).loss)
    rev = np.asarray(
        th.loss_and_grad(name, -np.asarray(d), -np.asarray(dref), beta, **th.swap_delta_params(params)).loss
    )
    return q * fwd + (1 - q) * rev


def cpo_objective(log_pi: np.ndarray, b: th.TabularBandit, gamma: float) -> float:
    """E_π[r*] − β·KL(π‖π_ref) + γ·E_D[δ_π] summed over contexts, E_D the per-context mean over pairs (C8)."""
    pi = np.exp(log_pi)
    value = float(np.sum(pi * b.reward) - b.beta * np.sum(pi * (log_pi - b.log_pi_ref)))
    counts = np.bincount(b.pairs[:, 0], minlength=b.n_contexts)
    wts = 1.0 / counts[b.pairs[:, 0]]
    return value + gamma * float(np.sum(wts * th.policy_delta(log_pi, b.pairs)))


def net_coefficients(b: th.TabularBandit, gamma: float) -> np.ndarray:
    """c[x, y] = γ·Σ_i w_i(1[y = w_i] − 1[y = l_i]): the objective's γ-term is Σ c·log π (C8)."""
    counts = np.bincount(b.pairs[:, 0], minlength=b.n_contexts)
    wts = 1.0 / counts[b.pairs[:, 0]]
    c = np.zeros(b.log_pi_ref.shape)
    np.add.at(c, (b.pairs[:, 0], b.pairs[:, 1]), gamma * wts)
    np.add.at(c, (b.pairs[:, 0], b.pairs[:, 2]), -gamma * wts)
    return c


def call_solver(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a theory solver; an exception on a valid input becomes SolverError, which :func:`search` reports as a
    counterexample to the implementation (with the message) instead of crashing the check."""
    try:
        with np.errstate(invalid="ignore"):  # NaN rows mark contexts without an interior point (documented)
            return fn(*args)
    except (ValueError, ArithmeticError, RuntimeError, FloatingPointError) as err:
        raise SolverError(f"{getattr(fn, '__name__', 'solver')} raised {type(err).__name__}: {err}") from err


def two_sided_stationary(c1: float, c2: float, q: float, beta: float) -> float:
    """δ minimising q·softplus(c1 − βδ) + (1 − q)·softplus(c2 + βδ) (any logistic-family loss under the two-sided
    BT population; c1, c2 the offsets of the pair and of its swap): B = e^{βδ} is the positive root of
    (1 − q)·e^{c2}·B² + (1 − 2q)·e^{c1 + c2}·B − q·e^{c1} = 0. Evaluated with mpmath at 50 digits."""
    import mpmath

    with mpmath.workdps(50):
        c1m, c2m, qm = mpmath.mpf(c1), mpmath.mpf(c2), mpmath.mpf(q)
        a2, a1, a0 = (1 - qm) * mpmath.exp(c2m), (1 - 2 * qm) * mpmath.exp(c1m + c2m), -qm * mpmath.exp(c1m)
        disc = mpmath.sqrt(a1 * a1 - 4 * a2 * a0)
        root = (-a1 + disc) / (2 * a2) if a1 <= 0 else (-2 * a0) / (a1 + disc)  # no cancellation either way
        return float(mpmath.log(root) / beta)


def root_resolution(c1: float, c2: float, q: float, beta: float, delta: float) -> float:
    """How precisely float64 can locate the root of dL/dδ for L = q·softplus(c1 − βδ) + (1 − q)·softplus(c2 + βδ):
    the derivative carries an absolute rounding error ~β·1e-16, so its root is uncertain by ~1e-16/(β·w) with
    w = q·σ'(c1 − βδ) + (1 − q)·σ'(c2 + βδ) = L''/β². Returned with a safety factor of 100."""
    z1, z2 = c1 - beta * delta, c2 + beta * delta
    w = q * expit(z1) * expit(-z1) + (1 - q) * expit(z2) * expit(-z2)
    return 100 * 2.2e-16 / (beta * max(w, 1e-300))


def branch_offsets(name: str, dref: float, beta: float, **p: float) -> tuple[float, float]:
    """(c1, c2): the logistic offsets of a pair and of its swapped pair (δ_ref → −δ_ref, y_w ↔ y_l) (C8, C10), from
    the loss registry (:meth:`dpocheck.theory.LossSpec.precompute_delta`)."""
    spec = th.get_loss(name)
    if spec.family != "logistic":
        raise ValueError(f"no offsets for loss {name!r}")
    c1 = spec.precompute_delta(dref, beta, **p)["offset"]
    c2 = spec.precompute_delta(-dref, beta, **th.swap_delta_params(p))["offset"]
    return float(c1), float(c2)


def tangent_negative_definite(d: np.ndarray) -> bool:
    """Is the diagonal form Σ d_y·v_y² negative definite on the simplex's tangent space Σ v_y = 0?

    By the inertia of the bordered matrix [[D, 1], [1ᵀ, 0]] (Haynsworth), the number of positive directions on the
    hyperplane is n₊(D) + 1[1ᵀD⁻¹1 < 0] − 1 (D non-singular). So: all d_y < 0 → yes; exactly one
    d_k > 0 → yes iff Σ_y 1/d_y > 0 (two coordinates: v = (t, −t) gives t²(d₁ + d₂)); two or more ≥ 0 → no.
    Unlike an eigen-decomposition of the projected Hessian, this stays exact when some 1/π is ~1e17.
    """
    d = np.asarray(d, dtype=np.float64)
    nonneg = d >= 0
    if not nonneg.any():
        return True
    if nonneg.sum() > 1 or np.any(d == 0):
        return False
    return bool(np.sum(1.0 / d) > 0)
