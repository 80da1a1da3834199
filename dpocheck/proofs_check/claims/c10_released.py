"""Checks of PAPER.md C10: the released code's three loss branches (reproduction, the `easy` margin's sign, effective
targets).

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
from scipy.special import expit

from dpocheck import theory as th

from .. import released_reference as rr
from ..compose import combine
from ..core import FAILS, VERIFIED, Outcome, Profile, corrected_statement, fmt
from ..search import rel_err, search
from ..strategies import reals, uniform_betas
from ..symbolic import compare, limit_check, sign_check, softplus
from ._shared import (
    BETA,
    DREF,
    GAMMA,
    RELEASED_DEFAULT_LOSS_CONFIG,
    RELEASED_DEMO_LOSS_CONFIG,
    K,
    branch_offsets,
    pop_stationary,
    root_resolution,
    two_sided_stationary,
)

# =========================================================================================== C10


def _fixed_tensors() -> dict[str, Any]:
    """Fixed per-token mean log-probs: the released smoke test's values plus a grid covering δ_ref of both signs."""
    base_w = [-1.0, -2.0, -0.3, -1.5, -1.1, -0.05, -2.0, -2.2]  # pairs 3 and 6 lie in U
    base_l = [-1.5, -1.0, -2.5, -0.4, -1.1, -4.0, -0.02, -2.9]
    ref_w = [-1.2, -1.8, -0.9, -2.7, -1.3, -0.5, -5.0, -1.6]
    ref_l = [-1.4, -1.1, -2.0, -0.6, -0.9, -3.3, -0.1, -2.4]
    return {"pol_w": base_w, "pol_l": base_l, "ref_w": ref_w, "ref_l": ref_l}


def check_released_reproduction(
    profile: Profile,
    *,
    impl_easy: Callable[..., Any] = th.released_easy_loss,
    impl_clip: Callable[..., Any] = th.released_clip_loss,
    impl_adaptive: Callable[..., Any] = th.released_adaptive_loss,
) -> Outcome:
    """C10: the theory layer reproduces the released code's three branches (float64, to 1e-12), loss and gradient."""
    import torch

    configs = [
        RELEASED_DEFAULT_LOSS_CONFIG,
        RELEASED_DEMO_LOSS_CONFIG,
    ]

    def compare_branches(t: dict[str, list[float]], cfg: dict[str, float]) -> tuple[float, dict[str, Any]]:
        pw, pl, rw, rl = (
            torch.tensor(t[k], dtype=torch.float64, requires_grad=(k in ("pol_w",)))
            for k in ("pol_w", "pol_l", "ref_w", "ref_l")
        )
        beta, gamma, tau, alpha = cfg["beta"], cfg["gamma"], cfg["tau"], cfg["alpha"]
        d_pol, d_ref = (pw - pl), (rw - rl)
        errs = {}
        ref_easy, _a = rr.easy_branch(pw, pl, rw, rl, beta, gamma)
        ref_clip = rr.clip_branch(pw, pl, rw, rl, beta)
        ref_ad, _b = rr.adaptive_branch(pw, pl, rw, rl, beta, gamma, tau, alpha)
        ours = {
            "easy": impl_easy(d_pol.detach(), d_ref, beta, rw, rl, gamma),
            "clip": impl_clip(d_pol.detach(), d_ref, beta),
            "adaptive": impl_adaptive(d_pol.detach(), d_ref, beta, gamma, tau, alpha),
        }
        for name, ref_loss in (("easy", ref_easy), ("clip", ref_clip), ("adaptive", ref_ad)):
            (g,) = torch.autograd.grad(ref_loss.sum(), pw)  # ∂/∂ℓ̄_θ(y_w) = ∂/∂δ_θ
            errs[f"{name}_loss"] = rel_err(ours[name].loss, ref_loss.detach())
            errs[f"{name}_grad"] = rel_err(ours[name].grad, g)
        return max(errs.values()), errs

    fixed_errs = {}
    for cfg in configs:
        e, parts = compare_branches(_fixed_tensors(), cfg)
        fixed_errs[f"beta={cfg['beta']},gamma={cfg['gamma']}"] = parts
    fixed_max = max(max(p.values()) for p in fixed_errs.values())

    @st.composite
    def data(draw: Any) -> dict[str, Any]:
        n = draw(st.integers(1, 6))

        def lst() -> list[float]:
            return draw(st.lists(reals(-8.0, -1e-3), min_size=n, max_size=n))

        return {
            "tensors": {"pol_w": lst(), "pol_l": lst(), "ref_w": lst(), "ref_l": lst()},
            "config": {
                "beta": draw(uniform_betas(0.01, 5.0)),
                "gamma": draw(reals(0.0, 2.0)),
                "tau": draw(reals(0.1, 10.0)),
                "alpha": draw(reals(0.1, 4.0)),
            },
        }

    n1 = search(
        "theory losses and exact gradients vs the torch reference (random per-token mean log-probs)",
        data(),
        lambda ex: compare_branches(ex["tensors"], ex["config"]),
        max_examples=profile.examples,
        tolerance=1e-12,
    )
    # the logged frac_in_U equals C3's U criterion
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in _fixed_tensors().items()}
    frac_ref = float(rr.frac_in_u(t["pol_w"], t["pol_l"], t["ref_w"], t["ref_l"]))
    frac_ours = float(np.mean(np.asarray(th.in_undesirable_space(t["pol_w"] - t["pol_l"], t["ref_w"] - t["ref_l"]))))
    details = {
        "fixed_tensors": _fixed_tensors(),
        "fixed_errors": fixed_errs,
        "frac_in_U_reference": frac_ref,
        "frac_in_U_theory": frac_ours,
    }
    out = combine(
        "float64 per-token mean log-probs, released defaults and demo config",
        [],
        [n1],
        details=details,
        note=f"fixed tensors (defaults and demo config): largest error {fmt(fixed_max, 2)}; frac_in_U "
        f"{fmt(frac_ref)} = {fmt(frac_ours)}",
    )
    if fixed_max > 1e-12 or frac_ref != frac_ours:
        worst = max(((k, part, v) for k, parts in fixed_errs.items() for part, v in parts.items()), key=lambda t: t[2])
        out.verdict = FAILS
        out.evidence = (
            f"counterexample on the fixed tensors ({worst[0]}): {worst[1]} differs by {fmt(worst[2], 3)}; "
            f"frac_in_U {fmt(frac_ref)} vs {fmt(frac_ours)}" + ("" if n1.passed else f"; {n1.summary()}")
        )
    return out


