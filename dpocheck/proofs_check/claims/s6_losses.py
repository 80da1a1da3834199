"""Checks of PAPER.md §6, the losses against likelihood displacement: DPOP (DPO-Positive, Pal et al. 2024, arXiv
2402.13228) and DPO + NLL (RPO, Pang et al. 2024, arXiv 2404.19733). Their reduction to DPO (λ = 0, α = 0), DPOP =
DPO on non-displaced pairs, their exact derivatives, and the absence of a stationary point with hard labels.

Every ``check_*`` takes the profile and, as keyword parameters, the formulas under test: ``claimed*`` are sympy
formulas and ``impl*`` the theory layer's implementations; both are injection points for the mutation tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp
from hypothesis import strategies as st

from dpocheck import theory as th

from ..compose import combine
from ..core import Outcome, Profile
from ..search import rel_err, search
from ..strategies import bandit_dicts, reals, uniform_betas
from ..symbolic import SymbolicCheck, compare, sigmoid, sign_check, softplus
from ._shared import A_POS, BETA, DELTA, DOM, DREF, bandit_of

LAM = sp.Symbol("lam", positive=True)
ALPHA = sp.Symbol("alpha", positive=True)
LW = sp.Symbol("logp_w", real=True)  # log π_θ(y_w|x)
RW = sp.Symbol("ref_logp_w", real=True)  # log π_ref(y_w|x)
PEN = sp.Symbol("P", nonnegative=True)
S6_DOM = {**DOM, LAM: (1e-3, 100.0), ALPHA: (1e-3, 10.0), LW: (-30.0, 0.0), RW: (-30.0, 0.0), PEN: (0.0, 30.0)}


def dpop_sym(d: sp.Expr, dref: sp.Expr, beta: sp.Expr, lam: sp.Expr, penalty: sp.Expr) -> sp.Expr:
    """PAPER §6: ℓ_DPOP = −log σ(β[(δ_θ − δ_ref) − λ·P]) = softplus(β(δ_ref − δ_θ) + β·λ·P)."""
    return softplus(beta * (dref - d) + beta * lam * penalty)


def _pair_data(lam_max: float = 100.0) -> st.SearchStrategy[dict[str, float]]:
    """One pair: β, δ_θ, δ_ref, the policy's and the reference's log π(y_w), λ, α, a token count."""
    return st.fixed_dictionaries(
        {
            "beta": uniform_betas(),
            "delta": reals(-30.0, 30.0),
            "delta_ref": reals(-30.0, 30.0),
            "logp_w": reals(-30.0, 0.0),
            "ref_logp_w": reals(-30.0, 0.0),
            "lam": reals(0.0, lam_max),
            "alpha": reals(0.0, 10.0),
            "tokens_w": st.integers(1, 500),
        }
    )


#: boundary cases every search runs first: the kink Δ_w = 0, λ = α = 0, a huge β
PINS = [
    {"beta": 1.0, "delta": 0.0, "delta_ref": 0.0, "logp_w": -1.0, "ref_logp_w": -1.0, "lam": 50.0, "alpha": 1.0,
     "tokens_w": 1},
    {"beta": 1e4, "delta": -1.0, "delta_ref": 2.0, "logp_w": -3.0, "ref_logp_w": -1.0, "lam": 0.0, "alpha": 0.0,
     "tokens_w": 7},
    {"beta": 0.01, "delta": 30.0, "delta_ref": -30.0, "logp_w": -30.0, "ref_logp_w": 0.0, "lam": 100.0, "alpha": 10.0,
     "tokens_w": 500},
]  # fmt: skip


def _same(a: Any, b: Any) -> float:
    """0 when the arrays are equal bit for bit, else their relative error (at least 1e-300 so it registers)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return 0.0 if np.array_equal(a, b) else max(rel_err(a, b), 1e-300)


# ============================================================================================ reductions


