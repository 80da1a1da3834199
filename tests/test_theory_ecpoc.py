"""Tests of dpocheck.theory.ecpoc: the exact E-CPOC solution (C9) — hard constraints δ_π ≥ ε on every pair —
with KKT conditions re-derived and checked independently here, and the single-pair closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy.special import logsumexp
from strategies import bandits, betas, single_pair_bandits

from dpocheck.theory import (
    ECPOCSolution,
    TabularBandit,
    ecpoc_single_pair_closed_form,
    ecpoc_solve,
    policy_delta,
)
from dpocheck.theory.report import default_bandit

LOG2 = math.log(2.0)


def _uniform_two() -> TabularBandit:
    """π_ref = (½, ½), r* = 0, β = 1, one pair (0, w=0, l=1): δ* = 0."""
    return TabularBandit(np.log([[0.5, 0.5]]), [[0.0, 0.0]], 1.0, [[0, 0, 1]])


def _objective(log_pi: np.ndarray, b: TabularBandit) -> float:
    """Σ_x E_π[r*] − β·KL(π‖π_ref), written independently."""
    pi = np.exp(log_pi)
    return float(np.sum(pi * b.reward) - b.beta * np.sum(pi * (log_pi - b.log_pi_ref)))


def check_kkt(b: TabularBandit, sol: ECPOCSolution, epsilon: float, tol: float = 1e-9) -> None:
    """KKT of max Σ_y π r − β·KL s.t. π(w_i) − e^ε·π(l_i) ≥ 0, re-derived here: (1) primal: δ_i ≥ ε;
    (2) dual: λ_i ≥ 0; (3) complementary slackness: λ_i·(δ_i − ε) = 0 (δ-form; equivalent to the π-form as π >
    0); (4) stationarity: log π − log π_ref − (r* + Σ_i λ_i(e_{w_i} − e^ε·e_{l_i}))/β is constant in y on each
    context. For this convex problem with strictly concave objective, KKT ⇔ the unique optimum."""
    p, lam, e = b.pairs, sol.multipliers, math.exp(epsilon)
    assert np.all(np.isfinite(sol.log_pi)) and np.all(np.isfinite(lam))
    assert_allclose(logsumexp(sol.log_pi, axis=1), 0.0, atol=1e-12)
    delta = policy_delta(sol.log_pi, p)
    assert_allclose(sol.delta, delta, rtol=0, atol=1e-12)
    scale = 1 + abs(epsilon)
    assert np.all(delta >= epsilon - tol * scale)
    assert np.all(lam >= 0)
    assert np.all(np.abs(lam * (delta - epsilon)) <= tol * scale * (1 + lam))
    shift = np.zeros_like(b.reward)
    np.add.at(shift, (p[:, 0], p[:, 1]), lam)
    np.add.at(shift, (p[:, 0], p[:, 2]), -e * lam)
    v = sol.log_pi - b.log_pi_ref - (b.reward + shift) / b.beta
    vscale = 1 + np.abs(sol.log_pi).max() + np.abs(b.log_pi_ref).max() + np.abs(b.reward + shift).max() / b.beta
    assert np.all(np.ptp(v, axis=1) <= tol * vscale)
    assert sol.feasible
    assert sol.primal_residual <= tol * scale
    assert sol.objective == pytest.approx(_objective(sol.log_pi, b), rel=1e-12, abs=1e-12)


def test_single_pair_closed_form_by_hand() -> None:
    """_uniform_two, ε = log 2: δ* = 0 < ε, so λ = β(ε − δ*)/(1 + e^ε) = (log 2)/3; log π ∝ (λ, −2λ)/β gives
    δ = 3λ = log 2, i.e. π = (2/3, 1/3). Objective: −KL((2/3, 1/3)‖(½, ½)) = −(2/3·log(4/3) + 1/3·log(2/3)) ≈
    −0.0566."""
    b = _uniform_two()
    log_pi, lam = ecpoc_single_pair_closed_form(b.log_pi_ref[0], b.reward[0], 1.0, 0, 1, LOG2)
    assert lam == pytest.approx(LOG2 / 3, rel=1e-15)
    assert_allclose(np.exp(log_pi), [2 / 3, 1 / 3], rtol=1e-15)
    sol = ecpoc_solve(b, LOG2)
    assert_allclose(sol.multipliers, [LOG2 / 3], rtol=1e-12)
    assert_allclose(np.exp(sol.log_pi), [[2 / 3, 1 / 3]], rtol=1e-12)
    assert sol.delta[0] == pytest.approx(LOG2, rel=1e-12)
    assert sol.objective == pytest.approx(-(2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)), rel=1e-12)
    check_kkt(b, sol, LOG2)


def test_inactive_constraint_leaves_the_rlhf_optimum() -> None:
    """π_ref = (½, ½), r* = (1, 0), β = 1: δ* = 1 ≥ ε = 0.5, so λ = 0 and the solution is
    π* = (e, 1)/(1 + e)."""
    b = TabularBandit(np.log([[0.5, 0.5]]), [[1.0, 0.0]], 1.0, [[0, 0, 1]])
    sol = ecpoc_solve(b, 0.5)
    assert sol.multipliers.tolist() == [0.0]
    assert_allclose(sol.log_pi, b.log_pi_opt(), atol=1e-15)
    _, lam = ecpoc_single_pair_closed_form(b.log_pi_ref[0], b.reward[0], 1.0, 0, 1, 0.5)
    assert lam == 0.0


def test_opposite_pairs_with_zero_epsilon_force_a_tie() -> None:
    """Pairs (0,0,1) and (0,1,0) with ε = 0 force π(0) = π(1). π_ref = (0.2, 0.8), r* = 0, β = 1: the
    KL-closest such policy is (½, ½), with objective −KL = −(½·log(0.5/0.2) + ½·log(0.5/0.8)) = −½·log(1.5625)
    ≈ −0.223144."""
    b = TabularBandit(np.log([[0.2, 0.8]]), [[0.0, 0.0]], 1.0, [[0, 0, 1], [0, 1, 0]])
    sol = ecpoc_solve(b, 0.0)
    assert_allclose(np.exp(sol.log_pi), [[0.5, 0.5]], rtol=1e-12)
    assert sol.objective == pytest.approx(-0.5 * math.log(1.5625), rel=1e-12)
    check_kkt(b, sol, 0.0)


def test_contradictory_constraints_are_reported_infeasible() -> None:
    """A preference cycle 0 ≻ 1 ≻ 2 ≻ 0 with ε = 0.1 needs δ_01 + δ_12 + δ_20 = 0 ≥ 0.3: infeasible, and the
    solver says so (feasible False, primal residual > 0) rather than returning a policy that claims to satisfy
    it."""
    b = TabularBandit(np.log([[0.2, 0.3, 0.5]]), np.zeros((1, 3)), 1.0, [[0, 0, 1], [0, 1, 2], [0, 2, 0]])
    sol = ecpoc_solve(b, 0.1)
    assert not sol.feasible
    assert sol.primal_residual > 0.01


def test_no_pairs_and_bad_epsilon() -> None:
    """Without pairs the solution is π* and trivially feasible; ε must be finite (named in the message)."""
    b = TabularBandit(np.log([[0.2, 0.8]]), [[1.0, 0.0]], 0.5)
    sol = ecpoc_solve(b, 0.3)
    assert_allclose(sol.log_pi, b.log_pi_opt(), atol=0)
    assert sol.feasible and sol.multipliers.shape == (0,)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="epsilon"):
            ecpoc_solve(_uniform_two(), bad)


def test_default_and_example_bandits_satisfy_kkt() -> None:
    """The built-in default bandit (40 pairs, 4 contexts, ~40 % violated) at ε ∈ {0, 0.5}: KKT holds."""
    b = default_bandit()
    for eps in (0.0, 0.5):
        sol = ecpoc_solve(b, eps)
        check_kkt(b, sol, eps)
        assert np.all(sol.delta >= eps - 1e-9)


@given(
    bandit=bandits(max_contexts=3, max_responses=5, beta=betas(0.05, 20.0), max_pairs=8, orientation="dag"),
    epsilon=st.floats(-1.0, 2.0),
)
@example(bandit=_uniform_two(), epsilon=0.0)
@example(bandit=TabularBandit(np.log([[0.2, 0.8]]), [[0.0, 0.0]], 1.0, [[0, 0, 1], [0, 0, 1]]), epsilon=1.0)
def test_ecpoc_solution_is_feasible_and_satisfies_kkt(bandit, epsilon) -> None:
    """C9: for acyclic (always feasible) constraint sets, the solver's policy satisfies every constraint and
    KKT (checked independently), and its objective is at most the unconstrained RLHF optimum's (equal iff λ =
    0)."""
    sol = ecpoc_solve(bandit, epsilon)
    check_kkt(bandit, sol, epsilon)
    best = _objective(bandit.log_pi_opt(), bandit)
    assert sol.objective <= best + 1e-10 * (1 + abs(best))
    if np.all(sol.multipliers == 0):
        assert_allclose(sol.log_pi, bandit.log_pi_opt(), atol=1e-12)


@given(
    bandit=single_pair_bandits(max_contexts=3, max_responses=5, beta=betas(0.05, 20.0)),
    epsilon=st.floats(-1, 2),
)
@example(bandit=_uniform_two(), epsilon=LOG2)
def test_ecpoc_matches_the_single_pair_closed_form(bandit, epsilon) -> None:
    """C9 with one pair per context: the solver equals the closed form λ = [β(ε − δ*)]_+/(1 + e^ε) and
    δ_π = max(δ*, ε) on every context."""
    sol = ecpoc_solve(bandit, epsilon)
    dopt = bandit.delta_opt()
    for i, (x, w, l) in enumerate(bandit.pairs.tolist()):
        log_pi, lam = ecpoc_single_pair_closed_form(bandit.log_pi_ref[x], bandit.reward[x], bandit.beta, w, l, epsilon)
        assert sol.multipliers[i] == pytest.approx(lam, rel=1e-9, abs=1e-12)
        assert_allclose(sol.log_pi[x], log_pi, rtol=1e-10, atol=1e-10)
        assert float(np.diff(log_pi[[l, w]])[0]) == pytest.approx(max(dopt[i], epsilon), rel=1e-10, abs=1e-10)
    check_kkt(bandit, sol, epsilon)
