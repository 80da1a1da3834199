"""Tests of dpocheck.theory.losses: every loss value and its analytic derivative (C1, C4, C7, C8, C10).

Analytic derivatives are checked against torch autograd of INDEPENDENT reference formulas written here from
PAPER.md (torch.nn.functional.logsigmoid etc.), at hypothesis points and at extreme values, and against
autograd through the library's own torch path.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from strategies import bandits, betas, finite_floats, pair_arrays

from dpocheck.theory import (
    LOSS_NAMES,
    RELEASED_DEFAULTS,
    LossAndGrad,
    cpo_margin_loss,
    dpo_loss,
    dpo_nll_loss,
    dpop_loss,
    effective_target,
    hinge_loss,
    ipo_loss,
    length_normalized_delta,
    log_cpo_margin,
    logistic_loss,
    loss_and_grad,
    policy_delta,
    released_adaptive_loss,
    released_adaptive_margin,
    released_clip_loss,
    released_easy_loss,
    released_easy_margin,
    simpo_loss,
    soft_margin_gap,
    tabular_logit_gradient,
)

LOG2 = math.log(2.0)
SQRT2 = math.sqrt(2.0)
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


def test_logistic_core_by_hand() -> None:
    """ℓ = softplus(c − βδ), ∂ℓ/∂δ = −β·σ(c − βδ). δ = 1, β = 2, c = 2: z = 0 → ℓ = log 2, ∂ = −2·½ = −1."""
    out = logistic_loss(1.0, 2.0, 2.0)
    assert isinstance(out, LossAndGrad)
    assert out.loss == pytest.approx(LOG2, rel=1e-15)
    assert out.grad == pytest.approx(-1.0, rel=1e-15)


def test_dpo_loss_by_hand() -> None:
    """DPO at δ = δ_ref (π = π_ref): ℓ = −log σ(0) = log 2, ∂ = −β/2 (β = 0.1 → −0.05).
    β = 1, δ_ref = 0, δ = log 3: ℓ = log(1 + e^{−log 3}) = log(4/3), ∂ = −σ(−log 3) = −1/4."""
    out = dpo_loss(np.array([0.7, -3.0]), np.array([0.7, -3.0]), 0.1)
    assert_allclose(out.loss, [LOG2, LOG2], rtol=1e-15)
    assert_allclose(out.grad, [-0.05, -0.05], rtol=1e-15)
    out = dpo_loss(math.log(3), 0.0, 1.0)
    assert out.loss == pytest.approx(math.log(4 / 3), rel=1e-15)
    assert out.grad == pytest.approx(-0.25, rel=1e-15)


def test_ipo_loss_by_hand() -> None:
    """IPO, β = 0.5 (target gap 1/(2β) = 1): δ = 3, δ_ref = 1: e = 3 − 1 − 1 = 1 → ℓ = 1, ∂ = 2e = 2;
    δ = 2 (= δ_ref + 1): ℓ = 0, ∂ = 0; δ = −1: e = −3 → ℓ = 9, ∂ = −6."""
    out = ipo_loss(np.array([3.0, 2.0, -1.0]), 1.0, 0.5)
    assert_allclose(out.loss, [1.0, 0.0, 9.0], rtol=1e-15, atol=0)
    assert_allclose(out.grad, [2.0, 0.0, -6.0], rtol=1e-15, atol=0)


def test_simpo_loss_and_length_normalisation_by_hand() -> None:
    """SimPO: ℓ = −log σ(β·δ̄ − γ). β = 2, γ = 0.5 (default), δ̄ = 0.25: z = 0.5 − 0.5 = 0 → ℓ = log 2, ∂ =
    −β/2 = −1. δ̄ = log π_w/|y_w| − log π_l/|y_l| = −6/3 − (−10/2) = −2 + 5 = 3."""
    out = simpo_loss(0.25, 2.0)
    assert out.loss == pytest.approx(LOG2, rel=1e-15) and out.grad == pytest.approx(-1.0, rel=1e-15)
    assert simpo_loss(0.25, 2.0, gamma=1.5).loss == pytest.approx(math.log1p(math.e), rel=1e-15)
    assert length_normalized_delta(-6.0, -10.0, 3, 2) == pytest.approx(3.0, rel=1e-15)


def test_hinge_loss_by_hand() -> None:
    """C7: ℓ = max(0, δ_ref − δ), subgradient −1[δ < δ_ref]. δ_ref = 1: δ = −1 → (2, −1); δ = 2 → (0, 0);
    δ = 1 (kink) → (0, 0)."""
    out = hinge_loss(np.array([-1.0, 2.0, 1.0]), 1.0)
    assert out.loss.tolist() == [2.0, 0.0, 0.0]
    assert out.grad.tolist() == [-1.0, 0.0, 0.0]


def test_cpo_margin_loss_by_hand() -> None:
    """C8: ℓ = −log σ(β(δ − δ_ref) − m). β = 1, δ = δ_ref = 0, m = log 3: ℓ = log(1 + 3) = log 4,
    ∂ = −σ(log 3) = −3/4. m = 2 given as log m = log 2: ℓ = log(1 + e²). m = 0 is DPO (log 2, −β/2)."""
    out = cpo_margin_loss(0.0, 0.0, 1.0, margin=math.log(3))
    assert out.loss == pytest.approx(math.log(4), rel=1e-15) and out.grad == pytest.approx(-0.75, rel=1e-15)
    assert cpo_margin_loss(0.0, 0.0, 1.0, log_margin=LOG2).loss == pytest.approx(math.log1p(math.e**2), rel=1e-15)
    dpo_like = cpo_margin_loss(0.4, 0.4, 0.3, margin=0.0)
    assert dpo_like.loss == pytest.approx(LOG2) and dpo_like.grad == pytest.approx(-0.15)
    assert cpo_margin_loss(0.4, 0.4, 0.3, log_margin=-math.inf).loss == pytest.approx(LOG2)


def test_cpo_margin_loss_validation() -> None:
    """Exactly one of margin / log_margin; m ≥ 0 and finite; a log margin whose exp overflows raises (never
    inf)."""
    with pytest.raises(ValueError, match="exactly one of margin or log_margin"):
        cpo_margin_loss(0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="exactly one of margin or log_margin"):
        cpo_margin_loss(0.0, 0.0, 1.0, margin=1.0, log_margin=0.0)
    with pytest.raises(ValueError, match="margin"):
        cpo_margin_loss(0.0, 0.0, 1.0, margin=-0.1)
    with pytest.raises(ValueError, match="margin must be finite"):
        cpo_margin_loss(0.0, 0.0, 1.0, margin=math.nan)
    with pytest.raises(OverflowError, match="cpo_margin"):
        cpo_margin_loss(0.0, 0.0, 1.0, log_margin=log_cpo_margin(-1e4, -1.0, 0.5))


def test_released_easy_by_hand() -> None:
    """C10 `easy`: a = γ(1/ℓ̄_w + 1/ℓ̄_l); γ = 0.5, ℓ̄ = (−0.5, −0.25): a = 0.5·(−2 − 4) = −3 (< 0, opposite
    sign to C8). β = 1, δ = δ_ref = 0: the sigmoid's argument is βδ − βδ_ref − a = 0 − 0 + 3 = 3, so
    ℓ = log(1 + e^{−3}) ≈ 0.0485874, ∂ = −σ(−3) ≈ −0.0474259. Effective target δ_ref + a/β = −3 < δ_ref."""
    assert released_easy_margin(-0.5, -0.25, 0.5) == pytest.approx(-3.0, rel=1e-15)
    out = released_easy_loss(0.0, 0.0, 1.0, -0.5, -0.25, gamma=0.5)
    assert out.loss == pytest.approx(math.log1p(math.exp(-3)), rel=1e-15)
    assert out.grad == pytest.approx(-1 / (1 + math.exp(3)), rel=1e-15)
    assert effective_target("released_easy", 0.0, 1.0, mean_logp_ref_w=-0.5, mean_logp_ref_l=-0.25) == (
        pytest.approx(-3.0)
    )
    with pytest.raises(ValueError, match="mean log-prob"):
        released_easy_margin(0.0, -1.0, 0.5)
    with pytest.raises(ValueError, match="mean_logp_ref_l must be finite"):
        released_easy_margin(-1.0, math.nan, 0.5)


def test_released_clip_by_hand() -> None:
    """C10 `clip`: ℓ = −log σ(β(δ − max(δ_ref, 0))). β = 1, δ_ref = −2, δ = 0: target max(−2, 0) = 0 → log 2,
    ∂ = −½. δ_ref = 2, δ = 2 → log 2. δ_ref = −2, δ = −2 (π = π_ref): ℓ = log(1 + e²)
    (DPO would give log 2)."""
    out = released_clip_loss(np.array([0.0, 2.0, -2.0]), np.array([-2.0, 2.0, -2.0]), 1.0)
    assert_allclose(out.loss, [LOG2, LOG2, math.log1p(math.e**2)], rtol=1e-15)
    assert out.grad[0] == pytest.approx(-0.5, rel=1e-15)


def test_released_adaptive_by_hand() -> None:
    """C10 adaptive: a = softplus(τ(γ − δ_ref))/τ. γ = 0.5, τ = 2: δ_ref = 0.5 → a = log 2 / 2;
    δ_ref = 0.5 − (log 3)/2 → τ(γ − δ_ref) = log 3, a = log 4 / 2 = log 2.
    Loss, β = 1, α = 1, δ = δ_ref = 0.5: argument βδ − βδ_ref − a = −(log 2)/2, so ℓ = softplus(log √2) =
    log(1 + √2) ≈ 0.881374, ∂ = −σ(log √2) = −√2/(1 + √2) ≈ −0.585786. α = 2 halves the margin term:
    ℓ = softplus((log 2)/4) = log(1 + 2^{1/4})."""
    assert released_adaptive_margin(0.5, 0.5, 2.0) == pytest.approx(LOG2 / 2, rel=1e-15)
    assert released_adaptive_margin(0.5 - math.log(3) / 2, 0.5, 2.0) == pytest.approx(LOG2, rel=1e-15)
    out = released_adaptive_loss(0.5, 0.5, 1.0, gamma=0.5, tau=2.0, alpha=1.0)
    assert out.loss == pytest.approx(math.log(1 + SQRT2), rel=1e-15)
    assert out.grad == pytest.approx(-SQRT2 / (1 + SQRT2), rel=1e-15)
    assert released_adaptive_loss(0.5, 0.5, 1.0, alpha=2.0).loss == pytest.approx(math.log(1 + 2**0.25))
    with pytest.raises(ValueError, match="tau"):
        released_adaptive_margin(0.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        released_adaptive_loss(0.0, 0.0, 1.0, alpha=-1.0)


def test_released_defaults_are_the_papers() -> None:
    """C10 defaults: β 0.1, γ 0.5, τ 2.0, α 1.0; the functions' defaults use them (and SimPO's γ = 0.5)."""
    assert RELEASED_DEFAULTS == {"beta": 0.1, "gamma": 0.5, "tau": 2.0, "alpha": 1.0}
    d, dref = np.array([0.3, -1.0]), np.array([-0.2, 0.4])
    a = released_adaptive_loss(d, dref, 0.1)
    b = released_adaptive_loss(d, dref, 0.1, gamma=0.5, tau=2.0, alpha=1.0)
    assert_allclose(a.loss, b.loss, rtol=0) and assert_allclose(a.grad, b.grad, rtol=0)
    e1 = released_easy_loss(d, dref, 0.1, -1.0, -2.0)
    e2 = released_easy_loss(d, dref, 0.1, -1.0, -2.0, gamma=0.5)
    assert_allclose(e1.loss, e2.loss, rtol=0)


def test_adaptive_target_tends_to_max_of_ref_and_gamma() -> None:
    """C10: with α = 1 and τ → ∞ the effective target δ_ref + a → max(δ_ref, γ): for γ = 0.5 and τ = 1e6,
    δ_ref = −1 → 0.5 and δ_ref = 2 → 2 (softplus(τx)/τ − max(0, x) ≤ log 2/τ = 6.9e-7)."""
    t = effective_target("released_adaptive", np.array([-1.0, 2.0]), 0.3, gamma=0.5, tau=1e6, alpha=1.0)
    assert_allclose(t, [0.5, 2.0], atol=LOG2 / 1e6 + 1e-15)


def test_effective_targets_by_hand() -> None:
    """Targets for δ_ref = −1, β = 2: dpo −1; hinge −1; ipo −1 + 1/4 = −0.75; simpo γ/β = 0.5/2 = 0.25;
    cpo_margin (m = 1) −1 + 1/2 = −0.5; released_clip max(−1, 0) = 0; released_adaptive (γ 0.5, τ 2, α 1)
    −1 + softplus(2·1.5)/2 = −1 + log(1 + e³)/2 ≈ 0.524293."""
    cases = {
        "dpo": ({}, -1.0),
        "hinge": ({}, -1.0),
        "ipo": ({}, -0.75),
        "simpo": ({}, 0.25),
        "cpo_margin": ({"margin": 1.0}, -0.5),
        "released_clip": ({}, 0.0),
        "released_adaptive": ({}, -1.0 + math.log1p(math.e**3) / 2),
    }
    for name, (params, expected) in cases.items():
        assert float(effective_target(name, -1.0, 2.0, **params)) == pytest.approx(expected, rel=1e-15), name
    with pytest.raises(ValueError, match="unknown loss"):
        effective_target("cpo", -1.0, 2.0)


def test_soft_margin_gap_by_hand() -> None:
    """C7: ℓ_DPO/β − max(0, δ_ref − δ). β = 1, δ_ref = 1, δ = −1: softplus(2) − 2 = log(1 + e^{−2}) ≈
    0.126928; δ = δ_ref: log 2/β (the upper bound is attained); β = 1e4, δ_ref = 0, δ = 1: softplus(−1e4)/1e4
    = e^{−1e4}/1e4 → 0."""
    assert soft_margin_gap(-1.0, 1.0, 1.0) == pytest.approx(math.log1p(math.exp(-2)), rel=1e-14)
    assert soft_margin_gap(0.3, 0.3, 4.0) == pytest.approx(LOG2 / 4, rel=1e-15)
    assert soft_margin_gap(1.0, 0.0, 1e4) == 0.0


def test_tabular_logit_gradient_by_hand() -> None:
    """δ_i = z[x,w] − z[x,l]: pairs (0,1,0), (0,1,2), (1,2,0) with ∂ℓ/∂δ = (−0.5, −0.25, 1):
    z[0,1] gets −0.5 − 0.25 = −0.75; z[0,0] +0.5; z[0,2] +0.25; z[1,2] +1; z[1,0] −1; others 0."""
    g = tabular_logit_gradient(np.array([-0.5, -0.25, 1.0]), np.array([[0, 1, 0], [0, 1, 2], [1, 2, 0]]), (2, 3))
    assert_allclose(g, [[0.5, -0.75, 0.25], [-1.0, 0.0, 1.0]], rtol=0, atol=0)


def test_loss_and_grad_dispatch() -> None:
    """loss_and_grad(name, …) is exactly the named function; unknown names and parameters are rejected by
    name."""
    d, dref, beta = np.array([0.3, -1.2]), np.array([-0.5, 0.7]), 0.8
    direct = {
        "dpo": dpo_loss(d, dref, beta),
        "ipo": ipo_loss(d, dref, beta),
        "simpo": simpo_loss(d, beta, gamma=0.2),
        "hinge": hinge_loss(d, dref),
        "cpo_margin": cpo_margin_loss(d, dref, beta, margin=0.3),
        "released_easy": released_easy_loss(d, dref, beta, -1.0, -2.0, gamma=0.1),
        "released_clip": released_clip_loss(d, dref, beta),
        "released_adaptive": released_adaptive_loss(d, dref, beta, gamma=0.2, tau=3.0, alpha=2.0),
        "dpop": dpop_loss(d, dref, beta, np.array([-2.0, -0.5]), -1.0, lam=3.0),
        "dpo_nll": dpo_nll_loss(d, dref, beta, np.array([-2.0, -0.5]), alpha=0.5, tokens_w=4),
    }
    params = {
        "simpo": {"gamma": 0.2},
        "cpo_margin": {"margin": 0.3},
        "released_easy": {"mean_logp_ref_w": -1.0, "mean_logp_ref_l": -2.0, "gamma": 0.1},
        "released_adaptive": {"gamma": 0.2, "tau": 3.0, "alpha": 2.0},
        "dpop": {"ref_logp_w": -1.0, "lam": 3.0},
        "dpo_nll": {"tokens_w": 4, "alpha": 0.5},
    }
    assert set(direct) == set(LOSS_NAMES)
    for name in LOSS_NAMES:
        got = loss_and_grad(name, d, dref, beta, policy_logp_w=np.array([-2.0, -0.5]), **params.get(name, {}))
        assert_allclose(got.loss, direct[name].loss, rtol=0, atol=0, err_msg=name)
        assert_allclose(got.grad, direct[name].grad, rtol=0, atol=0, err_msg=name)
    with pytest.raises(ValueError, match="unknown loss 'cpo'"):
        loss_and_grad("cpo", d, dref, beta)
    with pytest.raises(TypeError, match="gamma"):
        loss_and_grad("dpo", d, dref, beta, gamma=0.1)


def test_length_normalised_delta_rejects_empty_responses() -> None:
    """A response of length 0 has no per-token mean: ValueError saying so."""
    with pytest.raises(ValueError, match="empty response"):
        length_normalized_delta(np.array([-1.0, -2.0]), np.array([-1.0, -2.0]), np.array([3, 0]), np.array([1, 1]))


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("beta", [0.0, -0.1, math.nan])
def test_losses_reject_bad_beta(name, beta) -> None:
    """β ≤ 0 or NaN raises ValueError naming β for every loss that uses β (hinge has no β)."""
    params = _np_params(
        name,
        {
            "log_pi_ref_w": np.array([-1.0]),
            "log_pi_ref_l": np.array([-2.0]),
            "mean_logp_ref_w": np.array([-1.0]),
            "mean_logp_ref_l": np.array([-2.0]),
        },
    )
    if name == "hinge":
        assert loss_and_grad(name, 0.0, 1.0, beta).loss == 1.0
        return
    with pytest.raises(ValueError, match="beta"):
        loss_and_grad(name, np.array([0.0]), np.array([1.0]), beta, **params)


# ---------------------------------------------------------------- reference formulas and autograd


def _np_params(name: str, a: dict[str, np.ndarray]) -> dict:
    """Per-pair parameters for loss `name` from pair arrays (numpy). dpop and dpo_nll also get the policy's chosen
    log-prob (keyword policy_logp_w of loss_and_grad), here the strictly negative array mean_logp_ref_w: displaced
    where it lies below log_pi_ref_w. dpo_nll's token count is len_w (summed log-probs) when given."""
    if name == "dpop":
        return {"policy_logp_w": a["mean_logp_ref_w"], "ref_logp_w": a["log_pi_ref_w"], "lam": 2.0}
    if name == "dpo_nll":
        return {"policy_logp_w": a["mean_logp_ref_w"], "tokens_w": a.get("len_w", 1.0), "alpha": 0.5}
    if name == "simpo":
        return {"gamma": 0.5}
    if name == "cpo_margin":
        return {"log_margin": log_cpo_margin(a["log_pi_ref_w"], a["log_pi_ref_l"], 0.01)}
    if name == "released_easy":
        return {
            "mean_logp_ref_w": a["mean_logp_ref_w"],
            "mean_logp_ref_l": a["mean_logp_ref_l"],
            "gamma": 0.5,
        }
    if name == "released_adaptive":
        return {"gamma": 0.5, "tau": 2.0, "alpha": 1.0}
    return {}