def check_dpop_lambda_zero(profile: Profile, *, impl: Callable[..., Any] = th.dpop_loss) -> Outcome:
    """PAPER §6: DPOP with λ = 0 is DPO — loss, ∂ℓ/∂δ_θ and ∂ℓ/∂log π_θ(y_w) = 0 — bit for bit."""
    s1 = compare(
        "ℓ_DPOP at λ = 0",
        dpop_sym(DELTA, DREF, BETA, LAM, PEN).subs(LAM, 0),
        softplus(-BETA * (DELTA - DREF)),
        S6_DOM,
        examples=profile.examples,
    )
    s2 = compare("∂ℓ_DPOP/∂P at λ = 0", sp.diff(dpop_sym(DELTA, DREF, BETA, LAM, PEN), PEN).subs(LAM, 0), 0, S6_DOM)
    dpop, dpo = th.get_loss("dpop"), th.get_loss("dpo")

    def prop(ex: dict[str, Any]) -> float:
        b, d, dref, lw, rw = ex["beta"], ex["delta"], ex["delta_ref"], ex["logp_w"], ex["ref_logp_w"]
        out = impl(np.array([d]), dref, b, np.array([lw]), rw, lam=0.0)
        want = th.dpo_loss(np.array([d]), dref, b)
        ref = th.ReferencePairs.single_token(np.array([rw]), np.array([rw - dref]))
        via_registry = dpop.loss_and_grad(np.array([d]), ref, b, policy_logp_w=np.array([lw]), lam=0.0)
        dpo_registry = dpo.loss_and_grad(np.array([d]), ref, b)
        return max(
            _same(out.loss, want.loss),
            _same(out.grad, want.grad),
            _same(out.grad_logp_w, 0.0),
            _same(via_registry.loss, dpo_registry.loss),
            _same(via_registry.grad, dpo_registry.grad),
        )

    n1 = search(
        "implementation (and registry) at λ = 0 vs DPO, bit for bit",
        _pair_data(),
        prop,
        max_examples=profile.examples,
        tolerance=0.0,
        pinned=PINS,
    )
    return combine("per pair, any β > 0, both log-prob conventions", [s1, s2], [n1])


def check_dpo_nll_alpha_zero(profile: Profile, *, impl: Callable[..., Any] = th.dpo_nll_loss) -> Outcome:
    """PAPER §6: DPO + NLL with α = 0 is DPO — loss and ∂ℓ/∂δ_θ bit for bit, ∂ℓ/∂log π_θ(y_w) = 0."""
    n_tok = sp.Symbol("n", positive=True)
    nll = softplus(-BETA * (DELTA - DREF)) - ALPHA * LW / n_tok
    s1 = compare(
        "ℓ_DPO+NLL at α = 0",
        nll.subs(ALPHA, 0),
        softplus(-BETA * (DELTA - DREF)),
        {**S6_DOM, n_tok: (1.0, 500.0)},
        examples=profile.examples,
    )
    nll_spec, dpo = th.get_loss("dpo_nll"), th.get_loss("dpo")

    def prop(ex: dict[str, Any]) -> float:
        b, d, dref, lw, n = ex["beta"], ex["delta"], ex["delta_ref"], ex["logp_w"], ex["tokens_w"]
        out = impl(np.array([d]), dref, b, np.array([lw]), alpha=0.0, tokens_w=n)
        want = th.dpo_loss(np.array([d]), dref, b)
        ref = th.ReferencePairs(np.array([-1.0]), np.array([-1.0 - dref]), tokens_w=n, tokens_l=1)
        via_registry = nll_spec.loss_and_grad(np.array([d]), ref, b, policy_logp_w=np.array([lw]), alpha=0.0)
        dpo_registry = dpo.loss_and_grad(np.array([d]), ref, b)
        return max(
            _same(out.loss, want.loss),
            _same(out.grad, want.grad),
            _same(np.abs(out.grad_logp_w), 0.0),
            _same(via_registry.loss, dpo_registry.loss),
            _same(via_registry.grad, dpo_registry.grad),
        )

    n1 = search(
        "implementation (and registry) at α = 0 vs DPO, bit for bit",
        _pair_data(),
        prop,
        max_examples=profile.examples,
        tolerance=0.0,
        pinned=PINS,
    )
    return combine("per pair, any β > 0, both log-prob conventions", [s1], [n1])


# ====================================================================================== DPOP = DPO if not displaced


