"""Checks of PAPER.md C5–C6: conditional equivalence of DPO and RLHF at the population optimum, the ordered-pair
reading and shift invariance.

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
from scipy.optimize import brentq
from scipy.special import expit

from dpocheck import theory as th

from ..compose import combine
from ..core import FAILS, PROVED, Outcome, Profile, corrected_statement, fmt, fmt_example
from ..search import rel_err, search
from ..strategies import bandit_dicts, reals, uniform_betas
from ..symbolic import compare, sigmoid, sign_check, softplus
from ._shared import BETA, DELTA, DOM, DR, DREF, bandit_of, np_log_pi_opt

# =========================================================================================== C5

Q = sp.Symbol("q", positive=True)


def claimed_population_stationary(dref: sp.Expr, dr: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """C5a: the population BT cross-entropy is stationary at δ_{π*} = δ_ref + Δr*/β."""
    return dref + dr / beta


def check_population_equivalence(
    profile: Profile,
    *,
    claimed: Callable[..., sp.Expr] = claimed_population_stationary,
    impl: Callable[..., Any] = th.population_stationary_delta,
) -> Outcome:
    """C5(a): −q·log σ(βu) − (1−q)·log σ(−βu), q = σ(Δr*), is minimised exactly at δ_θ = δ_{π*}, whatever its sign."""
    u = sp.Symbol("u", real=True)
    pop = Q * softplus(-BETA * u) + (1 - Q) * softplus(BETA * u)
    roots = sp.solve(sp.diff(pop, u), u)
    u_star = roots[0] if roots else sp.nan
    derived = DREF + u_star.subs(Q, sigmoid(DR))
    s1 = compare(
        "stationary δ_θ of the population BT loss (q = σ(Δr*))",
        derived,
        claimed(DREF, DR, BETA),
        DOM,
        [f"dL/du = 0 ⇒ u = {sp.sstr(u_star)}", "q = σ(Δr*) ⇒ log(q/(1−q)) = Δr*"],
        examples=profile.examples,
    )
    s2 = sign_check(
        "d²L/du² (strictly convex ⇒ the stationary point is the unique minimiser)",
        sp.diff(pop, u, 2).subs(Q, sigmoid(DR)),
        "positive",
    )

    def prop(ex: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        b = bandit_of(ex)
        q = expit(b.delta_reward())
        got = np.asarray(impl("dpo", b.delta_ref(), b.delta_reward(), b.beta))
        truth = []
        for qi, dref in zip(q, b.delta_ref(), strict=True):

            def dloss(d: float, qi: float = qi, dref: float = dref) -> float:  # first-principles derivative
                uu = b.beta * (d - dref)
                return b.beta * (-qi * expit(-uu) + (1 - qi) * expit(uu))

            c = dref + math.log(qi / (1 - qi)) / b.beta
            truth.append(brentq(dloss, c - 50, c + 50, xtol=1e-14, rtol=1e-15))
        d_star = th.policy_delta(np_log_pi_opt(b.log_pi_ref, b.reward, b.beta), b.pairs)
        err = max(rel_err(got, truth), rel_err(d_star, truth))
        return err, {"n_pairs": len(truth), "n_pairs_with_negative_delta_star": int(np.sum(d_star < 0))}

    n1 = search(
        "population minimiser (brentq on the BT loss's derivative) vs δ of π* and the implementation",
        bandit_dicts(reward_scale=3.0),
        prop,
        max_examples=profile.examples,
        tolerance=1e-8,
    )
    return combine("population (a): two-sided Bradley–Terry cross-entropy with q = σ(Δr*)", [s1, s2], [n1])


def check_ordered_pair(profile: Profile, *, impl_loss: Callable[..., Any] = th.dpo_loss) -> Outcome:
    """C5 read literally (ordered-pair loss): 'DPO ⇔ RLHF iff C1 holds' — δ_{π*} is not the DPO optimum."""
    s1 = sign_check(
        "∂ℓ_DPO/∂δ_θ",
        sp.diff(softplus(-BETA * (DELTA - DREF)), DELTA),
        "negative",
        ["the ordered-pair loss is strictly decreasing: no finite minimiser, infimum 0 as δ_θ → ∞"],
    )

    def prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]] | None:
        beta, dref, dr = ex["beta"], ex["delta_ref"], ex["reward_w"] - ex["reward_l"]
        if beta * dref + dr <= 0:
            return None  # C1 must hold on the pair for the 'if' direction
        d_star = dref + dr / beta
        l_star = float(np.asarray(impl_loss(d_star, dref, beta).loss))
        l_more = float(np.asarray(impl_loss(d_star + 1.0, dref, beta).loss))
        return l_star - l_more, {
            "delta_star": d_star,
            "loss_at_delta_star": l_star,
            "loss_at_delta_star_plus_1": l_more,
        }

    strat = st.fixed_dictionaries(
        {
            "beta": uniform_betas(0.01, 10.0),
            "delta_ref": reals(-10.0, 10.0),
            "reward_w": reals(-5.0, 5.0),
            "reward_l": reals(-5.0, 5.0),
        }
    )
    paper = {"beta": 1.0, "delta_ref": 0.0, "reward_w": 1.0, "reward_l": 0.0}
    lit = search(
        "paper's counterexample",
        st.just(paper),
        prop,
        max_examples=1,
        tolerance=0.0,
        pinned=[paper],
        error_meaning="loss decrease beyond δ*",
    )
    minimal = search(
        "minimal counterexample",
        strat,
        prop,
        max_examples=profile.examples,
        tolerance=0.0,
        error_meaning="loss decrease beyond δ*",
    )
    pop = check_population_equivalence(profile)
    corrected = corrected_statement(
        "Population reading (a): DPO's population Bradley–Terry loss is minimised exactly at δ_{π*}, so DPO "
        "reproduces RLHF on every pair — including its wrong ordering where C1 fails (C1 decides whether the "
        "reproduced ordering is right, not whether DPO equals RLHF)",
        pop.reading,
        pop.verdict,
        pop.evidence,
        pop.details,
    )
    info = lit.counterexample_info or {}
    if lit.passed and minimal.passed:
        return Outcome(
            PROVED,
            "ordered pair",
            "no counterexample found (unexpected)",
            {"paper_example": lit.to_details(), "minimal": minimal.to_details()},
            corrected,
        )
    evidence = (
        f"β=1, δ_ref=0, rewards (1, 0): C1 holds, δ*={fmt(info.get('delta_star'))} but ℓ(δ*)="
        f"{fmt(info.get('loss_at_delta_star'))} > ℓ(δ*+1)={fmt(info.get('loss_at_delta_star_plus_1'))}; the "
        f"ordered-pair loss is strictly decreasing (sympy), so it has no finite minimiser; hypothesis minimal "
        f"counterexample {fmt_example(minimal.counterexample or {})}"
    )
    return Outcome(
        FAILS,
        "ordered pair (one-sided loss, y_w always the winner)",
        evidence,
        {"paper_example": lit.to_details(), "minimal": minimal.to_details(), "symbolic": [s1.to_details()]},
        corrected,
    )


# =========================================================================================== C6


def claimed_dpo_loss(d: sp.Expr, dref: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """ℓ_DPO = softplus(−β(δ_θ − δ_ref))."""
    return softplus(-beta * (d - dref))


def check_shift_invariance(
    profile: Profile, *, claimed: Callable[..., sp.Expr] = claimed_dpo_loss, impl: Callable[..., Any] = th.dpo_loss
) -> Outcome:
    """C6: ℓ_DPO depends on π only through δ_θ − δ_ref; RLHF targets the absolute δ_{π*}."""
    c = sp.Symbol("c", real=True)
    s1 = compare(
        "ℓ_DPO(δ_θ + c; δ_ref + c)",
        claimed(DELTA + c, DREF + c, BETA),
        claimed(DELTA, DREF, BETA),
        {**DOM, c: (-50.0, 50.0)},
        ["the loss is a function of δ_θ − δ_ref alone"],
        examples=profile.examples,
    )
    s2 = sign_check(
        "∂ℓ_DPO/∂δ_θ (loss keeps falling along (δ_ref, 0) ⊂ U)",
        sp.diff(claimed(DELTA, DREF, BETA), DELTA),
        "negative",
        [
            "DPO lowers its loss by raising δ_θ − δ_ref, whatever the sign of δ_θ: "
            "a policy can lower the loss while staying in U (C3)"
        ],
    )

    def prop(ex: dict[str, float]) -> float:
        beta, d, dref, shift = ex["beta"], ex["delta"], ex["delta_ref"], ex["shift"]
        a = float(np.asarray(impl(d, dref, beta).loss))
        b = float(np.asarray(impl(d + shift, dref + shift, beta).loss))
        return abs(a - b) / max(1.0, abs(a))

    strat = st.fixed_dictionaries(
        {
            "beta": uniform_betas(),
            "delta": reals(-30.0, 30.0),
            "delta_ref": reals(-30.0, 30.0),
            "shift": reals(-50.0, 50.0),
        }
    )
    n1 = search(
        "implementation ℓ(δ + c; δ_ref + c) vs ℓ(δ; δ_ref)", strat, prop, max_examples=profile.examples, tolerance=1e-10
    )
    return combine("per pair", [s1, s2], [n1])