def _torch_params(params: dict, device: str = "cpu") -> dict:
    return {
        k: torch.as_tensor(v, dtype=torch.float64, device=device) if isinstance(v, np.ndarray) else v
        for k, v in params.items()
    }


def reference_loss(name: str, d: torch.Tensor, dref: torch.Tensor, beta: float, **p) -> torch.Tensor:
    """The losses as PAPER.md writes them, in torch (written independently of dpocheck.theory.losses)."""
    if name == "dpo":
        return -F.logsigmoid(beta * (d - dref))
    if name == "ipo":
        return (d - dref - 1 / (2 * beta)) ** 2
    if name == "simpo":
        return -F.logsigmoid(beta * d - p["gamma"])
    if name == "hinge":
        return torch.relu(dref - d)
    if name == "cpo_margin":
        return -F.logsigmoid(beta * (d - dref) - torch.exp(p["log_margin"]))
    if name == "released_easy":
        a = p["gamma"] * (1 / p["mean_logp_ref_w"] + 1 / p["mean_logp_ref_l"])
        return -F.logsigmoid(beta * d - beta * dref - a)
    if name == "released_clip":
        return -F.logsigmoid(beta * (d - torch.clamp(dref, min=0.0)))
    if name == "released_adaptive":
        x = p["tau"] * (p["gamma"] - dref)
        a = torch.logaddexp(torch.zeros_like(x), x) / p["tau"]
        return -F.logsigmoid(beta * d - beta * dref - (beta / p["alpha"]) * a)
    if name == "dpop":  # PAPER §6: −log σ(β[(δ − δ_ref) − λ·max(0, log π_ref(y_w) − log π_θ(y_w))])
        penalty = torch.relu(p["ref_logp_w"] - p["policy_logp_w"])
        return -F.logsigmoid(beta * ((d - dref) - p["lam"] * penalty))
    if name == "dpo_nll":  # PAPER §6: ℓ_DPO + α·(−log π_θ(y_w))/|y_w|
        return -F.logsigmoid(beta * (d - dref)) - p["alpha"] * p["policy_logp_w"] / p["tokens_w"]
    raise AssertionError(name)


