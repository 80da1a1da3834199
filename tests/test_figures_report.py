"""What a new reader of report.md sees: every headline number labelled, verdict evidence cut only at clause
boundaries with a link to the full text, and the CPO line of the tabular report explained with a link to the
claim that explains it."""

from __future__ import annotations

import re

import pytest

from dpocheck.figures.common import check_headline_value, format_headline_value, headline
from dpocheck.proofs_check import CLAIMS
from dpocheck.proofs_check.core import ClaimResult
from dpocheck.proofs_check.report import (
    claim_anchor,
    claim_sections_markdown,
    evidence_summary,
    results_to_markdown,
    verdict_table_markdown,
)
from dpocheck.theory.report import CPO_EXPLAINING_CLAIMS

BARE = re.compile(r"^\s*[\[{].*[\]}]\s*$")  # a cell that is just a list or a dict


def unlabelled_parts(cell: str) -> list[str]:
    """Parts of a rendered headline value ('; '-separated) that hold a number without a 'label = ' before it."""
    if re.fullmatch(r"\s*(-?[\d.]+(e[-+]?\d+)?|yes|no|n/a|\d+/\d+)\s*", cell):
        return []  # one scalar: the quantity column names it
    return [p for p in cell.split("; ") if re.search(r"\d", p) and not re.search(r"[^\W\d_].* = ", p)]


def test_headline_refuses_unlabelled_values() -> None:
    """A bare list, a tuple, an unlabelled key or a list inside a mapping is refused; scalars and labelled
    mappings (one level deep) are accepted."""
    for bad in ([0.1, 0.2], (0.1,), {"": 1.0}, {"1": 2.0}, {"DPO": [0.1, 0.2]}, {"DPO": {"a": {"b": 1}}}):
        with pytest.raises(TypeError, match="label"):
            check_headline_value(bad, "C0")
    for good in (0.5, True, "2/24", None, {"DPO, share in U": 0.3}, {"DPO": {"share in U": 0.3, "KL": 1.0}}):
        check_headline_value(good, "C0")
    with pytest.raises(TypeError):
        headline("C0", "s", "q", [0.08368, 0.03194], "t")


def test_format_headline_value_puts_a_label_before_every_number() -> None:
    value = {"DPO, final share in U": 0.08368, "CPO": {"share in U": 0.03194, "KL": 1.25}, "holds": True}
    cell = format_headline_value(value)
    assert cell == "DPO, final share in U = 0.08368; CPO: share in U = 0.03194, KL = 1.25; holds = yes"
    assert not BARE.match(cell) and not unlabelled_parts(cell)
    assert format_headline_value(float("nan")) == "n/a"
    for old_cell in ("[0.08368, 0.03194]", "{paper_formula: 1, exact: 0.47}"):  # what the report used to show
        assert BARE.match(old_cell) and unlabelled_parts(old_cell)


def _result(cid: str, evidence: str) -> ClaimResult:
    return ClaimResult(cid, "Thm 0", "statement", "reading", "fails as stated", evidence, {}, None, False, None, 0.1)


def test_verdict_table_cuts_evidence_only_between_clauses() -> None:
    """Long evidence keeps its leading whole clauses (semicolons inside brackets do not split), says how many
    clauses were left out and links to the claim's section, which holds the full evidence under its anchor."""
    clause = "counterexample beta=1, log_pi_ref=[[-0.9; -0.5]], γ = 0.098 > γ* = 0.097"
    evidence = "; ".join([clause, "the exact stationary δ = -0.0123 ∈ U", "minimal counterexample factor=1.25"])
    summary, left = evidence_summary(evidence, limit=len(clause) + 10)
    assert (summary, left) == (clause, 2)
    assert evidence_summary(evidence, limit=5) == (clause, 2)  # the first clause is never cut
    assert evidence_summary(evidence, limit=1000) == (evidence, 0)
    r = _result("C8.thm4.9-exact", evidence)
    table = verdict_table_markdown([r], limit=len(clause) + 10)
    anchor = claim_anchor(r.id)
    assert anchor == "claim-C8-thm4-9-exact"
    row = table.splitlines()[-1]
    assert f"[C8.thm4.9-exact](#{anchor})" in row and f"[full evidence](#{anchor})" in row
    assert "2 more clauses" in row and "…" not in row.split("; …")[0] and "the exact stationary" not in row
    sections = claim_sections_markdown([r], details=False, level=3)
    assert f'<a id="{anchor}"></a>' in sections and "### C8.thm4.9-exact — Thm 0" in sections
    assert f"*Evidence.* {evidence}" in sections
    md = results_to_markdown([r])
    assert md.startswith("# ") and "## C8.thm4.9-exact —" in md


def test_cpo_explaining_claims_are_registered() -> None:
    """The claims the tabular report names for its CPO line exist in the proofs registry."""
    ids = {c.id for c in CLAIMS}
    assert set(CPO_EXPLAINING_CLAIMS) <= ids