def check_dpop_non_displaced(profile: Profile, *, impl: Callable[..., Any] = th.dpop_loss) -> Outcome:
    """PAPER §6 [ours]: P = max(0, −Δ_w) is 0 unless Δ_w < 0, so DPOP = DPO (value, ∂ℓ/∂δ_θ) on non-displaced pairs;
    on displaced pairs (λ > 0) DPOP > DPO and its gradient weight β·σ(·) exceeds DPO's."""
    a_nonneg = sp.Symbol("a", nonnegative=True)
    p_nondisp = sp.Max(0, RW - (RW + a_nonneg))  # Δ_w = a ≥ 0
    s1 = SymbolicCheck(
        "P = max(0, log π_ref(y_w) − log π_θ(y_w)) for Δ_w = a ≥ 0",
        "0",
        sp.sstr(sp.simplify(p_nondisp)),
        sp.simplify(p_nondisp) == 0,
        ["Δ_w = log π_θ(y_w) − log π_ref(y_w) ≥ 0 ⇒ P = 0 ⇒ ℓ_DPOP = softplus(β(δ_ref − δ_θ)) = ℓ_DPO"],
    )
    p_disp = sp.simplify(sp.Max(0, RW - (RW - A_POS)))  # Δ_w = −a < 0
    s2 = compare("P for Δ_w = −a < 0", p_disp, A_POS, S6_DOM, examples=profile.examples)
    x, t = sp.Symbol("x", real=True), sp.Symbol("t", positive=True)
    s3 = sign_check(
        "∂/∂t softplus(x + t)",
        sp.diff(softplus(x + t), t),
        "positive",
        ["ℓ_DPOP = softplus(x + βλa) with x = β(δ_ref − δ_θ): > softplus(x) = ℓ_DPO for βλa > 0"],
    )
    s4 = sign_check(
        "dσ/dz",
        sp.diff(sigmoid(x), x),
        "positive",
        ["|∂ℓ/∂δ_θ| = β·σ(x + βλa) > β·σ(x), DPO's weight (C4): DPOP pushes displaced pairs harder"],
    )

    def prop(ex: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        b, d, dref, lw, rw, lam = ex["beta"], ex["delta"], ex["delta_ref"], ex["logp_w"], ex["ref_logp_w"], ex["lam"]
        out = impl(np.array([d]), dref, b, np.array([lw]), rw, lam=lam)
        dpo = th.dpo_loss(np.array([d]), dref, b)
        if lw >= rw:  # not displaced: DPO exactly
            err = max(_same(out.loss, dpo.loss), _same(out.grad, dpo.grad), _same(np.abs(out.grad_logp_w), 0.0))
        else:  # displaced: at least DPO's loss and weight
            err = max(float(dpo.loss[0] - out.loss[0]), float(out.grad[0] - dpo.grad[0]), 0.0)
        return err, {"displaced": lw < rw, "dpop_loss": float(out.loss[0]), "dpo_loss": float(dpo.loss[0])}

    n1 = search(
        "implementation: = DPO when Δ_w ≥ 0 (bit for bit), ≥ DPO in loss and weight when Δ_w < 0",
        _pair_data(),
        prop,
        max_examples=profile.examples,
        tolerance=0.0,
        pinned=PINS,
    )
    return combine("per pair, λ ≥ 0, any β > 0", [s1, s2, s3, s4], [n1])


# ============================================================================================ exact derivatives


def claimed_dpop_grads(d: sp.Expr, dref: sp.Expr, beta: sp.Expr, lam: sp.Expr, lw: sp.Expr, rw: sp.Expr) -> list:
    """Displaced branch: ∂ℓ/∂δ_θ = −β·σ(z), ∂ℓ/∂log π_θ(y_w) = −β·λ·σ(z), z = β(δ_ref − δ_θ) + β·λ·(rw − lw)."""
    z = beta * (dref - d) + beta * lam * (rw - lw)
    return [-beta * sigmoid(z), -beta * lam * sigmoid(z)]


def _autograd_prop(name: str, impl: Callable[..., Any]) -> Callable[[dict[str, Any]], float]:
    """Implementation loss and both derivatives vs torch autograd of PAPER §6's formula (torch.relu for P, whose
    derivative at 0 is 0: the non-displaced side, the registry's convention at the kink)."""
    import torch

    def prop(ex: dict[str, Any]) -> float:
        b = ex["beta"]
        d = torch.tensor([ex["delta"]], dtype=torch.float64, requires_grad=True)
        lw = torch.tensor([ex["logp_w"]], dtype=torch.float64, requires_grad=True)
        dref, rw, n = ex["delta_ref"], ex["ref_logp_w"], ex["tokens_w"]
        if name == "dpop":
            loss = -torch.nn.functional.logsigmoid(b * ((d - dref) - ex["lam"] * torch.relu(rw - lw)))
            out = impl(d.detach(), dref, b, lw.detach(), rw, lam=ex["lam"])
        else:
            loss = -torch.nn.functional.logsigmoid(b * (d - dref)) - ex["alpha"] * lw / n
            out = impl(d.detach(), dref, b, lw.detach(), alpha=ex["alpha"], tokens_w=n)
        gd, gw = torch.autograd.grad(loss.sum(), (d, lw))
        scale = 1.0 + b * (abs(ex["delta"]) + abs(dref)) * (1.0 + ex["lam"])
        return max(
            rel_err(out.loss, loss.detach()) / scale,
            rel_err(out.grad, gd) / scale,
            rel_err(out.grad_logp_w, gw) / scale,
        )

    return prop


def _logit_gradient_prop(name: str) -> Callable[[dict[str, Any]], float]:
    """The tabular logit gradient g_δ(e_w − e_l) + g_w(e_w − π(·|x)) from the registry vs torch autograd through
    log_softmax, on a bandit (several pairs per context) at random logits."""
    import torch

    def prop(ex: dict[str, Any]) -> float:
        bd = bandit_of(ex["bandit"])
        X, Y = bd.log_pi_ref.shape
        z_np = np.asarray(ex["logits"][: X * Y]).reshape(X, Y)
        log_pi = z_np - np.logaddexp.reduce(z_np, axis=1, keepdims=True)
        p = bd.pairs
        spec = th.get_loss(name)
        ref = th.ReferencePairs.single_token(*bd.log_pi_ref_pairs())
        params = {"lam": ex["lam"]} if name == "dpop" else {"alpha": ex["alpha"]}
        lw = log_pi[p[:, 0], p[:, 1]]
        out = spec.loss_and_grad(lw - log_pi[p[:, 0], p[:, 2]], ref, bd.beta, policy_logp_w=lw, **params)
        analytic = th.tabular_logit_gradient(out.grad, p, (X, Y), grad_logp_w=out.grad_logp_w, log_pi=log_pi)
        z = torch.tensor(z_np, dtype=torch.float64, requires_grad=True)
        lp = torch.log_softmax(z, dim=1)
        pt = torch.as_tensor(p)
        lw_t = lp[pt[:, 0], pt[:, 1]]
        loss = spec.loss_and_grad(lw_t - lp[pt[:, 0], pt[:, 2]], ref, bd.beta, policy_logp_w=lw_t, **params).loss
        (auto,) = torch.autograd.grad(loss.sum(), z)
        return rel_err(analytic, auto) / (1.0 + bd.beta * (1.0 + ex["lam"]))

    return prop


def _bandit_data() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "bandit": bandit_dicts(max_contexts=2, max_responses=4, pairs="random"),
            "logits": st.lists(reals(-6.0, 6.0), min_size=8, max_size=8),
            "lam": reals(0.0, 60.0),
            "alpha": reals(0.0, 5.0),
        }
    )