def _check_against_autograd(name: str, d_np, dref_np, beta: float, params_np: dict) -> None:
    """Library loss/grad (numpy) vs the reference formula and its autograd derivative (torch float64), and
    vs autograd through the library's own torch path. Tolerances scale with |β·δ| (rounding of β·δ_ref −
    β·δ)."""
    out = loss_and_grad(name, d_np, dref_np, beta, **params_np)
    loss, grad = np.asarray(out.loss), np.asarray(out.grad)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad)), (name, loss, grad)

    d = torch.tensor(d_np, dtype=torch.float64, requires_grad=True)
    dref = torch.tensor(dref_np, dtype=torch.float64)
    tp = _torch_params(params_np)
    ref = reference_loss(name, d, dref, beta, **tp)
    ref.sum().backward()
    scale = 1.0 + beta * (np.abs(d_np) + np.abs(dref_np))
    if name == "ipo":
        scale = scale + 1.0 / beta
    if name == "cpo_margin":
        scale = scale + np.exp(params_np["log_margin"])
    if name == "released_easy":
        scale = scale + 0.5 * (1 / np.abs(params_np["mean_logp_ref_w"]) + 1 / np.abs(params_np["mean_logp_ref_l"]))
    if name == "dpop":
        scale = scale + beta * params_np["lam"] * np.abs(params_np["ref_logp_w"] - params_np["policy_logp_w"])
    if name == "dpo_nll":
        scale = scale + np.abs(params_np["policy_logp_w"])
    assert_allclose(loss, ref.detach().numpy(), rtol=1e-9, atol=1e-13 * np.max(scale), err_msg=f"{name} loss")
    gscale = 1e-13 * np.max(scale) * (1.0 if name in ("ipo", "hinge") else beta)
    assert_allclose(grad, d.grad.numpy(), rtol=1e-9, atol=gscale, err_msg=f"{name} grad vs autograd")

    d2 = torch.tensor(d_np, dtype=torch.float64, requires_grad=True)
    lib = loss_and_grad(name, d2, dref, beta, **tp)
    lib.loss.sum().backward()
    assert_allclose(d2.grad.numpy(), lib.grad.detach().numpy(), rtol=1e-9, atol=gscale, err_msg=f"{name} torch")


