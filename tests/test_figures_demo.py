"""`dpocheck demo` end to end at toy size, and its exit status on a missing proofs module or a regression."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest

from dpocheck.cli import main
from dpocheck.figures import demo as demo_mod

CHEAP_CLAIM = "C1.key-identity"


def test_demo_toy_end_to_end(tmp_path, capsys) -> None:
    """The demo (toy size, one proofs claim) exits 0 and writes proofs, the tabular report, every figure, the
    manifest and report.md with its sections; the output folder is printed at the end."""
    out = tmp_path / "demo"
    status = main(["demo", "--out", str(out), "--size", "toy", "--claims", CHEAP_CLAIM])
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
    )
    monkeypatch.setitem(sys.modules, "dpocheck.proofs_check", module)
    status = demo_mod.run_demo(tmp_path, "toy", log=lambda m: None)
    assert status == 1
    assert "Regressions: C0.fake" in (tmp_path / "report.md").read_text()


def test_demote_headings() -> None:
    """Embedded reports sit below the demo's own headings: '# A' becomes '### A'; other lines are unchanged."""
    assert demo_mod.demote_headings("# A\ntext\n## B") == "### A\ntext\n#### B"
