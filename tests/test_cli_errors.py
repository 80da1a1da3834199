"""The one CLI error policy, per sub-command: bad input exits 2 with exactly one ``dpocheck CMD: error:`` line on
stderr and no traceback; ``--debug`` shows the traceback (C1–C10 commands alike). Runs in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpocheck.cli import build_parser, main


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    from dpocheck.llm.models import save_toy_model

    return save_toy_model(tmp_path_factory.mktemp("toy") / "model", seed=0)


@pytest.fixture
def bad_jsonl(tmp_path: Path) -> Path:
    p = tmp_path / "bad.jsonl"
    p.write_text("not json\n")
    return p


def _cases(tmp: Path, bad: Path, toy: Path) -> dict[str, list[str]]:
    """One bad input per sub-command (checked before any long work starts)."""
    return {
        "tabular": ["tabular", str(tmp / "nope.json")],
        "proofs": ["proofs", "--only", "C42.nothing"],
        "sim": ["sim", "--beta", "0", "--out", str(tmp / "x.csv")],
        "figures": ["figures", "--only", "zzz", "--out", str(tmp / "f")],
        "demo": ["demo", "--out", str(bad / "d")],  # --out under a file
        "score": ["score", "--model", str(toy), "--data", str(bad), "--out", str(tmp / "s"), "--no-progress"],
        "sample": [
            "sample", "--model", str(toy), "--prompts", str(bad), "--out", str(tmp / "s.jsonl"), "--no-progress"
        ],
        "violations": ["violations", "--scores", str(tmp / "nope")],
        "reward": ["reward", "--reward-model", str(tmp / "nope"), "--data", str(bad), "--out", str(tmp / "r.jsonl")],
        "train": [
            "train", "--model", str(toy), "--data", str(bad), "--loss", "nope", "--beta", "0.1", "--out", str(tmp / "t")
        ],
        "train-sweep": ["train-sweep", "--out", str(bad / "sweep")],
    }  # fmt: skip


COMMANDS = ("tabular", "proofs", "sim", "figures", "demo", "score", "sample", "violations", "reward", "train")
COMMANDS += ("train-sweep",)
_NEEDS_MODEL = {"score", "sample", "train"}


def _argv(request, cmd: str, tmp_path: Path, bad: Path) -> list[str]:
    assert cmd in build_parser()._subparsers._group_actions[0].choices, f"`dpocheck {cmd}` is not registered"
    toy = request.getfixturevalue("toy") if cmd in _NEEDS_MODEL else tmp_path / "no-model"
    return _cases(tmp_path, bad, toy)[cmd]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_bad_input_is_one_line_and_exit_2(request, cmd, tmp_path, bad_jsonl, capsys):
    argv = _argv(request, cmd, tmp_path, bad_jsonl)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"dpocheck {cmd}: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("cmd", ["tabular", "violations", "sim", "reward"])
def test_debug_shows_the_traceback(request, cmd, tmp_path, bad_jsonl, capsys):
    argv = _argv(request, cmd, tmp_path, bad_jsonl)
    for placed in ([*argv, "--debug"], ["--debug", *argv]):
        with pytest.raises(Exception) as exc:  # the wrapper re-raises: pytest sees the original error
            main(placed)
        assert isinstance(exc.value, (ValueError, OSError)), exc.value
    assert f"dpocheck {cmd}: error:" not in capsys.readouterr().err  # re-raised, not summarised


def test_error_line_is_valid_for_json_errors(tmp_path, capsys):
    """A non-JSON bandit file names the file in the one line."""
    src = tmp_path / "b.json"
    src.write_text("{")
    assert main(["tabular", str(src)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dpocheck tabular: error: ") and str(src) in err and "\n" not in err
