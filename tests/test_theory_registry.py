"""Tests of the loss registry (dpocheck.theory.registry): every entry has an exact hand-worked value, an analytic
derivative that agrees with autograd, equal numpy and torch paths, a working sims run, precompute/apply equal to
loss_and_grad, and parameter validation. A new entry without a hand-worked value fails the first test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from dpocheck.sims import gaussian_batch, train
from dpocheck.theory import (
    DPO_NLL_DEFAULT_ALPHA,
    DPOP_DEFAULT_LAMBDA,
    LOSS_NAMES,
    LOSSES,
    RELEASED_DEFAULTS,
    LossSpec,
    ReferencePairs,
    cpo_margin_loss,
    dpo_loss,
    dpo_nll_loss,
    dpop_loss,
    effective_target,
    get_loss,
    hinge_loss,
    ipo_loss,
    loss_and_grad,
    released_adaptive_loss,
    released_clip_loss,
    released_easy_loss,
    simpo_loss,
    swap_delta_params,
)

E = math.e


def _softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _logistic(z: float, beta: float) -> tuple[float, float]:
    """(softplus(z), −β·σ(z)) for the sigmoid argument z = c − β·δ_θ."""
    return _softplus(z), -beta * _sigmoid(z)


# One tabular pair: log π_ref(y_w) = −1, log π_ref(y_l) = −2 (one-token responses, so the per-token means are the
# same), δ_ref = 1; β = 2, δ_θ = 1/4, so β·δ_θ = 1/2. Every loss at its defaults:
#   dpo            c = β·δ_ref = 2                                   → z = 3/2
#   ipo            e = δ_θ − δ_ref − 1/(2β) = 1/4 − 1 − 1/4 = −1     → ℓ = 1, ∂ℓ/∂δ = 2e = −2
#   simpo          c = γ = 1/2                                       → z = 0: ℓ = log 2, ∂ℓ/∂δ = −β/2 = −1
#   hinge          ℓ = max(0, δ_ref − δ_θ) = 3/4                     → ∂ℓ/∂δ = −1
#   cpo_margin     c = 2 + m, m = 0.05(e¹ + e²)                      → z = 3/2 + 0.05(e + e²)
#   released_easy  c = 2 + a, a = 0.5(1/(−1) + 1/(−2)) = −3/4        → z = 3/4
#   released_clip  c = β·max(δ_ref, 0) = 2                           → z = 3/2
#   released_adapt c = 2 + (β/α)·softplus(τ(γ − δ_ref))/τ = 2 + log(1 + e^{−1})  → z = 3/2 + log(1 + e^{−1})
# The policy's log π_θ(y_w) = −3/2 (displaced: Δ_w = −1/2), for the two losses that read it (PAPER §6):
#   dpop           P = −1 − (−3/2) = 1/2, λ = 50: z = 3/2 + β·λ·P = 3/2 + 50 = 51.5; ∂ℓ/∂log π(y_w) = −βλσ(z) = −100σ(z)
#   dpo_nll        α = 1, |y_w| = 1: ℓ = softplus(3/2) + 3/2, ∂ℓ/∂δ = −2σ(3/2), ∂ℓ/∂log π(y_w) = −1
HAND_LW, HAND_LL, HAND_BETA, HAND_DELTA, HAND_POLICY_LW = -1.0, -2.0, 2.0, 0.25, -1.5
HAND_VALUES = {
    "dpo": _logistic(1.5, 2.0),
    "ipo": (1.0, -2.0),
    "simpo": (math.log(2.0), -1.0),
    "hinge": (0.75, -1.0),
    "cpo_margin": _logistic(1.5 + 0.05 * (E + E * E), 2.0),
    "released_easy": _logistic(0.75, 2.0),
    "released_clip": _logistic(1.5, 2.0),
    "released_adaptive": _logistic(1.5 + math.log1p(math.exp(-1.0)), 2.0),
    "dpop": _logistic(51.5, 2.0),
    "dpo_nll": (_softplus(1.5) + 1.5, -2.0 * _sigmoid(1.5)),
}
HAND_GRAD_LOGP_W = {"dpop": -100.0 * _sigmoid(51.5), "dpo_nll": -1.0}
HAND_TARGETS = {  # δ_θ where z = 0 (ipo: its minimiser δ_ref + 1/(2β))
    "dpo": 1.0,
    "ipo": 1.25,
    "simpo": 0.25,
    "hinge": 1.0,
    "cpo_margin": 1.0 + 0.05 * (E + E * E) / 2.0,
    "released_easy": 1.0 - 0.75 / 2.0,
    "released_clip": 1.0,
    "released_adaptive": 1.0 + math.log1p(math.exp(-1.0)) / 2.0,
    "dpop": 1.0 + 50.0 * 0.5,  # δ_ref + λ·P
    "dpo_nll": 1.0,  # the NLL term is outside the sigmoid
}


def _hand_ref(kind: str = "numpy") -> ReferencePairs:
    if kind == "torch":
        return ReferencePairs.single_token(
            torch.tensor([HAND_LW], dtype=torch.float64), torch.tensor([HAND_LL], dtype=torch.float64)
        )
    return ReferencePairs.single_token(np.array([HAND_LW]), np.array([HAND_LL]))


def test_every_entry_has_a_hand_worked_value() -> None:
    """(a) The registry's value and derivative at the hand-worked pair, for every entry (numpy and torch)."""
    assert set(HAND_VALUES) == set(LOSS_NAMES) == set(HAND_TARGETS)
    lw_np, lw_t = np.array([HAND_POLICY_LW]), torch.tensor([HAND_POLICY_LW], dtype=torch.float64)
    for name in LOSS_NAMES:
        spec = get_loss(name)
        want_loss, want_grad = HAND_VALUES[name]
        out = spec.loss_and_grad(np.array([HAND_DELTA]), _hand_ref(), HAND_BETA, policy_logp_w=lw_np)
        assert float(out.loss[0]) == pytest.approx(want_loss, rel=1e-14), name
        assert float(out.grad[0]) == pytest.approx(want_grad, rel=1e-14), name
        tout = spec.loss_and_grad(
            torch.tensor([HAND_DELTA], dtype=torch.float64), _hand_ref("torch"), HAND_BETA, policy_logp_w=lw_t
        )
        assert float(tout.loss[0]) == pytest.approx(want_loss, rel=1e-14), name
        assert float(tout.grad[0]) == pytest.approx(want_grad, rel=1e-14), name
        for o in (out, tout):
            if name in HAND_GRAD_LOGP_W:
                assert float(o.grad_logp_w[0]) == pytest.approx(HAND_GRAD_LOGP_W[name], rel=1e-14), name
            else:
                assert o.grad_logp_w is None, name
        target = float(np.asarray(spec.effective_target(_hand_ref(), HAND_BETA, policy_logp_w=lw_np))[0])
        assert target == pytest.approx(HAND_TARGETS[name], rel=1e-14), name


