"""Every registered claim runs on the fast profile and matches its expected verdict; the reports are produced
and parse."""

from __future__ import annotations

import json

import pytest

from dpocheck.proofs_check import (
    CLAIMS,
    FAILS,
    NOT_CHECKABLE,
    VERDICTS,
    results_table,
    results_to_json,
    results_to_markdown,
    run_claims,
)
from dpocheck.proofs_check.registry import select_claims


@pytest.fixture(scope="module")
def fast_results():
    """One fast-profile run of the whole registry, shared by the tests of this module (~25 s on 2 cores)."""
    return {r.id: r for r in run_claims("fast")}


def test_registry_is_well_formed():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids)) >= 20
    families = {f"C{i}" for i in range(1, 11)} | {"S6"}  # the paper's C1..C10 and PAPER §6's statements
    for c in CLAIMS:
        assert c.id.split(".")[0] in families, c.id
        assert c.paper_ref and c.statement and c.readings and c.methods
        assert c.expected in VERDICTS
        if c.expected in (FAILS, NOT_CHECKABLE) and c.id != "C2.real-data-rate":
            assert c.expected_corrected in VERDICTS, f"{c.id} needs a corrected statement's expected verdict"
    # every claim family C1..C10 of PAPER.md (and §6) has at least one entry
    assert {c.id.split(".")[0] for c in CLAIMS} == families


@pytest.mark.parametrize("claim_id", [c.id for c in CLAIMS])
def test_claim_matches_expected_verdict(fast_results, claim_id):
    r = fast_results[claim_id]
    assert r.verdict == r.expected, f"{claim_id}: {r.verdict} ({r.evidence})"
    assert not r.regression, r.evidence
    assert r.evidence and "\n" not in r.evidence
    if r.expected_corrected is not None:
        assert r.corrected is not None and r.corrected["verdict"] == r.expected_corrected, r.corrected
    if r.verdict == FAILS:
        assert r.corrected is not None, "a failing claim must come with its corrected statement"


def test_expected_outcomes_named_in_the_issue(fast_results):
    """The outcomes the project established for the paper's claims, with their numbers."""
    c5 = fast_results["C5.ordered-pair"]
    assert c5.verdict == FAILS and c5.corrected["verdict"] == "proved"
    paper = c5.details["paper_example"]["counterexample_info"]
    # β = 1, δ_ref = 0, Δr* = 1: δ* = 1, ℓ(1) = softplus(−1) = 0.31326, ℓ(2) = softplus(−2) = 0.12693
    assert paper["delta_star"] == pytest.approx(1.0)
    assert paper["loss_at_delta_star"] == pytest.approx(0.3132616875, rel=1e-9)
    assert paper["loss_at_delta_star_plus_1"] == pytest.approx(0.1269280110, rel=1e-9)
    assert fast_results["C5.population"].verdict == "proved"
    assert fast_results["C8.unbounded"].verdict == "proved"
    assert fast_results["C4.vanishing"].verdict == FAILS
    easy = fast_results["C10.easy-margin-sign"].details["demo_numbers"]
    # a = 0.05·(1/(−1.2) + 1/(−1.4)) = 0.05·(−1.547619) = −0.0773810 < 0 < m = 0.05·(e^{1.2} + e^{1.4})
    #   = 0.05·(3.320117 + 4.055200) = 0.3687658
    assert easy["released_margin_a"][0] == pytest.approx(-0.07738095238, rel=1e-9)
    assert easy["paper_margin_m_per_token"][0] == pytest.approx(0.3687658, rel=1e-6)
    stat = fast_results["C8.population-stationary"]
    ce = stat.details["numerical"][0]["counterexample_info"]
    assert ce["paper_delta"] != pytest.approx(ce["population_delta"], abs=1e-3)
    exact = fast_results["C8.thm4.9-exact"].details["literal"]["counterexample_info"]
    assert exact["gamma"] > exact["gamma_threshold"] and exact["delta_ref"] < exact["delta_exact"] < 0


