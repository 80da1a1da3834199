"""Where DPOP and DPO + NLL put a pair's margin under the two-sided Bradley–Terry population (dpocheck.theory.
displacement, PAPER §6): closed forms worked by hand, the minimiser of an independent face loss, the interval
statements relative to δ* and U."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import expit

from dpocheck.theory import (
    dpo_nll_alpha_star,
    dpop_delta_star_reachable,
    dpop_stays_at_reference,
    in_undesirable_space,
    population_face_derivative,
    population_face_stationary_delta,
    population_stationary_delta,
)


def two_responses(delta_ref: float, mass: float = 1.0) -> tuple[float, float]:
    """log π_ref(y_w), log π_ref(y_l) with the given δ_ref and π_ref(y_w) + π_ref(y_l) = mass."""
    m = math.log(mass)
    return m - float(np.logaddexp(0.0, -delta_ref)), m - float(np.logaddexp(0.0, delta_ref))


def dpop_face_loss(d: float, rw: float, rl: float, dr: float, beta: float, lam: float) -> float:
    """PAPER §6's DPOP, both BT labels, on the face π(y_w) + π(y_l) = 1 — written here independently."""
    q = expit(dr)
    zf = beta * (rw - rl - d) + beta * lam * max(0.0, rw + np.logaddexp(0.0, -d))
    zr = beta * (d - rw + rl) + beta * lam * max(0.0, rl + np.logaddexp(0.0, d))
    return float(q * np.logaddexp(0.0, zf) + (1 - q) * np.logaddexp(0.0, zr))


def test_dpop_stays_at_the_reference_by_hand() -> None:
    """Two responses, δ_ref = 0, Δr* = log 2 (q = 2/3): the right derivative at δ_ref is (β/2)[(1/3)(1 + λ/2) − 2/3],
    ≥ 0 iff λ ≥ 2 = 2(e^{Δr*} − 1). λ = 2 keeps π_ref (δ = 0 exactly); λ = 1.9 moves a little towards δ* = log 2."""
    rw, rl = two_responses(0.0)
    assert bool(dpop_stays_at_reference(0.0, math.log(2), 2.0))
    assert not bool(dpop_stays_at_reference(0.0, math.log(2), 1.9))
    assert float(population_face_stationary_delta("dpop", rw, rl, math.log(2), 1.0, lam=2.0)) == 0.0
    d = float(population_face_stationary_delta("dpop", rw, rl, math.log(2), 1.0, lam=1.9))
    assert 0.0 < d < 0.05
    # Pal et al.'s λ = 50 keeps π_ref up to |Δr*| = log 26 on δ_ref = 0
    assert bool(dpop_stays_at_reference(0.0, math.log(26) - 1e-9, 50.0))
    assert not bool(dpop_stays_at_reference(0.0, math.log(26) + 1e-9, 50.0))
    assert bool(dpop_stays_at_reference(0.0, -math.log(26) + 1e-9, 50.0))  # mirror image


def test_dpop_reaches_delta_star_when_nothing_must_be_displaced() -> None:
    """The pair holds 0.4 of π_ref's mass, (0.2, 0.2), β = 1, Δr* = 1: π_ref(y_w)·e + π_ref(y_l) = 0.7437 ≤ 1, so δ* = 1
    is reached raising both responses: DPOP's point is δ* exactly, for any λ. With (0.45, 0.45) it is not
    (0.45·e + 0.45 = 1.67): the point falls short of δ*."""
    rw, rl = math.log(0.2), math.log(0.2)
    assert bool(dpop_delta_star_reachable(rw, rl, 1.0, 1.0))
    assert float(population_face_stationary_delta("dpop", rw, rl, 1.0, 1.0, lam=50.0)) == 1.0
    rw, rl = math.log(0.45), math.log(0.45)
    assert not bool(dpop_delta_star_reachable(rw, rl, 1.0, 1.0))
    assert 0.0 < float(population_face_stationary_delta("dpop", rw, rl, 1.0, 1.0, lam=50.0)) < 1.0


def test_dpop_puts_a_pair_into_u_that_dpo_leaves() -> None:
    """δ_ref = −1, Δr* = 2, β = 1, λ = 5 on two responses: δ* = 1 ∉ U (C2 holds), but 5σ(−1) = 1.34 < e² − 1 and the
    DPOP point −0.3702 lies in U = (−1, 0); a violated pair (δ_ref = −1, Δr* = ½: δ* = −½ ∈ U) stays in [δ_ref, δ*]."""
    rw, rl = two_responses(-1.0)
    d = float(population_face_stationary_delta("dpop", rw, rl, 2.0, 1.0, lam=5.0))
    assert d == pytest.approx(-0.3701923, abs=1e-6) and bool(in_undesirable_space(d, -1.0))
    d = float(population_face_stationary_delta("dpop", rw, rl, 0.5, 1.0, lam=5.0))
    assert -1.0 <= d <= -0.5


def test_dpo_nll_by_hand() -> None:
    """β = α = 1, δ_ref = 1, Δr* = 0 (q = ½): dL/dδ = (σ(δ − 1) − ½) + (σ(δ) − ½) vanishes at δ = ½ (σ(−½) + σ(½) = 1),
    halfway between δ* = 1 and Δr* = 0."""
    rw, rl = two_responses(1.0)
    assert float(population_face_stationary_delta("dpo_nll", rw, rl, 0.0, 1.0, alpha=1.0)) == pytest.approx(
        0.5, abs=1e-12
    )