def test_registry_metadata() -> None:
    """Names in the canonical order; each entry's family, defaults and flags as documented (C8, C10, SimPO)."""
    assert LOSS_NAMES == (
        "dpo",
        "ipo",
        "simpo",
        "hinge",
        "cpo_margin",
        "released_easy",
        "released_clip",
        "released_adaptive",
        "dpop",
        "dpo_nll",
    )
    assert all(isinstance(s, LossSpec) and s.name == n for n, s in LOSSES.items())
    assert {n for n, s in LOSSES.items() if s.family == "logistic"} == {
        "dpo",
        "simpo",
        "cpo_margin",
        "released_easy",
        "released_clip",
        "released_adaptive",
    }
    assert get_loss("cpo_margin").defaults == {"gamma": 0.05}
    assert get_loss("simpo").defaults == {"gamma": 0.5}
    assert get_loss("released_easy").defaults == {"gamma": RELEASED_DEFAULTS["gamma"]}
    assert get_loss("released_adaptive").defaults == {"gamma": 0.5, "tau": 2.0, "alpha": 1.0}
    assert [n for n, s in LOSSES.items() if s.reference_free] == ["simpo"]
    assert [n for n, s in LOSSES.items() if s.needs_mean_logps] == ["released_easy"]
    assert [n for n, s in LOSSES.items() if s.needs_policy_chosen] == ["dpop", "dpo_nll"]
    # defaults: λ = 50 (Pal et al. 2024's experiments), α = 1 (RPO, Pang et al. 2024)
    assert get_loss("dpop").defaults == {"lam": DPOP_DEFAULT_LAMBDA} == {"lam": 50.0}
    assert get_loss("dpo_nll").defaults == {"alpha": DPO_NLL_DEFAULT_ALPHA} == {"alpha": 1.0}
    assert len({s.color for s in LOSSES.values()}) == len(LOSSES)
    assert all(s.label and s.claim for s in LOSSES.values())
    with pytest.raises(ValueError, match="unknown loss 'cpo'; choose one of dpo, ipo"):
        get_loss("cpo")


