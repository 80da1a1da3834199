"""Checks of PAPER.md C7: the β → ∞ soft-margin (hinge) limit of ℓ_DPO/β and its finite-β bound.

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

from dpocheck import theory as th

from ..compose import combine
from ..core import Outcome, Profile
from ..search import search
from ..strategies import reals, uniform_betas
from ..symbolic import compare, limit_check, sign_check, softplus
from ._shared import A_POS, BETA, DOM, DREF

# =========================================================================================== C7


def claimed_hinge(d: sp.Expr, dref: sp.Expr) -> sp.Expr:
    """Prop. 5.1: lim_{β→∞} ℓ_DPO/β = max(0, δ_ref − δ_θ)."""
    return sp.Max(0, dref - d)


def check_hinge_limit(
    profile: Profile, *, claimed: Callable[..., sp.Expr] = claimed_hinge, impl: Callable[..., Any] = th.dpo_loss
) -> Outcome:
    """C7 (Prop. 5.1): ℓ_DPO/β → max(0, δ_ref − δ_θ) as β → ∞ (cases δ_θ > δ_ref, δ_θ < δ_ref, δ_θ = δ_ref)."""
    b = sp.Symbol("b", positive=True)  # β as the limit variable
    steps = []
    checks = []
    for label, x in (("δ_θ − δ_ref = a > 0", A_POS), ("δ_θ − δ_ref = −a < 0", -A_POS), ("δ_θ = δ_ref", 0)):
        target = claimed(DREF + x, DREF)
        checks.append(
            limit_check(f"lim_(β→∞) ℓ/β for {label}", softplus(-b * x) / b, b, sp.oo, sp.simplify(target), steps)
        )

    def prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]]:
        d, dref = ex["delta"], ex["delta_ref"]
        hinge = float(sp.N(claimed(sp.Float(d), sp.Float(dref))))
        gaps = [abs(float(np.asarray(impl(d, dref, 10.0**k).loss)) / 10.0**k - hinge) for k in range(0, 9)]
        # the distance must shrink to ≤ (log 2)/β at β = 1e8
        return gaps[-1] * 1e8 / math.log(2), {"gap_at_beta_1e8": gaps[-1]}

    strat = st.fixed_dictionaries({"delta": reals(-30.0, 30.0), "delta_ref": reals(-30.0, 30.0)})
    n1 = search(
        "|ℓ/β − claimed limit| · β/log 2 at β = 1e8 (must be ≤ 1)",
        strat,
        prop,
        max_examples=profile.examples,
        tolerance=1.0 + 1e-6,
        error_meaning="scaled distance",
    )
    return combine("per pair, β → ∞", checks, [n1])


def claimed_soft_margin_bound(beta: sp.Expr) -> sp.Expr:
    """Prop. 5.1 for finite β: 0 ≤ ℓ_DPO/β − max(0, δ_ref − δ_θ) ≤ (log 2)/β."""
    return sp.log(2) / beta


def check_soft_margin_bound(
    profile: Profile,
    *,
    claimed: Callable[[sp.Expr], sp.Expr] = claimed_soft_margin_bound,
    impl: Callable[..., Any] = th.soft_margin_gap,
) -> Outcome:
    """C7: the gap ℓ/β − hinge is softplus(−β|δ_θ − δ_ref|)/β ∈ (0, (log 2)/β], attained at δ_θ = δ_ref."""
    gap_pos = softplus(-BETA * A_POS) / BETA  # δ_θ − δ_ref = a > 0: hinge 0
    gap_neg = softplus(BETA * A_POS) / BETA - A_POS  # δ_θ − δ_ref = −a: hinge a
    s1 = compare(
        "β·(ℓ/β − hinge) for δ_θ < δ_ref",
        BETA * gap_neg,
        softplus(-BETA * A_POS),
        DOM,
        via_exp=True,
        examples=profile.examples,
        steps=["log(1 + e^{βa})/β − a = log(1 + e^{−βa})/β: the gap is softplus(−β|δ_θ − δ_ref|)/β"],
    )
    s2 = sign_check("the gap softplus(−β·a)/β", gap_pos, "positive")
    s3 = compare(
        "sup of the gap (at δ_θ = δ_ref, e^{−β·0} = 1)",
        softplus(0) / BETA,
        claimed(BETA),
        DOM,
        ["softplus(−β|x|) ≤ softplus(0) = log 2 (decreasing in |x|)"],
        examples=profile.examples,
    )
    s4 = sign_check("∂/∂a of softplus(−β·a)/β", sp.diff(gap_pos, A_POS), "negative")
    bound = sp.lambdify(BETA, claimed(BETA), modules="math")

    def prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]]:
        beta, d, dref = ex["beta"], ex["delta"], ex["delta_ref"]
        g = float(np.asarray(impl(d, dref, beta)))
        tol = 1e-13 * (1 + abs(d) + abs(dref))
        over = max(-g - tol, g - bound(beta) - tol, 0.0)
        return over * beta, {"gap": g, "bound": bound(beta)}

    strat = st.fixed_dictionaries(
        {"beta": uniform_betas(0.01, 1000.0), "delta": reals(-30.0, 30.0), "delta_ref": reals(-30.0, 30.0)}
    )
    n1 = search(
        "implementation gap within [0, bound]",
        strat,
        prop,
        max_examples=profile.examples,
        tolerance=1e-12,
        pinned=[{"beta": 0.5, "delta": 1.0, "delta_ref": 1.0}],
        error_meaning="excess · β",
    )
    return combine("per pair, finite β > 0", [s1, s2, s3, s4], [n1])
