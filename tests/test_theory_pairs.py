"""Tests of dpocheck.theory.pairs: the pair-level closed forms of C1–C4 and C8, on numpy and torch alike."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy.integrate import quad, solve_ivp
from strategies import betas, finite_floats, pair_arrays

from dpocheck.theory import (
    cpo_margin,
    cpo_paper_stationary_delta,
    delta_opt,
    dpo_gradient_weight,
    dpo_loss,
    escape_time,
    exit_gradient_weight,
    gamma_star,
    gamma_star_pair,
    in_undesirable_space,
    log_cpo_margin,
    log_escape_time,
    log_gamma_star_pair,
    undesirable_space_nonempty,
    violation_margin,
    violation_mask,
)

LOG2 = math.log(2.0)
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tensors have a handful of elements: one torch thread is ~100× faster than two on a busy machine
    (thread hand-off dominates), so use one here and restore the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------- hand-worked numbers


def test_delta_opt_and_violation_margin_by_hand() -> None:
    """δ_ref = −1, Δr* = 2, β = 0.5: δ* = −1 + 2/0.5 = 3; β·δ_ref + Δr* = −0.5 + 2 = 1.5 = β·δ*."""
    assert delta_opt(-1.0, 2.0, 0.5) == pytest.approx(3.0, abs=1e-15)
    assert violation_margin(-1.0, 2.0, 0.5) == pytest.approx(1.5, abs=1e-15)
    assert_allclose(delta_opt([-1.0, 0.0], [2.0, -1.0], 0.5), [3.0, -2.0], rtol=0, atol=1e-15)


def test_violation_mask_by_hand_including_the_boundary() -> None:
    """C2: violated iff β·δ_ref + Δr* ≤ 0.

    (δ_ref, Δr*, β) = (−1, 0.4, 0.5): −0.5 + 0.4 = −0.1 ≤ 0 → violated;
    (−1, 0.4, 0.3): −0.3 + 0.4 = 0.1 > 0 → holds (a larger β makes failure easier);
    (−0.5, 1, 2): 2·(−0.5) + 1 = 0 exactly (π* indifferent) → counted as violated;
    (−0.5, 1 + 2⁻⁴⁰, 2): 2⁻⁴⁰ > 0 → holds; (1, −0.4, 0.5): 0.5 − 0.4 = 0.1 → holds.
    """
    dref = np.array([-1.0, -1.0, -0.5, -0.5, 1.0])
    dr = np.array([0.4, 0.4, 1.0, 1.0 + 2.0**-40, -0.4])
    beta = np.array([0.5, 0.3, 2.0, 2.0, 0.5])
    got = [bool(violation_mask(a, b, c)) for a, b, c in zip(dref, dr, beta, strict=True)]
    assert got == [True, False, True, False, False]
    assert violation_mask(-0.5, 1.0, 2.0).dtype == np.bool_


def test_undesirable_space_by_hand() -> None:
    """C3: U = {δ_ref < δ < 0}. δ_ref = −2: δ = −1 ∈ U; δ = −2 (= δ_ref) ∉ U; δ = 0 ∉ U; δ = −3 ∉ U.
    δ_ref = 1: δ = 0.5 ∉ U (U empty). U ≠ ∅ iff δ_ref < 0: [−1, 0, 1] → [True, False, False]."""
    d = np.array([-1.0, -2.0, 0.0, -3.0, 0.5])
    dref = np.array([-2.0, -2.0, -2.0, -2.0, 1.0])
    assert in_undesirable_space(d, dref).tolist() == [True, False, False, False, False]
    assert undesirable_space_nonempty(np.array([-1.0, 0.0, 1.0])).tolist() == [True, False, False]


def test_gradient_weights_by_hand() -> None:
    """C4: weight β·σ(β(δ_ref − δ)).

    β = 0.3, δ = δ_ref = 1.7: 0.3·σ(0) = 0.15 = β/2.
    β = 1, δ_ref = 0, δ = −log 3: σ(log 3) = 3/(3 + 1) = 0.75; δ = +log 3: σ(−log 3) = 0.25.
    Exit weight, β = 2, δ_ref = −(log 3)/2: 2·σ(2·(−log 3)/2) = 2·σ(−log 3) = 2·0.25 = 0.5.
    """
    assert dpo_gradient_weight(1.7, 1.7, 0.3) == pytest.approx(0.15, rel=1e-15)
    assert_allclose(dpo_gradient_weight(np.array([-math.log(3), math.log(3)]), 0.0, 1.0), [0.75, 0.25], rtol=1e-15)
    assert exit_gradient_weight(-math.log(3) / 2, 2.0) == pytest.approx(0.5, rel=1e-15)


def test_escape_time_by_hand() -> None:
    """C4: T = (a + (e^{βa} − 1)/β)/(2β), a = |δ_ref|.

    β = 1, δ_ref = −1: (1 + e − 1)/2 = e/2 ≈ 1.35914; β = 2, δ_ref = −1: (1 + (e² − 1)/2)/4 = (e² + 1)/8 ≈
    1.04863; δ_ref ≥ 0 (U empty): T = 0. log T for β = 1, δ_ref = −1: log(e/2) = 1 − log 2.
    """
    assert escape_time(-1.0, 1.0) == pytest.approx(math.e / 2, rel=1e-15)
    assert escape_time(-1.0, 2.0) == pytest.approx((math.e**2 + 1) / 8, rel=1e-15)
    assert escape_time(np.array([0.0, 3.0]), 1.0).tolist() == [0.0, 0.0]
    assert log_escape_time(-1.0, 1.0) == pytest.approx(1 - LOG2, rel=1e-15)
    assert log_escape_time(np.array([0.0, 3.0]), 1.0).tolist() == [-math.inf, -math.inf]


def test_log_escape_time_at_extremes_by_hand() -> None:
    """β = 1e4, δ_ref = −1e4 (βa = 1e8): T = (1e4 + (e^{1e8} − 1)/1e4)/2e4, so log T = 1e8 − log 1e4 − log 2e4
    up to e^{−1e8}; β = 1e-4, δ_ref = −1e-3 (βa = 1e-7): expm1(1e-7)/1e-4 = 1e-3 + 5e-11 + …, so
    T = (2e-3 + 5e-11)/2e-4 = 10.00000025 (+1.7e-11)."""
    big = log_escape_time(-1e4, 1e4)
    assert big == pytest.approx(1e8 - math.log(1e4) - math.log(2e4), rel=1e-15)
    assert escape_time(-1e-3, 1e-4) == pytest.approx(10.00000025, rel=1e-11)
    assert log_escape_time(-1e-3, 1e-4) == pytest.approx(math.log(10.00000025), rel=1e-11)


def test_escape_time_matches_the_integral_and_the_gradient_flow() -> None:
    """T = ∫_0^a du / (2β·σ(−βu)) (quadrature), and the tabular gradient flow dz = −∇_z ℓ_DPO from π_ref,
    whose margin obeys dδ/dt = 2β·σ(β(δ_ref − δ)), reaches δ = 0 at time T (ODE solver with an event)."""
    for beta, dref in [(1.0, -1.0), (0.5, -3.0), (3.0, -0.7)]:
        a = -dref
        integral, _ = quad(lambda u, b=beta: (1 + math.exp(b * u)) / (2 * b), 0.0, a, epsabs=0, epsrel=1e-13)
        assert escape_time(dref, beta) == pytest.approx(integral, rel=1e-11)

        def rhs(t, z, b=beta, r=dref):
            g = float(dpo_loss(z[0] - z[1], r, b).grad)  # ∂ℓ/∂δ; ∂δ/∂z_w = 1, ∂δ/∂z_l = −1
            return [-g, g]

        def leave(t, z):
            return z[0] - z[1]

        leave.terminal = True
        leave.direction = 1
        z0 = [dref / 2, -dref / 2]  # any logits with δ = δ_ref
        sol = solve_ivp(rhs, (0, 10 * integral), z0, events=leave, rtol=1e-11, atol=1e-12, method="DOP853")
        assert sol.t_events[0][0] == pytest.approx(integral, rel=1e-8)


def test_escape_time_overflow_is_loud() -> None:
    """β = 1, δ_ref = −1000: e^{1000} overflows float64, so T = +inf WITH a RuntimeWarning pointing to
    log_escape_time, which stays finite: log T = 1000 − log 2 + log(1 + 1000·e^{−1000}) = 1000 − log 2."""
    with pytest.warns(RuntimeWarning, match="log_escape_time"):
        t = escape_time(np.array([-1.0, -1000.0]), 1.0)
    assert t[0] == pytest.approx(math.e / 2) and math.isinf(t[1])
    assert log_escape_time(-1000.0, 1.0) == pytest.approx(1000 - LOG2, rel=1e-15)


def test_cpo_margin_by_hand() -> None:
    """C8: m = γ(1/π_ref(y_w) + 1/π_ref(y_l)).

    γ = 0.5, π_w = 1/2, π_l = 1/4: 0.5·(2 + 4) = 3, log m = log 3. γ = 0: m = 0, log m = −inf (DPO).
    Whole sequences, log π_w = −200, log π_l = −210, γ = 1: log m = logaddexp(200, 210) = 210 + log1p(e^{−10})
    (m ~ e^{210} is finite in float64). Per-token means −2 and −3, γ = 0.1: perplexities e² + e³ ≈ 27.4746,
    m = 2.74746.
    """
    assert log_cpo_margin(math.log(0.5), math.log(0.25), 0.5) == pytest.approx(math.log(3.0), rel=1e-15)
    assert cpo_margin(math.log(0.5), math.log(0.25), 0.5) == pytest.approx(3.0, rel=1e-15)
    assert log_cpo_margin(-1.0, -2.0, 0.0) == -math.inf
    assert cpo_margin(-1.0, -2.0, 0.0) == 0.0
    assert log_cpo_margin(-200.0, -210.0, 1.0) == pytest.approx(210 + math.log1p(math.exp(-10)), rel=1e-15)
    assert cpo_margin(-2.0, -3.0, 0.1) == pytest.approx(0.1 * (math.e**2 + math.e**3), rel=1e-14)


def test_cpo_margin_overflow_names_the_pair() -> None:
    """log π_ref(y_w) = −1e4 makes m ~ e^{1e4}: cpo_margin raises OverflowError naming the pair (index 1)
    instead of returning inf, while log_cpo_margin stays finite:
    log 0.5 + 1e4 + log1p(e^{1−1e4}) = 1e4 − log 2. In torch float32 the limit is log(3.4e38) ≈ 88.7, so
    log m = 100 overflows there too (it fits in float64)."""
    lw = np.array([-1.0, -1e4, -1e4])
    ll = np.array([-1.0, -1.0, -1.0])
    with pytest.raises(OverflowError, match=r"pair \(1,\)"):
        cpo_margin(lw, ll, 0.5)
    assert log_cpo_margin(lw, ll, 0.5)[1] == pytest.approx(1e4 - LOG2, rel=1e-15)
    with pytest.raises(OverflowError, match="log_cpo_margin"):
        cpo_margin(torch.tensor([-100.0]), torch.tensor([-100.0 - 50]), 1.0)
    assert float(cpo_margin(torch.tensor([-50.0], dtype=torch.float64), -60.0, 1.0)) == pytest.approx(
        math.exp(50) + math.exp(60), rel=1e-14
    )


def test_gamma_star_by_hand() -> None:
    """Eq. 27 on examples/bandit.json's context 0, β = 1, π_ref = (0.6, 0.3, 0.1), r* = (0, 1, 0.5).

    Pair (w=2, l=0): δ_ref = log(0.1/0.6) = −log 6, Δr* = 0.5, need = log 6 − 0.5 ≈ 1.29176 > 0,
    1/π_w + 1/π_l = 10 + 5/3 = 35/3, γ*_pair = 3(log 6 − 0.5)/35 ≈ 0.110722.
    Pair (w=1, l=0): δ_ref = −log 2, Δr* = 1, β·δ_ref + Δr* = 0.307 > 0 → γ*_pair = 0 (log: −inf).
    Boundary: β = 2, δ_ref = −0.5, Δr* = 1 → need = 0 → γ*_pair = 0 (γ > 0 = γ* suffices).
    γ* = max = 0.110722.
    """
    dref = np.array([-math.log(6), -LOG2, -0.5])
    dr = np.array([0.5, 1.0, 1.0])
    lw = np.log([0.1, 0.3, 0.5])
    ll = np.log([0.6, 0.6, 0.5])
    expected = 3 * (math.log(6) - 0.5) / 35
    g = gamma_star_pair(dref[:2], dr[:2], 1.0, lw[:2], ll[:2])
    assert_allclose(g, [expected, 0.0], rtol=1e-14, atol=0)
    assert log_gamma_star_pair(dref[1], dr[1], 1.0, lw[1], ll[1]) == -math.inf
    assert gamma_star_pair(dref[2], dr[2], 2.0, lw[2], ll[2]) == 0.0
    assert gamma_star(dref[:2], dr[:2], 1.0, lw[:2], ll[:2]) == pytest.approx(expected, rel=1e-14)
    assert isinstance(gamma_star(dref[:2], dr[:2], 1.0, lw[:2], ll[:2]), float)
    assert gamma_star(np.zeros(0), np.zeros(0), 1.0, np.zeros(0), np.zeros(0)) == 0.0


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("beta", [0.0, -1.0, math.nan, math.inf])
@pytest.mark.parametrize(
    "fn",
    [
        lambda b: delta_opt(0.0, 1.0, b),
        lambda b: violation_mask(0.0, 1.0, b),
        lambda b: dpo_gradient_weight(0.0, 0.0, b),
        lambda b: exit_gradient_weight(-1.0, b),
        lambda b: escape_time(-1.0, b),
        lambda b: log_escape_time(-1.0, b),
        lambda b: gamma_star_pair(-1.0, 0.0, b, -1.0, -1.0),
    ],
)
def test_beta_must_be_positive_and_finite(fn, beta) -> None:
    """β ≤ 0, NaN or inf is rejected with a message naming β (KL-regularised RLHF needs β > 0)."""
    with pytest.raises(ValueError, match="beta must be finite and > 0"):
        fn(beta)


def test_cpo_margin_validation_names_the_field() -> None:
    """γ < 0 or NaN, and NaN/inf log-probs, raise ValueError naming gamma / log_pi_ref_w / log_pi_ref_l."""
    with pytest.raises(ValueError, match="gamma"):
        log_cpo_margin(-1.0, -1.0, -0.1)
    with pytest.raises(ValueError, match="gamma"):
        log_cpo_margin(-1.0, -1.0, math.nan)
    with pytest.raises(ValueError, match=r"log_pi_ref_w must be finite.*position \(1,\)"):
        log_cpo_margin(np.array([-1.0, math.nan]), np.array([-1.0, -1.0]), 0.5)
    with pytest.raises(ValueError, match="log_pi_ref_l must be finite"):
        cpo_margin(-1.0, -math.inf, 0.5)


def test_nan_margins_are_rejected_not_silently_counted() -> None:
    """A NaN δ_ref (e.g. a NaN log-prob from a model) must raise naming the field, not count as a satisfied
    pair: violation_mask(NaN, 1, 1) currently returns False, so violation rates silently exclude broken
    pairs."""
    with pytest.raises(ValueError, match="delta_ref"):
        violation_mask(np.array([-1.0, math.nan]), np.array([1.0, 1.0]), 1.0)


def test_gamma_star_of_no_pairs_is_zero_in_torch() -> None:
    """gamma_star over zero pairs is 0.0 with numpy; the torch path must agree (it calls amax on an empty
    tensor)."""
    z = torch.zeros(0, dtype=torch.float64)
    assert gamma_star(z, z, 1.0, z, z) == 0.0


# ---------------------------------------------------------------- properties


@given(dref=finite_floats(), dr=finite_floats(), beta=betas())
@example(dref=-0.5, dr=1.0, beta=2.0)  # β·δ_ref + Δr* = 0 exactly
@example(dref=1e4, dr=-1e4, beta=1e-4)
@example(dref=-1e4, dr=1e4, beta=1e4)
@example(dref=0.0, dr=0.0, beta=1e-4)
def test_violation_iff_optimum_does_not_prefer_the_winner(dref, dr, beta) -> None:
    """C2 ⇔ C1 fails: violation_mask ⇔ δ* = δ_ref + Δr*/β ≤ 0 ⇔ π*(y_w) ≤ π*(y_l); also β·δ* = margin."""
    mask = bool(violation_mask(dref, dr, beta))
    margin = float(violation_margin(dref, dr, beta))
    dopt = float(delta_opt(dref, dr, beta))
    assert mask == (margin <= 0)
    assert not math.isnan(margin) and not math.isnan(dopt)
    assert margin == pytest.approx(beta * dopt, rel=1e-12, abs=1e-12 * (abs(beta * dref) + abs(dr)))
    if abs(margin) > 1e-9 * (abs(beta * dref) + abs(dr)):
        assert mask == (dopt <= 0)


@given(dref=finite_floats(), t=st.floats(0.01, 0.99), beta=betas())
@example(dref=-1e-6, t=0.01, beta=1e-4)
@example(dref=-1e4, t=0.99, beta=1e4)
@example(dref=0.0, t=0.5, beta=1.0)
def test_u_nonempty_iff_reference_prefers_the_loser(dref, t, beta) -> None:
    """C3: a point δ = (1 − t)·δ_ref strictly between δ_ref and 0 lies in U iff δ_ref < 0, and there the DPO
    loss is below its value log 2 at π_ref (the policy has 'improved' yet still prefers y_l). For δ_ref ≥ 0 no
    δ is in U."""
    d = (1 - t) * dref
    assert bool(undesirable_space_nonempty(dref)) == (dref < 0)
    if dref < 0 and dref < d < 0:
        assert bool(in_undesirable_space(d, dref))
        loss = float(dpo_loss(d, dref, beta).loss)
        if beta * (d - dref) > 1e-12:
            assert loss < LOG2
        else:
            assert loss <= LOG2
    if dref >= 0:
        for probe in (dref - 1.0, dref / 2, -dref, -1e4, 1e4):
            assert not bool(in_undesirable_space(probe, dref))


@given(dref=st.floats(-1e4, -1e-6), s=st.floats(0, 1), t=st.floats(0, 1), beta=betas())
@example(dref=-1.0, s=0.0, t=1.0, beta=1.0)
@example(dref=-1e4, s=0.0, t=1.0, beta=1e4)
def test_gradient_weight_decreases_across_u(dref, s, t, beta) -> None:
    """C4: on U the weight falls from β/2 at δ = δ_ref to β·σ(β·δ_ref) at the exit δ = 0; between two points
    the one closer to 0 has the smaller (or, in floating point, equal) weight, and it is never NaN."""
    lo, hi = sorted((s, t))
    d1, d2 = dref * (1 - lo), dref * (1 - hi)  # d1 ≤ d2 (both in [δ_ref, 0])
    w1 = float(dpo_gradient_weight(d1, dref, beta))
    w2 = float(dpo_gradient_weight(d2, dref, beta))
    assert w1 >= w2 >= 0
    assert float(dpo_gradient_weight(dref, dref, beta)) == pytest.approx(beta / 2, rel=1e-15)
    assert float(exit_gradient_weight(dref, beta)) <= beta / 2
    assert float(exit_gradient_weight(dref, beta)) == pytest.approx(
        float(dpo_gradient_weight(0.0, dref, beta)), rel=1e-15
    )


@given(dref=finite_floats(), dr=finite_floats(), beta=betas())
@example(dref=-1.0, dr=0.5, beta=1.0)
@example(dref=-1e4, dr=-1e4, beta=1e4)
def test_exit_weight_bound_under_violation(dref, dr, beta) -> None:
    """C4: under violation (β·δ_ref ≤ −Δr*) the exit weight β·σ(β·δ_ref) ≤ β·σ(−Δr*) (σ is increasing)."""
    if bool(violation_mask(dref, dr, beta)):
        w = float(exit_gradient_weight(dref, beta))
        bound = beta / (1 + math.exp(dr)) if dr < 700 else 0.0
        assert w <= bound * (1 + 1e-12) + 1e-300


@given(dref=finite_floats(50.0), beta=betas(1e-4, 10.0))
@example(dref=-1e-300, beta=1e-4)
@example(dref=-50.0, beta=10.0)
def test_log_escape_time_is_the_log_of_escape_time(dref, beta) -> None:
    """log_escape_time = log(escape_time) where T is representable (β·|δ_ref| ≤ 500 here), −inf where T =
    0."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning expected in this range
        t = float(escape_time(dref, beta))
    lt = float(log_escape_time(dref, beta))
    if dref >= 0:
        assert t == 0.0 and lt == -math.inf
    elif t > 0:
        assert lt == pytest.approx(math.log(t), rel=1e-12, abs=1e-12)


