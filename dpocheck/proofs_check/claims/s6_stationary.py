"""Checks of PAPER.md §6 [ours]: where DPOP (Pal et al. 2024) and DPO + NLL (Pang et al. 2024) put a pair's margin
under the two-sided Bradley–Terry population (C5a's reading), relative to δ* = δ_{π*} and to U (C3).

Setting (see :mod:`dpocheck.theory.displacement`): one context, one pair, one-token responses, q = σ(Δr*); the loss's
infimum lies on the face π(y_w) + π(y_l) = 1, where it is a convex function of δ.

Every ``check_*`` takes the profile and, as keyword parameters, the formulas under test (``impl*``: the theory
layer's implementations), the injection points of the mutation tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import expit

from dpocheck import theory as th

from ..compose import combine
from ..core import FAILS, VERIFIED, Outcome, Profile, corrected_statement, fmt, fmt_example
from ..search import search
from ..strategies import reals, uniform_betas
from ..symbolic import compare, sigmoid, sign_check, softplus
from ._shared import BETA, DELTA, DREF, K
from .s6_losses import ALPHA, LAM, S6_DOM

#: two-response context (mass 1) or a pair holding a share `mass` of the reference's probability
_DATA = st.fixed_dictionaries(
    {
        "beta": uniform_betas(0.05, 10.0),
        "delta_ref": reals(-8.0, 8.0),
        "delta_reward": reals(-8.0, 8.0),
        "lam": reals(0.0, 100.0),
        "alpha": reals(0.0, 20.0),
        "mass": st.sampled_from([1.0, 1.0, 0.9, 0.5, 0.1]),
    }
)


def _ref_logps(ex: dict[str, float]) -> tuple[float, float]:
    """log π_ref(y_w), log π_ref(y_l) with δ_ref as given and π_ref(y_w) + π_ref(y_l) = mass."""
    m = np.log(ex["mass"])
    return m - float(np.logaddexp(0.0, -ex["delta_ref"])), m - float(np.logaddexp(0.0, ex["delta_ref"]))


def face_loss_dpop(d: float, rw: float, rl: float, dr: float, beta: float, lam: float) -> float:
    """DPOP's population loss on the face, written independently of the registry (PAPER §6's formula)."""
    q = expit(dr)
    sp_w, sp_l = np.logaddexp(0.0, -d), np.logaddexp(0.0, d)  # −log π(y_w), −log π(y_l) on the face
    zf = beta * ((rw - rl) - d) + beta * lam * max(0.0, rw + sp_w)
    zr = beta * (d - (rw - rl)) + beta * lam * max(0.0, rl + sp_l)
    return float(q * np.logaddexp(0.0, zf) + (1 - q) * np.logaddexp(0.0, zr))


# ============================================================================================ DPOP


def check_dpop_population(
    profile: Profile, *, impl: Callable[..., Any] = th.population_face_stationary_delta
) -> Outcome:
    """PAPER §6 [ours]: DPOP's population stationary margin, claimed (by analogy with DPO, C5a) to be δ*."""
    q = 1 / (1 + K)  # q = σ(Δr*) ∈ (0, 1)
    s_sig = sp.Symbol("s", positive=True)  # σ(±δ_ref) ∈ (0, 1)
    right = (1 - q) * (1 + LAM * s_sig) - q  # (2/β)·L'(δ_ref⁺) for q ≥ ½
    s1 = compare(
        "(2/β)·L'(δ_ref⁺) = (1 − q)(1 + λσ(δ_ref)) − q",
        right,
        (1 - q) * (1 + LAM * s_sig - sp.exp(sp.log(q / (1 - q)))),
        {**S6_DOM, K: (1e-4, 1e4), s_sig: (1e-6, 1.0)},
        [
            "(1 − q)·(1 + λσ − e^{Δr*}) with e^{Δr*} = q/(1 − q): ≥ 0 ⇔ λσ(δ_ref) ≥ e^{Δr*} − 1 (then the kink "
            "is the minimum)"
        ],
        examples=profile.examples,
    )
    # the face loss on δ > δ_ref: forward term DPO's, swapped term penalised by P_l = softplus(δ) − softplus(δ_ref)
    fwd = softplus(BETA * (DREF - DELTA))
    rev = softplus(BETA * (DELTA - DREF) + BETA * LAM * (softplus(DELTA) - softplus(DREF)))
    h_rev = BETA * (DELTA - DREF) + BETA * LAM * (softplus(DELTA) - softplus(DREF))
    s2 = sign_check(
        "second derivative of the swapped term's argument β(δ − δ_ref) + βλ(softplus(δ) − softplus(δ_ref))",
        sp.simplify(sp.diff(h_rev, DELTA, 2)),
        "positive",
        ["softplus of a convex argument is convex: the face loss is convex, its minimiser unique"],
    )
    excess = sp.diff(q * fwd + (1 - q) * rev, DELTA) - sp.diff(
        q * fwd + (1 - q) * softplus(BETA * (DELTA - DREF)), DELTA
    )
    s3 = compare(
        "L'_DPOP − L'_DPO on δ > δ_ref",
        excess,
        (1 - q) * (BETA * sigmoid(h_rev) * (1 + LAM * sigmoid(DELTA)) - BETA * sigmoid(BETA * (DELTA - DREF))),
        {**S6_DOM, K: (1e-4, 1e4)},
        ["> 0 there (σ increasing, softplus(δ) > softplus(δ_ref)), and L'_DPO(δ*) = 0: L'_DPOP(δ*) > 0, so the "
         "minimiser lies in [δ_ref, δ*) when Δr* > 0 (mirror image for Δr* < 0)"],
        examples=profile.examples,
    )  # fmt: skip

    def literal(ex: dict[str, float]) -> tuple[float, dict[str, Any]]:
        rw, rl = _ref_logps(ex)
        b, dr = ex["beta"], ex["delta_reward"]
        d = float(np.asarray(impl("dpop", rw, rl, dr, b, lam=ex["lam"])))
        star = (rw - rl) + dr / b
        return abs(d - star) / max(1.0, abs(star)), {"delta_star": star, "dpop_delta": d, "delta_ref": rw - rl}

    n_lit = search(
        "implementation's DPOP population stationary δ vs δ*",
        _DATA,
        literal,
        max_examples=profile.examples,
        tolerance=1e-6,
    )

    def corrected_prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]] | None:
        rw, rl = _ref_logps(ex)
        b, dr, lam = ex["beta"], ex["delta_reward"], ex["lam"]
        dref, star = rw - rl, (rw - rl) + dr / b
        d = float(np.asarray(impl("dpop", rw, rl, dr, b, lam=lam)))
        h = 1e-5 * max(1.0, abs(d))
        f0 = face_loss_dpop(d, rw, rl, dr, b, lam)
        local_min = max(f0 - face_loss_dpop(d + h, rw, rl, dr, b, lam), f0 - face_loss_dpop(d - h, rw, rl, dr, b, lam))
        tol = 1e-12 * max(1.0, f0)
        between = max(min(dref, star) - d, d - max(dref, star), 0.0)
        bad = float(local_min > tol) + float(between > 1e-9 * max(1.0, abs(d)))
        # closed forms: δ* when reachable without displacement; δ_ref on two responses iff
        # λσ(sgn Δr*·δ_ref) ≥ e^|Δr*| − 1
        if bool(th.dpop_delta_star_reachable(rw, rl, dr, b)):
            bad += float(abs(d - star) > 1e-9 * max(1.0, abs(star)))
        if ex["mass"] == 1.0:
            gap = lam * expit(np.sign(dr) * dref) - np.expm1(abs(dr))
            if abs(gap) < 1e-6 * (1 + lam):
                return None  # the boundary of the closed form: undecidable at finite precision
            bad += float((gap >= 0) != (abs(d - dref) <= 1e-9 * max(1.0, abs(dref))))
        return bad, {"dpop_delta": d, "delta_ref": dref, "delta_star": star}

    n_cor = search(
        "implementation: a minimum of an independent face loss, between δ_ref and δ*, closed-form cases exact",
        _DATA,
        corrected_prop,
        max_examples=profile.examples,
        tolerance=0.5,
        pinned=[
            {"beta": 1.0, "delta_ref": 0.0, "delta_reward": 1.0, "lam": 50.0, "alpha": 1.0, "mass": 1.0},
            {"beta": 1.0, "delta_ref": -1.0, "delta_reward": 2.0, "lam": 5.0, "alpha": 1.0, "mass": 1.0},
            {"beta": 1.0, "delta_ref": 0.0, "delta_reward": 1.0, "lam": 0.0, "alpha": 1.0, "mass": 0.5},
        ],
        error_meaning="violated conditions",
    )
    corr = combine("two-sided BT population, one pair per context, one-token responses", [s1, s2, s3], [n_cor])
    corrected = corrected_statement(
        "DPOP's population stationary margin lies between δ_ref and δ* (it shrinks DPO's towards the reference); for "
        "λ > 0 it is δ* iff π_ref(y_w)·e^{[Δr*]₊/β} + π_ref(y_l)·e^{[−Δr*]₊/β} ≤ 1 (δ* reachable displacing neither "
        "response: never on two responses unless Δr* = 0), and on a two-response context it is δ_ref (π_ref kept) "
        "iff λ·σ(sgn(Δr*)·δ_ref) ≥ e^{|Δr*|} − 1 (λ = 50, δ_ref = 0: |Δr*| ≤ log 26)",
        corr.reading,
        corr.verdict,
        corr.evidence,
        corr.details,
    )
    ce = n_lit.counterexample_info or {}
    details = {"literal": n_lit.to_details()}
    if n_lit.passed:
        return Outcome(VERIFIED, "two-sided BT population", n_lit.summary(), details, corrected)
    evidence = (
        f"the swapped label penalises displacing y_l, so the population loss is no longer minimised at δ*; "
        f"minimal counterexample {fmt_example(n_lit.counterexample or {})}: δ* = {fmt(ce.get('delta_star'))}, DPOP's "
        f"stationary δ = {fmt(ce.get('dpop_delta'))}"
    )
    return Outcome(FAILS, "two-sided BT population, one pair per context", evidence, details, corrected)