@given(arrs=pair_arrays(delta_bound=1e4, log_prob_min=-600.0), beta=betas())
def test_analytic_derivative_matches_autograd(arrs, beta) -> None:
    """∂ℓ/∂δ_θ returned by every loss equals torch autograd of the paper's formula, for β in 1e-4…1e4 and δ,
    δ_ref up to ±1e4 (log-probs for the C8 margin down to −600, the float64 range of 1/π_ref); never NaN or
    inf."""
    for name in LOSS_NAMES:
        _check_against_autograd(name, arrs["delta_policy"], arrs["delta_ref"], beta, _np_params(name, arrs))


EXTREME_BETAS = (1e-4, 1.0, 1e4)
EXTREME_DELTAS = (-1e4, -1.0, 0.0, 1.0, 1e4)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_analytic_derivative_matches_autograd_at_extremes(name) -> None:
    """Grid β ∈ {1e-4, 1, 1e4} × δ, δ_ref ∈ {±1e4, ±1, 0}; per-token mean log-probs −1e4 and −1e-3; C8
    log-probs −700 and −1: losses and derivatives are finite and equal autograd of the reference formula."""
    grid = np.array(list(itertools.product(EXTREME_DELTAS, EXTREME_DELTAS)))
    n = len(grid)
    arrs = {
        "log_pi_ref_w": np.resize([-700.0, -1.0], n),
        "log_pi_ref_l": np.resize([-1.0, -700.0, -1.0], n),
        "mean_logp_ref_w": np.resize([-1e4, -1e-3], n),
        "mean_logp_ref_l": np.resize([-1e-3, -1e4, -1e4], n),
    }
    for beta in EXTREME_BETAS:
        _check_against_autograd(name, grid[:, 0].copy(), grid[:, 1].copy(), beta, _np_params(name, arrs))