def test_describe() -> None:
    """Short labels as the sims tables write them."""
    assert get_loss("dpo").describe() == "dpo"
    assert get_loss("cpo_margin").describe() == "cpo_margin(γ=0.05)"
    assert get_loss("simpo").describe(gamma=0.25) == "simpo(γ=0.25)"
    assert get_loss("cpo_margin").describe(gamma=np.array([0.1, 0.2])) == "cpo_margin(γ per instance)"
    assert get_loss("released_adaptive").describe() == "released_adaptive(γ=0.5,τ=2,α=1)"
    assert get_loss("released_adaptive").describe(gamma=np.array([0.1])) == "released_adaptive(γ=per instance,τ=2,α=1)"
    assert get_loss("dpop").describe() == "dpop(λ=50)"
    assert get_loss("dpop").describe(lam=np.array([1.0, 5.0])) == "dpop(λ per instance)"
    assert get_loss("dpo_nll").describe(alpha=0.5) == "dpo_nll(α=0.5)"


# ---------------------------------------------------------------------------------- random points


def _random_points(seed: int, n: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "delta": rng.uniform(-40.0, 40.0, n),
        "lw": rng.uniform(-8.0, -0.05, n),
        "ll": rng.uniform(-8.0, -0.05, n),
        "policy_lw": rng.uniform(-8.0, -0.05, n),  # log π_θ(y_w): displaced where below lw
    }


