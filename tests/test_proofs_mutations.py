"""Mutation tests: a checker that cannot fail is worthless. Each test injects a deliberately wrong formula (a
flipped sign, a missing β, a wrong limit, a wrong implementation) through a check's injection point and asserts
that the checker reports it as failing (or, for claims that already fail, that the outcome changes)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from dpocheck import theory as th
from dpocheck.proofs_check import FAILS, NOT_CHECKABLE, VERIFIED, Profile, get_claim, run_claims
from dpocheck.proofs_check.symbolic import sigmoid

# Fewer examples than the fast profile: a wrong formula must be caught quickly (keeps this file ~10 s).
MUTATION = Profile("mutation", examples=25, heavy_examples=8)


def run(claim_id: str, **formulas):
    return get_claim(claim_id).run(MUTATION, **formulas)


# ------------------------------------------------------------------------------------- symbolic (claimed) side
SYMBOLIC_MUTANTS = [
    ("C1.key-identity", {"claimed": lambda dref, dr, beta: dref + dr}),  # missing β
    (
        "C1.rlhf-optimum",
        {
            "claimed": lambda refs, rs, beta: [
                p * sp.exp(beta * r) / sum(q * sp.exp(beta * s) for q, s in zip(refs, rs, strict=True))
                for p, r in zip(refs, rs, strict=True)
            ]
        },
    ),  # exp(β r) instead of exp(r/β)
    ("C2.violation-condition", {"claimed": lambda dref, dr, beta: beta * dref - dr}),  # flipped sign
    ("C2.beta-monotonicity", {"claimed": lambda dref, dr, beta: beta * dref - dr}),
    ("C4.gradient", {"claimed": lambda d, dref, beta: -sigmoid(beta * (dref - d))}),  # missing β factor
    ("C4.escape-time", {"claimed": lambda a, beta: (a + (sp.exp(beta * a) - 1) / beta) / beta}),  # missing 1/2
    ("C5.population", {"claimed": lambda dref, dr, beta: dref + dr}),  # missing β
    ("C6.shift-invariance", {"claimed": lambda d, dref, beta: sp.log(1 + sp.exp(-beta * d + dref))}),
    ("C7.hinge-limit", {"claimed": lambda d, dref: sp.Max(0, d - dref)}),  # wrong limit (orientation)
    ("C7.finite-beta-bound", {"claimed": lambda beta: sp.log(2) / beta**2}),  # wrong bound
    ("C8.foc", {"claimed": lambda dref, dr, beta, gamma, pw, pl: dref + (dr - gamma * (1 / pw + 1 / pl)) / beta}),
    ("C8.gamma-star", {"claimed": lambda dref, dr, beta, s: (beta * dref + dr) / s}),  # flipped sign
    ("C8.unbounded", {"gamma_term": lambda delta, gamma: -gamma * delta}),  # wrong sign of the γ-term
    ("C9.ecpoc-kkt", {"claimed": lambda ds, beta, eps: beta * (eps - ds)}),  # missing 1/(1 + e^ε)
]


@pytest.mark.parametrize(("claim_id", "formulas"), SYMBOLIC_MUTANTS, ids=[m[0] for m in SYMBOLIC_MUTANTS])
def test_wrong_paper_formula_is_reported_failing(claim_id, formulas):
    r = run(claim_id, **formulas)
    assert r.verdict == FAILS, (claim_id, r.verdict, r.evidence)
    assert r.regression
    assert "sympy" in r.evidence or "counterexample" in r.evidence


def test_symbolic_mismatch_comes_with_a_numerical_counterexample():
    """Missing β in the key identity: derived δ_ref + Δr*/β vs claimed δ_ref + Δr* differ wherever β ≠ 1 and
    Δr* ≠ 0 — the checker names such a point."""
    r = run("C1.key-identity", claimed=lambda dref, dr, beta: dref + dr)
    sym = r.details["symbolic"][0]
    assert sym["equal"] is False
    ce = sym["counterexample"]
    assert ce["beta"] != 1.0 and ce["r_w"] != ce["r_l"]


# ------------------------------------------------------------------------------- numerical (implementation) side
def _half_gamma_star(*args):
    return 0.5 * th.gamma_star(*args)


IMPL_MUTANTS = [
    ("C1.key-identity", {"impl": lambda dref, dr, beta: dref - dr / beta}),  # flipped sign
    ("C1.rlhf-optimum", {"impl": lambda lp, r, beta: th.rlhf_optimal_log_policy(lp, r, 2 * beta)}),
    ("C2.violation-condition", {"impl": lambda dref, dr, beta: np.asarray(beta * np.asarray(dref) + dr) < 0}),
    ("C3.loss-below-log2", {"impl_member": lambda d, dref: np.asarray(d) < 0}),
    (
        "C4.gradient",
        {
            "impl": lambda d, dref, beta: th.LossAndGrad(
                th.dpo_loss(d, dref, beta).loss, -th.dpo_loss(d, dref, beta).grad
            )
        },
    ),
    ("C4.escape-time", {"impl": lambda dref, beta: 2 * th.escape_time(dref, beta)}),
    ("C7.finite-beta-bound", {"impl": lambda d, dref, beta: 2 * th.soft_margin_gap(d, dref, beta)}),
    ("C8.gamma-star", {"impl": _half_gamma_star}),
    ("C8.thm4.9-approximate", {"impl_gamma_star": _half_gamma_star}),
    ("C10.reproduction", {"impl_clip": lambda d, dref, beta: th.dpo_loss(d, dref, beta)}),  # clamp dropped
]


@pytest.mark.parametrize(("claim_id", "formulas"), IMPL_MUTANTS, ids=[m[0] for m in IMPL_MUTANTS])
def test_wrong_implementation_is_reported_failing(claim_id, formulas):
    r = run(claim_id, **formulas)
    assert r.verdict == FAILS, (claim_id, r.verdict, r.evidence)
    assert "counterexample" in r.evidence


def test_mutating_a_failing_claim_changes_its_outcome():
    """Claims expected to fail must still be able to come out differently."""
    r = run("C10.easy-margin-sign", impl=lambda w, l, g: -th.released_easy_margin(w, l, g))  # a 'fixed' sign
    assert r.verdict == VERIFIED and r.regression
    assert r.corrected["verdict"] == FAILS
    r = run("C4.vanishing", impl_exit=lambda dref, beta: 0.0 * th.exit_gradient_weight(dref, beta))
    assert r.verdict == VERIFIED and r.regression
    r = run(
        "C8.population-stationary",
        impl_paper=lambda dref, dr, beta, m: th.cpo_paper_stationary_delta(dref, dr, beta, 0.0 * np.asarray(m)),
    )
    assert r.corrected["verdict"] == FAILS and r.regression


def test_a_crashing_check_is_not_checkable_and_a_regression():
    def boom(*_a, **_k):
        raise RuntimeError("injected failure")

    (r,) = run_claims(MUTATION, only=["C6.shift-invariance"], overrides={"C6.shift-invariance": {"impl": boom}})
    assert r.verdict == NOT_CHECKABLE and r.regression
    assert "injected failure" in r.evidence and "Traceback" in r.details["error"]


# --------------------------------------------------------------- PAPER §6: DPOP and DPO + NLL (the S6 entries)
def _dpop_without_penalty_gradient(d, dref, beta, lw, rw, lam=50.0):
    out = th.dpop_loss(d, dref, beta, lw, rw, lam=lam)
    return th.LossAndGrad(out.loss, out.grad, 0.0 * out.grad_logp_w)  # ∂ℓ/∂log π(y_w) dropped


def _sigmoid(z):
    return 1 / (1 + sp.exp(-z))


S6_MUTANTS = [
    ("S6.dpop-lambda0", {"impl": lambda d, dref, b, lw, rw, lam: th.dpop_loss(d, dref, b, lw, rw, lam=1.0)}),
    (
        "S6.dpo-nll-alpha0",
        {"impl": lambda d, dref, b, lw, alpha, tokens_w: th.dpo_nll_loss(d, dref, b, lw, alpha=1.0, tokens_w=1)},
    ),
    # the penalty on the wrong side: non-displaced pairs penalised
    ("S6.dpop-non-displaced", {"impl": lambda d, dref, b, lw, rw, lam: th.dpop_loss(d, dref, b, 2 * rw - lw, rw, lam)}),
    ("S6.dpop-gradient", {"impl": _dpop_without_penalty_gradient}),
    (
        "S6.dpop-gradient",  # β missing in ∂ℓ/∂log π(y_w)
        {
            "claimed": lambda d, dref, b, lam, lw, rw: [
                -b * _sigmoid(b * (dref - d) + b * lam * (rw - lw)),
                -lam * _sigmoid(b * (dref - d) + b * lam * (rw - lw)),
            ]
        },
    ),
    # the NLL summed instead of per token
    ("S6.dpo-nll-gradient", {"impl": lambda d, dref, b, lw, alpha, tokens_w: th.dpo_nll_loss(d, dref, b, lw, alpha)}),
    ("S6.dpo-nll-gradient", {"claimed": lambda d, dref, b, a, n: [-b * _sigmoid(b * (dref - d)), -a]}),
]


@pytest.mark.parametrize(("claim_id", "formulas"), S6_MUTANTS, ids=[f"{m[0]}-{i}" for i, m in enumerate(S6_MUTANTS)])
def test_wrong_displacement_loss_is_reported_failing(claim_id, formulas):
    r = run(claim_id, **formulas)
    assert r.verdict == FAILS and r.regression, (claim_id, r.verdict, r.evidence)
    assert "sympy" in r.evidence or "counterexample" in r.evidence


def test_mutating_the_displacement_population_claims_changes_their_outcome():
    """A solver that returned δ* would make S6.dpop-population hold as stated (a regression); a halved α* breaks the
    corrected DPO + NLL statement."""
    star = lambda name, rw, rl, dr, beta, **p: np.asarray(rw) - np.asarray(rl) + np.asarray(dr) / beta  # noqa: E731
    r = run("S6.dpop-population", impl=star)
    assert r.verdict == VERIFIED and r.regression
    r = run("S6.dpo-nll-population", impl_alpha_star=lambda dref, dr, beta: 0.5 * th.dpo_nll_alpha_star(dref, dr, beta))
    assert r.verdict == FAILS and r.corrected["verdict"] == FAILS and r.regression