def check_easy_margin_sign(
    profile: Profile,
    *,
    impl: Callable[..., Any] = th.released_easy_margin,
    impl_paper: Callable[..., Any] = th.log_cpo_margin,
) -> Outcome:
    """C10: the released `easy` margin a = γ(1/ℓ̄_ref(y_w) + 1/ℓ̄_ref(y_l)) vs C8's m = γ(1/π̄_ref(y_w) + 1/π̄_ref(y_l))."""
    lw, ll = sp.symbols("lbar_w lbar_l", negative=True)
    s1 = sign_check(
        "released a = γ(1/ℓ̄_w + 1/ℓ̄_l) with ℓ̄ < 0",
        GAMMA * (1 / lw + 1 / ll),
        "negative",
        ["per-token mean log-probs are negative, so their reciprocals are"],
    )
    s2 = sign_check(
        "per-token C8 margin γ(e^{−ℓ̄_w} + e^{−ℓ̄_l}) = γ(PPL_w + PPL_l)", GAMMA * (sp.exp(-lw) + sp.exp(-ll)), "positive"
    )
    demo = rr.RELEASED_DEMO_CONFIG
    ref_w, ref_l = np.array([-1.2, -1.8]), np.array([-1.4, -1.1])  # the released smoke test's reference values
    a = np.asarray(impl(ref_w, ref_l, demo["gamma"]))
    m = np.exp(np.asarray(impl_paper(ref_w, ref_l, demo["gamma"])))
    dref = ref_w - ref_l
    numbers = {
        "config": demo,
        "mean_logp_ref_w": ref_w,
        "mean_logp_ref_l": ref_l,
        "released_margin_a": a,
        "paper_margin_m_per_token": m,
        "delta_ref": dref,
        "released_target": dref + a / demo["beta"],
        "paper_target": dref + m / demo["beta"],
        "population_delta_released_easy_dr_1": pop_stationary(
            "released_easy", dref, 1.0, demo["beta"], mean_logp_ref_w=ref_w, mean_logp_ref_l=ref_l, gamma=demo["gamma"]
        ),
        "population_delta_dpo_dr_1": dref + 1.0 / demo["beta"],
    }
    strat = st.fixed_dictionaries({"lw": reals(-20.0, -1e-3), "ll": reals(-20.0, -1e-3), "gamma": reals(1e-4, 5.0)})

    def prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]]:
        av = float(np.asarray(impl(ex["lw"], ex["ll"], ex["gamma"])))
        mv = math.exp(float(np.asarray(impl_paper(ex["lw"], ex["ll"], ex["gamma"]))))
        return float(not (av < 0 < mv)), {"released_a": av, "paper_m": mv}

    n1 = search(
        "released a < 0 < per-token C8 margin m",
        strat,
        prop,
        max_examples=profile.examples,
        tolerance=0.5,
        error_meaning="same-sign cases",
    )
    corr = combine("per-token mean log-probs ℓ̄ < 0", [s1, s2], [n1], details={"demo_numbers": numbers})
    corrected = corrected_statement(
        "The released `easy` margin a = γ(1/ℓ̄_ref(y_w) + 1/ℓ̄_ref(y_l)) is negative: it lowers the DPO target to "
        "δ_ref + a/β < δ_ref (an easier target, not a stricter one). C8's margin on per-token mean log-probs is "
        "m̄ = γ(e^{−ℓ̄_ref(y_w)} + e^{−ℓ̄_ref(y_l)}) = γ(PPL_w + PPL_l) > 0",
        corr.reading,
        corr.verdict,
        corr.evidence,
        corr.details,
    )
    evidence = (
        f"demo config (β={demo['beta']}, γ={demo['gamma']}), ℓ̄_ref = ({ref_w[0]}, {ref_l[0]}): released a = "
        f"{fmt(a[0])} < 0 but C8's m = γ(1/π̄_w + 1/π̄_l) = {fmt(m[0])} > 0; target δ_ref + a/β = "
        f"{fmt(numbers['released_target'][0])} vs paper's {fmt(numbers['paper_target'][0])} (δ_ref = {fmt(dref[0])})"
    )
    if not (a[0] < 0 < m[0]):
        return Outcome(
            VERIFIED,
            "released `easy` branch",
            "released margin has the paper's sign on the demo numbers",
            {"demo_numbers": numbers},
            corrected,
        )
    return Outcome(
        FAILS,
        "released `easy` branch = C8's margin on per-token mean log-probs",
        evidence,
        {"demo_numbers": numbers, "symbolic": [s1.to_details(), s2.to_details()]},
        corrected,
    )