def test_displacement_loss_outcomes(fast_results):
    """PAPER §6: the reductions, DPOP = DPO off displacement and the exact derivatives are proved; the population
    stationary points of DPOP and DPO + NLL are not δ* (minimal counterexamples worked out by hand below)."""
    for cid in ("S6.dpop-lambda0", "S6.dpo-nll-alpha0", "S6.dpop-non-displaced", "S6.dpop-gradient",
                "S6.dpo-nll-gradient", "S6.hard-labels"):  # fmt: skip
        assert fast_results[cid].verdict == "proved", cid
    # DPOP, β = 1, δ_ref = 0, Δr* = 1, λ = 1 on two responses: not stuck at δ_ref (λσ(0) = ½ < e − 1), so the
    # minimiser lies strictly inside (0, δ* = 1)
    pop = fast_results["S6.dpop-population"]
    ce = pop.details["literal"]["counterexample_info"]
    assert pop.verdict == FAILS and pop.corrected["verdict"] == "proved"
    assert ce["delta_ref"] < ce["dpop_delta"] < ce["delta_star"]
    # δ_ref = −1, Δr* = 2, β = 1, λ = 5: δ* = 1 ∉ U, DPOP's point −0.370 ∈ U = (−1, 0)
    u = fast_results["S6.dpop-undesirable-space"]
    ce = u.details["literal"]["counterexample_info"]
    assert u.verdict == FAILS and u.corrected["verdict"] == "verified"
    assert ce["delta_star"] == pytest.approx(1.0) and ce["dpop_delta"] == pytest.approx(-0.3701923, abs=1e-6)
    # DPO + NLL, β = α = 1, δ_ref = 1, Δr* = 0: β(σ(δ − 1) − ½) + (σ(δ) − ½) = 0 at δ = ½ by symmetry, δ* = 1
    nll = fast_results["S6.dpo-nll-population"]
    ce = nll.details["literal"]["counterexample_info"]
    assert nll.verdict == FAILS and nll.corrected["verdict"] == "proved"
    assert ce["delta_star"] != pytest.approx(ce["dpo_nll_delta"], abs=1e-3)


def test_json_report_parses_and_has_every_claim(fast_results):
    doc = results_to_json(list(fast_results.values()))
    text = json.dumps(doc, allow_nan=False)  # strict JSON: no NaN/Infinity
    back = json.loads(text)
    assert back["summary"]["n_claims"] == len(CLAIMS) and back["summary"]["regressions"] == []
    assert [c["id"] for c in back["claims"]] == [c.id for c in CLAIMS]
    for c in back["claims"]:
        assert {
            "id",
            "paper_ref",
            "statement",
            "reading",
            "verdict",
            "evidence",
            "details",
            "expected",
            "regression",
            "corrected",
            "seconds",
        } <= set(c)


def test_markdown_and_table(fast_results):
    results = list(fast_results.values())
    md = results_to_markdown(results)
    assert md.startswith("# ")
    for c in CLAIMS:
        assert f"## {c.id} —" in md
    assert md.count("<details>") == md.count("</details>") == len(CLAIMS)
    assert md.count("```json") == len(CLAIMS)
    table = results_table(results)
    lines = table.splitlines()
    assert len(lines) == len(CLAIMS) + 4
    assert "no regressions" in lines[-1]


def test_select_claims_by_prefix_and_errors():
    assert [c.id for c in select_claims(["C7"])] == ["C7.hinge-limit", "C7.finite-beta-bound"]
    assert [c.id for c in select_claims(["C7.hinge-limit", "C1"])] == [
        "C1.rlhf-optimum",
        "C1.key-identity",
        "C7.hinge-limit",
    ]
    with pytest.raises(ValueError, match="matches no claim"):
        select_claims(["C11"])


def test_progress_callback_and_only():
    seen = []
    out = run_claims("fast", only=["C3"], progress=lambda i, n, r: seen.append((i, n, r.id)))
    assert seen == [(1, 2, "C3.nonempty"), (2, 2, "C3.loss-below-log2")]
    assert [r.id for r in out] == ["C3.nonempty", "C3.loss-below-log2"]