def check_dpop_gradient(
    profile: Profile, *, claimed: Callable[..., list] = claimed_dpop_grads, impl: Callable[..., Any] = th.dpop_loss
) -> Outcome:
    """PAPER §6: DPOP's exact derivatives (sympy on each branch), the implementation against torch autograd (the
    kink Δ_w = 0 included: one-sided from Δ_w ≥ 0, i.e. 0), and the tabular logit gradient."""
    displaced = dpop_sym(DELTA, DREF, BETA, LAM, RW - LW)
    s1 = compare(
        "(∂/∂δ_θ, ∂/∂log π_θ(y_w)) of ℓ_DPOP where Δ_w < 0",
        [sp.diff(displaced, DELTA), sp.diff(displaced, LW)],
        claimed(DELTA, DREF, BETA, LAM, LW, RW),
        S6_DOM,
        examples=profile.examples,
    )
    s2 = compare(
        "∂/∂log π_θ(y_w) of ℓ_DPOP where Δ_w > 0 (P = 0)",
        sp.diff(dpop_sym(DELTA, DREF, BETA, LAM, 0), LW),
        0,
        S6_DOM,
        ["at Δ_w = 0 the registry takes this (non-displaced) side: 0, as torch's relu"],
    )
    n1 = search(
        "implementation loss and both derivatives vs torch autograd (float64)",
        _pair_data(),
        _autograd_prop("dpop", impl),
        max_examples=profile.examples,
        tolerance=1e-12,
        pinned=PINS,
    )
    n2 = search(
        "tabular logit gradient g_δ(e_w − e_l) + g_w(e_w − π) vs autograd through log_softmax",
        _bandit_data(),
        _logit_gradient_prop("dpop"),
        max_examples=profile.heavy_examples,
        tolerance=1e-11,
    )
    return combine("per pair and tabular softmax policies, any β > 0, λ ≥ 0", [s1, s2], [n1, n2])