@given(d=finite_floats(), dref=finite_floats(), beta=betas())
@example(d=0.0, dref=0.0, beta=1e-4)
@example(d=-1e4, dref=1e4, beta=1e4)
@example(d=1e4, dref=-1e4, beta=1e-4)
@example(d=1.0, dref=1.0, beta=1e4)
def test_softplus_hinge_bound(d, dref, beta) -> None:
    """C7 (Prop. 5.1): 0 ≤ ℓ_DPO/β − max(0, δ_ref − δ) ≤ (log 2)/β, up to float rounding of ℓ/β (≈ ε·|δ_ref −
    δ|)."""
    gap = float(soft_margin_gap(d, dref, beta))
    tol = 4 * np.finfo(float).eps * (abs(dref - d) + 1.0)
    assert -tol <= gap <= LOG2 / beta + tol


LOGISTIC = ("dpo", "simpo", "cpo_margin", "released_easy", "released_clip", "released_adaptive")


@given(arrs=pair_arrays(log_prob_min=-30.0), beta=betas(1e-2, 1e2))
def test_effective_target_is_where_the_sigmoid_argument_vanishes(arrs, beta) -> None:
    """For each logistic loss the effective target δ_t makes ℓ(δ_t) = log 2 and ∂ℓ/∂δ(δ_t) = −β/2 (C7/C10); so
    does DPOP's δ_ref + λ·P at fixed log π_θ(y_w) (PAPER §6)."""
    for name in (*LOGISTIC, "dpop"):
        params = _np_params(name, arrs)
        t = effective_target(name, arrs["delta_ref"], beta, **params)
        out = loss_and_grad(name, t, arrs["delta_ref"], beta, **params)
        assert_allclose(out.loss, LOG2, atol=1e-9 * (1 + beta * np.max(np.abs(t))), err_msg=name)
        assert_allclose(out.grad, -beta / 2, atol=1e-9 * beta * (1 + beta * np.max(np.abs(t))), err_msg=name)


