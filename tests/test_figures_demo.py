"""`dpocheck demo` end to end at toy size, and its exit status on a missing proofs module or a regression."""

from __future__ import annotations

import json
import re
import sys
from types import SimpleNamespace

import pytest
from test_figures_report import BARE, unlabelled_parts

from dpocheck.cli import main
from dpocheck.figures import demo as demo_mod
from dpocheck.proofs_check.report import claim_anchor
from dpocheck.theory.report import CPO_EXPLAINING_CLAIMS

CHEAP_CLAIM = "C1.key-identity"


def _table(report: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after `heading` (header and separator rows dropped)."""
    lines = report.split(heading, 1)[1].splitlines()
    rows = [ln for ln in lines[lines.index(next(ln for ln in lines if ln.startswith("|"))) :]]
    rows = rows[: next((i for i, ln in enumerate(rows) if not ln.startswith("|")), len(rows))]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in rows[2:]]


def test_demo_toy_end_to_end(tmp_path, capsys) -> None:
    """The demo (toy size, one proofs claim) exits 0 and writes proofs, the tabular report, every figure, the
    manifest and report.md with its sections; the output folder is printed at the end."""
    out = tmp_path / "demo"
    status = main(["demo", "--out", str(out), "--size", "toy", "--claims", CHEAP_CLAIM, *CPO_EXPLAINING_CLAIMS])
    assert status == 0
    for name in ("proofs.json", "proofs.md", "tabular.json", "tabular.txt", "manifest.json", "report.md"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    for section in (
        "## Summary",
        "## Headline numbers",
        "## Verdicts",
        "## Closed-form tabular report",
        "## Experiments",
    ):
        assert section in report
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["figures"]) == 7
    for entry in manifest["figures"].values():
        assert f"]({entry['figure']})" in report  # every figure embedded
        assert (out / entry["figure"]).exists()
    assert CHEAP_CLAIM in report
    assert "E2 verdict" in report
    assert str(out.resolve()) in capsys.readouterr().out
    assert [ln for ln in report.splitlines() if ln.startswith("# ")] == ["# dpocheck demo report"]
    _check_report_for_a_new_reader(report, json.loads((out / "proofs.json").read_text()))


def _check_report_for_a_new_reader(report: str, proofs: dict) -> None:
    """Every headline value labels its numbers; verdict evidence is cut only between clauses and links to the
    full text; the tabular report names its columns in words, shows no exit for pairs with an empty U, and its
    CPO line is explained with links to the claims that explain it."""
    heads = _table(report, "## Headline numbers")
    assert heads
    for row in heads:
        value = row[3]
        assert not BARE.match(value), row
        assert not unlabelled_parts(value), row
    evidence = {c["id"]: c["evidence"] for c in proofs["claims"]}
    verdicts = _table(report, "## Verdicts")
    assert len(verdicts) == len(evidence)
    for row in verdicts:
        cid = re.match(r"\[(.+?)\]\(#(.+?)\)", row[0])
        assert cid and cid.group(2) == claim_anchor(cid.group(1)), row
        shown = row[4].replace("\\|", "|").split("; … (")[0]
        full = evidence[cid.group(1)]
        assert full == shown or full.startswith(shown + "; "), (shown, full)  # whole clauses only
        if full != shown:
            assert f"[full evidence](#{claim_anchor(cid.group(1))})" in row[4]
        assert f'<a id="{claim_anchor(cid.group(1))}"></a>' in report  # the section it links to
        assert f"*Evidence.* {full}" in report
    tab = report.split("## Closed-form tabular report", 1)[1].split("## Experiments", 1)[0]
    assert "exit wt" not in tab and "exit gradient weight" in tab and "escape time" in tab
    empty_rows = [ln for ln in tab.splitlines() if re.search(r"\s(no|yes)\s+no\s+—\s+—\s", ln)]
    assert empty_rows and "U = (δ_ref, 0) is empty" in tab  # "—" on pairs with δ_ref ≥ 0, and its footnote
    assert "why:" in tab
    for cid in CPO_EXPLAINING_CLAIMS:
        assert f"[{cid}](#{claim_anchor(cid)})" in tab


@pytest.fixture
def no_experiments(monkeypatch):
    """Skip the experiments (tested above) to test the exit status logic quickly."""
    monkeypatch.setattr(demo_mod, "run_all", lambda *a, **k: [])


def test_demo_fails_loudly_without_proofs(tmp_path, monkeypatch, capsys, no_experiments) -> None:
    """No proofs module: a loud message on stderr, the report says so, exit status 2."""
    monkeypatch.setitem(sys.modules, "dpocheck.proofs_check", None)  # makes the import raise ImportError
    status = demo_mod.run_demo(tmp_path, "toy", log=lambda m: print(m, file=sys.stderr))
    assert status == 2
    assert "PROOFS MISSING" in capsys.readouterr().err
    assert "Proofs MISSING" in (tmp_path / "report.md").read_text()


def test_demo_exit_status_on_regression(tmp_path, monkeypatch, no_experiments) -> None:
    """A proofs result that differs from its registered expectation makes the demo exit 1."""
    fake = SimpleNamespace(
        id="C0.fake", verdict="fails as stated", seconds=0.0, regression=True, paper_ref="-", evidence="-"
    )
    module = SimpleNamespace(
        run_claims=lambda **k: [fake],
        results_to_json=lambda r: {"summary": {"n_claims": 1, "verdicts": {"fails as stated": 1}}},
        results_to_markdown=lambda r, **k: "| C0.fake | fails as stated |",
        verdict_table_markdown=lambda r, **k: "| C0.fake | fails as stated |",
        claim_sections_markdown=lambda r, **k: "## C0.fake",
    )
    monkeypatch.setitem(sys.modules, "dpocheck.proofs_check", module)
    status = demo_mod.run_demo(tmp_path, "toy", log=lambda m: None)
    assert status == 1
    assert "Regressions: C0.fake" in (tmp_path / "report.md").read_text()