def claimed_dpo_nll_grads(d: sp.Expr, dref: sp.Expr, beta: sp.Expr, alpha: sp.Expr, n: sp.Expr) -> list:
    """∂ℓ/∂δ_θ = −β·σ(β(δ_ref − δ_θ)) (DPO's), ∂ℓ/∂log π_θ(y_w) = −α/|y_w|."""
    return [-beta * sigmoid(beta * (dref - d)), -alpha / n]


def check_dpo_nll_gradient(
    profile: Profile,
    *,
    claimed: Callable[..., list] = claimed_dpo_nll_grads,
    impl: Callable[..., Any] = th.dpo_nll_loss,
) -> Outcome:
    """PAPER §6: DPO + NLL's exact derivatives (sympy), the implementation against torch autograd, the NLL term
    per token in both conventions (summed log-prob with |y_w| tokens = per-token mean with 1), the logit gradient."""
    n_tok = sp.Symbol("n", positive=True)
    loss = softplus(BETA * (DREF - DELTA)) - ALPHA * LW / n_tok
    s1 = compare(
        "(∂/∂δ_θ, ∂/∂log π_θ(y_w)) of ℓ_DPO+NLL",
        [sp.diff(loss, DELTA), sp.diff(loss, LW)],
        claimed(DELTA, DREF, BETA, ALPHA, n_tok),
        {**S6_DOM, n_tok: (1.0, 500.0)},
        examples=profile.examples,
    )
    n1 = search(
        "implementation loss and both derivatives vs torch autograd (float64)",
        _pair_data(),
        _autograd_prop("dpo_nll", impl),
        max_examples=profile.examples,
        tolerance=1e-12,
        pinned=PINS,
    )

    def conventions(ex: dict[str, Any]) -> float:
        b, d, dref, mean, n, a = ex["beta"], ex["delta"], ex["delta_ref"], ex["logp_w"], ex["tokens_w"], ex["alpha"]
        summed = impl(np.array([d]), dref, b, np.array([n * mean]), alpha=a, tokens_w=n)
        per_token = impl(np.array([d]), dref, b, np.array([mean]), alpha=a, tokens_w=1)
        return max(rel_err(summed.loss, per_token.loss), rel_err(summed.grad_logp_w * n, per_token.grad_logp_w))

    n2 = search(
        "NLL term with summed log-prob n·ℓ̄ and tokens_w = n equals the per-token mean ℓ̄ with tokens_w = 1",
        _pair_data(),
        conventions,
        max_examples=profile.examples,
        tolerance=1e-13,
        pinned=PINS,
    )
    n3 = search(
        "tabular logit gradient g_δ(e_w − e_l) + g_w(e_w − π) vs autograd through log_softmax",
        _bandit_data(),
        _logit_gradient_prop("dpo_nll"),
        max_examples=profile.heavy_examples,
        tolerance=1e-11,
    )
    return combine("per pair and tabular softmax policies, any β > 0, α ≥ 0", [s1], [n1, n2, n3])


# ============================================================================================ hard labels