@given(arrs=pair_arrays(), beta=betas(1e-3, 1e3))
def test_ipo_target_is_its_minimiser(arrs, beta) -> None:
    """IPO's effective target δ_ref + 1/(2β) is where its derivative vanishes and its loss is 0."""
    t = effective_target("ipo", arrs["delta_ref"], beta)
    out = ipo_loss(t, arrs["delta_ref"], beta)
    assert_allclose(out.grad, 0.0, atol=1e-12 * (1 + 1 / beta + np.max(np.abs(t))))


@given(arrs=pair_arrays(delta_bound=100.0), beta=betas(), shift=finite_floats(100.0))
def test_dpo_depends_only_on_the_relative_margin(arrs, beta, shift) -> None:
    """C6: ℓ_DPO(δ + s; δ_ref + s) = ℓ_DPO(δ; δ_ref) (shift invariance), unlike RLHF's absolute target δ*."""
    a = dpo_loss(arrs["delta_policy"], arrs["delta_ref"], beta)
    b = dpo_loss(arrs["delta_policy"] + shift, arrs["delta_ref"] + shift, beta)
    scale = 1 + beta * (np.abs(arrs["delta_policy"]) + np.abs(arrs["delta_ref"]) + abs(shift))
    assert_allclose(b.loss, a.loss, rtol=1e-9, atol=1e-13 * np.max(scale))
    assert_allclose(b.grad, a.grad, rtol=1e-9, atol=1e-13 * beta * np.max(scale))


