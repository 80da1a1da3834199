"""Checks of PAPER.md C8: γ* (Eq. 27), Thm 4.9 (approximate and exact) and the log-space margin at sequence level.

Every ``check_*`` takes the profile and, as keyword parameters, the formulas under test: ``claimed*`` are the paper's
formulas (sympy) and ``impl*`` the theory layer's implementations; both are injection points for the mutation tests.

"CPO" here is always the paper's *constrained preference optimization*, never TRL's CPOTrainer (Contrastive
Preference Optimization).
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
from ..core import FAILS, VERIFIED, Outcome, Profile, corrected_statement, fmt, fmt_example
from ..search import search
from ..strategies import bandit_dicts, reals, single_pair_bandit_dicts, uniform_betas
from ..symbolic import compare, sign_check
from ._shared import BETA, DOM, DR, DREF, call_solver


def claimed_gamma_star_pair(dref: sp.Expr, dr: sp.Expr, beta: sp.Expr, s: sp.Expr) -> sp.Expr:
    """Eq. 27 (violated pair): γ* = (−β·δ_ref − Δr*)/(1/π_ref(y_w) + 1/π_ref(y_l)), s the sum of reciprocals."""
    return (-beta * dref - dr) / s


@st.composite
def _margin_data(draw: Any, lo: float = -30.0) -> dict[str, Any]:
    n = draw(st.integers(1, 8))
    return {
        "beta": draw(uniform_betas(0.01, 10.0)),
        "delta_ref": draw(st.lists(reals(-20.0, 20.0), min_size=n, max_size=n)),
        "delta_reward": draw(st.lists(reals(-10.0, 10.0), min_size=n, max_size=n)),
        "logp_ref_w": draw(st.lists(reals(lo, -1e-3), min_size=n, max_size=n)),
        "logp_ref_l": draw(st.lists(reals(lo, -1e-3), min_size=n, max_size=n)),
    }


def check_gamma_star(
    profile: Profile,
    *,
    claimed: Callable[..., sp.Expr] = claimed_gamma_star_pair,
    impl: Callable[..., Any] = th.gamma_star,
    impl_log_pair: Callable[..., Any] = th.log_gamma_star_pair,
) -> Outcome:
    """C8 (Eq. 27): γ* = max_pairs [−β·δ_ref − Δr*]_+ / (1/π_ref(y_w) + 1/π_ref(y_l)) is the smallest γ making the
    approximate stationary δ positive on every pair."""
    gam, s = sp.Symbol("gamma", real=True), sp.Symbol("S", positive=True)
    threshold = sp.solve(sp.Eq(DREF + (DR + gam * s) / BETA, 0), gam)
    s1 = compare(
        "γ at which δ_ref + (Δr* + γ·S)/β = 0",
        threshold[0] if threshold else sp.nan,
        claimed(DREF, DR, BETA, s),
        {**DOM, s: (2.0, 1e6)},
        [
            "δ(γ) = δ_ref + (Δr* + γ·S)/β increases in γ (slope S/β > 0): δ > 0 ⇔ γ > threshold",
            "pairs with β·δ_ref + Δr* > 0 need no margin ([·]_+), γ* is the max over pairs",
        ],
        examples=profile.examples,
    )
    s2 = sign_check("∂δ(γ)/∂γ = S/β", sp.diff(DREF + (DR + gam * s) / BETA, gam), "positive")

    def prop(ex: dict[str, Any]) -> tuple[float, dict[str, Any]] | None:
        beta = ex["beta"]
        dref, dr = np.array(ex["delta_ref"]), np.array(ex["delta_reward"])
        lw, ll = np.array(ex["logp_ref_w"]), np.array(ex["logp_ref_l"])
        g = float(impl(dref, dr, beta, lw, ll))
        ssum = np.exp(-lw) + np.exp(-ll)

        def delta(gamma: float) -> np.ndarray:
            return dref + (dr + gamma * ssum) / beta

        if g == 0:  # no pair needs a margin (ties need only γ > 0): any γ > 0 must do
            return float(np.any(delta(1e-9) <= 0)), {"gamma_star": g}
        if g < 1e-290:
            return None  # γ* below float64's normal range: γ*(1 ± 1e-7) are not distinct numbers
        above, below = delta(g * (1 + 1e-7)), delta(g * (1 - 1e-7))
        bad = float(np.any(above <= 0)) + float(np.all(below > 0))
        return bad, {"gamma_star": g, "min_delta_above": float(above.min()), "min_delta_below": float(below.min())}

    n1 = search(
        "at γ*(1 ± 1e-7): every approximate stationary δ > 0 above, some ≤ 0 below",
        _margin_data(),
        prop,
        max_examples=profile.examples,
        tolerance=0.5,
        error_meaning="wrong sides",
    )

    def log_prop(ex: dict[str, Any]) -> float | None:
        import mpmath

        beta = ex["beta"]
        got = np.asarray(
            impl_log_pair(
                np.array(ex["delta_ref"]),
                np.array(ex["delta_reward"]),
                beta,
                np.array(ex["logp_ref_w"]),
                np.array(ex["logp_ref_l"]),
            )
        )
        worst = 0.0
        with mpmath.workdps(50):
            for i in range(len(got)):
                need = -beta * ex["delta_ref"][i] - ex["delta_reward"][i]
                if need <= 0:
                    worst = max(worst, 0.0 if got[i] == -math.inf else math.inf)
                    continue
                exact = mpmath.log(need) - mpmath.log(
                    mpmath.exp(-ex["logp_ref_w"][i]) + mpmath.exp(-ex["logp_ref_l"][i])
                )
                worst = max(worst, abs(float(got[i]) - float(exact)) / max(1.0, abs(float(exact))))
        return worst

    n2 = search(
        "log γ* per pair vs mpmath (50 digits) with whole-sequence log-probs down to −1000",
        _margin_data(lo=-1000.0),
        log_prop,
        max_examples=profile.examples,
        tolerance=1e-12,
    )
    return combine(
        "approximate stationary point δ_ref + (Δr* + m)/β, m = γ(1/π_ref(y_w) + 1/π_ref(y_l))", [s1, s2], [n1, n2]
    )


def check_thm49_approximate(profile: Profile, *, impl_gamma_star: Callable[..., Any] = th.gamma_star) -> Outcome:
    """C8 (Thm 4.9) under the approximate stationary point: γ > γ* ⇒ δ > 0 on every pair ⇒ U avoided."""
    s, g = sp.Symbol("S", positive=True), sp.Symbol("g", positive=True)  # γ = γ*_pair + g
    need = sp.Symbol("n", positive=True)  # −β·δ_ref − Δr* > 0 on a violated pair
    delta = (-need + (need / s + g) * s) / BETA  # δ − 0 with β·δ_ref + Δr* = −n and γ = n/S + g
    s1 = sign_check(
        "β·δ at γ = γ*_pair + g (violated pair)",
        sp.simplify(delta),
        "positive",
        ["δ = δ_ref + (Δr* + γS)/β = (−n + γS)/β and γS > n when γ > n/S"],
    )

    @st.composite
    def data(draw: Any) -> dict[str, Any]:
        b = draw(bandit_dicts(pairs="random", max_responses=4))
        b["factor"] = draw(reals(1.0 + 1e-6, 3.0))
        return b

    def prop(ex: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        b = th.TabularBandit.from_json({k: v for k, v in ex.items() if k != "factor"})
        lw, ll = b.log_pi_ref_pairs()
        g_star = float(impl_gamma_star(b.delta_ref(), b.delta_reward(), b.beta, lw, ll))
        gamma = g_star * ex["factor"] if g_star > 0 else 1e-3 * ex["factor"]
        d = th.cpo_paper_stationary_delta(b.delta_ref(), b.delta_reward(), b.beta, th.cpo_margin(lw, ll, gamma))
        in_u = np.asarray(th.in_undesirable_space(d, b.delta_ref()), dtype=bool)
        return float(np.sum(in_u | (d <= 0))), {"gamma_star": g_star, "gamma": gamma, "min_delta": float(d.min())}

    n1 = search(
        "γ = factor·γ*: approximate stationary δ > 0 and outside U on every pair",
        data(),
        prop,
        max_examples=profile.examples,
        tolerance=0.5,
        error_meaning="pairs in U or with δ ≤ 0",
    )
    return combine("approximate stationary point (1/π_γ ≈ 1/π_ref)", [s1], [n1])


def check_thm49_exact(
    profile: Profile,
    *,
    impl: Callable[..., Any] = th.cpo_objective_stationary_policy,
    impl_gamma_star: Callable[..., Any] = th.gamma_star,
) -> Outcome:
    """C8 (Thm 4.9) under the exact stationary point of the CPO objective: γ > γ* does not guarantee δ > 0."""

    @st.composite
    def data(draw: Any) -> dict[str, Any]:
        b = draw(single_pair_bandit_dicts())
        b["factor"] = draw(reals(1.0 + 1e-3, 2.0))
        return b

    def exact_delta(ex: dict[str, Any], rule: str) -> tuple[float, dict[str, Any]] | None:
        b = th.TabularBandit.from_json({k: v for k, v in ex.items() if k != "factor"})
        lw, ll = b.log_pi_ref_pairs()
        if rule == "paper":
            g0 = float(impl_gamma_star(b.delta_ref(), b.delta_reward(), b.beta, lw, ll))
        else:  # corrected: the uniform bound 1/π(y_w) + 1/π(y_l) ≥ 4
            g0 = float(np.max(np.maximum(-(b.beta * b.delta_ref() + b.delta_reward()), 0.0))) / 4.0
        gamma = g0 * ex["factor"] if g0 > 0 else 1e-3 * ex["factor"]
        sol = call_solver(impl, b, gamma)
        ok = sol.exists[b.pairs[:, 0]]
        if not ok.any():
            return None  # no interior stationary point: the theorem says nothing
        d = th.policy_delta(sol.log_pi, b.pairs)[ok]
        dref = b.delta_ref()[ok]
        if rule == "safe":  # δ > 0 up to float rounding of δ_ref + (…)/β (a need of 1e-34 rounds δ to 0)
            bad = d < -1e-12 * (1.0 + np.abs(dref))
        else:
            bad = np.asarray(th.in_undesirable_space(d, dref), dtype=bool)
        i = int(np.argmin(d))
        return float(np.sum(bad)), {
            "gamma": gamma,
            "gamma_threshold": g0,
            "delta_exact": float(d[i]),
            "delta_ref": float(dref[i]),
            "delta_approx": float(
                th.cpo_paper_stationary_delta(b.delta_ref(), b.delta_reward(), b.beta, th.cpo_margin(lw, ll, gamma))[
                    ok
                ][i]
            ),
        }

    lit = search(
        "γ = factor·γ* (Eq. 27): exact stationary δ outside U",
        data(),
        lambda ex: exact_delta(ex, "paper"),
        max_examples=profile.heavy_examples * 3,
        tolerance=0.5,
        error_meaning="pairs in U",
        pinned=[
            {
                "beta": 1.0,
                "log_pi_ref": [[math.log(0.4), math.log(0.6)]],
                "reward": [[0.0, 0.0]],
                "pairs": [[0, 0, 1]],
                "factor": 1.01,
            }
        ],
    )
    # corrected: γ > max [−βδ_ref − Δr*]_+ / 4 suffices at the exact point, since 1/a + 1/b ≥ 4/(a + b) ≥ 4
    a, b_ = sp.symbols("a b", positive=True)
    s1 = compare(
        "1/a + 1/b − 4/(a + b)",
        sp.factor(sp.together(1 / a + 1 / b_ - 4 / (a + b_))),
        (a - b_) ** 2 / (a * b_ * (a + b_)),
        {a: (1e-3, 1.0), b_: (1e-3, 1.0)},
        [
            "≥ 0, and a + b = π(y_w) + π(y_l) ≤ 1 ⇒ 1/π(y_w) + 1/π(y_l) ≥ 4",
            "exact FOC: β·δ = β·δ_ref + Δr* + γ(1/π_γ(y_w) + 1/π_γ(y_l)) ≥ −need + 4γ > 0 when γ > need/4",
        ],
        examples=profile.examples,
    )
    minimal = search(
        "same, minimal counterexample (no pinned example)",
        data(),
        lambda ex: exact_delta(ex, "paper"),
        max_examples=profile.heavy_examples * 3,
        tolerance=0.5,
        error_meaning="pairs in U",
    )

    @st.composite
    def moderate(draw: Any) -> dict[str, Any]:  # moderate rewards/logits: interior stationary points exist more often
        b = draw(bandit_dicts(pairs="single", max_responses=4, logit_scale=2.0, reward_scale=1.5))
        b["factor"] = draw(reals(1.0 + 1e-3, 2.0))
        return b

    safe = search(
        "γ = factor·max[−βδ_ref − Δr*]_+/4: exact stationary δ > 0",
        moderate(),
        lambda ex: exact_delta(ex, "safe"),
        max_examples=profile.heavy_examples * 3,
        tolerance=0.5,
        error_meaning="pairs with δ ≤ 0",
    )
    corr = combine("exact interior stationary point, one pair per context", [s1], [safe])
    corrected = corrected_statement(
        "With γ > γ*_safe = max_pairs [−β·δ_ref − Δr*]_+ / 4 (a uniform bound, because 1/π(y_w) + 1/π(y_l) ≥ 4), the "
        "exact interior stationary point of the CPO objective, where it exists, has δ > 0 on every pair",
        corr.reading,
        corr.verdict,
        corr.evidence,
        corr.details,
    )
    details = {"literal": lit.to_details(), "minimal": minimal.to_details()}
    if lit.passed and minimal.passed:
        return Outcome(VERIFIED, "exact stationary point", lit.summary(), details, corrected)
    info = lit.counterexample_info or {}
    evidence = (
        f"counterexample {fmt_example({k: v for k, v in (lit.counterexample or {}).items()})}: γ = "
        f"{fmt(info.get('gamma'))} > γ* = {fmt(info.get('gamma_threshold'))}, approximate δ = "
        f"{fmt(info.get('delta_approx'))} > 0 but the exact stationary δ = {fmt(info.get('delta_exact'))} ∈ U "
        f"(δ_ref = {fmt(info.get('delta_ref'))}): where π_γ puts more mass than π_ref on y_w and y_l, the exact "
        f"margin γ(1/π_γ(y_w) + 1/π_γ(y_l)) falls short of the approximate one; hypothesis minimal counterexample "
        f"{fmt_example(minimal.counterexample or {})}"
    )
    return Outcome(
        FAILS,
        "exact interior stationary point of the CPO objective (one pair per context)",
        evidence,
        details,
        corrected,
    )


def check_log_space_margin(
    profile: Profile,
    *,
    impl_log: Callable[..., Any] = th.log_cpo_margin,
    impl: Callable[..., Any] = th.cpo_margin,
    impl_loss: Callable[..., Any] = th.cpo_margin_loss,
) -> Outcome:
    """C8: whole-sequence margins are computed in log space and never overflow silently."""
    import mpmath

    strat = st.fixed_dictionaries(
        {
            "logp_ref_w": reals(-1000.0, -1e-6),
            "logp_ref_l": reals(-1000.0, -1e-6),
            "gamma": reals(1e-6, 10.0),
            "beta": uniform_betas(0.01, 10.0),
            "delta": reals(-50.0, 50.0),
            "delta_ref": reals(-50.0, 50.0),
        }
    )

    def prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]]:
        lw, ll, gamma = ex["logp_ref_w"], ex["logp_ref_l"], ex["gamma"]
        with mpmath.workdps(50):
            exact_log = mpmath.log(gamma) + mpmath.log(mpmath.exp(-lw) + mpmath.exp(-ll))
            got = float(np.asarray(impl_log(lw, ll, gamma)))
            err = abs(got - float(exact_log)) / max(1.0, abs(float(exact_log)))
            overflow = float(exact_log) > math.log(np.finfo(np.float64).max)
            try:
                m = float(np.asarray(impl(lw, ll, gamma)))
                raised = False
            except OverflowError:
                m, raised = math.inf, True
            if overflow != raised:
                return math.inf, {"log_margin": float(exact_log), "raised": raised}
            if not raised:
                err = max(err, abs(m - float(mpmath.exp(exact_log))) / float(mpmath.exp(exact_log)))
                beta, d, dref = ex["beta"], ex["delta"], ex["delta_ref"]
                z = beta * dref + mpmath.exp(exact_log) - beta * d
                loss_exact = mpmath.log(1 + mpmath.exp(z))
                loss = float(np.asarray(impl_loss(d, dref, beta, log_margin=got).loss))
                err = max(err, abs(loss - float(loss_exact)) / max(1.0, float(loss_exact)))
        return err, {"log_margin": float(exact_log), "raised": raised}

    pins = [
        {"logp_ref_w": -200.0, "logp_ref_l": -250.0, "gamma": 0.5, "beta": 0.1, "delta": 0.0, "delta_ref": 0.0},
        {"logp_ref_w": -800.0, "logp_ref_l": -900.0, "gamma": 0.5, "beta": 0.1, "delta": 0.0, "delta_ref": 0.0},
    ]
    n1 = search(
        "log m, m (or OverflowError exactly when m > float64 max) and ℓ_CPO vs mpmath (50 digits)",
        strat,
        prop,
        max_examples=profile.examples,
        tolerance=1e-12,
        pinned=pins,
    )
    return combine("summed (whole-sequence) log-probs down to −1000 nats", [], [n1])
