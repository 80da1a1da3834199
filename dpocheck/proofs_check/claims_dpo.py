"""Checks of PAPER.md C1–C7: the RLHF optimum, the violation condition, U, gradient vanishing, conditional
equivalence, shift invariance and the soft-margin limit.

Every ``check_*`` takes the profile and, as keyword parameters, the formulas under test: ``claimed*`` are the
paper's formulas as sympy-building functions (checked symbolically against a first-principles derivation) and
``impl*`` are the theory layer's implementations (checked numerically against first-principles numbers). Their
defaults are the paper's formulas and :mod:`dpocheck.theory`; the mutation tests inject wrong ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import expit, logsumexp

from dpocheck import theory as th

from .compose import combine
from .core import FAILS, NOT_CHECKABLE, PROVED, VERIFIED, Outcome, Profile, corrected_statement, fmt, fmt_example
from .search import bandits, betas, reals, rel_err, search
from .symbolic import SymbolicCheck, compare, limit_check, sigmoid, sign_check, softplus

# ------------------------------------------------------------------------------------------------ symbols
BETA = sp.Symbol("beta", positive=True)
DREF = sp.Symbol("delta_ref", real=True)
DR = sp.Symbol("Delta_r", real=True)
DELTA = sp.Symbol("delta", real=True)
A_POS = sp.Symbol("a", positive=True)  # a = |δ_ref| or |δ − δ_ref|
DOM = {BETA: (0.01, 20.0), DREF: (-30.0, 30.0), DR: (-15.0, 15.0), DELTA: (-30.0, 30.0), A_POS: (1e-6, 30.0)}


def _np_log_pi_opt(log_pi_ref: np.ndarray, reward: np.ndarray, beta: float) -> np.ndarray:
    """First-principles log π* (independent of the theory layer's implementation)."""
    z = log_pi_ref + reward / beta
    return z - logsumexp(z, axis=1, keepdims=True)


def _bandit(ex: dict[str, Any]) -> th.TabularBandit:
    return th.TabularBandit.from_json(ex)


# =========================================================================================== C1


def claimed_rlhf_optimum(refs: list[sp.Expr], rewards: list[sp.Expr], beta: sp.Expr) -> list[sp.Expr]:
    """PAPER §1: π*(y) = π_ref(y)·exp(r*(y)/β) / Z."""
    z = sum(p * sp.exp(r / beta) for p, r in zip(refs, rewards, strict=True))
    return [p * sp.exp(r / beta) / z for p, r in zip(refs, rewards, strict=True)]


@st.composite
def _bandit_and_policy(draw: Any) -> dict[str, Any]:
    b = draw(bandits(pairs="single"))
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
        b = _bandit(ex)
        truth = th.policy_delta(_np_log_pi_opt(b.log_pi_ref, b.reward, b.beta), b.pairs)
        return rel_err(impl(b.delta_ref(), b.delta_reward(), b.beta), truth)

    n1 = search(
        "implementation δ_ref + Δr*/β vs δ of π* computed from the bandit",
        bandits(),
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
        b = _bandit(ex)
        d_star = th.policy_delta(_np_log_pi_opt(b.log_pi_ref, b.reward, b.beta), b.pairs)
        truth = d_star <= 0
        got = np.asarray(impl(b.delta_ref(), b.delta_reward(), b.beta), dtype=bool)
        scale = 1e-9 * (1.0 + np.abs(b.delta_ref()) + np.abs(b.delta_reward()) / b.beta)
        decided = np.abs(d_star) > scale  # outside the rounding band around the tie
        bad = decided & (got != truth)
        return float(np.sum(bad)), {"n_pairs": int(len(truth)), "n_in_rounding_band": int(np.sum(~decided))}

    n1 = search(
        "implementation's violation mask vs π*(y_l) ≥ π*(y_w) computed from the bandit (mismatching pairs)",
        bandits(),
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
                "beta": betas(0.01, 10.0),
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
            "beta": draw(betas(0.01, 10.0)),
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

    strat = st.fixed_dictionaries({"beta": betas(), "delta_ref": reals(-30.0, 30.0), "delta": reals(-30.0, 30.0)})
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
            "beta": draw(betas()),
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
            "beta": betas(),
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

    strat = st.fixed_dictionaries({"beta": betas(0.01, 20.0), "delta_ref": reals(-30.0, -1e-6)})
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
        beta = draw(betas(0.05, 10.0))
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
        st.fixed_dictionaries({"beta": betas(0.01, 50.0), "a": reals(1e-6, 2000.0)}),
        log_prop,
        max_examples=profile.examples,
        tolerance=1e-12,
        pinned=[{"beta": 1.0, "a": 1000.0}],
    )
    return combine("tabular softmax policy, gradient flow from π_ref on one pair", [s0, s1], [n1, n2])


# =========================================================================================== C5

Q = sp.Symbol("q", positive=True)


def claimed_population_stationary(dref: sp.Expr, dr: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """C5a: the population BT cross-entropy is stationary at δ_{π*} = δ_ref + Δr*/β."""
    return dref + dr / beta


def _np_softplus(x: Any) -> Any:
    return np.logaddexp(0.0, x)


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
        b = _bandit(ex)
        q = expit(b.delta_reward())
        got = np.asarray(impl("dpo", b.delta_ref(), b.delta_reward(), b.beta))
        truth = []
        for qi, dref in zip(q, b.delta_ref(), strict=True):

            def dloss(d: float, qi: float = qi, dref: float = dref) -> float:  # first-principles derivative
                uu = b.beta * (d - dref)
                return b.beta * (-qi * expit(-uu) + (1 - qi) * expit(uu))

            c = dref + math.log(qi / (1 - qi)) / b.beta
            truth.append(brentq(dloss, c - 50, c + 50, xtol=1e-14, rtol=1e-15))
        d_star = th.policy_delta(_np_log_pi_opt(b.log_pi_ref, b.reward, b.beta), b.pairs)
        err = max(rel_err(got, truth), rel_err(d_star, truth))
        return err, {"n_pairs": len(truth), "n_pairs_with_negative_delta_star": int(np.sum(d_star < 0))}

    n1 = search(
        "population minimiser (brentq on the BT loss's derivative) vs δ of π* and the implementation",
        bandits(reward_scale=3.0),
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
            "beta": betas(0.01, 10.0),
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
        {"beta": betas(), "delta": reals(-30.0, 30.0), "delta_ref": reals(-30.0, 30.0), "shift": reals(-50.0, 50.0)}
    )
    n1 = search(
        "implementation ℓ(δ + c; δ_ref + c) vs ℓ(δ; δ_ref)", strat, prop, max_examples=profile.examples, tolerance=1e-10
    )
    return combine("per pair", [s1, s2], [n1])


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
        {"beta": betas(0.01, 1000.0), "delta": reals(-30.0, 30.0), "delta_ref": reals(-30.0, 30.0)}
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


__all__ = [
    "check_beta_monotone",
    "check_chen_equivalence",
    "check_dpo_gradient",
    "check_escape_time",
    "check_gradient_shrinks",
    "check_gradient_vanishing",
    "check_hinge_limit",
    "check_key_identity",
    "check_ordered_pair",
    "check_population_equivalence",
    "check_real_data_rate",
    "check_rlhf_optimum",
    "check_shift_invariance",
    "check_soft_margin_bound",
    "check_u_loss",
    "check_u_nonempty",
    "check_violation_condition",
]