@given(
    bandit=bandits(max_contexts=3, max_responses=4, beta=betas(1e-2, 1e2), max_pairs=6),
    logits=st.lists(st.floats(-8, 8), min_size=12, max_size=12),
)
def test_tabular_logit_gradient_matches_autograd(bandit, logits) -> None:
    """For a tabular softmax policy π = softmax(z), Σ_i ℓ_i(δ_i) with δ_i = log π(w_i) − log π(l_i) has
    gradient tabular_logit_gradient(∂ℓ/∂δ, pairs) in z (log Z cancels), plus ∂ℓ/∂log π(y_w)·(e_w − π) for dpop and
    dpo_nll: compare with autograd through log_softmax."""
    X, Y = bandit.log_pi_ref.shape
    z_np = np.array(logits[: X * Y]).reshape(X, Y)
    p = bandit.pairs
    lw, ll = bandit.log_pi_ref[p[:, 0], p[:, 1]], bandit.log_pi_ref[p[:, 0], p[:, 2]]
    arrs = {"log_pi_ref_w": lw, "log_pi_ref_l": ll, "mean_logp_ref_w": lw, "mean_logp_ref_l": ll}
    dref = bandit.delta_ref()
    d_np = policy_delta(z_np - np.log(np.exp(z_np).sum(axis=1, keepdims=True)), p)
    pt = torch.as_tensor(p)
    log_pi = z_np - np.log(np.exp(z_np).sum(axis=1, keepdims=True))
    for name in LOSS_NAMES:
        params = _np_params(name, arrs)
        if "policy_logp_w" in params:  # dpop, dpo_nll: the policy's own log π(y_w|x), through log_softmax
            params["policy_logp_w"] = log_pi[p[:, 0], p[:, 1]]
        out = loss_and_grad(name, d_np, dref, bandit.beta, **params)
        analytic = tabular_logit_gradient(out.grad, p, (X, Y), grad_logp_w=out.grad_logp_w, log_pi=log_pi)
        z = torch.tensor(z_np, dtype=torch.float64, requires_grad=True)
        logp = torch.log_softmax(z, dim=1)
        d = logp[pt[:, 0], pt[:, 1]] - logp[pt[:, 0], pt[:, 2]]
        tp = _torch_params(params)
        if "policy_logp_w" in tp:
            tp["policy_logp_w"] = logp[pt[:, 0], pt[:, 1]]
        loss = reference_loss(name, d, torch.as_tensor(dref), bandit.beta, **tp)
        loss.sum().backward()
        tol = 1e-12 * (1 + bandit.beta) * (1 + np.abs(d_np).max())
        assert_allclose(analytic, z.grad.numpy(), rtol=1e-9, atol=tol, err_msg=name)