def check_no_stationary_point_hard_labels(profile: Profile) -> Outcome:
    """With hard labels (y_w always preferred) on one pair, neither DPOP nor DPO + NLL has a stationary point in the
    logits of a tabular softmax policy (as DPO, C5b): ∂ℓ/∂z_l > 0 everywhere, so ℓ keeps falling as π(y_l) → 0."""
    z = sp.symbols("z_w z_l z_k", real=True)
    logz = sp.log(sum(sp.exp(v) for v in z))
    lw, ll, lk = (v - logz for v in z)
    pi_l, pi_k = sp.exp(ll), sp.exp(lk)
    dsym = lw - ll
    zarg = BETA * (DREF - dsym) + BETA * LAM * (RW - lw)  # displaced branch
    dom3 = {**S6_DOM, **{v: (-8.0, 8.0) for v in z}}
    s1 = compare(
        "∂ℓ_DPOP/∂z_l (displaced)",
        sp.diff(softplus(zarg), z[1]),
        BETA * sigmoid(zarg) * (1 + LAM * pi_l),
        dom3,
        examples=profile.examples,
    )
    s2 = compare(
        "∂ℓ_DPOP/∂z_l (not displaced)",
        sp.diff(softplus(BETA * (DREF - dsym)), z[1]),
        BETA * sigmoid(BETA * (DREF - dsym)),
        dom3,
        examples=profile.examples,
    )
    nll = softplus(BETA * (DREF - dsym)) - ALPHA * lw
    s3 = compare(
        "(∂/∂z_l, ∂/∂z_k) of ℓ_DPO+NLL",
        [sp.diff(nll, z[1]), sp.diff(nll, z[2])],
        [BETA * sigmoid(BETA * (DREF - dsym)) + ALPHA * pi_l, ALPHA * pi_k],
        dom3,
        ["the NLL also drains every other response y_k: no interior stationary point in those directions"],
        examples=profile.examples,
    )
    y, p = sp.Symbol("y", real=True), sp.Symbol("p", positive=True)
    s4 = sign_check("β·σ(y)·(1 + λ·p)", BETA * sigmoid(y) * (1 + LAM * p), "positive")
    s5 = sign_check("β·σ(y) + α·p", BETA * sigmoid(y) + ALPHA * p, "positive")

    def prop(ex: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        bd = bandit_of(ex["bandit"])
        X, Y = bd.log_pi_ref.shape
        z_np = np.asarray(ex["logits"][: X * Y]).reshape(X, Y)
        log_pi = z_np - np.logaddexp.reduce(z_np, axis=1, keepdims=True)
        pr = bd.pairs
        ref = th.ReferencePairs.single_token(*bd.log_pi_ref_pairs())
        worst = np.inf
        for name, params in (("dpop", {"lam": ex["lam"]}), ("dpo_nll", {"alpha": ex["alpha"]})):
            lwv = log_pi[pr[:, 0], pr[:, 1]]
            out = th.get_loss(name).loss_and_grad(
                lwv - log_pi[pr[:, 0], pr[:, 2]], ref, bd.beta, policy_logp_w=lwv, **params
            )
            g = th.tabular_logit_gradient(out.grad, pr, (X, Y), grad_logp_w=out.grad_logp_w, log_pi=log_pi)
            worst = min(worst, float(np.min(g[pr[:, 0], pr[:, 2]])))
        return (1.0 if worst <= 0 else 0.0), {"smallest_dl_dz_l": worst}

    data = st.fixed_dictionaries(
        {
            "bandit": bandit_dicts(max_contexts=2, max_responses=4, pairs="single"),
            "logits": st.lists(reals(-6.0, 6.0), min_size=8, max_size=8),
            "lam": reals(0.0, 60.0),
            "alpha": reals(0.0, 5.0),
        }
    )
    n1 = search(
        "implementation: ∂ℓ/∂z_l > 0 at random logits (one pair per context, hard labels)",
        data,
        prop,
        max_examples=profile.heavy_examples,
        tolerance=0.5,
        error_meaning="pairs with ∂ℓ/∂z_l ≤ 0",
    )
    return combine("hard labels, one pair per context, tabular softmax", [s1, s2, s3, s4, s5], [n1])


__all__ = [
    "check_dpo_nll_alpha_zero",
    "check_dpo_nll_gradient",
    "check_dpop_gradient",
    "check_dpop_lambda_zero",
    "check_dpop_non_displaced",
    "check_no_stationary_point_hard_labels",
]