@given(dref=finite_floats(), beta=betas())
@example(dref=-1e4, beta=1e4)
@example(dref=-1e4, beta=1e-4)
def test_escape_time_extremes_never_nan_and_never_silently_inf(dref, beta) -> None:
    """No NaN anywhere; escape_time is +inf only together with a RuntimeWarning; log_escape_time stays
    finite."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = float(escape_time(dref, beta))
    lt = float(log_escape_time(dref, beta))
    assert not math.isnan(t) and not math.isnan(lt)
    if math.isinf(t):
        assert any("log_escape_time" in str(w.message) for w in caught)
    if dref < 0:
        assert math.isfinite(lt)


@given(arrs=pair_arrays(log_prob_min=-300.0), beta=betas(1e-2, 1e2), bump=st.floats(1e-6, 1.0))
def test_gamma_star_pair_is_the_smallest_gamma_that_leaves_u(arrs, beta, bump) -> None:
    """Thm 4.9 / Eq. 27: with m = γ(1/π_w + 1/π_l), the paper's stationary δ = δ_ref + (Δr* + m)/β is ≥ 0 at γ
    = γ* (= 0 up to rounding on violated pairs) and > 0 for every γ > γ*, and γ* = 0 on pairs that need no
    margin."""
    dref, dr = arrs["delta_ref"], arrs["delta_reward"]
    lw, ll = arrs["log_pi_ref_w"], arrs["log_pi_ref_l"]
    lg = log_gamma_star_pair(dref, dr, beta, lw, ll)
    viol = violation_mask(dref, dr, beta)
    need = -violation_margin(dref, dr, beta)
    assert np.all(np.isneginf(lg) == (need <= 0))
    inv = np.exp(np.logaddexp(-lw, -ll))
    # where γ* itself underflows below the normal floats its value is meaningless: check the others
    normal = np.isneginf(lg) | (lg > math.log(np.finfo(float).tiny) + 40)
    for g_log, g_scale in ((lg, 1.0), (lg + math.log1p(bump), 1.0 + bump)):
        m = np.where(np.isneginf(g_log), 0.0, np.exp(g_log) * inv)
        d = cpo_paper_stationary_delta(dref, dr, beta, m)
        tol = 1e-9 * (np.abs(dref) + np.abs(dr) / beta + m / beta)
        assert np.all(d[viol & normal] >= -tol[viol & normal])
        if g_scale > 1:
            assert np.all(d[(need > 0) & normal] > 0)
    assert gamma_star(dref, dr, beta, lw, ll) == pytest.approx(float(np.max(np.exp(lg))), rel=1e-15)


# ---------------------------------------------------------------- numpy ≡ torch (CPU and CUDA)

PAIR_FUNCTIONS = {
    "delta_opt": lambda a, b: delta_opt(a["delta_ref"], a["delta_reward"], b),
    "violation_margin": lambda a, b: violation_margin(a["delta_ref"], a["delta_reward"], b),
    "violation_mask": lambda a, b: violation_mask(a["delta_ref"], a["delta_reward"], b),
    "in_undesirable_space": lambda a, b: in_undesirable_space(a["delta_policy"], a["delta_ref"]),
    "undesirable_space_nonempty": lambda a, b: undesirable_space_nonempty(a["delta_ref"]),
    "dpo_gradient_weight": lambda a, b: dpo_gradient_weight(a["delta_policy"], a["delta_ref"], b),
    "exit_gradient_weight": lambda a, b: exit_gradient_weight(a["delta_ref"], b),
    "escape_time": lambda a, b: escape_time(a["delta_ref"], b),
    "log_escape_time": lambda a, b: log_escape_time(a["delta_ref"], b),
    "log_cpo_margin": lambda a, b: log_cpo_margin(a["log_pi_ref_w"], a["log_pi_ref_l"], 0.3),
    "cpo_margin": lambda a, b: cpo_margin(a["log_pi_ref_w"], a["log_pi_ref_l"], 0.3),
    "log_gamma_star_pair": lambda a, b: log_gamma_star_pair(
        a["delta_ref"], a["delta_reward"], b, a["log_pi_ref_w"], a["log_pi_ref_l"]
    ),
    "gamma_star_pair": lambda a, b: gamma_star_pair(
        a["delta_ref"], a["delta_reward"], b, a["log_pi_ref_w"], a["log_pi_ref_l"]
    ),
    "gamma_star": lambda a, b: gamma_star(a["delta_ref"], a["delta_reward"], b, a["log_pi_ref_w"], a["log_pi_ref_l"]),
}


def _to_numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@pytest.mark.parametrize("device", DEVICES)
@given(arrs=pair_arrays(delta_bound=20.0, log_prob_min=-300.0), beta=betas(1e-2, 30.0))
def test_numpy_and_torch_agree(device, arrs, beta) -> None:
    """Every pair-level function gives the same numbers for numpy float64 and torch float64 inputs, and
    returns the input's array kind (a torch tensor on the same device; gamma_star returns a Python float)."""
    tarrs = {k: torch.from_numpy(v).to(device) for k, v in arrs.items()}
    for name, fn in PAIR_FUNCTIONS.items():
        ref = fn(arrs, beta)
        got = fn(tarrs, beta)
        if name == "gamma_star":
            assert isinstance(ref, float) and isinstance(got, float)
        else:
            assert isinstance(ref, np.ndarray) and isinstance(got, torch.Tensor), name
            assert got.device.type == device, name
            assert _to_numpy(got).dtype == ref.dtype, name
        assert_allclose(_to_numpy(got), ref, rtol=1e-12, atol=0, err_msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_python_numpy_and_torch_inputs(device) -> None:
    """Python numbers broadcast against a torch tensor and the result follows the tensor: δ* for δ_ref = [−1,
    2] (torch) and scalar Δr* = 1, β = 0.5 is [−1 + 2, 2 + 2] = [1, 4] on the tensor's device."""
    dref = torch.tensor([-1.0, 2.0], dtype=torch.float64, device=device)
    got = delta_opt(dref, 1.0, 0.5)
    assert isinstance(got, torch.Tensor) and got.device.type == device
    assert got.cpu().tolist() == [1.0, 4.0]
    assert exit_gradient_weight(dref, 1.0).device.type == device