# ---------------------------------------------------------------- numpy ≡ torch (CPU and CUDA)


def _loss_cases():
    cases = {}
    for name in LOSS_NAMES:
        cases[f"loss_and_grad[{name}]"] = lambda a, b, n=name: tuple(
            x for x in loss_and_grad(n, a["delta_policy"], a["delta_ref"], b, **_np_params(n, a)) if x is not None
        )
    for name in (*LOGISTIC, "ipo", "hinge", "dpop", "dpo_nll"):
        cases[f"effective_target[{name}]"] = lambda a, b, n=name: effective_target(
            n, a["delta_ref"], b, **_np_params(n, a)
        )
    cases["soft_margin_gap"] = lambda a, b: soft_margin_gap(a["delta_policy"], a["delta_ref"], b)
    cases["length_normalized_delta"] = lambda a, b: length_normalized_delta(
        a["log_pi_ref_w"], a["log_pi_ref_l"], a["len_w"], a["len_l"]
    )
    cases["released_easy_margin"] = lambda a, b: released_easy_margin(a["mean_logp_ref_w"], a["mean_logp_ref_l"], 0.5)
    cases["released_adaptive_margin"] = lambda a, b: released_adaptive_margin(a["delta_ref"], 0.5, 2.0)
    cases["logistic_loss"] = lambda a, b: tuple(logistic_loss(a["delta_policy"], b, a["delta_reward"]))[:2]
    return cases


LOSS_CASES = _loss_cases()


@pytest.mark.parametrize("device", DEVICES)
@given(arrs=pair_arrays(delta_bound=50.0, log_prob_min=-300.0), beta=betas(1e-2, 1e2))
def test_numpy_and_torch_agree(device, arrs, beta) -> None:
    """Every loss (value and derivative) and helper gives the same numbers for numpy and torch float64
    inputs and returns torch tensors on the input's device."""
    tarrs = {k: torch.from_numpy(v).to(device) for k, v in arrs.items()}
    for case, fn in LOSS_CASES.items():
        ref = fn(arrs, beta)
        got = fn(tarrs, beta)
        refs = ref if isinstance(ref, tuple) else (ref,)
        gots = got if isinstance(got, tuple) else (got,)
        for r, g in zip(refs, gots, strict=True):
            assert isinstance(g, torch.Tensor) and g.device.type == device, case
            assert_allclose(g.detach().cpu().numpy(), np.asarray(r), rtol=1e-12, atol=1e-300, err_msg=case)
