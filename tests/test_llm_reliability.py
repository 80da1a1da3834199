"""Reliability of shared writers used by score/sample/reward."""

from __future__ import annotations

import os
import stat

from dpocheck._io import write_text_atomic


def test_write_atomic_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = write_text_atomic(tmp_path / "a.txt", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert out.read_text() == "x\n"


def test_write_atomic_respects_strict_umask(tmp_path):
    old = os.umask(0o077)
    try:
        out = write_text_atomic(tmp_path / "b.txt", "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


import pytest  # noqa: E402

from dpocheck.cli import main  # noqa: E402


@pytest.mark.parametrize(
    "extra",
    [["--batch-tokens", "0"], ["--shard-pairs", "0"], ["--limit", "-1"], ["--max-length", "-3"]],
)
def test_score_rejects_bad_arguments_before_loading(tmp_path, capsys, extra):
    # the model path does not exist either: the argument error must come first, as one line, exit 2
    argv = ["score", "--model", str(tmp_path / "nomodel"), "--data", "x.jsonl", "--out", str(tmp_path / "o")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert extra[0] in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra",
    [["--k", "0"], ["--max-new-tokens", "0"], ["--temperature", "0"], ["--top-p", "1.5"], ["--top-k", "-1"]],
)
def test_sample_rejects_bad_parameters_before_loading(tmp_path, capsys, extra):
    argv = ["sample", "--model", str(tmp_path / "nomodel"), "--prompts", "p.txt", "--out", str(tmp_path / "o.jsonl")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert extra[0] in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_score_missing_model_is_one_line(tmp_path, capsys):
    argv = ["score", "--model", str(tmp_path / "nomodel"), "--data", "x.jsonl", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "nomodel" in err and "Traceback" not in err
