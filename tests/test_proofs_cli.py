"""`dpocheck proofs` end to end: --only, the reports, the exit status on a regression and on bad arguments."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpocheck.proofs_check import FAILS, get_claim, registry
from dpocheck.proofs_check.cli import register

ROOT = Path(__file__).resolve().parents[1]


def _main(argv):
    parser = argparse.ArgumentParser(prog="dpocheck")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_only_one_claim_end_to_end(tmp_path):
    """Through the real entry point (python -m dpocheck.cli), writing both reports."""
    js, md = tmp_path / "proofs.json", tmp_path / "out" / "proofs.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dpocheck.cli",
            "proofs",
            "--only",
            "C7.hinge-limit",
            "--json",
            str(js),
            "--markdown",
            str(md),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "C7.hinge-limit" in proc.stdout and "proved" in proc.stdout
    assert "[1/1] C7.hinge-limit: proved" in proc.stderr
    doc = json.loads(js.read_text())
    assert [c["id"] for c in doc["claims"]] == ["C7.hinge-limit"]
    assert doc["claims"][0]["verdict"] == "proved" and doc["summary"]["regressions"] == []
    assert "## C7.hinge-limit — Prop. 5.1" in md.read_text()


def test_cli_exit_status_on_regression(monkeypatch, capsys):
    """A claim whose registered expected verdict differs from what the check finds makes the command fail."""
    wrong = dataclasses.replace(get_claim("C3.nonempty"), expected=FAILS)
    monkeypatch.setattr(registry, "CLAIMS", (wrong,))
    status = _main(["proofs", "--only", "C3.nonempty", "--quiet"])
    assert status == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_cli_ok_status_prefix_selection_and_list(capsys):
    assert _main(["proofs", "--only", "C3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "C3.nonempty" in out and "C3.loss-below-log2" in out and "no regressions" in out
    assert _main(["proofs", "--list"]) == 0
    assert "C10.easy-margin-sign" in capsys.readouterr().out


def test_cli_unknown_claim_is_an_argument_error(capsys):
    """Bad arguments go through the CLI's one error policy: exit 2 and one line (the handler raises)."""
    from dpocheck.cli import main

    assert main(["proofs", "--only", "C42.nothing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpocheck proofs: error: --only 'C42.nothing' matches no claim") and "Traceback" not in err
    with pytest.raises(ValueError, match="matches no claim"):
        _main(["proofs", "--only", "C42.nothing"])


def test_cli_resume_reuses_saved_claims(tmp_path, capsys):
    """The JSON report is rewritten after every claim; --resume takes the saved ones and checks only the rest."""
    js = tmp_path / "p.json"
    assert _main(["proofs", "--only", "C3.nonempty", "--json", str(js), "--quiet"]) == 0
    first = json.loads(js.read_text())
    assert first["complete"] is True and first["fingerprint"]
    saved_seconds = first["claims"][0]["seconds"]
    capsys.readouterr()
    assert _main(["proofs", "--only", "C3", "--json", str(js), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resuming: 1 claim(s)" in err and "[1/1] C3.loss-below-log2" in err
    doc = json.loads(js.read_text())
    assert [c["id"] for c in doc["claims"]] == ["C3.nonempty", "C3.loss-below-log2"]
    assert doc["claims"][0]["seconds"] == saved_seconds  # reused, not recomputed
    # another profile's report is not reused
    assert (
        _main(["proofs", "--only", "C3.nonempty", "--json", str(js), "--resume", "--profile", "thorough", "--quiet"])
        == 0
    )
    assert "another profile" in capsys.readouterr().err


def test_cli_resume_needs_json(capsys):
    from dpocheck.cli import main

    assert main(["proofs", "--resume"]) == 2
    assert "dpocheck proofs: error: --resume needs --json" in capsys.readouterr().err


def test_fingerprint_covers_every_checker_module():
    """A resumed run must notice an edit to any claim module: the fingerprint hashes the claims/ package too."""
    from dpocheck.proofs_check.core import fingerprint_files, source_fingerprint

    names = {f"{f.parent.name}/{f.name}" for f in fingerprint_files()}
    assert {"claims/c8_thm49.py", "claims/_shared.py", "proofs_check/strategies.py", "theory/registry.py"} <= names
    assert len(source_fingerprint()) == 16 and source_fingerprint() == source_fingerprint()
