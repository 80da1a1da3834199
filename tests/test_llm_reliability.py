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


# ------------------------------------------------------------------ score / sample / reward: checks before loading
import gzip  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from dpocheck.llm import models as models_mod  # noqa: E402
from dpocheck.llm.manifest import MANIFEST, read_manifest  # noqa: E402
from dpocheck.llm.models import save_toy_model  # noqa: E402

GOOD = [
    {"prompt": "What is the capital of France?", "chosen": " Paris.", "rejected": " The dog sleeps."},
    {"prompt": "Count to three.", "chosen": " 1, 2, 3.", "rejected": " Sure! Waves roll in."},
    {"prompt": "Say hi.", "chosen": " Hi there!", "rejected": " I'm sorry, I can't help with that."},
]


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy") / "toy")


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading the weights fails the test: the checks under test must come first."""

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(models_mod, "load_model", boom)


def _write_jsonl(path: Path, records: list, tail: bytes = b"") -> Path:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)
    return path


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    "bad, needles",
    [
        ({"prompt": "p", "rejected": " r"}, ("record 1", "'chosen'", "missing")),
        ({"prompt": "p", "chosen": "   \n", "rejected": " r"}, ("record 1", "'chosen'", "empty")),
        (b'{"prompt": "p", "chosen": "\xff\xfe", "rejected": " r"}\n', ("record 1", "UTF-8")),
        (b'{"prompt": "p", "chosen": " a", "rej', ("record 1", "not valid JSON", "cut")),
    ],
)
def test_score_bad_record_stops_before_the_model_loads(tmp_path, capsys, toy_dir, no_model_load, bad, needles):
    data = tmp_path / "d.jsonl"
    if isinstance(bad, bytes):
        _write_jsonl(data, GOOD[:1], bad)
    else:
        _write_jsonl(data, [GOOD[0], bad])
    argv = ["score", "--model", str(toy_dir), "--data", str(data), "--out", str(tmp_path / "o"), "--on-error", "raise"]
    assert main(argv) == 2
    _one_line_error(capsys, str(data), *needles)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content", [b"", b"\n\n", b"this is not json\nnor this\n", b"\x1f\x8b\x08\x00junk"])
def test_score_unreadable_file_stops_before_the_model_loads(tmp_path, capsys, toy_dir, no_model_load, content):
    data = tmp_path / "d.jsonl"
    data.write_bytes(content)
    assert main(["score", "--model", str(toy_dir), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(data))
    assert not (tmp_path / "o").exists()


def test_score_cut_gzip_is_one_line(tmp_path, capsys, toy_dir, no_model_load):
    blob = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in GOOD * 20))
    data = tmp_path / "d.jsonl.gz"
    data.write_bytes(blob[: len(blob) // 2])
    assert main(["score", "--model", str(toy_dir), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(data), "cut or corrupt")


@pytest.mark.parametrize("kind", ["empty_dir", "junk_dir", "bad_config", "config_only", "junk_file"])
def test_model_path_without_a_model_is_one_line(tmp_path, capsys, no_model_load, kind):
    m = tmp_path / "m"
    m.mkdir()
    if kind == "junk_dir":
        (m / "notes.txt").write_text("hello")
    elif kind == "bad_config":
        (m / "config.json").write_text("{not json")
        (m / "model.safetensors").write_bytes(b"x")
    elif kind == "config_only":
        (m / "config.json").write_text("{}")
    elif kind == "junk_file":
        shutil.rmtree(m)
        m.write_bytes(b"not a gguf file")
    data = _write_jsonl(tmp_path / "d.jsonl", GOOD)
    assert main(["score", "--model", str(m), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "--model", str(m))
    argv = ["sample", "--model", str(m), "--prompts", str(data), "--out", str(tmp_path / "s.jsonl")]
    assert main(argv) == 2
    _one_line_error(capsys, "--model", str(m))


def test_out_unwritable_is_one_line_before_loading(tmp_path, capsys, toy_dir, no_model_load, monkeypatch):
    data = _write_jsonl(tmp_path / "d.jsonl", GOOD)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root writes anywhere: ask os.access what a user would get
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == locked else real_access(p, m))
    try:
        assert main(["score", "--model", str(toy_dir), "--data", str(data), "--out", str(locked / "o")]) == 2
        _one_line_error(capsys, "not writable")
        argv = ["sample", "--model", str(toy_dir), "--prompts", str(data), "--out", str(locked / "s.jsonl")]
        assert main(argv) == 2
        _one_line_error(capsys, "not writable")
    finally:
        locked.chmod(0o700)


def test_out_under_a_file_or_existing_run_is_one_line_before_loading(tmp_path, capsys, toy_dir, no_model_load):
    data = _write_jsonl(tmp_path / "d.jsonl", GOOD)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["score", "--model", str(toy_dir), "--data", str(data), "--out", str(afile / "o")]) == 2
    _one_line_error(capsys, "regular file")
    assert main(["score", "--model", str(toy_dir), "--data", str(data), "--out", str(afile)]) == 2
    _one_line_error(capsys, "not a folder")
    run = tmp_path / "run"
    run.mkdir()
    (run / MANIFEST).write_text("{}")
    assert main(["score", "--model", str(toy_dir), "--data", str(data), "--out", str(run)]) == 2
    _one_line_error(capsys, "--resume")
    argv = ["sample", "--model", str(toy_dir), "--prompts", str(data), "--out", str(afile / "s.jsonl")]
    assert main(argv) == 2
    _one_line_error(capsys, "regular file")


@pytest.mark.parametrize(
    "content, needles",
    [
        (b'{"prompt": "a"}\n{"text": "b"}\n', ("record 1", "'prompt'", "missing")),
        (b'{"prompt": "a"}\n{"prompt": "  "}\n', ("record 1", "empty")),
        (b'{"prompt": "a"}\n\xff\n', ("record 1", "UTF-8")),
        (b'{"prompt": "a"}\n{"prompt": "b', ("record 1", "JSON")),
        (b"", ("no prompts",)),
    ],
)
def test_sample_bad_prompts_stop_before_the_model_loads(tmp_path, capsys, toy_dir, no_model_load, content, needles):
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(content)
    argv = ["sample", "--model", str(toy_dir), "--prompts", str(prompts), "--out", str(tmp_path / "s.jsonl")]
    assert main(argv) == 2
    _one_line_error(capsys, str(prompts), *needles)
    assert not (tmp_path / "s.jsonl").exists()


def test_reward_checks_out_and_model_before_loading(tmp_path, capsys, toy_dir, monkeypatch):
    from dpocheck.llm.generation import reward as reward_mod

    def boom(*a, **k):
        raise AssertionError("the reward model was loaded before the input was checked")

    monkeypatch.setattr(reward_mod, "load_reward_model", boom)
    data = _write_jsonl(tmp_path / "d.jsonl", GOOD)
    afile = tmp_path / "afile"
    afile.write_text("x")
    argv = ["reward", "--reward-model", str(toy_dir), "--data", str(data), "--out", str(afile / "r.jsonl")]
    assert main(argv) == 2
    _one_line_error(capsys, "regular file")
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["reward", "--reward-model", str(empty), "--data", str(data), "--out", str(tmp_path / "r.jsonl")]
    assert main(argv) == 2
    _one_line_error(capsys, "--reward-model", "config.json")
    (tmp_path / "r.jsonl").write_text("")
    argv = ["reward", "--reward-model", str(toy_dir), "--data", str(data), "--out", str(tmp_path / "r.jsonl")]
    assert main(argv) == 2
    _one_line_error(capsys, "no manifest", "--overwrite")


# ------------------------------------------------------------------ score: one skip policy, counts, limits, resume
def _score(capsys, toy_dir, data, out, *extra):
    argv = ["score", "--model", str(toy_dir), "--data", str(data), "--out", str(out), "--no-progress", *extra]
    status = main(argv)
    cap = capsys.readouterr()
    return status, cap.out, cap.err


def test_default_score_skips_and_counts_bad_records(tmp_path, capsys, toy_dir):
    records = [GOOD[0], {"prompt": "p", "chosen": "", "rejected": " r"}, GOOD[1], {"prompt": "p"}, GOOD[2]]
    data = _write_jsonl(tmp_path / "d.jsonl", records, b'{"prompt": "cut')
    status, out, err = _score(capsys, toy_dir, data, tmp_path / "o")
    assert status == 0
    assert "scored 3, skipped 3 (empty_response: 1, invalid_json: 1, missing_field: 1) of 6 records read" in err
    counts = read_manifest(tmp_path / "o" / MANIFEST)["counts"]
    assert counts["records_read"] == 6 and counts["scored"] == 3
    assert counts["skipped_by_reason"] == {"empty_response": 1, "invalid_json": 1, "missing_field": 1}
    assert counts["scored"] + sum(counts["skipped_by_reason"].values()) == counts["records_read"]
    assert json.loads(out)["skipped"] == 3
    # --on-error raise stops at the first bad record, naming it
    status, _, err = _score(capsys, toy_dir, data, tmp_path / "o2", "--on-error", "raise")
    assert status == 2 and "record 1" in err and "'chosen'" in err and "Traceback" not in err


def test_default_score_over_shared_hh_passes_the_empty_reply(tmp_path, capsys, toy_dir):
    from dpocheck.llm.data.load import default_data_dir

    hh = default_data_dir() / "hh-rlhf-harmless-base-test.jsonl.gz"
    if not hh.is_file():
        pytest.skip(f"shared HH-RLHF data not found at {hh} (set DPOCHECK_DATA_DIR)")
    status, out, err = _score(capsys, toy_dir, hh, tmp_path / "o", "--limit", "90", "--max-length", "64")
    assert status == 0, err
    counts = read_manifest(tmp_path / "o" / MANIFEST)["counts"]
    assert counts["records_read"] == 90
    assert counts["skipped_by_reason"].get("empty_response", 0) >= 1  # record 86: an empty chosen reply
    assert counts["scored"] + sum(counts["skipped_by_reason"].values()) == 90


def test_duplicate_records_are_counted_and_scored_each_time(tmp_path, capsys, toy_dir):
    data = _write_jsonl(tmp_path / "d.jsonl", [GOOD[0], GOOD[1], GOOD[0], GOOD[0]])
    status, out, err = _score(capsys, toy_dir, data, tmp_path / "o")
    assert status == 0
    load = read_manifest(tmp_path / "o" / MANIFEST)["load"]
    assert load["duplicates"] == 2 and load["duplicate_examples"] == [[2, 0], [3, 0]]
    assert "2 duplicate records" in err and json.loads(out)["duplicates"] == 2
    rows = [json.loads(ln) for ln in (tmp_path / "o" / "scores.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["chosen_logp_sum"] == rows[2]["chosen_logp_sum"] == rows[3]["chosen_logp_sum"]


def test_max_length_zero_is_capped_at_the_model_context(tmp_path, capsys):
    small = save_toy_model(tmp_path / "small", max_position_embeddings=48)
    long_reply = " " + "The quick brown fox jumps over the lazy dog." * 12
    data = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Say hi.", "chosen": long_reply, "rejected": " Hi!"}])
    status, out, err = _score(capsys, small, data, tmp_path / "o", "--max-length", "0")
    assert status == 0, err
    assert "--max-length 0: the model's context, 48 tokens" in err and "truncated to max_length=48" in err
    row = json.loads((tmp_path / "o" / "scores.jsonl").read_text())
    assert row["chosen_truncated"] is True and 1 <= row["chosen_tokens"] < 48
    assert read_manifest(tmp_path / "o" / MANIFEST)["fingerprint"]["settings"]["max_length"] == 48


def test_a_pair_over_batch_tokens_is_skipped_or_refused(tmp_path, capsys, toy_dir):
    big = {"prompt": "Say hi.", "chosen": " " + "waves roll in, " * 30, "rejected": " Hi!"}
    data = _write_jsonl(tmp_path / "d.jsonl", [GOOD[0], big, GOOD[1]])
    status, out, err = _score(capsys, toy_dir, data, tmp_path / "o", "--batch-tokens", "120")
    assert status == 0, err
    assert "scored 2, skipped 1 (over_batch_tokens: 1)" in err
    skipped = read_manifest(tmp_path / "o" / MANIFEST)["skipped"]
    assert [(s["index"], s["reason"]) for s in skipped] == [(1, "over_batch_tokens")]
    status, _, err = _score(capsys, toy_dir, data, tmp_path / "o2", "--batch-tokens", "120", "--on-error", "raise")
    assert status == 2 and "record 1" in err and "--batch-tokens 120" in err and "Traceback" not in err


@pytest.mark.parametrize("cut", ["mid_line", "whole_line", "garbage"])
def test_resume_rescores_a_cut_shard(tmp_path, capsys, toy_dir, cut):
    records = [{"prompt": f"Question {i}?", "chosen": f" Answer {i}.", "rejected": " No."} for i in range(8)]
    data = _write_jsonl(tmp_path / "d.jsonl", records)
    ref = tmp_path / "ref"
    small = ("--shard-pairs", "2", "--batch-tokens", "80")  # batches of one or two pairs: several shards
    assert _score(capsys, toy_dir, data, ref, *small)[0] == 0
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shards = sorted(run.glob("scores-0-*.jsonl"))
    assert len(shards) >= 3
    victim = shards[1]
    text = victim.read_bytes()
    victim.write_bytes(
        {"mid_line": text[: len(text) // 2 + 3], "whole_line": text.split(b"\n")[0] + b"\n", "garbage": b"{]\n"}[cut]
    )
    (run / "scores.jsonl").unlink()
    status, _, err = _score(capsys, toy_dir, data, run, *small, "--resume")
    assert status == 0, err
    assert str(victim) in err and "scoring shard 1 again" in err
    assert (run / "scores.jsonl").read_bytes() == (ref / "scores.jsonl").read_bytes()