def test_dpo_nll_alpha_star_by_hand() -> None:
    """β = 1, δ_ref = −1, Δr* = ½: δ* = −½ ∈ U. α* = (σ(1) − σ(½))/(σ(½) − ½) = (0.731059 − 0.622459)/0.122459 =
    0.886819: DPO + NLL leaves U exactly from α* on. NaN when Δr* ≤ 0; 0 when δ* ≥ 0 already."""
    a_star = float(dpo_nll_alpha_star(-1.0, 0.5, 1.0))
    assert a_star == pytest.approx((expit(1.0) - expit(0.5)) / (expit(0.5) - 0.5), rel=1e-14)
    assert a_star == pytest.approx(0.886819, abs=1e-6)
    rw, rl = two_responses(-1.0)
    at = float(population_face_stationary_delta("dpo_nll", rw, rl, 0.5, 1.0, alpha=a_star))
    assert at == pytest.approx(0.0, abs=1e-10)
    assert float(population_face_stationary_delta("dpo_nll", rw, rl, 0.5, 1.0, alpha=1.01 * a_star)) > 0
    assert float(population_face_stationary_delta("dpo_nll", rw, rl, 0.5, 1.0, alpha=0.99 * a_star)) < 0
    assert math.isnan(float(dpo_nll_alpha_star(-1.0, -0.5, 1.0))) and float(dpo_nll_alpha_star(1.0, 0.5, 1.0)) == 0.0


def test_delta_only_solver_refuses_the_displacement_losses() -> None:
    with pytest.raises(ValueError, match="population_face_stationary_delta"):
        population_stationary_delta("dpop", 0.0, 1.0, 1.0)


@pytest.mark.parametrize("name", ["dpo", "ipo", "cpo_margin", "released_clip"])
def test_face_solver_agrees_with_the_delta_solver_on_delta_only_losses(name: str) -> None:
    """For losses of δ alone the face changes nothing: the two solvers agree (C5a's stationary points)."""
    rw, rl = math.log(0.3), math.log(0.5)
    params = {"gamma": 0.05} if name == "cpo_margin" else {}
    face = float(population_face_stationary_delta(name, rw, rl, 0.7, 2.0, **params))
    kw = {"margin": 0.05 * (1 / 0.3 + 1 / 0.5)} if name == "cpo_margin" else {}
    assert face == pytest.approx(float(population_stationary_delta(name, rw - rl, 0.7, 2.0, **kw)), abs=1e-9)


DATA = {
    "beta": st.floats(0.05, 10.0),
    "delta_ref": st.floats(-8.0, 8.0),
    "delta_reward": st.floats(-8.0, 8.0),
    "lam": st.floats(0.0, 100.0),
    "mass": st.sampled_from([1.0, 0.6, 0.1]),
}


@given(**DATA)
@example(beta=1.0, delta_ref=0.0, delta_reward=1.0, lam=50.0, mass=1.0)  # stays at δ_ref
@example(beta=1.0, delta_ref=0.0, delta_reward=0.0, lam=50.0, mass=1.0)  # q = ½: δ* = δ_ref
@example(beta=10.0, delta_ref=-8.0, delta_reward=8.0, lam=0.0, mass=1.0)  # λ = 0: DPO's δ*
def test_dpop_point_is_the_face_minimum_between_delta_ref_and_delta_star(beta, delta_ref, delta_reward, lam, mass):
    """The returned δ minimises the independent face loss (no smaller value at δ ± h) and lies in
    [min(δ_ref, δ*), max(δ_ref, δ*)]; the registry-built derivative changes sign across it."""
    rw, rl = two_responses(delta_ref, mass)
    d = float(population_face_stationary_delta("dpop", rw, rl, delta_reward, beta, lam=lam))
    star = delta_ref + delta_reward / beta
    tol = 1e-9 * max(1.0, abs(d))
    assert min(delta_ref, star) - tol <= d <= max(delta_ref, star) + tol
    h = 1e-5 * max(1.0, abs(d))
    f0 = dpop_face_loss(d, rw, rl, delta_reward, beta, lam)
    assert f0 <= dpop_face_loss(d + h, rw, rl, delta_reward, beta, lam) + 1e-12 * max(1.0, f0)
    assert f0 <= dpop_face_loss(d - h, rw, rl, delta_reward, beta, lam) + 1e-12 * max(1.0, f0)
    left = population_face_derivative("dpop", d - h, rw, rl, delta_reward, beta, lam=lam)
    right = population_face_derivative("dpop", d + h, rw, rl, delta_reward, beta, lam=lam)
    assert left <= 1e-9 and right >= -1e-9


@given(beta=DATA["beta"], delta_ref=DATA["delta_ref"], delta_reward=DATA["delta_reward"], alpha=st.floats(0.0, 20.0))
@example(beta=1.0, delta_ref=1.0, delta_reward=0.0, alpha=1.0)
@example(beta=1.0, delta_ref=-1.0, delta_reward=0.5, alpha=0.0)
def test_dpo_nll_point_is_the_root_between_delta_star_and_delta_reward(beta, delta_ref, delta_reward, alpha):
    """The returned δ is brentq's root of β(σ(β(δ − δ_ref)) − q) + α(σ(δ) − q) and lies between δ* and Δr*."""
    rw, rl = two_responses(delta_ref)
    d = float(population_face_stationary_delta("dpo_nll", rw, rl, delta_reward, beta, alpha=alpha))
    q, star = expit(delta_reward), delta_ref + delta_reward / beta

    def deriv(x: float) -> float:
        return beta * (expit(beta * (x - delta_ref)) - q) + alpha * (expit(x) - q)

    lo, hi = min(star, delta_reward), max(star, delta_reward)
    root = brentq(deriv, lo - 1.0, hi + 1.0, xtol=1e-14, rtol=1e-15)
    assert d == pytest.approx(root, abs=1e-8 * max(1.0, abs(root)))
    assert lo - 1e-9 <= d <= hi + 1e-9