PARAMS = {  # non-default hyper-parameters, so defaults are not the only thing tested
    "simpo": {"gamma": 0.7},
    "cpo_margin": {"gamma": 0.01},
    "released_easy": {"gamma": 0.3},
    "released_adaptive": {"gamma": 0.2, "tau": 3.0, "alpha": 0.5},
    "dpop": {"lam": 3.0},
    "dpo_nll": {"alpha": 0.7},
}


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("beta", [1e-3, 0.1, 1.0, 10.0, 1e3])
@pytest.mark.parametrize("seed", [0, 1])
def test_analytic_gradient_matches_autograd(name: str, beta: float, seed: int) -> None:
    """(b) ∂ℓ/∂δ_θ (and ∂ℓ/∂log π_θ(y_w) for dpop, dpo_nll) returned by apply equal torch autograd of the returned
    loss (float64), extreme β included."""
    p = _random_points(seed)
    spec = get_loss(name)
    ref = ReferencePairs.single_token(torch.tensor(p["lw"]), torch.tensor(p["ll"]))
    d = torch.tensor(p["delta"], requires_grad=True)
    lw = torch.tensor(p["policy_lw"], requires_grad=True)
    out = spec.loss_and_grad(d, ref, beta, policy_logp_w=lw, **PARAMS.get(name, {}))
    auto_d, auto_w = torch.autograd.grad(out.loss.sum(), (d, lw), allow_unused=True)
    assert out.loss.dtype == torch.float64 and torch.isfinite(out.loss).all()
    assert_allclose(out.grad.detach().numpy(), auto_d.numpy(), rtol=1e-12, atol=1e-300, err_msg=name)
    if spec.needs_policy_chosen:
        assert_allclose(out.grad_logp_w.detach().numpy(), auto_w.numpy(), rtol=1e-12, atol=1e-300, err_msg=name)
    else:
        assert auto_w is None and out.grad_logp_w is None


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_numpy_equals_torch(name: str) -> None:
    """(c) The same pairs through numpy and through torch: equal loss, gradient and target."""
    spec = get_loss(name)
    for seed in (2, 3):
        p = _random_points(seed)
        beta = 0.3
        params = PARAMS.get(name, {})
        ref_np = ReferencePairs.single_token(p["lw"], p["ll"])
        ref_t = ReferencePairs.single_token(torch.tensor(p["lw"]), torch.tensor(p["ll"]))
        lw = p["policy_lw"]
        a = spec.loss_and_grad(p["delta"], ref_np, beta, policy_logp_w=lw, **params)
        b = spec.loss_and_grad(torch.tensor(p["delta"]), ref_t, beta, policy_logp_w=torch.tensor(lw), **params)
        assert isinstance(a.loss, np.ndarray) and isinstance(b.loss, torch.Tensor)
        assert_allclose(b.loss.numpy(), a.loss, rtol=1e-13, atol=1e-300, err_msg=name)
        assert_allclose(b.grad.numpy(), a.grad, rtol=1e-13, atol=1e-300, err_msg=name)
        if spec.needs_policy_chosen:
            assert isinstance(b.grad_logp_w, torch.Tensor)
            assert_allclose(b.grad_logp_w.numpy(), a.grad_logp_w, rtol=1e-13, atol=1e-300, err_msg=name)
        t_np = spec.effective_target(ref_np, beta, policy_logp_w=lw, **params)
        t_t = spec.effective_target(ref_t, beta, policy_logp_w=torch.tensor(lw), **params)
        assert_allclose(np.asarray(t_t), t_np, rtol=1e-13, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_sims_smoke_run(name: str) -> None:
    """(d) A few steps of dpocheck.sims training with each loss: finite, and the mean training loss falls for the
    logistic losses and IPO (the hinge is non-increasing: its subgradient steps only move pairs below δ_ref)."""
    batch = gaussian_batch(3, 2, 3, 0.5, seed=0)
    traj = train(batch, name, 20, lr=0.1, record_every=1)
    loss = traj.metrics["loss"]
    assert loss.shape == (21, 3) and np.all(np.isfinite(loss)) and np.all(np.isfinite(traj.log_pi))
    if get_loss(name).family == "hinge":
        assert np.all(np.diff(loss, axis=0) <= 1e-12)
    else:
        assert np.all(loss[-1] < loss[0]), name


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_precompute_apply_equals_loss_and_grad(name: str) -> None:
    """(e) apply(δ, β, **precompute(ref, β)) is loss_and_grad bit for bit; so is the name-based dispatcher, and
    both are the pure function of dpocheck.theory.losses the entry wires up."""
    spec = get_loss(name)
    p = _random_points(4)
    ref = ReferencePairs.single_token(p["lw"], p["ll"])
    beta = np.array([[0.2], [1.5]])  # per-instance (B, 1) column broadcast against (N,) pairs
    params = PARAMS.get(name, {})
    pre = spec.precompute(ref, beta, **params)
    keys = {
        "logistic": {"offset"},
        "dpop": {"offset", "ref_logp_w", "penalty_weight"},
        "dpo_nll": {"offset", "nll_weight"},
    }.get(spec.family, {"delta_ref"})
    assert set(pre) == keys
    pol = p["policy_lw"]
    a = spec.apply(p["delta"], beta, policy_logp_w=pol, **pre)
    b = spec.loss_and_grad(p["delta"], ref, beta, policy_logp_w=pol, **params)
    assert a.loss.shape == ((p["delta"].size,) if spec.family == "hinge" else (2, p["delta"].size))  # hinge: no β
    assert np.array_equal(a.loss, b.loss) and np.array_equal(a.grad, b.grad)
    d, dref, lw, ll, be = p["delta"], p["lw"] - p["ll"], p["lw"], p["ll"], 0.7
    g = params.get("gamma", spec.defaults.get("gamma"))
    direct = {
        "dpo": lambda: dpo_loss(d, dref, be),
        "ipo": lambda: ipo_loss(d, dref, be),
        "simpo": lambda: simpo_loss(d, be, g),
        "hinge": lambda: hinge_loss(d, dref),
        "cpo_margin": lambda: cpo_margin_loss(d, dref, be, margin=g * (np.exp(-lw) + np.exp(-ll))),
        "released_easy": lambda: released_easy_loss(d, dref, be, lw, ll, g),
        "released_clip": lambda: released_clip_loss(d, dref, be),
        "released_adaptive": lambda: released_adaptive_loss(d, dref, be, **params),
        "dpop": lambda: dpop_loss(d, dref, be, pol, lw, **params),
        "dpo_nll": lambda: dpo_nll_loss(d, dref, be, pol, **params),
    }[name]()
    got = spec.loss_and_grad(d, ref, be, policy_logp_w=pol, **params)
    tol = 1e-13 if name == "cpo_margin" else 0.0  # the registry forms m in log space
    assert_allclose(got.loss, direct.loss, rtol=tol, atol=0, err_msg=name)
    assert_allclose(got.grad, direct.grad, rtol=tol, atol=0, err_msg=name)
    if spec.needs_policy_chosen:
        assert np.array_equal(got.grad_logp_w, direct.grad_logp_w)
    delta_params = {
        "simpo": lambda: {"gamma": g},
        "cpo_margin": lambda: {"log_margin": math.log(g) + np.logaddexp(-lw, -ll)},
        "released_easy": lambda: {"mean_logp_ref_w": lw, "mean_logp_ref_l": ll, "gamma": g},
        "released_adaptive": lambda: params,
        "dpop": lambda: {"ref_logp_w": lw, **params},
        "dpo_nll": lambda: {"tokens_w": 1, **params},
    }.get(name, dict)()
    by_name = loss_and_grad(name, d, dref, be, policy_logp_w=pol, **delta_params)
    assert np.array_equal(by_name.loss, got.loss) and np.array_equal(by_name.grad, got.grad)
    t = effective_target(name, dref, be, policy_logp_w=pol, **delta_params)
    assert np.array_equal(t, spec.effective_target(ref, be, policy_logp_w=pol, **params))


def test_swapped_pairs() -> None:
    """ReferencePairs.swapped exchanges y_w and y_l: δ_ref changes sign exactly; swapping twice is the identity."""
    ref = ReferencePairs(np.array([-1.0, -3.5]), np.array([-2.25, -0.5]), np.array([-0.1, -0.7]), None)
    sw = ref.swapped()
    assert np.array_equal(sw.delta_ref(), -ref.delta_ref())
    assert sw.mean_logp_w is None and np.array_equal(sw.mean_logp_l, ref.mean_logp_w)
    assert sw.swapped() == ref or np.array_equal(sw.swapped().logp_w, ref.logp_w)
    assert_allclose(ref.delta_ref(), [1.25, -3.0], rtol=0)
    p = {"mean_logp_ref_w": 1, "mean_logp_ref_l": 2, "gamma": 3, "log_margin": 4}
    assert swap_delta_params(p) == {"mean_logp_ref_l": 1, "mean_logp_ref_w": 2, "gamma": 3, "log_margin": 4}
    # the swapped pair through δ_ref and per-pair params equals the swapped ReferencePairs
    d, beta = np.array([0.4, -2.0]), 0.6
    ref = ReferencePairs.single_token(np.array([-1.0, -3.5]), np.array([-2.25, -0.5]))
    a = get_loss("released_easy").loss_and_grad(d, ref.swapped(), beta)
    params = {"mean_logp_ref_w": ref.logp_w, "mean_logp_ref_l": ref.logp_l}
    b = loss_and_grad("released_easy", d, -ref.delta_ref(), beta, **swap_delta_params(params))
    assert np.array_equal(a.loss, b.loss) and np.array_equal(a.grad, b.grad)


def test_cpo_margin_overflow_names_the_pair() -> None:
    """A whole-sequence log-prob of −800 gives 1/π_ref = e^800 > float64's range: OverflowError naming pair 1."""
    spec = get_loss("cpo_margin")
    ref = ReferencePairs(np.array([-1.0, -800.0]), np.array([-2.0, -3.0]))
    with pytest.raises(OverflowError, match=r"pair \(1,\)"):
        spec.precompute(ref, 0.1)
    # γ = 0 is DPO exactly (log γ = −inf, m = 0)
    ref = ReferencePairs(np.array([-1.0, -80.0]), np.array([-2.0, -3.0]))
    d = np.array([0.3, -0.4])
    a = spec.loss_and_grad(d, ref, 0.5, gamma=0.0)
    b = get_loss("dpo").loss_and_grad(d, ref, 0.5)
    assert np.array_equal(a.loss, b.loss) and np.array_equal(a.grad, b.grad)


def test_released_easy_needs_mean_logps() -> None:
    ref = ReferencePairs(np.array([-1.0]), np.array([-2.0]))
    with pytest.raises(ValueError, match="mean log-probs"):
        get_loss("released_easy").precompute(ref, 0.1)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_resolve_rejects_unknown_and_bad_params(name: str) -> None:
    """(f) resolve fills defaults; unknown names → TypeError naming them; γ < 0, τ ≤ 0, λ < 0, α ≤ 0 (released
    adaptive) or α < 0 (dpo_nll), or non-finite → ValueError naming the parameter."""
    spec = get_loss(name)
    assert spec.resolve() == dict(spec.defaults)
    with pytest.raises(TypeError, match="bogus"):
        spec.resolve(bogus=1.0)
    with pytest.raises(TypeError, match="bogus"):
        spec.precompute(_hand_ref(), 1.0, bogus=1.0)
    bad = {
        "gamma": [-0.1, math.nan, math.inf, np.array([0.1, -1.0])],
        "tau": [0.0, -1.0, math.inf],
        "alpha": [0.0] if name == "released_adaptive" else [-0.1, math.nan, math.inf],
        "lam": [-1e-9, math.nan, -math.inf, np.array([1.0, -2.0])],
    }
    for p in spec.params:
        for v in bad[p]:
            with pytest.raises(ValueError, match=p):
                spec.resolve(**{p: v})
            with pytest.raises(ValueError, match=p):
                spec.precompute(_hand_ref(), 1.0, **{p: v})
    for p in set(spec.params) & {"gamma", "lam"} | ({"alpha"} if name == "dpo_nll" else set()):
        assert spec.resolve(**{p: 0.0})[p] == 0.0  # γ = 0, λ = 0, dpo_nll's α = 0 are allowed (DPO)


def test_released_transcription_agrees_with_the_registry() -> None:
    """The independent transcription of the released configs (proofs_check.released_reference, C10) has the
    registry's defaults: β 0.1, γ 0.5, τ 2, α 1; the demo config β 2.5 and γ 0.05 (cpo_margin's default γ)."""
    from dpocheck.proofs_check import released_reference as rr
    from dpocheck.theory import CPO_MARGIN_DEMO_GAMMA, RELEASED_DEMO

    cfg = rr.RELEASED_CONFIG_DEFAULTS
    assert {k: cfg[k] for k in ("beta", "gamma", "tau", "alpha")} == RELEASED_DEFAULTS
    assert get_loss("released_adaptive").defaults == {k: cfg[k] for k in ("gamma", "tau", "alpha")}
    assert {k: rr.RELEASED_DEMO_CONFIG[k] for k in ("beta", "gamma")} == RELEASED_DEMO
    assert get_loss("cpo_margin").defaults["gamma"] == CPO_MARGIN_DEMO_GAMMA == rr.RELEASED_DEMO_CONFIG["gamma"]
