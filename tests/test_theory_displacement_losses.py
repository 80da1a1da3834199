"""DPOP (Pal et al. 2024) and DPO + NLL (Pang et al. 2024), PAPER §6: hand-worked values, both partial derivatives
against autograd (numpy and torch), DPOP's kink, the reductions λ = 0 / α = 0 to DPO, the two log-prob conventions,
the registry's API (apply with policy_logp_w, precompute keys, ReferencePairs.tokens_w) and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from strategies import betas, finite_floats, log_probs

from dpocheck.theory import (
    ReferencePairs,
    dpo_loss,
    dpo_nll_loss,
    dpop_loss,
    dpop_penalty,
    get_loss,
    loss_and_grad,
    tabular_logit_gradient,
)

LOG2, LOG3 = math.log(2.0), math.log(3.0)


# ---------------------------------------------------------------------------------------------- hand-worked


def test_dpop_by_hand() -> None:
    """β = 1, δ_θ = δ_ref = 0, λ = 1, log π_ref(y_w) = log ½.

    Displaced, π_θ(y_w) = ¼: P = log ½ − log ¼ = log 2, z = 0 + β·λ·P = log 2: ℓ = softplus(log 2) = log 3,
    ∂ℓ/∂δ = −β·σ(log 2) = −2/3, ∂ℓ/∂log π(y_w) = −β·λ·σ(log 2) = −2/3.
    Not displaced, π_θ(y_w) = ¾: P = 0, ℓ = log 2, ∂ℓ/∂δ = −½, ∂ℓ/∂log π(y_w) = 0 (DPO).
    The kink, π_θ(y_w) = ½: P = 0, ℓ = log 2, ∂ℓ/∂log π(y_w) = 0 (one-sided from the non-displaced side).
    """
    lw = np.log(np.array([0.25, 0.75, 0.5]))
    out = dpop_loss(np.zeros(3), 0.0, 1.0, lw, math.log(0.5), lam=1.0)
    assert_allclose(out.loss, [LOG3, LOG2, LOG2], rtol=1e-15)
    assert_allclose(out.grad, [-2 / 3, -0.5, -0.5], rtol=1e-15)
    assert_allclose(out.grad_logp_w, [-2 / 3, 0.0, 0.0], rtol=1e-15, atol=0)
    assert_allclose(dpop_penalty(lw, math.log(0.5)), [LOG2, 0.0, 0.0], rtol=1e-15, atol=0)


def test_dpo_nll_by_hand_in_both_conventions() -> None:
    """β = 1, δ_ref = 0, δ_θ = log 3, α = 1: DPO part log(1 + 1/3) = log(4/3), ∂ℓ/∂δ = −σ(−log 3) = −¼.
    y_w has 2 tokens of log-prob −1 each. Summed: log π(y_w) = −2, tokens_w = 2 → NLL α·2/2 = 1, ∂ℓ/∂log π = −½.
    Per-token mean: log π̄(y_w) = −1, tokens_w = 1 → NLL 1, ∂ℓ/∂log π̄ = −1. Both: ℓ = log(4/3) + 1."""
    summed = dpo_nll_loss(math.log(3), 0.0, 1.0, -2.0, alpha=1.0, tokens_w=2)
    mean = dpo_nll_loss(math.log(3), 0.0, 1.0, -1.0, alpha=1.0, tokens_w=1)
    for out in (summed, mean):
        assert out.loss == pytest.approx(math.log(4 / 3) + 1.0, rel=1e-15)
        assert out.grad == pytest.approx(-0.25, rel=1e-15)
    assert summed.grad_logp_w == -0.5 and mean.grad_logp_w == -1.0


def test_registry_precompute_keys_and_values() -> None:
    """precompute: dpop → offset β·δ_ref, ref_logp_w, penalty_weight β·λ; dpo_nll → offset, nll_weight α/tokens_w.
    β = 2, log π_ref = (−1, −2) (δ_ref = 1), λ = 3, α = 0.5, |y_w| = 4: offset 2, penalty 6, NLL weight 1/8."""
    ref = ReferencePairs(np.array([-1.0]), np.array([-2.0]), tokens_w=np.array([4]), tokens_l=np.array([9]))
    pre = get_loss("dpop").precompute(ref, 2.0, lam=3.0)
    assert set(pre) == {"offset", "ref_logp_w", "penalty_weight"}
    assert pre["offset"][0] == 2.0 and pre["ref_logp_w"][0] == -1.0 and pre["penalty_weight"] == 6.0
    pre = get_loss("dpo_nll").precompute(ref, 2.0, alpha=0.5)
    assert set(pre) == {"offset", "nll_weight"} and pre["nll_weight"][0] == 0.125
    # the swapped pair's chosen response is y_l: its own reference log-prob and token count
    sw = get_loss("dpo_nll").precompute(ref.swapped(), 2.0, alpha=0.5)
    assert sw["offset"][0] == -2.0 and sw["nll_weight"][0] == pytest.approx(0.5 / 9, rel=1e-15)
    assert get_loss("dpop").precompute(ref.swapped(), 2.0)["ref_logp_w"][0] == -2.0


# ---------------------------------------------------------------------------------------------- errors


def test_apply_needs_the_policy_chosen_log_prob() -> None:
    """dpop and dpo_nll refuse to run without policy_logp_w, naming it; the other losses ignore it."""
    ref = ReferencePairs.single_token(np.array([-1.0]), np.array([-2.0]))
    for name in ("dpop", "dpo_nll"):
        spec = get_loss(name)
        assert spec.needs_policy_chosen
        with pytest.raises(ValueError, match="policy_logp_w"):
            spec.loss_and_grad(np.array([0.0]), ref, 1.0)
        with pytest.raises(ValueError, match="policy_logp_w"):
            loss_and_grad(name, 0.0, 1.0, 1.0, **({"ref_logp_w": -1.0} if name == "dpop" else {"tokens_w": 1}))
    a = get_loss("dpo").loss_and_grad(np.array([0.3]), ref, 1.0, policy_logp_w=np.array([-5.0]))
    b = get_loss("dpo").loss_and_grad(np.array([0.3]), ref, 1.0)
    assert a == b and a.grad_logp_w is None


def test_bad_parameters_and_inputs_are_rejected() -> None:
    """λ < 0, α < 0, β ≤ 0, non-finite λ/α/reference log-probs, token counts < 1 or missing: ValueError naming them."""
    with pytest.raises(ValueError, match="lam"):
        dpop_loss(0.0, 0.0, 1.0, -1.0, -1.0, lam=-0.5)
    with pytest.raises(ValueError, match="lam"):
        dpop_loss(0.0, 0.0, 1.0, -1.0, -1.0, lam=math.inf)
    with pytest.raises(ValueError, match="ref_logp_w must be finite"):
        dpop_loss(0.0, 0.0, 1.0, -1.0, math.nan)
    with pytest.raises(ValueError, match="beta"):
        dpop_loss(0.0, 0.0, 0.0, -1.0, -1.0)
    with pytest.raises(ValueError, match="alpha"):
        dpo_nll_loss(0.0, 0.0, 1.0, -1.0, alpha=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        dpo_nll_loss(0.0, 0.0, 1.0, -1.0, alpha=math.nan)
    with pytest.raises(ValueError, match="tokens_w"):
        dpo_nll_loss(0.0, 0.0, 1.0, -1.0, tokens_w=0)
    with pytest.raises(ValueError, match="beta"):
        dpo_nll_loss(0.0, 0.0, -1.0, -1.0)
    no_tokens = ReferencePairs(np.array([-1.0]), np.array([-2.0]))
    with pytest.raises(ValueError, match="tokens_w.*summed.*per-token"):
        get_loss("dpo_nll").precompute(no_tokens, 1.0)
    with pytest.raises(ValueError, match="ref_logp_w must be finite"):
        get_loss("dpop").precompute(ReferencePairs(np.array([-np.inf]), np.array([-2.0])), 1.0)
    with pytest.raises(ValueError, match="ref_logp_w"):
        loss_and_grad("dpop", 0.0, 0.0, 1.0, policy_logp_w=-1.0)
    with pytest.raises(TypeError, match="gamma"):
        get_loss("dpop").resolve(gamma=1.0)


# ---------------------------------------------------------------------------------------------- autograd


def _reference(name: str, d, dref, beta, lw, rw, lam, alpha, n):
    """PAPER §6 written in torch, independently of dpocheck.theory.losses."""
    if name == "dpop":
        return -F.logsigmoid(beta * ((d - dref) - lam * torch.relu(rw - lw)))
    return -F.logsigmoid(beta * (d - dref)) - alpha * lw / n


@given(
    d=finite_floats(100.0),
    dref=finite_floats(100.0),
    beta=betas(1e-3, 1e3),
    lw=log_probs(-300.0),
    rw=log_probs(-300.0),
    lam=st.floats(0.0, 200.0),
    alpha=st.floats(0.0, 10.0),
    n=st.integers(1, 1000),
)
@example(d=0.0, dref=0.0, beta=1.0, lw=-1.0, rw=-1.0, lam=50.0, alpha=1.0, n=1)  # the kink Δ_w = 0
@example(d=0.0, dref=0.0, beta=1.0, lw=-2.0, rw=-1.0, lam=0.0, alpha=0.0, n=1)  # λ = α = 0 on a displaced pair
@example(d=-1.0, dref=1.0, beta=1e3, lw=-300.0, rw=0.0, lam=200.0, alpha=10.0, n=1000)  # huge β, huge penalty
@example(d=100.0, dref=-100.0, beta=1e3, lw=0.0, rw=-300.0, lam=200.0, alpha=10.0, n=1)  # σ underflows
def test_both_derivatives_match_autograd(d, dref, beta, lw, rw, lam, alpha, n) -> None:
    """∂ℓ/∂δ_θ (fixed log π(y_w)) and ∂ℓ/∂log π_θ(y_w) (fixed δ_θ) equal torch autograd of the formula, for numpy and
    torch inputs, finite everywhere; at the kink torch.relu's derivative is 0, the registry's convention too."""
    scale = 1.0 + beta * (abs(d) + abs(dref)) * (1.0 + lam) + beta * lam * abs(rw - lw) + alpha * abs(lw)
    for name in ("dpop", "dpo_nll"):
        td = torch.tensor([d], dtype=torch.float64, requires_grad=True)
        tw = torch.tensor([lw], dtype=torch.float64, requires_grad=True)
        want = _reference(name, td, dref, beta, tw, rw, lam, alpha, n)
        gd, gw = torch.autograd.grad(want.sum(), (td, tw))
        if name == "dpop":
            outs = [dpop_loss(np.array([d]), dref, beta, np.array([lw]), rw, lam=lam)]
            outs.append(dpop_loss(td.detach(), dref, beta, tw.detach(), rw, lam=lam))
        else:
            outs = [dpo_nll_loss(np.array([d]), dref, beta, np.array([lw]), alpha=alpha, tokens_w=n)]
            outs.append(dpo_nll_loss(td.detach(), dref, beta, tw.detach(), alpha=alpha, tokens_w=n))
        for out in outs:
            for got, ref in ((out.loss, want.detach()), (out.grad, gd), (out.grad_logp_w, gw)):
                got = np.asarray(got.detach() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
                assert np.all(np.isfinite(got)), name
                assert_allclose(got, ref.numpy(), rtol=1e-12, atol=1e-14 * scale, err_msg=name)
        # autograd through the library's own torch path gives the same numbers (what the LLM trainer uses)
        td2 = torch.tensor([d], dtype=torch.float64, requires_grad=True)
        tw2 = torch.tensor([lw], dtype=torch.float64, requires_grad=True)
        lib = loss_and_grad(
            name,
            td2,
            dref,
            beta,
            policy_logp_w=tw2,
            **({"ref_logp_w": rw, "lam": lam} if name == "dpop" else {"tokens_w": n, "alpha": alpha}),
        )
        ad, aw = torch.autograd.grad(lib.loss.sum(), (td2, tw2))
        assert_allclose(ad.numpy(), lib.grad.detach().numpy(), rtol=1e-12, atol=1e-14 * scale, err_msg=name)
        assert_allclose(aw.numpy(), lib.grad_logp_w.detach().numpy(), rtol=1e-12, atol=1e-14 * scale, err_msg=name)


def test_kink_is_one_sided_from_the_non_displaced_side() -> None:
    """At Δ_w = 0, ∂ℓ/∂log π(y_w) = 0 (the right derivative); just below, −β·λ·σ(z) (the left one), just above, 0."""
    rw, eps = -1.0, 1e-9
    out = dpop_loss(np.zeros(3), 0.0, 2.0, np.array([rw - eps, rw, rw + eps]), rw, lam=5.0)
    assert out.grad_logp_w[1] == 0.0 and out.grad_logp_w[2] == 0.0
    assert out.grad_logp_w[0] == pytest.approx(-2.0 * 5.0 * 0.5, rel=1e-7)  # z ≈ 0: σ = ½


@given(d=finite_floats(50.0), dref=finite_floats(50.0), beta=betas(1e-2, 1e2), lw=log_probs(-50.0), rw=log_probs(-50.0))
@example(d=0.0, dref=0.0, beta=1.0, lw=-1.0, rw=-1.0)
@example(d=3.0, dref=-2.0, beta=1e2, lw=-50.0, rw=0.0)
def test_lambda_zero_and_alpha_zero_are_dpo_exactly(d, dref, beta, lw, rw) -> None:
    """PAPER §6: λ = 0 and α = 0 give DPO's loss and ∂ℓ/∂δ bit for bit, and ∂ℓ/∂log π(y_w) = 0."""
    want = dpo_loss(np.array([d]), dref, beta)
    for out in (
        dpop_loss(np.array([d]), dref, beta, np.array([lw]), rw, lam=0.0),
        dpo_nll_loss(np.array([d]), dref, beta, np.array([lw]), alpha=0.0, tokens_w=3),
    ):
        assert np.array_equal(out.loss, want.loss) and np.array_equal(out.grad, want.grad)
        assert np.all(out.grad_logp_w == 0.0)


