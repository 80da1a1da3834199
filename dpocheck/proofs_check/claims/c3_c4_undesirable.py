"""Checks of PAPER.md C3–C4: the undesirable space U, the DPO gradient and its vanishing in U, and the escape time.

Every ``check_*`` takes the profile and, as keyword parameters, the formulas under test: ``claimed*`` are the paper's
formulas (sympy) and ``impl*`` the theory layer's implementations; both are injection points for the mutation tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp
from hypothesis import strategies as st
from scipy.special import expit

from dpocheck import theory as th

from ..compose import combine
from ..core import FAILS, VERIFIED, Outcome, Profile, corrected_statement, fmt, fmt_example
from ..search import rel_err, search
from ..strategies import reals, uniform_betas
from ..symbolic import SymbolicCheck, compare, limit_check, sigmoid, sign_check, softplus
from ._shared import A_POS, BETA, DELTA, DOM, DREF

# =========================================================================================== C3


def check_u_nonempty(
    profile: Profile,
    *,
    impl: Callable[..., Any] = th.undesirable_space_nonempty,
    impl_member: Callable[..., Any] = th.in_undesirable_space,
) -> Outcome:
    """C3: U = {δ_ref < δ_π < 0} is non-empty iff δ_ref < 0."""
    dneg = sp.Symbol("delta_ref", negative=True)
    dnonneg = sp.Symbol("delta_ref", nonnegative=True)
    s1 = sign_check("length of U = (δ_ref, 0) when δ_ref < 0", sp.Interval.open(dneg, 0).measure, "positive")
    empty = sp.Interval.open(dnonneg, 0).is_empty
    s2 = SymbolicCheck(
        "U = (δ_ref, 0) for δ_ref ≥ 0",
        "empty",
        "empty" if empty else "not shown empty",
        True if empty else None,
        ["sympy: Interval.open(δ_ref, 0).is_empty for δ_ref ≥ 0"],
    )

    def prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]]:
        dref, d = ex["delta_ref"], ex["delta"]
        nonempty = bool(np.asarray(impl(dref)))
        bad = 0.0
        if dref < 0:
            witness = dref / 2
            bad += float(not nonempty) + float(not bool(np.asarray(impl_member(witness, dref))))
        else:
            bad += float(nonempty) + float(bool(np.asarray(impl_member(d, dref))))
        return bad, {"nonempty_flag": nonempty}

    strat = st.fixed_dictionaries({"delta_ref": reals(-30.0, 30.0), "delta": reals(-30.0, 30.0)})
    pins = [{"delta_ref": 0.0, "delta": -1e-12}, {"delta_ref": -1e-12, "delta": 0.0}]
    n1 = search(
        "non-empty flag and membership (witness δ_ref/2 when δ_ref < 0; none when δ_ref ≥ 0)",
        strat,
        prop,
        max_examples=profile.examples,
        tolerance=0.5,
        pinned=pins,
        error_meaning="mismatches",
    )
    return combine("per pair", [s1, s2], [n1])


def check_u_loss(
    profile: Profile,
    *,
    impl_loss: Callable[..., Any] = th.dpo_loss,
    impl_member: Callable[..., Any] = th.in_undesirable_space,
) -> Outcome:
    """C3: a policy in U has DPO loss below log 2 (its value at π_ref) and prefers y_l; conversely."""
    loss = softplus(-BETA * (DELTA - DREF))
    s1 = compare("ℓ_DPO at δ_θ = δ_ref", loss.subs(DELTA, DREF), sp.log(2), DOM, examples=profile.examples)
    s2 = sign_check(
        "∂ℓ_DPO/∂δ_θ",
        sp.diff(loss, DELTA),
        "negative",
        ["ℓ_DPO strictly decreasing ⇒ ℓ < log 2 ⇔ δ_θ > δ_ref; with δ_θ < 0: U = {ℓ < log 2} ∩ {δ_θ < 0}"],
    )

    def prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]] | None:
        beta, dref, d = ex["beta"], ex["delta_ref"], ex["delta"]
        if abs(beta * (d - dref)) < 1e-13:  # loss equals log 2 to rounding: undecidable in floating point
            return None
        ell = float(np.asarray(impl_loss(d, dref, beta).loss))
        in_u = bool(np.asarray(impl_member(d, dref)))
        low_and_prefers_l = (ell < math.log(2)) and d < 0
        return float(in_u != low_and_prefers_l), {"loss": ell, "in_U": in_u}

    strat = st.fixed_dictionaries(
        {"beta": uniform_betas(), "delta_ref": reals(-30.0, 30.0), "delta": reals(-30.0, 30.0)}
    )
    pins = [{"beta": 1.0, "delta_ref": -1.0, "delta": -0.5}, {"beta": 1.0, "delta_ref": 1.0, "delta": 0.5}]
    n1 = search(
        "δ in U ⇔ (ℓ_DPO < log 2 and δ < 0)",
        strat,
        prop,
        max_examples=profile.examples,
        tolerance=0.5,
        pinned=pins,
        error_meaning="mismatches",
    )
    return combine("per pair, any β > 0", [s1, s2], [n1])


# =========================================================================================== C4


def claimed_dpo_gradient(d: sp.Expr, dref: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """Prop. 3.4: ∂ℓ_DPO/∂δ_θ = −β·σ(β(δ_ref − δ_θ))."""
    return -beta * sigmoid(beta * (dref - d))


def check_dpo_gradient(
    profile: Profile, *, claimed: Callable[..., sp.Expr] = claimed_dpo_gradient, impl: Callable[..., Any] = th.dpo_loss
) -> Outcome:
    """C4: the DPO derivative, symbolically and against torch autograd (float64)."""
    import torch

    s1 = compare(
        "∂/∂δ_θ of softplus(−β(δ_θ − δ_ref))",
        sp.diff(softplus(-BETA * (DELTA - DREF)), DELTA),
        claimed(DELTA, DREF, BETA),
        DOM,
        examples=profile.examples,
    )

    @st.composite
    def data(draw: Any) -> dict[str, Any]:
        n = draw(st.integers(1, 8))
        return {
            "beta": draw(uniform_betas()),
            "delta": draw(st.lists(reals(-30.0, 30.0), min_size=n, max_size=n)),
            "delta_ref": draw(st.lists(reals(-30.0, 30.0), min_size=n, max_size=n)),
        }

    def prop(ex: dict[str, Any]) -> float:
        d = torch.tensor(ex["delta"], dtype=torch.float64, requires_grad=True)
        dref = torch.tensor(ex["delta_ref"], dtype=torch.float64)
        loss = -torch.nn.functional.logsigmoid(ex["beta"] * (d - dref))
        (g,) = torch.autograd.grad(loss.sum(), d)
        out = impl(d.detach(), dref, ex["beta"])
        return max(rel_err(out.loss, loss.detach()), rel_err(out.grad, g))

    n1 = search(
        "implementation loss and gradient vs torch autograd (float64)",
        data(),
        prop,
        max_examples=profile.examples,
        tolerance=1e-12,
    )
    return combine("per pair, any β > 0", [s1], [n1])


def check_gradient_shrinks(
    profile: Profile,
    *,
    impl: Callable[..., Any] = th.dpo_gradient_weight,
    impl_exit: Callable[..., Any] = th.exit_gradient_weight,
) -> Outcome:
    """C4: on U the weight falls from β/2 at δ_ref to β·σ(β·δ_ref) ≤ β·σ(−Δr*) at the exit (under violation)."""
    w = BETA * sigmoid(BETA * (DREF - DELTA))
    s1 = sign_check("∂w/∂δ_θ for w = β·σ(β(δ_ref − δ_θ))", sp.diff(w, DELTA), "negative")
    s2 = compare("w at δ_θ = δ_ref", w.subs(DELTA, DREF), BETA / 2, DOM, examples=profile.examples)
    s3 = compare("w at δ_θ = 0", w.subs(DELTA, 0), BETA * sigmoid(BETA * DREF), DOM, examples=profile.examples)
    s4 = sign_check(
        "dσ/dz",
        sp.diff(sigmoid(sp.Symbol("z", real=True)), sp.Symbol("z", real=True)),
        "positive",
        ["σ increasing and β·δ_ref ≤ −Δr* (violation) ⇒ β·σ(β·δ_ref) ≤ β·σ(−Δr*)"],
    )

    def prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]]:
        beta, dref = ex["beta"], ex["delta_ref"]
        dr = -beta * dref - ex["slack"]  # violated by construction: β·δ_ref + Δr* = −slack ≤ 0
        t1, t2 = sorted((ex["t1"], ex["t2"]))
        d1, d2 = dref * (1 - t1), dref * (1 - t2)  # δ_ref ≤ d1 ≤ d2 ≤ 0
        w1, w2 = float(np.asarray(impl(d1, dref, beta))), float(np.asarray(impl(d2, dref, beta)))
        w_entry = float(np.asarray(impl(dref, dref, beta)))
        w_exit = float(np.asarray(impl_exit(dref, beta)))
        bound = beta * expit(-dr)
        exact_exit = beta * expit(beta * dref)
        err = max(
            (w2 - w1) / max(w1, 1e-300) - 1e-12,  # must not increase along U
            abs(w_entry - beta / 2) / beta,
            abs(w_exit - exact_exit) / max(exact_exit, 1e-300),
            (w_exit - bound) / max(bound, 1e-300) - 1e-12,
        )
        return max(err, 0.0), {"entry_weight": w_entry, "exit_weight": w_exit, "bound_beta_sigma_minus_dr": bound}

    strat = st.fixed_dictionaries(
        {
            "beta": uniform_betas(),
            "delta_ref": reals(-30.0, -1e-6),
            "slack": reals(0.0, 20.0),
            "t1": reals(0.0, 1.0),
            "t2": reals(0.0, 1.0),
        }
    )
    n1 = search(
        "weights along U: monotone, β/2 at entry, β·σ(β·δ_ref) at exit, ≤ β·σ(−Δr*)",
        strat,
        prop,
        max_examples=profile.examples,
        tolerance=1e-10,
        pinned=[{"beta": 1.0, "delta_ref": -1.0, "slack": 0.0, "t1": 0.0, "t2": 1.0}],
    )
    return combine("violated pairs (β·δ_ref + Δr* ≤ 0), δ_θ ∈ [δ_ref, 0]", [s1, s2, s3, s4], [n1])


def check_gradient_vanishing(
    profile: Profile,
    *,
    impl_exit: Callable[..., Any] = th.exit_gradient_weight,
    impl: Callable[..., Any] = th.dpo_gradient_weight,
) -> Outcome:
    """C4 read literally: 'the DPO gradient vanishes as δ_θ → 0 inside U'. It does not: it stays ≥ β·σ(β·δ_ref) > 0."""
    s_pos = sign_check(
        "exit weight β·σ(β·δ_ref)",
        BETA * sigmoid(BETA * DREF),
        "positive",
        ["σ(z) > 0 for every finite z, so the weight at the exit of U is never 0"],
    )

    def literal(ex: dict[str, float]) -> tuple[float, dict[str, Any]]:
        w = float(np.asarray(impl_exit(ex["delta_ref"], ex["beta"])))
        return w, {"exit_weight": w, "entry_weight": ex["beta"] / 2}

    strat = st.fixed_dictionaries({"beta": uniform_betas(0.01, 20.0), "delta_ref": reals(-30.0, -1e-6)})
    lit = search(
        "literal: gradient weight at the exit of U equals 0",
        strat,
        literal,
        max_examples=profile.examples,
        tolerance=0.0,
        error_meaning="exit weight",
    )
    # corrected: relative vanishing, exit/entry = 2σ(β·δ_ref) → 0 only as β|δ_ref| → ∞
    ratio = (BETA * sigmoid(BETA * DREF)) / (BETA / 2)
    s1 = compare("exit/entry weight ratio", ratio, 2 * sigmoid(BETA * DREF), DOM, examples=profile.examples)
    s2 = limit_check("lim_{a→∞} 2σ(−β·a) (a = |δ_ref|)", 2 * sigmoid(-BETA * A_POS), A_POS, sp.oo, sp.Integer(0))

    def rel(ex: dict[str, float]) -> float:
        beta, dref = ex["beta"], ex["delta_ref"]
        r = float(np.asarray(impl(0.0, dref, beta))) / float(np.asarray(impl(dref, dref, beta)))
        return abs(r - 2 * expit(beta * dref)) / (2 * expit(beta * dref))

    n1 = search(
        "implementation exit/entry ratio vs 2σ(β·δ_ref)", strat, rel, max_examples=profile.examples, tolerance=1e-12
    )
    corr = combine("relative vanishing", [s1, s2], [n1])
    corrected = corrected_statement(
        "Inside U the DPO gradient weight shrinks by the factor 2σ(β·δ_ref) ∈ (0, 1) between entry (β/2) and exit "
        "(β·σ(β·δ_ref)); it tends to 0 only as β|δ_ref| → ∞ ('vanishing' is relative)",
        corr.reading,
        corr.verdict,
        corr.evidence,
        corr.details,
    )
    if lit.passed:  # the implementation's weights reach 0: the literal statement holds for these numbers
        return Outcome(
            VERIFIED,
            "literal (the gradient weight reaches 0 at the exit of U)",
            f"implementation gives exit weight 0 on {lit.n_cases} cases (contradicts sympy's β·σ(β·δ_ref) > 0)",
            {"literal": lit.to_details(), "symbolic": [s_pos.to_details()]},
            corrected,
        )
    ex = lit.counterexample or {}
    evidence = (
        f"weight at the exit of U is β·σ(β·δ_ref) > 0 for finite δ_ref (sympy); minimal counterexample "
        f"{fmt_example(ex)}: exit weight {fmt(lit.counterexample_error)} vs entry {fmt(ex.get('beta', 0) / 2)}"
    )
    return Outcome(
        FAILS,
        "literal (the gradient weight reaches 0 at the exit of U)",
        evidence,
        {"literal": lit.to_details(), "symbolic": [s_pos.to_details()]},
        corrected,
    )


def claimed_escape_time(a: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """C4 [ours]: T = (|δ_ref| + (e^{β|δ_ref|} − 1)/β)/(2β), a = |δ_ref|."""
    return (a + (sp.exp(beta * a) - 1) / beta) / (2 * beta)


def _flow_escape_time(z0: np.ndarray, w: int, l: int, beta: float, dref: float, t_max: float) -> float:
    """Time for gradient flow on the logits of a tabular softmax policy to reach δ_θ = 0 (first principles)."""
    from scipy.integrate import solve_ivp

    def rhs(_t: float, z: np.ndarray) -> np.ndarray:
        d = z[w] - z[l]
        g = -beta * expit(beta * (dref - d))  # ∂ℓ/∂δ; ∂δ/∂z_w = 1, ∂δ/∂z_l = −1 (normaliser cancels)
        dz = np.zeros_like(z)
        dz[w], dz[l] = -g, g
        return dz

    def event(_t: float, z: np.ndarray) -> float:
        return z[w] - z[l]

    event.terminal = True  # type: ignore[attr-defined]
    event.direction = 1  # type: ignore[attr-defined]
    sol = solve_ivp(rhs, (0.0, t_max), z0, events=event, rtol=1e-11, atol=1e-12, method="LSODA")
    return float(sol.t_events[0][0]) if len(sol.t_events[0]) else math.inf


def check_escape_time(
    profile: Profile,
    *,
    claimed: Callable[..., sp.Expr] = claimed_escape_time,
    impl: Callable[..., Any] = th.escape_time,
    impl_log: Callable[..., Any] = th.log_escape_time,
) -> Outcome:
    """C4 [ours]: the gradient-flow time to leave U, from the ODE du/dt = 2β·σ(−βu) (u = δ_θ − δ_ref)."""
    u = sp.Symbol("u", real=True)
    zw, zl = sp.symbols("z_w z_l", real=True)
    delta = zw - zl
    loss = softplus(-BETA * (delta - DREF))
    rate = -sp.diff(loss, zw) + sp.diff(loss, zl)  # dδ/dt = dz_w/dt − dz_l/dt with dz/dt = −∇ℓ
    s0 = compare(
        "dδ_θ/dt under gradient flow on the logits",
        rate.subs(zw, zl + DREF + u),
        2 * BETA * sigmoid(-BETA * u),
        {**DOM, u: (0.0, 30.0), zl: (-5.0, 5.0)},
        ["δ_θ = z_w − z_l (log-softmax normaliser cancels); dz/dt = −∇_z ℓ"],
        examples=profile.examples,
    )
    integral = sp.integrate(1 / (2 * BETA * sigmoid(-BETA * u)), (u, 0, A_POS))
    s1 = compare(
        "∫_0^{|δ_ref|} du / (2β·σ(−βu))",
        integral,
        claimed(A_POS, BETA),
        DOM,
        ["1/σ(−βu) = 1 + e^{βu}"],
        examples=profile.examples,
    )

    @st.composite
    def data(draw: Any) -> dict[str, Any]:
        beta = draw(uniform_betas(0.05, 10.0))
        a = draw(reals(1e-3, 20.0 / beta))  # β|δ_ref| ≤ 20 keeps the ODE time ≤ e^20/β²
        n_y = draw(st.integers(2, 4))
        return {
            "beta": beta,
            "delta_ref": -a,
            "n_responses": n_y,
            "other_logits": draw(st.lists(reals(-5.0, 5.0), min_size=n_y - 1, max_size=n_y - 1)),
        }

    def prop(ex: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        beta, dref = ex["beta"], ex["delta_ref"]
        z0 = np.array([0.0, *ex["other_logits"]])
        z0[0] = z0[1] + dref  # start at the reference: δ_θ = δ_ref
        t_formula = float(np.asarray(impl(dref, beta)))
        t_flow = _flow_escape_time(z0, 0, 1, beta, dref, 4 * t_formula + 10)
        return abs(t_flow - t_formula) / t_flow, {"ode_time": t_flow, "formula_time": t_formula}

    n1 = search(
        "implementation T vs the time the ODE (LSODA, rtol 1e-11) takes to reach δ_θ = 0",
        data(),
        prop,
        max_examples=profile.heavy_examples,
        tolerance=1e-6,
        pinned=[{"beta": 1.0, "delta_ref": -1.0, "n_responses": 2, "other_logits": [0.0]}],
    )

    def log_prop(ex: dict[str, float]) -> float:
        import mpmath

        beta, a = ex["beta"], ex["a"]
        with mpmath.workdps(40):
            exact = mpmath.log((a + mpmath.expm1(beta * a) / beta) / (2 * beta))
        return abs(float(np.asarray(impl_log(-a, beta))) - float(exact)) / max(1.0, abs(float(exact)))

    n2 = search(
        "implementation log T vs mpmath (40 digits), β|δ_ref| up to 10^5",
        st.fixed_dictionaries({"beta": uniform_betas(0.01, 50.0), "a": reals(1e-6, 2000.0)}),
        log_prop,
        max_examples=profile.examples,
        tolerance=1e-12,
        pinned=[{"beta": 1.0, "a": 1000.0}],
    )
    return combine("tabular softmax policy, gradient flow from π_ref on one pair", [s0, s1], [n1, n2])
