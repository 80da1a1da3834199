"""Tests of dpocheck.theory.stationary: population Bradley–Terry stationary points of every loss (C5a, C8,
C10) and the exact interior stationary point of the CPO objective (C8, Def. 4.7, Prop. H.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy.special import expit
from strategies import betas, finite_floats, pair_arrays, single_pair_bandits

from dpocheck.theory import (
    TabularBandit,
    cpo_approximation_error,
    cpo_objective_stationary_policy,
    cpo_paper_stationary_delta,
    population_loss_derivative,
    population_stationary_delta,
)
from dpocheck.theory.report import default_bandit

LOG3 = math.log(3.0)
SQRT7 = math.sqrt(7.0)


# ---------------------------------------------------------------- population stationary points (C5a)


def test_population_dpo_closed_form_by_hand() -> None:
    """C5a: the population BT loss of DPO is stationary at δ* = δ_ref + Δr*/β, whatever its sign:
    δ_ref = −1, Δr* = log 3, β = 0.5 → −1 + 2·log 3 ≈ 1.197225; Δr* = −log 3 → −1 − 2·log 3 (wrong order
    kept)."""
    got = population_stationary_delta("dpo", np.array([-1.0, -1.0]), np.array([LOG3, -LOG3]), 0.5)
    assert_allclose(got, [-1 + 2 * LOG3, -1 - 2 * LOG3], rtol=1e-15)


def test_population_ipo_closed_form_by_hand() -> None:
    """IPO: δ = δ_ref + (2q − 1)/(2β), q = σ(Δr*). Δr* = log 3 → q = 3/4, β = 1: δ_ref + (1/2)/2 = δ_ref +
    1/4."""
    assert population_stationary_delta("ipo", 0.3, LOG3, 1.0) == pytest.approx(0.55, rel=1e-15)


def test_population_derivative_by_hand() -> None:
    """DPO at π = π_ref (δ = δ_ref), q = 3/4, β = 1: both orientations have ∂ℓ = −β/2, so
    dL/dδ = q·(−½) − (1 − q)·(−½) = −(2q − 1)/2 = −1/4 (the loss still decreases towards y_w)."""
    assert population_loss_derivative("dpo", 0.2, 0.2, LOG3, 1.0) == pytest.approx(-0.25, rel=1e-15)


def test_population_cpo_margin_by_hand_solved_equation() -> None:
    """C8 margin loss, m = log 2, q = σ(log 3) = 3/4, β = 2, δ_ref = 0.5. With u = δ − δ_ref the stationary
    condition q·σ(m − βu) = (1 − q)·σ(m + βu) becomes, for t = e^{βu} and a = e^m = 2,
    q·a/(t + a) = (1 − q)·a·t/(1 + a·t) ⇔ (1 − q)t² + a(1 − 2q)t − q = 0 ⇔ t²/4 − t − 3/4 = 0 ⇔ t² − 4t − 3 =
    0, t = 2 + √7, so δ = 0.5 + log(2 + √7)/2 ≈ 1.267977. SimPO has the same equation with γ in place of m
    (δ_ref = 0). The paper's formula δ_ref + (Δr* + m)/β = 0.5 + log 6/2 ≈ 1.395880 is NOT this population
    point (it is the FOC of the CPO objective under 1/π ≈ 1/π_ref), and the toolkit keeps the two apart."""
    got = population_stationary_delta("cpo_margin", 0.5, LOG3, 2.0, margin=math.log(2))
    assert float(got) == pytest.approx(0.5 + math.log(2 + SQRT7) / 2, rel=1e-11)
    simpo = population_stationary_delta("simpo", 0.0, LOG3, 2.0, gamma=math.log(2))
    assert float(simpo) == pytest.approx(math.log(2 + SQRT7) / 2, rel=1e-11)
    assert float(cpo_paper_stationary_delta(0.5, LOG3, 2.0, math.log(2))) == pytest.approx(0.5 + math.log(6) / 2)
    zero_margin = population_stationary_delta("cpo_margin", 0.5, LOG3, 2.0, margin=0.0)
    assert float(zero_margin) == pytest.approx(0.5 + LOG3 / 2, rel=1e-11)  # m = 0 is DPO: t = q/(1 − q) = 3


def test_paper_cpo_stationary_delta_by_hand() -> None:
    """C8: δ = δ_ref + (Δr* + m)/β; δ_ref = −1, Δr* = 0.5, β = 0.5, m = 1: −1 + 1.5/0.5 = 2."""
    assert float(cpo_paper_stationary_delta(-1.0, 0.5, 0.5, 1.0)) == pytest.approx(2.0, rel=1e-15)


def test_hinge_population_point_is_not_unique() -> None:
    """The hinge's population loss is flat on an interval: asking for its stationary point raises
    ValueError."""
    with pytest.raises(ValueError, match="hinge"):
        population_stationary_delta("hinge", 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="beta"):
        population_stationary_delta("dpo", 0.0, 1.0, 0.0)


POPULATION_LOSSES = (
    "dpo",
    "ipo",
    "simpo",
    "cpo_margin",
    "released_easy",
    "released_clip",
    "released_adaptive",
)


def _population_params(name: str, a: dict) -> dict:
    if name == "simpo":
        return {"gamma": 0.5}
    if name == "cpo_margin":
        return {"margin": np.exp(np.logaddexp(-a["log_pi_ref_w"], -a["log_pi_ref_l"])) * 0.01}
    if name == "released_easy":
        return {
            "mean_logp_ref_w": a["mean_logp_ref_w"],
            "mean_logp_ref_l": a["mean_logp_ref_l"],
            "gamma": 0.5,
        }
    if name == "released_adaptive":
        return {"gamma": 0.5, "tau": 2.0, "alpha": 1.0}
    return {}


@given(arrs=pair_arrays(delta_bound=20.0, reward_bound=15.0, log_prob_min=-5.0), beta=betas(1e-2, 1e2))
@example(
    arrs={
        k: np.array([v])
        for k, v in dict(
            delta_policy=0.0,
            delta_ref=0.0,
            delta_reward=0.0,
            log_pi_ref_w=-1.0,
            log_pi_ref_l=-1.0,
            mean_logp_ref_w=-1.0,
            mean_logp_ref_l=-1.0,
            len_w=1.0,
            len_l=1.0,
        ).items()
    },
    beta=1.0,
)
def test_population_stationary_point_has_zero_derivative(arrs, beta) -> None:
    """C5a: for every loss with a unique population minimiser, the returned δ is a root of dL/dδ: the
    derivative changes sign from ≤ 0 to ≥ 0 across it, and it is ~0 there. For DPO it is δ* = δ_ref + Δr*/β
    (any sign)."""
    dref, dr = arrs["delta_ref"], arrs["delta_reward"]
    for name in POPULATION_LOSSES:
        params = _population_params(name, arrs)
        d = population_stationary_delta(name, dref, dr, beta, **params)
        h = 1e-7 * np.maximum(1.0, np.abs(d))
        left = population_loss_derivative(name, d - h, dref, dr, beta, **params)
        right = population_loss_derivative(name, d + h, dref, dr, beta, **params)
        assert np.all(left <= 0) and np.all(right >= 0), name
        mid = population_loss_derivative(name, d, dref, dr, beta, **params)
        assert np.all(np.abs(mid) <= np.maximum(np.abs(left), np.abs(right)) + 1e-12), name
    assert_allclose(population_stationary_delta("dpo", dref, dr, beta), dref + dr / beta, rtol=1e-15)


@given(dref=finite_floats(20.0), dr=finite_floats(15.0), beta=betas(1e-2, 1e2), m=st.floats(0, 5))
def test_cpo_margin_population_point_solves_the_hand_equation(dref, dr, beta, m) -> None:
    """The population point of the C8 margin loss solves q·σ(m − βu) = (1 − q)·σ(m + βu), u = δ − δ_ref, whose
    positive root is t = e^{βu} = [−b + sqrt(b² + 4q(1 − q))]/(2(1 − q)) with a = e^m, b = a(1 − 2q)."""
    q, a = expit(dr), math.exp(m)
    b, disc = a * (1 - 2 * q), math.sqrt((a * (1 - 2 * q)) ** 2 + 4 * q * (1 - q))
    # the same root without cancellation when b > 0: t = 2q / (b + sqrt(b² + 4q(1 − q)))
    t = 2 * q / (b + disc) if b > 0 else (-b + disc) / (2 * (1 - q))
    got = float(population_stationary_delta("cpo_margin", dref, dr, beta, margin=m))
    assert got == pytest.approx(dref + math.log(t) / beta, rel=1e-9, abs=1e-9 * (1 + abs(dr) / beta))


# ---------------------------------------------------------------- the CPO objective's stationary point (C8)


def _objective(log_pi: np.ndarray, bandit: TabularBandit, gamma: float, weight: np.ndarray) -> np.ndarray:
    """Per-context E_π[r*] − β·KL(π‖π_ref) + γ·Σ_i w_i·δ_π,i (Def. 4.7), written here independently."""
    pi = np.exp(log_pi)
    val = np.sum(pi * bandit.reward, axis=1) - bandit.beta * np.sum(pi * (log_pi - bandit.log_pi_ref), axis=1)
    p = bandit.pairs
    delta = log_pi[p[:, 0], p[:, 1]] - log_pi[p[:, 0], p[:, 2]]
    np.add.at(val, p[:, 0], gamma * weight * delta)
    return val


def _c_table(bandit: TabularBandit, gamma: float, weight: np.ndarray) -> np.ndarray:
    c = np.zeros_like(bandit.reward)
    p = bandit.pairs
    np.add.at(c, (p[:, 0], p[:, 1]), gamma * weight)
    np.add.at(c, (p[:, 0], p[:, 2]), -gamma * weight)
    return c


def _check_local_maximum(bandit: TabularBandit, gamma: float, sol) -> None:
    """Independent checks on every context with an interior stationary point: (i) Lagrange: ∂J/∂π(y) =
    r(y) − β(log π(y) − log π_ref(y) + 1) + c_y/π(y) is the same for every y; (ii) the Hessian H = diag(h),
    h = −β/π − c/π², is negative definite on the tangent space {v : Σv = 0} (a strict local maximum). For a
    diagonal form on that hyperplane this holds iff every h_y < 0, or exactly one h_y > 0 and Σ_y 1/h_y > 0
    (bordered-Hessian test; e.g. h = (a > 0, b < 0) on v = (t, −t) gives (a + b)t² < 0 ⇔ 1/a + 1/b > 0)."""
    c = _c_table(bandit, gamma, sol.pair_weight)
    for x in np.flatnonzero(sol.exists):
        lp = sol.log_pi[x]
        pi = np.exp(lp)
        assert abs(pi.sum() - 1) < 1e-12
        gradient = bandit.reward[x] - bandit.beta * (lp - bandit.log_pi_ref[x] + 1) + c[x] / pi
        scale = 1 + np.abs(bandit.reward[x]).max() + bandit.beta * (1 + np.abs(lp).max()) + np.abs(c[x] / pi).max()
        assert np.ptp(gradient) <= 1e-9 * scale
        h = -bandit.beta / pi - c[x] / pi**2
        n_pos = int(np.sum(h >= 0))
        assert n_pos == 0 or (n_pos == 1 and np.sum(1.0 / h) > 0), h


def _uniform_two() -> TabularBandit:
    """π_ref = (½, ½), r* = 0, β = 1, one pair (0, w=0, l=1)."""
    return TabularBandit(np.log([[0.5, 0.5]]), [[0.0, 0.0]], 1.0, [[0, 0, 1]])


GAMMA_07 = 0.21 * math.log(7 / 3)  # the γ whose exact stationary policy on _uniform_two is (0.7, 0.3)
LOG73 = math.log(7 / 3)


def test_cpo_objective_stationary_point_by_hand() -> None:
    """Def. 4.7 on _uniform_two: with π = (p, 1 − p) the FOC β(δ − δ_ref) = Δr* + γ(1/p + 1/(1 − p)) reads
    log(p/(1 − p))·p(1 − p) = γ. Choosing p = 0.7: γ = 0.21·log(7/3) ≈ 0.177933. The exact stationary policy
    is (0.7, 0.3), δ = log(7/3); the 1/π_ref approximation gives m = γ(2 + 2) = 0.84·log(7/3) = δ_approx, so
    error = δ_approx − δ_exact = −0.16·log(7/3) ≈ −0.135568 (Prop. H.2); exact margin γ(1/0.7 + 1/0.3) =
    γ/0.21 = log(7/3). (p = 0.7 is on the local-maximum branch: the FOC's left side peaks at p ≈ 0.825.)"""
    b = _uniform_two()
    sol = cpo_objective_stationary_policy(b, GAMMA_07)
    assert sol.exists.tolist() == [True]
    assert_allclose(np.exp(sol.log_pi), [[0.7, 0.3]], rtol=1e-12)
    assert abs(sol.foc_residual[0]) < 1e-12 and sol.pair_weight.tolist() == [1.0]
    err = cpo_approximation_error(b, GAMMA_07)
    assert err["delta_exact"][0] == pytest.approx(LOG73, rel=1e-12)
    assert err["delta_approx"][0] == pytest.approx(0.84 * LOG73, rel=1e-14)
    assert err["error"][0] == pytest.approx(-0.16 * LOG73, rel=1e-10)
    assert err["margin_exact"][0] == pytest.approx(LOG73, rel=1e-12)
    assert err["margin_approx"][0] == pytest.approx(0.84 * LOG73, rel=1e-14)
    assert err["exists"].tolist() == [True]
    _check_local_maximum(b, GAMMA_07, sol)


def test_cpo_objective_is_unbounded_above_so_the_point_is_only_local() -> None:
    """For γ > 0 the objective grows without bound as π(y_l) → 0: at π = (1 − 1e-200, 1e-200) the γ·δ term is
    γ·log(1e200) ≈ 0.178·460.5 ≈ 81.9 while −β·KL ≥ −log 2, far above J at the stationary point
    (−KL((0.7, 0.3)‖(½, ½)) + γ·log(7/3) ≈ −0.0823 + 0.1508 ≈ 0.0685)."""
    gamma = GAMMA_07
    b = _uniform_two()
    sol = cpo_objective_stationary_policy(b, gamma)
    j_stat = _objective(sol.log_pi, b, gamma, sol.pair_weight)[0]
    far = np.array([[math.log1p(-1e-200), math.log(1e-200)]])
    assert j_stat == pytest.approx(-(0.7 * math.log(1.4) + 0.3 * math.log(0.6)) + gamma * LOG73, rel=1e-12)
    assert _objective(far, b, gamma, sol.pair_weight)[0] > j_stat + 80


def test_cpo_objective_without_interior_point() -> None:
    """On _uniform_two the FOC needs γ = p(1 − p)·log(p/(1 − p)), whose maximum over p ∈ (½, 1) is ≈ 0.2239
    (p ≈ 0.825); for γ = 0.25 there is no interior stationary point, and the function says so (exists False,
    NaN row)."""
    sol = cpo_objective_stationary_policy(_uniform_two(), 0.25)
    assert sol.exists.tolist() == [False] and np.all(np.isnan(sol.log_pi))


def test_cpo_objective_gamma_zero_is_the_rlhf_optimum_and_weights() -> None:
    """γ = 0 gives π* (C1). A context holding the same pair twice: weighting 'mean' (weight ½ each) equals one
    pair with γ; weighting 'sum' (weight 1 each) equals one pair with 2γ. Bad arguments are rejected by
    name."""
    b = TabularBandit(np.log([[0.2, 0.3, 0.5]]), [[1.0, 0.0, -0.5]], 0.7, [[0, 0, 2], [0, 1, 0]])
    assert_allclose(cpo_objective_stationary_policy(b, 0.0).log_pi, b.log_pi_opt(), atol=1e-12)
    one = TabularBandit(np.log([[0.2, 0.3, 0.5]]), [[1.0, 0.0, -0.5]], 0.7, [[0, 0, 2]])
    two = TabularBandit(np.log([[0.2, 0.3, 0.5]]), [[1.0, 0.0, -0.5]], 0.7, [[0, 0, 2], [0, 0, 2]])
    g = 0.01
    mean = cpo_objective_stationary_policy(two, g, weighting="mean")
    assert mean.pair_weight.tolist() == [0.5, 0.5]
    assert_allclose(mean.log_pi, cpo_objective_stationary_policy(one, g).log_pi, atol=1e-12)
    summed = cpo_objective_stationary_policy(two, g, weighting="sum")
    assert_allclose(summed.log_pi, cpo_objective_stationary_policy(one, 2 * g).log_pi, atol=1e-12)
    with pytest.raises(ValueError, match="weighting"):
        cpo_objective_stationary_policy(one, g, weighting="max")
    with pytest.raises(ValueError, match="gamma"):
        cpo_objective_stationary_policy(one, -0.1)


def test_cpo_objective_answers_at_the_edge_of_the_branch() -> None:
    """Regression for theory bug T1a (ArithmeticError 'no root on the increasing branch' when ν = ν_max rounds
    badly): _uniform_two with γ = 0.3 (no interior point, like γ = 0.25 above) and the built-in default bandit
    with γ = 0.01 (`dpocheck tabular - --gamma 0.01`) must return an answer."""
    assert cpo_objective_stationary_policy(_uniform_two(), 0.3).exists.tolist() == [False]
    sol = cpo_objective_stationary_policy(default_bandit(), 0.01)
    assert np.any(sol.exists)
    _check_local_maximum(default_bandit(), 0.01, sol)


def test_cpo_objective_answers_for_tiny_gamma() -> None:
    """π_ref = (½, ½), r* = (3, 0), β = 0.05, pair (w=0, l=1): π*(y_l) = 1/(1 + e^{60}) ≈ 8.8e-27.

    The loser's coordinate has an increasing (local-maximum) branch only for π(y_l) > γ/β. With γ = 1e-12,
    γ/β = 2e-11 ≫ π*(y_l): the γ·log π(y_l) term dominates near π*, so there is no interior stationary point near
    π* (exists = False, answered without a root-finding error — this once raised in brentq). With γ = 1e-30,
    γ/β = 2e-29 ≪ π*(y_l): the stationary point exists and equals π* to ~γ/(β·π*(y_l)) ≈ 2e-3 relative in π(y_l).
    """
    b = TabularBandit(np.log([[0.5, 0.5]]), [[3.0, 0.0]], 0.05, [[0, 0, 1]])
    assert cpo_objective_stationary_policy(b, 1e-12).exists.tolist() == [False]
    sol = cpo_objective_stationary_policy(b, 1e-30)
    assert sol.exists.tolist() == [True]
    assert_allclose(sol.log_pi, b.log_pi_opt(), rtol=1e-2, atol=1e-12)
    assert abs(sol.foc_residual[0]) < 1e-12


CPO_BANDITS = single_pair_bandits(max_contexts=3, max_responses=4, beta=betas(0.05, 20.0))


@given(bandit=CPO_BANDITS, frac=st.floats(0, 0.1))
@example(bandit=_uniform_two(), frac=0.05)
def test_cpo_objective_stationary_point_solves_its_foc_and_is_a_local_max(bandit, frac) -> None:
    """C8: with γ = frac·β·min π* (small enough for an interior point near π*), every context has an interior
    stationary point; for single-pair contexts the pair FOC β(δ − δ_ref) = Δr* + γ(1/π(y_w) + 1/π(y_l)) holds
    (foc_residual ~ 0), the Lagrange condition holds and the Hessian on the simplex is negative definite.
    test_cpo_objective_answers_for_tiny_gamma pins the tiny-γ edge (formerly a brentq sign failure)."""
    gamma = float(frac * bandit.beta * np.exp(bandit.log_pi_opt()).min())
    sol = cpo_objective_stationary_policy(bandit, gamma)
    assert np.all(sol.exists)
    scale = 1 + np.abs(bandit.delta_reward()) + bandit.beta * np.abs(bandit.delta_ref())
    assert np.all(np.abs(sol.foc_residual) <= 1e-8 * scale)
    _check_local_maximum(bandit, gamma, sol)