def check_released_targets(profile: Profile, *, impl: Callable[..., Any] = th.effective_target) -> Outcome:
    """C10: each branch's effective target for δ_θ (and its two-sided population stationary point, reported)."""
    lw, ll = sp.symbols("lbar_w lbar_l", negative=True)
    tau, alpha, g = (
        sp.Symbol("tau", positive=True),
        sp.Symbol("alpha", positive=True),
        sp.Symbol("gamma", positive=True),
    )
    d = sp.Symbol("delta", real=True)
    a_easy = g * (1 / lw + 1 / ll)
    syms = []
    for name, arg, target in (
        ("easy", BETA * d - (BETA * DREF + a_easy), DREF + a_easy / BETA),
        (
            "adaptive",
            BETA * d - (BETA * DREF + (BETA / alpha) * softplus(tau * (g - DREF)) / tau),
            DREF + softplus(tau * (g - DREF)) / (alpha * tau),
        ),
    ):
        sol = sp.solve(sp.Eq(arg, 0), d)
        syms.append(
            compare(
                f"zero of the {name} branch's sigmoid argument",
                sol[0] if sol else sp.nan,
                target,
                {
                    BETA: (0.05, 10.0),
                    DREF: (-10.0, 10.0),
                    g: (1e-3, 2.0),
                    lw: (-10.0, -1e-3),
                    ll: (-10.0, -1e-3),
                    tau: (0.1, 10.0),
                    alpha: (0.1, 4.0),
                },
                examples=profile.examples,
            )
        )
    x = sp.Symbol("x", positive=True)
    syms.append(
        limit_check(
            "adaptive target − δ_ref as τ → ∞ (α = 1), γ − δ_ref = x > 0",
            softplus(tau * x) / tau,
            tau,
            sp.oo,
            x,
            ["→ γ − δ_ref: target max(δ_ref, γ) = γ"],
        )
    )
    syms.append(
        limit_check(
            "adaptive target − δ_ref as τ → ∞ (α = 1), δ_ref − γ = x > 0",
            softplus(-tau * x) / tau,
            tau,
            sp.oo,
            sp.Integer(0),
            ["→ 0: target max(δ_ref, γ) = δ_ref"],
        )
    )

    strat = st.fixed_dictionaries(
        {
            "beta": uniform_betas(0.05, 5.0),
            "lw": reals(-10.0, -1e-2),
            "ll": reals(-10.0, -1e-2),
            "gamma": reals(1e-3, 2.0),
            "tau": reals(0.1, 10.0),
            "alpha": reals(0.1, 4.0),
        }
    )

    def prop(ex: dict[str, float]) -> float:
        import torch

        beta, gamma = ex["beta"], ex["gamma"]
        rw = torch.tensor([ex["lw"]], dtype=torch.float64)
        rl = torch.tensor([ex["ll"]], dtype=torch.float64)
        # target from the torch reference: the δ_θ where its loss equals log 2 (argument zero); δ_ref = rw − rl
        d_ref = float(rw - rl)
        _, a_e = rr.easy_branch(rw, rl, rw, rl, beta, gamma)
        _, a_ad = rr.adaptive_branch(rw, rl, rw, rl, beta, gamma, ex["tau"], ex["alpha"])
        expected = {
            "released_easy": d_ref + float(a_e) / beta,
            "released_clip": max(d_ref, 0.0),
            "released_adaptive": d_ref + float(a_ad) / ex["alpha"],
        }
        got = {
            "released_easy": impl(
                "released_easy", d_ref, beta, mean_logp_ref_w=ex["lw"], mean_logp_ref_l=ex["ll"], gamma=gamma
            ),
            "released_clip": impl("released_clip", d_ref, beta),
            "released_adaptive": impl("released_adaptive", d_ref, beta, gamma=gamma, tau=ex["tau"], alpha=ex["alpha"]),
        }
        return max(rel_err(got[k], expected[k]) for k in expected)

    n1 = search(
        "theory effective targets vs the torch reference's zero of the sigmoid argument",
        strat,
        prop,
        max_examples=profile.examples,
        tolerance=1e-12,
    )
    # population stationary points (two-sided BT): closed form for any logistic-family loss, vs the theory layer
    qk = 1 / (1 + K)
    c1, c2, dd, bb = (
        sp.Symbol("c_1", real=True),
        sp.Symbol("c_2", real=True),
        sp.Symbol("delta", real=True),
        sp.Symbol("B", positive=True),
    )
    pop = qk * softplus(c1 - BETA * dd) + (1 - qk) * softplus(c2 + BETA * dd)
    quad = (1 - qk) * sp.exp(c2) * bb**2 + (1 - 2 * qk) * sp.exp(c1 + c2) * bb - qk * sp.exp(c1)
    num, _den = sp.fraction(sp.together(sp.simplify(sp.diff(pop, dd).subs(dd, sp.log(bb) / BETA))))
    syms.append(
        sign_check(
            "numerator of dL/dδ ÷ (1−q)e^{c₂}B² + (1−2q)e^{c₁+c₂}B − q·e^{c₁} (B = e^{βδ})",
            sp.simplify(num / quad),
            "positive",
            [
                "two-sided population L = q·softplus(c₁ − βδ) + (1 − q)·softplus(c₂ + βδ), offsets c₁ (pair), c₂ "
                "(swapped pair): dL/dδ = 0 ⇔ the quadratic in B vanishes; one positive root (leading > 0, constant < 0)"
            ],
        )
    )
    branches = ("released_easy", "released_clip", "released_adaptive", "cpo_margin")
    pstrat = st.fixed_dictionaries(
        {
            "branch": st.sampled_from(branches),
            "beta": uniform_betas(0.05, 5.0),
            "delta_ref": reals(-8.0, 8.0),
            "delta_reward": reals(-6.0, 6.0),
            "lw": reals(-6.0, -0.05),
            "ll": reals(-6.0, -0.05),
            "gamma": reals(1e-3, 1.0),
            "tau": reals(0.2, 8.0),
            "alpha": reals(0.2, 3.0),
            "margin": reals(0.0, 5.0),
        }
    )

    def pop_prop(ex: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        name, beta, dref, dr = ex["branch"], ex["beta"], ex["delta_ref"], ex["delta_reward"]
        params = {
            "released_easy": {"mean_logp_ref_w": ex["lw"], "mean_logp_ref_l": ex["ll"], "gamma": ex["gamma"]},
            "released_clip": {},
            "released_adaptive": {"gamma": ex["gamma"], "tau": ex["tau"], "alpha": ex["alpha"]},
            "cpo_margin": {"margin": ex["margin"]},
        }[name]
        oc1, oc2 = branch_offsets(name, dref, beta, **params)
        closed = two_sided_stationary(oc1, oc2, float(expit(dr)), beta)
        got = float(pop_stationary(name, dref, dr, beta, **params)[0])
        res = root_resolution(oc1, oc2, float(expit(dr)), beta, closed)
        err = abs(got - closed) / (1e-9 * max(1.0, abs(closed)) + res)
        return err, {"closed_form": closed, "implementation": got, "float_resolution_of_root": res}

    n2 = search(
        "closed-form two-sided population stationary point vs the implementation (easy, clip, adaptive, cpo_margin; "
        "error in units of 1e-9 relative + the float64 resolution of the root)",
        pstrat,
        pop_prop,
        max_examples=profile.examples,
        tolerance=1.0,
        error_meaning="error in resolution units",
    )
    # reported for the released defaults and the demo config
    grid_dref = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    table = {}
    for label, cfg in (
        ("defaults", RELEASED_DEFAULT_LOSS_CONFIG),
        ("demo", RELEASED_DEMO_LOSS_CONFIG),
    ):
        rows = {}
        for dr in (0.5, 2.0):
            beta = cfg["beta"]
            lbar_w, lbar_l = np.full(grid_dref.shape, -1.2), -1.2 - grid_dref  # ℓ̄_w − ℓ̄_l = δ_ref
            m_pt = np.exp(np.asarray(th.log_cpo_margin(lbar_w, lbar_l, cfg["gamma"])))
            rows[f"delta_reward={dr}"] = {
                "delta_ref": grid_dref,
                "rlhf_delta_star": grid_dref + dr / beta,
                "dpo": pop_stationary("dpo", grid_dref, dr, beta),
                "released_easy": pop_stationary(
                    "released_easy",
                    grid_dref,
                    dr,
                    beta,
                    mean_logp_ref_w=lbar_w,
                    mean_logp_ref_l=lbar_l,
                    gamma=cfg["gamma"],
                ),
                "released_clip": pop_stationary("released_clip", grid_dref, dr, beta),
                "released_adaptive": pop_stationary(
                    "released_adaptive", grid_dref, dr, beta, gamma=cfg["gamma"], tau=cfg["tau"], alpha=cfg["alpha"]
                ),
                "cpo_margin_per_token": pop_stationary("cpo_margin", grid_dref, dr, beta, margin=m_pt),
                "paper_cpo_formula_per_token": grid_dref + (dr + m_pt) / beta,
            }
        table[label] = {"config": cfg, "rows": rows, "mean_logp_ref_w": -1.2}
    targets = {
        "released_easy": "δ_ref + a/β with a = γ(1/ℓ̄_ref(y_w) + 1/ℓ̄_ref(y_l)) < 0 (below DPO's δ_ref)",
        "released_clip": "max(δ_ref, 0)",
        "released_adaptive": "δ_ref + softplus(τ(γ − δ_ref))/(ατ) → max(δ_ref, γ) as τ → ∞ (α = 1)",
        "paper_cpo": "δ_ref + m/β with m = γ(1/π_ref(y_w) + 1/π_ref(y_l)) > 0",
    }
    return combine(
        "each branch's one-sided loss; population points under the two-sided BT population (C5a)",
        syms,
        [n1, n2],
        details={"effective_targets": targets, "population_stationary_points": table},
    )