@given(d=finite_floats(50.0), dref=finite_floats(50.0), beta=betas(1e-2, 1e2), lw=log_probs(-50.0), rw=log_probs(-50.0))
def test_dpop_is_dpo_unless_displaced(d, dref, beta, lw, rw) -> None:
    """PAPER §6 [ours]: Δ_w ≥ 0 → DPOP = DPO exactly; Δ_w < 0 → DPOP ≥ DPO and its gradient weight ≥ DPO's."""
    dpop = dpop_loss(np.array([d]), dref, beta, np.array([lw]), rw, lam=50.0)
    dpo = dpo_loss(np.array([d]), dref, beta)
    if lw >= rw:
        assert np.array_equal(dpop.loss, dpo.loss) and np.array_equal(dpop.grad, dpo.grad)
    else:
        assert dpop.loss[0] >= dpo.loss[0] and dpop.grad[0] <= dpo.grad[0]


def test_tabular_logit_gradient_with_the_chosen_term_by_hand() -> None:
    """One context, π = (½, ¼, ¼), pair (w, l) = (0, 1), ∂ℓ/∂δ = g = −1, ∂ℓ/∂log π(y_w) = g_w = −2:
    g(e_w − e_l) = (−1, 1, 0) and g_w(e_w − π) = −2·(½, −¼, −¼) = (−1, ½, ½): total (−2, 3/2, ½)."""
    log_pi = np.log(np.array([[0.5, 0.25, 0.25]]))
    g = tabular_logit_gradient(
        np.array([-1.0]), np.array([[0, 0, 1]]), (1, 3), grad_logp_w=np.array([-2.0]), log_pi=log_pi
    )
    assert_allclose(g, [[-2.0, 1.5, 0.5]], rtol=1e-15)
    with pytest.raises(ValueError, match="log_pi"):
        tabular_logit_gradient(np.array([-1.0]), np.array([[0, 0, 1]]), (1, 3), grad_logp_w=np.array([-2.0]))