def check_dpop_undesirable_space(
    profile: Profile, *, impl: Callable[..., Any] = th.population_face_stationary_delta
) -> Outcome:
    """PAPER §6 vs C3 [ours]: does DPOP's population stationary point avoid U whenever DPO's (δ*) does?"""

    def literal(ex: dict[str, float]) -> tuple[float, dict[str, Any]] | None:
        rw, rl = _ref_logps(ex)
        b, dr = ex["beta"], ex["delta_reward"]
        dref, star = rw - rl, (rw - rl) + dr / b
        if not (dref < 0 <= star):  # δ* outside U while U is non-empty
            return None
        d = float(np.asarray(impl("dpop", rw, rl, dr, b, lam=ex["lam"])))
        in_u = bool(np.asarray(th.in_undesirable_space(d, dref)))
        return float(in_u), {"delta_ref": dref, "delta_star": star, "dpop_delta": d}

    data = st.fixed_dictionaries(
        {
            "beta": uniform_betas(0.05, 10.0),
            "delta_ref": reals(-8.0, -1e-3),
            "delta_reward": reals(0.0, 16.0),
            "lam": reals(0.0, 100.0),
            "alpha": st.just(1.0),
            "mass": st.sampled_from([1.0, 0.5]),
        }
    )
    n_lit = search(
        "DPOP's population point in U although δ* ∉ U",
        data,
        literal,
        max_examples=profile.examples,
        tolerance=0.5,
        pinned=[{"beta": 1.0, "delta_ref": -1.0, "delta_reward": 2.0, "lam": 5.0, "alpha": 1.0, "mass": 1.0}],
        error_meaning="pairs in U",
    )

    def kept(ex: dict[str, float]) -> tuple[float, dict[str, Any]] | None:
        rw, rl = _ref_logps(ex)
        b, dr = ex["beta"], ex["delta_reward"]
        dref, star = rw - rl, (rw - rl) + dr / b
        if not (dref < star < 0):  # δ* ∈ U: C2 violated with Δr* > 0
            return None
        d = float(np.asarray(impl("dpop", rw, rl, dr, b, lam=ex["lam"])))
        tol = 1e-9 * max(1.0, abs(dref))  # the bisection's resolution (λ = 0 gives δ* itself)
        return float(not (dref - tol <= d <= star + tol)), {"delta_ref": dref, "delta_star": star, "dpop_delta": d}

    violated = st.fixed_dictionaries(
        {
            "beta": uniform_betas(0.05, 10.0),
            "delta_ref": reals(-8.0, -1e-3),
            "delta_reward": reals(0.0, 8.0),
            "lam": reals(0.0, 100.0),
            "alpha": st.just(1.0),
            "mass": st.sampled_from([1.0, 0.5]),
        }
    )
    n_cor = search(
        "δ* ∈ U ⇒ DPOP's population point in [δ_ref, δ*] ⊂ closure of U",
        violated,
        kept,
        max_examples=profile.examples,
        tolerance=0.5,
        error_meaning="pairs outside [δ_ref, δ*]",
    )
    corr = combine("two-sided BT population, δ* ∈ U (C2 violated, Δr* > 0)", [], [n_cor])
    corrected = corrected_statement(
        "Where δ* ∈ U (C2 violated with Δr* > 0) DPOP's population stationary margin stays in [δ_ref, δ*], the closure "
        "of U: DPOP never takes a pair out of U; and it can put a pair into U that DPO's δ* leaves",
        corr.reading,
        corr.verdict,
        corr.evidence + "; a corollary of S6.dpop-population's interval [δ_ref, δ*]",
        corr.details,
    )
    ce = n_lit.counterexample_info or {}
    details = {"literal": n_lit.to_details()}
    if n_lit.passed:
        return Outcome(VERIFIED, "two-sided BT population", n_lit.summary(), details, corrected)
    evidence = (
        f"counterexample {fmt_example(n_lit.counterexample or {})}: δ* = {fmt(ce.get('delta_star'))} ∉ U but DPOP's "
        f"stationary δ = {fmt(ce.get('dpop_delta'))} ∈ U = ({fmt(ce.get('delta_ref'))}, 0)"
    )
    return Outcome(FAILS, "two-sided BT population, one pair per context", evidence, details, corrected)


