"""Tests of the pair-level likelihood-displacement quantities (PAPER §6; Razin et al. 2024, arXiv 2410.08847):
``logp_shift``, ``likelihood_displaced``, ``both_likelihoods_fell`` and CHES, on numpy and torch alike.

Invariants: hand-worked values (the boundary Δ_w = 0 is not displaced); the identity δ_θ − δ_ref = Δ_w − Δ_l;
U (C3) and displacement are independent (each of the four cells has an example, and for every pair in or out of U
both signs of Δ_w are reachable without changing δ_θ); displaced while δ_θ > δ_ref implies both fell.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from strategies import finite_floats, log_probs

from dpocheck.theory import (
    both_likelihoods_fell,
    centered_hidden_embedding_similarity,
    in_undesirable_space,
    likelihood_displaced,
    logp_shift,
)


def test_shift_and_flags_by_hand() -> None:
    """Δ = log π_θ − log π_ref: (−10, −12) → 2, (−5, −3) → −2, (−4, −4) → 0 (not displaced: Δ_w < 0 strictly)."""
    pol = np.array([-10.0, -5.0, -4.0])
    ref = np.array([-12.0, -3.0, -4.0])
    assert logp_shift(pol, ref).tolist() == [2.0, -2.0, 0.0]
    assert likelihood_displaced(pol, ref).tolist() == [False, True, False]
    # both fell: Δ_w = −2 and Δ_l ∈ {−1, 0, 1}
    assert both_likelihoods_fell(-5.0, -3.0, np.array([-7.0, -6.0, -5.0]), -6.0).tolist() == [True, False, False]


# (ref_w, ref_l, pol_w, pol_l) → (in U, displaced); δ_ref = ref_w − ref_l, δ_θ = pol_w − pol_l
FOUR_CELLS = {
    "in U and displaced": ((-10.0, -8.0, -11.0, -10.0), (True, True)),  # δ_ref −2, δ_θ −1, Δ_w −1, Δ_l −2
    "in U, not displaced": ((-10.0, -8.0, -9.0, -8.0), (True, False)),  # δ_ref −2, δ_θ −1, Δ_w +1, Δ_l 0
    "displaced outside U": ((-10.0, -11.0, -11.0, -14.0), (False, True)),  # δ_ref 1, δ_θ 3, Δ_w −1, Δ_l −3
    "neither": ((-10.0, -11.0, -9.0, -12.0), (False, False)),  # δ_ref 1, δ_θ 3, Δ_w +1, Δ_l −1
}


@pytest.mark.parametrize("cell", FOUR_CELLS)
def test_each_cell_of_u_by_displacement_has_an_example(cell: str) -> None:
    (rw, rl, pw, pl), expected = FOUR_CELLS[cell]
    got = (bool(in_undesirable_space(pw - pl, rw - rl)), bool(likelihood_displaced(pw, rw)))
    assert got == expected


@given(log_probs(-200.0), log_probs(-200.0), log_probs(-200.0), log_probs(-200.0))
@example(-1.0, -1.0, -1.0, -1.0)  # π_θ = π_ref: no shift, nothing displaced
def test_margin_shift_is_the_difference_of_the_two_shifts(pw: float, rw: float, pl: float, rl: float) -> None:
    """δ_θ − δ_ref = Δ_w − Δ_l (PAPER §6, ours): every loss of δ_θ − δ_ref is blind to the sign of Δ_w."""
    lhs = (pw - pl) - (rw - rl)
    rhs = logp_shift(pw, rw) - logp_shift(pl, rl)
    assert float(rhs) == pytest.approx(lhs, abs=1e-12 * (1 + abs(pw) + abs(rw) + abs(pl) + abs(rl)))


QUARTERS = st.integers(-80, 80).map(lambda k: k / 4)  # dyadic: every sum below is exact in float64


@given(QUARTERS, QUARTERS, QUARTERS, st.integers(-400, -200).map(lambda k: k / 4))
@example(-2.0, -1.0, 0.0, -60.0)  # in U, Δ_w = 0 exactly: not displaced
@example(1.0, 3.0, -0.25, -60.0)  # outside U, displaced
def test_u_and_displacement_are_independent(delta_ref: float, delta_theta: float, s: float, ref_w: float) -> None:
    """For any (δ_ref, δ_θ), Δ_w = s is free (Δ_l = s − (δ_θ − δ_ref)): U membership stays, displacement is s < 0."""
    ref_l = ref_w - delta_ref
    pol_w = ref_w + s
    pol_l = pol_w - delta_theta
    assert bool(in_undesirable_space(pol_w - pol_l, ref_w - ref_l)) == bool(
        in_undesirable_space(delta_theta, delta_ref)
    )
    assert bool(likelihood_displaced(pol_w, ref_w)) == (s < 0)


@given(log_probs(-100.0), log_probs(-100.0), log_probs(-100.0), log_probs(-100.0))
@example(-10.0, -9.0, -13.0, -11.0)  # Δ_w −1, Δ_l −2: displaced, δ_θ > δ_ref, both fell
def test_displaced_with_the_dpo_loss_below_log2_means_both_fell(pw: float, rw: float, pl: float, rl: float) -> None:
    """Δ_w < 0 and δ_θ > δ_ref ⇒ Δ_l < Δ_w < 0: the rejected response fell further (PAPER §6)."""
    if bool(likelihood_displaced(pw, rw)) and (pw - pl) > (rw - rl):
        assert bool(both_likelihoods_fell(pw, rw, pl, rl))


def test_ches_by_hand_from_token_hidden_states() -> None:
    """h_k of y_w: (1, 0), (0, 1) → Σ = (1, 1); of y_l: (1, 1), (1, 0), (2, −1) → Σ = (4, 0).
    CHES = ⟨(1, 1), (4, 0)⟩ − ‖(1, 1)‖² = 4 − 2 = 2. Means: (½, ½), (4/3, 0): 2/3 − ½ = 1/6."""
    hw = np.array([[1.0, 0.0], [0.0, 1.0]])
    hl = np.array([[1.0, 1.0], [1.0, 0.0], [2.0, -1.0]])
    assert centered_hidden_embedding_similarity(hw.sum(0), hl.sum(0)) == pytest.approx(2.0, abs=1e-15)
    assert centered_hidden_embedding_similarity(hw.mean(0), hl.mean(0)) == pytest.approx(1 / 6, abs=1e-15)
    # batched over pairs, last axis the hidden dimension; h_l = h_w gives 0
    got = centered_hidden_embedding_similarity(np.array([[1.0, 1.0], [3.0, 4.0]]), np.array([[4.0, 0.0], [3.0, 4.0]]))
    assert_allclose(got, [2.0, 0.0], rtol=0, atol=1e-15)


@given(st.lists(finite_floats(10.0), min_size=6, max_size=6))
def test_ches_equals_the_definition_and_torch_equals_numpy(v: list[float]) -> None:
    """⟨h_w, h_l − h_w⟩ = ⟨h_w, h_l⟩ − ‖h_w‖² (Razin et al.'s definition), numpy and torch alike."""
    hw, hl = np.array(v[:3]), np.array(v[3:])
    want = float(hw @ hl - hw @ hw)
    got = centered_hidden_embedding_similarity(hw, hl)
    assert float(got) == pytest.approx(want, abs=1e-12 * (1 + float(hw @ hw) + abs(float(hw @ hl))))
    t = centered_hidden_embedding_similarity(torch.tensor(hw), torch.tensor(hl))
    assert isinstance(t, torch.Tensor) and float(t) == pytest.approx(float(got), abs=1e-12)


def test_torch_flags_equal_numpy_flags() -> None:
    pol_w, ref_w = np.array([-3.0, -1.0, -2.0]), np.array([-2.0, -2.0, -2.0])
    pol_l, ref_l = np.array([-5.0, -1.0, -3.0]), np.array([-4.0, -2.0, -2.0])
    want = both_likelihoods_fell(pol_w, ref_w, pol_l, ref_l)
    got = both_likelihoods_fell(*(torch.tensor(a) for a in (pol_w, ref_w, pol_l, ref_l)))
    assert got.tolist() == want.tolist() == [True, False, False]


def test_non_finite_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="policy_logp"):
        logp_shift(np.array([np.nan]), np.array([-1.0]))
    with pytest.raises(ValueError, match="hidden_l"):
        centered_hidden_embedding_similarity(np.ones(2), np.array([1.0, np.inf]))
