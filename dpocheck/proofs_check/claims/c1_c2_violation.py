"""Checks of PAPER.md C1–C2: the RLHF optimum, the key identity δ_{π*} = δ_ref + Δr*/β, the violation condition, its
β-monotonicity, Chen et al.'s equivalence and the real-data violation rate.

Every ``check_*`` takes the profile and, as keyword parameters, the formulas under test: ``claimed*`` are the paper's
formulas (sympy) and ``impl*`` the theory layer's implementations; both are injection points for the mutation tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp
from hypothesis import strategies as st
from scipy.special import logsumexp

from dpocheck import theory as th

from ..compose import combine
from ..core import NOT_CHECKABLE, Outcome, Profile, fmt_example
from ..search import rel_err, search
from ..strategies import bandit_dicts, reals, uniform_betas
from ..symbolic import compare, sigmoid, sign_check
from ._shared import BETA, DOM, DR, DREF, bandit_of, np_log_pi_opt

# =========================================================================================== C1


def claimed_rlhf_optimum(refs: list[sp.Expr], rewards: list[sp.Expr], beta: sp.Expr) -> list[sp.Expr]:
    """PAPER §1: π*(y) = π_ref(y)·exp(r*(y)/β) / Z."""
    z = sum(p * sp.exp(r / beta) for p, r in zip(refs, rewards, strict=True))
    return [p * sp.exp(r / beta) / z for p, r in zip(refs, rewards, strict=True)]


@st.composite
def _bandit_and_policy(draw: Any) -> dict[str, Any]:
    b = draw(bandit_dicts(pairs="single"))
    n = len(b["log_pi_ref"]) * len(b["log_pi_ref"][0])
    b["policy_logits"] = draw(st.lists(reals(-8.0, 8.0), min_size=n, max_size=n))
    return b


def check_rlhf_optimum(
    profile: Profile,
    *,
    claimed: Callable[..., list[sp.Expr]] = claimed_rlhf_optimum,
    impl: Callable[..., np.ndarray] = th.rlhf_optimal_log_policy,
) -> Outcome:
    """C1: the KL-regularised RLHF objective is maximised by π* = π_ref·e^{r*/β}/Z (Lagrangian derivation)."""
    n_y = 3
    pis = sp.symbols(f"pi_1:{n_y + 1}", positive=True)
    refs = sp.symbols(f"pi_ref_1:{n_y + 1}", positive=True)
    rs = sp.symbols(f"r_1:{n_y + 1}", real=True)
    nu = sp.Symbol("nu", real=True)
    objective = sum(p * r for p, r in zip(pis, rs, strict=True)) - BETA * sum(
        p * sp.log(p / q) for p, q in zip(pis, refs, strict=True)
    )
    lag = objective + nu * (sum(pis) - 1)
    sols = [sp.solve(sp.diff(lag, p), p)[0] for p in pis]  # π_i(ν)
    derived = [sp.simplify(s / sum(sols)) for s in sols]  # normalising eliminates ν
    dom = {**{s: (0.01, 1.0) for s in refs}, **{s: (-5.0, 5.0) for s in rs}, BETA: (0.05, 10.0)}
    steps = [
        "L = Σ π_i r_i − β Σ π_i log(π_i/π_ref,i) + ν(Σ π_i − 1)",
        f"∂L/∂π_i = 0 ⇒ π_i = {sp.sstr(sols[0])} (i = 1)",
        "Σ π_i = 1 fixes ν; the ratio π_i/Σ_j π_j does not depend on ν",
    ]
    s1 = compare(
        "π* from the Lagrangian (3 responses)",
        derived,
        claimed(list(refs), list(rs), BETA),
        dom,
        steps,
        examples=profile.examples,
    )
    hess = sp.hessian(objective, pis)
    off_diag_zero = all(hess[i, j] == 0 for i in range(n_y) for j in range(n_y) if i != j)
    s2 = sign_check(
        "Hessian diagonal −β/π_i (objective strictly concave on the simplex ⇒ the stationary point is the unique "
        "global maximum)",
        hess[0, 0],
        "negative",
    )
    if not off_diag_zero:
        s2.equal = False
        s2.residual = "Hessian is not diagonal"

    def prop(ex: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        lp, r, beta = np.array(ex["log_pi_ref"]), np.array(ex["reward"]), ex["beta"]
        log_star = np.asarray(impl(lp, r, beta), dtype=np.float64)
        other = np.array(ex["policy_logits"]).reshape(lp.shape)
        other = other - logsumexp(other, axis=1, keepdims=True)

        def value(logq: np.ndarray) -> np.ndarray:
            q = np.exp(logq)
            return np.sum(q * r, axis=1) - beta * np.sum(q * (logq - lp), axis=1)

        v_star, v_other = value(log_star), value(other)
        v_max = beta * logsumexp(lp + r / beta, axis=1)  # Gibbs variational principle: max value = β log Z
        scale = 1.0 + np.abs(v_max)
        err = max(float(np.max((v_other - v_star) / scale)), float(np.max(np.abs(v_star - v_max) / scale)))
        return err, {"value_at_impl": v_star, "value_at_random_policy": v_other, "beta_log_Z": v_max}

    n1 = search(
        "RLHF objective at the implementation's π* vs β·log Z and vs a random policy",
        _bandit_and_policy(),
        prop,
        max_examples=profile.examples,
        tolerance=1e-10,
    )
    return combine("KL-regularised RLHF on a tabular bandit (any number of responses)", [s1, s2], [n1])


def claimed_key_identity(dref: sp.Expr, dr: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """Key identity (PAPER §1): δ_{π*} = δ_ref + Δr*/β."""
    return dref + dr / beta


def check_key_identity(
    profile: Profile,
    *,
    claimed: Callable[..., sp.Expr] = claimed_key_identity,
    impl: Callable[..., Any] = th.delta_opt,
) -> Outcome:
    """C1 key identity δ_{π*} = δ_ref + Δr*/β: log Z cancels in log π*(y_w) − log π*(y_l)."""
    lw, ll, rw, rl, log_z = sp.symbols("logpi_ref_w logpi_ref_l r_w r_l log_Z", real=True)
    derived = (lw + rw / BETA - log_z) - (ll + rl / BETA - log_z)
    claimed_expr = claimed(lw - ll, rw - rl, BETA)
    dom = {
        lw: (-30.0, 0.0),
        ll: (-30.0, 0.0),
        rw: (-10.0, 10.0),
        rl: (-10.0, 10.0),
        log_z: (-5.0, 5.0),
        BETA: (0.01, 20.0),
    }
    s1 = compare(
        "log π*(y_w) − log π*(y_l)",
        derived,
        claimed_expr,
        dom,
        ["log π* = log π_ref + r*/β − log Z (C1)", "the common log Z cancels in the difference"],
        examples=profile.examples,
    )

    def prop(ex: dict[str, Any]) -> float:
        b = bandit_of(ex)
        truth = th.policy_delta(np_log_pi_opt(b.log_pi_ref, b.reward, b.beta), b.pairs)
        return rel_err(impl(b.delta_ref(), b.delta_reward(), b.beta), truth)

    n1 = search(
        "implementation δ_ref + Δr*/β vs δ of π* computed from the bandit",
        bandit_dicts(),
        prop,
        max_examples=profile.examples,
        tolerance=1e-9,
    )
    return combine("every pair of a tabular bandit", [s1], [n1])


# =========================================================================================== C2


def claimed_violation_margin(dref: sp.Expr, dr: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """Eq. 11: the assumption fails iff β·δ_ref + Δr* ≤ 0."""
    return beta * dref + dr


def check_violation_condition(
    profile: Profile,
    *,
    claimed: Callable[..., sp.Expr] = claimed_violation_margin,
    impl: Callable[..., Any] = th.violation_mask,
) -> Outcome:
    """C2 (Eq. 11): Assumption 3.1 fails on a pair iff β·δ_ref + Δr* ≤ 0 ⇔ π*(y_l) ≥ π*(y_w)."""
    derived = BETA * (DREF + DR / BETA)  # β·δ_{π*}: same sign as δ_{π*} because β > 0
    s1 = compare(
        "β·δ_{π*}",
        derived,
        claimed(DREF, DR, BETA),
        DOM,
        [
            "π*(y_w) > π*(y_l) ⇔ δ_{π*} > 0 (log increasing)",
            "β > 0 ⇒ sign(δ_{π*}) = sign(β·δ_{π*}); β·δ_{π*} = β·δ_ref + Δr* (key identity)",
            "so Assumption 3.1 fails ⇔ β·δ_ref + Δr* ≤ 0 (the tie π*(y_w) = π*(y_l) violates the strict inequality)",
        ],
        examples=profile.examples,
    )

    def prop(ex: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        b = bandit_of(ex)
        d_star = th.policy_delta(np_log_pi_opt(b.log_pi_ref, b.reward, b.beta), b.pairs)
        truth = d_star <= 0
        got = np.asarray(impl(b.delta_ref(), b.delta_reward(), b.beta), dtype=bool)
        scale = 1e-9 * (1.0 + np.abs(b.delta_ref()) + np.abs(b.delta_reward()) / b.beta)
        decided = np.abs(d_star) > scale  # outside the rounding band around the tie
        bad = decided & (got != truth)
        return float(np.sum(bad)), {"n_pairs": int(len(truth)), "n_in_rounding_band": int(np.sum(~decided))}

    n1 = search(
        "implementation's violation mask vs π*(y_l) ≥ π*(y_w) computed from the bandit (mismatching pairs)",
        bandit_dicts(),
        prop,
        max_examples=profile.examples,
        tolerance=0.5,
        error_meaning="mismatches",
    )

    def tie(ex: dict[str, float]) -> tuple[float, dict[str, Any]]:
        # exact boundary: β·δ_ref + Δr* = 0 in floating point too; π* is indifferent → the assumption fails
        got = bool(np.asarray(impl(ex["delta_ref"], ex["delta_reward"], ex["beta"])))
        return (0.0 if got else 1.0), {"violation_flag": got}

    ties = st.sampled_from(
        [
            {"beta": b, "delta_ref": d, "delta_reward": -b * d}
            for b in (0.5, 1.0, 2.0, 4.0)
            for d in (-2.0, -0.5, 0.0, 1.0)
        ]
    )
    n2 = search(
        "exact ties β·δ_ref = −Δr* count as violations",
        ties,
        tie,
        max_examples=16,
        tolerance=0.5,
        pinned=[{"beta": 0.5, "delta_ref": -2.0, "delta_reward": 1.0}],
        error_meaning="ties not flagged",
    )
    return combine("per pair, any β > 0, any Δr*", [s1], [n1, n2])


def check_beta_monotone(
    profile: Profile,
    *,
    claimed: Callable[..., sp.Expr] = claimed_violation_margin,
    impl: Callable[..., Any] = th.violation_mask,
) -> Outcome:
    """C2: larger β or a smaller reward gap makes failure easier (reading: labels agree with r*, Δr* > 0)."""
    m = claimed(DREF, DR, BETA)
    s1 = compare(
        "∂(β·δ_ref + Δr*)/∂β",
        sp.diff(m, BETA),
        DREF,
        DOM,
        ["violated with Δr* > 0 ⇒ β·δ_ref ≤ −Δr* < 0 ⇒ δ_ref < 0 ⇒ the margin falls as β grows"],
        examples=profile.examples,
    )
    s2 = compare(
        "∂(β·δ_ref + Δr*)/∂Δr*",
        sp.diff(m, DR),
        sp.Integer(1),
        DOM,
        ["the margin rises with Δr*: a smaller gap lowers it, so violation is easier"],
        examples=profile.examples,
    )

    def make_prop(positive_gap: bool) -> Callable[[dict[str, float]], tuple[float, dict[str, Any]]]:
        def prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]]:
            b1, dref, dr = ex["beta"], ex["delta_ref"], ex["delta_reward"]
            b2 = b1 * ex["beta_factor"]
            dr_small = dr - ex["gap_decrease"]
            v1 = bool(np.asarray(impl(dref, dr, b1)))
            v2 = bool(np.asarray(impl(dref, dr, b2)))
            v_small = bool(np.asarray(impl(dref, dr_small, b1)))
            bad = (v1 and not v2) or (v1 and not v_small)
            return float(bad), {
                "violated_at_beta": v1,
                "violated_at_larger_beta": v2,
                "larger_beta": b2,
                "violated_with_smaller_gap": v_small,
            }

        return prop

    def strategy(dr_lo: float) -> st.SearchStrategy:
        return st.fixed_dictionaries(
            {
                "beta": uniform_betas(0.01, 10.0),
                "beta_factor": reals(1.0, 10.0),
                "delta_ref": reals(-30.0, 30.0),
                "delta_reward": reals(dr_lo, 15.0),
                "gap_decrease": reals(0.0, 10.0),
            }
        )

    n1 = search(
        "violated at β ⇒ violated at every larger β and every smaller gap (Δr* > 0)",
        strategy(1e-9),
        make_prop(True),
        max_examples=profile.examples,
        tolerance=0.5,
        error_meaning="broken implications",
    )
    noisy = search(
        "same implication with noisy labels (Δr* of any sign)",
        strategy(-15.0),
        make_prop(False),
        max_examples=profile.examples,
        tolerance=0.5,
        error_meaning="broken implications",
        pinned=[{"beta": 0.5, "beta_factor": 4.0, "delta_ref": 1.0, "delta_reward": -1.0, "gap_decrease": 0.0}],
    )
    note = "noisy-label reading (Δr* < 0 allowed): β-monotonicity reverses for δ_ref > 0, e.g. " + (
        fmt_example(noisy.counterexample) if noisy.counterexample else "none found"
    )
    out = combine(
        "Δr* > 0 (y_w preferred by the true reward, the paper's setting)",
        [s1, s2],
        [n1],
        details={"noisy_label_reading": noisy.to_details()},
        note=note,
    )
    return out


def check_chen_equivalence(
    profile: Profile,
    *,
    claimed_gap: Callable[[sp.Expr], sp.Expr] = lambda alpha: sp.log(alpha / (1 - alpha)),
    impl: Callable[..., Any] = th.violation_mask,
) -> Outcome:
    """C2 vs Chen et al. 2024 Thm 3.1: α = σ(Δr*) ⇔ Δr* = logit(α); idealized ranking accuracy = 1 − violation rate."""
    odds = sp.Symbol("k", positive=True)  # α = 1/(1 + k) ∈ (0, 1), so sympy knows 0 < α < 1
    alpha = 1 / (1 + odds)
    solved = sp.solve(sp.Eq(sigmoid(DR), alpha), DR)
    dom = {odds: (1e-4, 1e4), BETA: (0.01, 20.0), DREF: (-30.0, 30.0)}
    s1 = compare(
        "Δr* solving σ(Δr*) = α",
        solved[0] if solved else sp.nan,
        claimed_gap(alpha),
        dom,
        ["Bradley–Terry: the share of raters preferring y_w is α = σ(Δr*)"],
        via_exp=True,
        examples=profile.examples,
    )
    chen_log_ratio = DREF + sp.log((alpha / (1 - alpha)) ** (1 / BETA))  # log of π_ref ratio·(α/(1−α))^{1/β}
    s2 = compare(
        "log of Chen et al.'s idealized ratio π*(y_w)/π*(y_l)",
        sp.expand_log(chen_log_ratio, force=True),
        DREF + claimed_gap(alpha) / BETA,
        dom,
        [
            "Chen et al. Thm 3.1: π*(y_w)/π*(y_l) = (π_ref(y_w)/π_ref(y_l))·(α/(1−α))^{1/β}",
            "= exp(δ_ref + logit(α)/β) = exp(δ_{π*}): ranked correctly ⇔ δ_{π*} > 0 ⇔ not violated (C2)",
        ],
        examples=profile.examples,
    )

    @st.composite
    def data(draw: Any) -> dict[str, Any]:
        n = draw(st.integers(1, 12))
        return {
            "beta": draw(uniform_betas(0.01, 10.0)),
            "alpha": draw(st.lists(reals(1e-4, 1 - 1e-4), min_size=n, max_size=n)),
            "delta_ref": draw(st.lists(reals(-20.0, 20.0), min_size=n, max_size=n)),
        }

    def prop(ex: dict[str, Any]) -> tuple[float, dict[str, Any]] | None:
        a, dref, beta = np.array(ex["alpha"]), np.array(ex["delta_ref"]), ex["beta"]
        with np.errstate(over="ignore"):
            ratio = np.exp(dref) * (a / (1 - a)) ** (1.0 / beta)  # Chen et al.'s formula, in probability space
        d_star = dref + np.log(a / (1 - a)) / beta
        keep = np.isfinite(ratio) & (ratio > 0) & (np.abs(d_star) > 1e-9 * (1 + np.abs(dref)))
        if not keep.any():
            return None
        accuracy = float(np.mean(ratio[keep] > 1))
        rate = float(np.mean(np.asarray(impl(dref[keep], np.log(a[keep] / (1 - a[keep])), beta), dtype=bool)))
        return abs(accuracy - (1 - rate)), {"idealized_ranking_accuracy": accuracy, "violation_rate": rate}

    n1 = search(
        "idealized ranking accuracy (Chen et al.) vs 1 − violation rate (C2) on random datasets",
        data(),
        prop,
        max_examples=profile.examples,
        tolerance=1e-12,
    )
    return combine("Bradley–Terry raters with share α preferring y_w", [s1, s2], [n1])


def check_real_data_rate(profile: Profile) -> Outcome:
    """C2's 45.5 % (Llama-3-8B-Instruct, β = 0.1): needs models and data this offline toolkit does not have."""
    reason = (
        "the 45.5 % violation rate needs log-probs of Llama-3-8B-Instruct and ArmoRM reward gaps on "
        "princeton-nlp/llama3-ultrafeedback-armorm, neither of which is available offline; the same quantity "
        "(share of pairs with β·δ_ref + Δr* ≤ 0) is measured on the bundled data by `dpocheck violations` "
        "(the llm part) with a small reference model"
    )
    return Outcome(
        NOT_CHECKABLE,
        "as reported (real data, 8B reference)",
        reason,
        {"reason": reason, "reported_rate": 0.455, "reported_beta": 0.1},
    )