# ============================================================================================ DPO + NLL


def check_dpo_nll_population(
    profile: Profile,
    *,
    impl: Callable[..., Any] = th.population_face_stationary_delta,
    impl_alpha_star: Callable[..., Any] = th.dpo_nll_alpha_star,
) -> Outcome:
    """PAPER §6 [ours]: DPO + NLL's population stationary margin, claimed (by analogy with DPO, C5a) to be δ*."""
    q = 1 / (1 + K)
    loss = q * (softplus(BETA * (DREF - DELTA)) + ALPHA * softplus(-DELTA)) + (1 - q) * (
        softplus(BETA * (DELTA - DREF)) + ALPHA * softplus(DELTA)
    )  # on the face: −log π(y_w) = softplus(−δ), −log π(y_l) = softplus(δ)
    claimed_deriv = BETA * (sigmoid(BETA * (DELTA - DREF)) - q) + ALPHA * (sigmoid(DELTA) - q)
    dom = {**S6_DOM, K: (1e-4, 1e4)}
    s1 = compare("dL/dδ on the face", sp.diff(loss, DELTA), claimed_deriv, dom, examples=profile.examples)
    s2 = sign_check("d²L/dδ²", sp.diff(claimed_deriv, DELTA), "positive", ["convex: one minimiser"])
    dr_q = sp.log((1 - q) / q) * -1  # Δr* = logit(q)
    s3 = compare(
        "DPO term at δ* and NLL term at Δr*",
        [claimed_deriv.subs(ALPHA, 0).subs(DELTA, DREF + dr_q / BETA), (claimed_deriv - claimed_deriv.subs(ALPHA, 0))
         .subs(DELTA, dr_q)],
        [0, 0],
        dom,
        ["both terms increase in δ: each is ≤ 0 left of its root, so the minimiser lies between δ* and Δr*"],
        examples=profile.examples,
    )  # fmt: skip
    qs = sp.Symbol("q", positive=True)
    a_star = BETA * (sigmoid(-BETA * DREF) - qs) / (qs - sp.Rational(1, 2))
    s4 = compare(
        "dL/dδ at δ = 0 with α = α*",
        BETA * (sigmoid(-BETA * DREF) - qs) + a_star * (sp.Rational(1, 2) - qs),
        0,
        {**dom, qs: (0.51, 0.999)},
        ["L'(0) decreases in α for q > ½: δ ≥ 0 (outside U) ⇔ α ≥ α* = β(σ(−βδ_ref) − q)/(q − ½)"],
        examples=profile.examples,
    )

    def literal(ex: dict[str, float]) -> tuple[float, dict[str, Any]] | None:
        rw, rl = _ref_logps(ex)
        b, dr, a = ex["beta"], ex["delta_reward"], ex["alpha"]
        d = float(np.asarray(impl("dpo_nll", rw, rl, dr, b, alpha=a)))
        star = (rw - rl) + dr / b
        return abs(d - star) / max(1.0, abs(star)), {"delta_star": star, "dpo_nll_delta": d, "delta_reward": dr}

    n_lit = search(
        "implementation's DPO + NLL population stationary δ vs δ*", _DATA, literal, max_examples=profile.examples,
        tolerance=1e-6,
    )  # fmt: skip

    def corrected_prop(ex: dict[str, float]) -> tuple[float, dict[str, Any]] | None:
        rw, rl = _ref_logps(ex)
        b, dr, a = ex["beta"], ex["delta_reward"], ex["alpha"]
        dref, star, qq = rw - rl, (rw - rl) + dr / b, float(expit(dr))
        d = float(np.asarray(impl("dpo_nll", rw, rl, dr, b, alpha=a)))

        def deriv(x: float) -> float:  # independent of the registry
            return b * (expit(b * (x - dref)) - qq) + a * (expit(x) - qq)

        lo, hi = min(star, dr) - 1.0, max(star, dr) + 1.0
        root = brentq(deriv, lo, hi, xtol=1e-14, rtol=1e-15)
        bad = float(abs(d - root) > 1e-8 * max(1.0, abs(root)))
        bad += float(not (min(star, dr) - 1e-9 <= d <= max(star, dr) + 1e-9))
        a_star = float(np.asarray(impl_alpha_star(dref, dr, b)))
        if qq > 0.5 and abs(a - a_star) > 1e-6 * (1 + a_star) and abs(d) > 1e-9:
            bad += float((d > 0) != (a > a_star))
        return bad, {"dpo_nll_delta": d, "brentq_root": root, "alpha_star": a_star}

    n_cor = search(
        "implementation = brentq root of β(σ(β(δ−δ_ref)) − q) + α(σ(δ) − q), between δ* and Δr*, ≥ 0 iff α ≥ α*",
        _DATA,
        corrected_prop,
        max_examples=profile.examples,
        tolerance=0.5,
        pinned=[{"beta": 1.0, "delta_ref": -1.0, "delta_reward": 0.5, "lam": 0.0, "alpha": 0.8868, "mass": 1.0}],
        error_meaning="violated conditions",
    )
    corr = combine("two-sided BT population, one pair per context, one-token responses", [s1, s2, s3, s4], [n_cor])
    corrected = corrected_statement(
        "On the face π(y_w) + π(y_l) = 1 DPO + NLL's population margin solves β(σ(β(δ − δ_ref)) − q) + "
        "α(σ(δ) − q) = 0: unique, between δ* and Δr* (the NLL's own optimum π(y_w) = q), = δ* only if δ* = Δr*, "
        "outside U iff α ≥ α* = max(0, β(σ(−βδ_ref) − q)/(q − ½)) (Δr* > 0); with more than two responses there is "
        "no interior stationary point (the NLL drains the others: ∂/∂z_k = α·π(y_k) > 0, S6.hard-labels)",
        corr.reading,
        corr.verdict,
        corr.evidence,
        corr.details,
    )
    ce = n_lit.counterexample_info or {}
    details = {"literal": n_lit.to_details()}
    if n_lit.passed:
        return Outcome(VERIFIED, "two-sided BT population", n_lit.summary(), details, corrected)
    evidence = (
        f"the NLL term pulls the margin towards Δr* (its own optimum); minimal counterexample "
        f"{fmt_example(n_lit.counterexample or {})}: δ* = {fmt(ce.get('delta_star'))}, DPO + NLL's stationary δ = "
        f"{fmt(ce.get('dpo_nll_delta'))}"
    )
    return Outcome(FAILS, "two-sided BT population, one pair per context", evidence, details, corrected)


__all__ = ["check_dpo_nll_population", "check_dpop_population", "check_dpop_undesirable_space"]
