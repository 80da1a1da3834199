"""Text the tokenizer cannot take is a bad record, and truncation is reported the same way by score and train.

A lone surrogate (``"Hi \\ud800"``, valid JSON, not valid Unicode) reaches the tokenizer as a Python string that no
Rust tokenizer accepts: ``score`` skips and counts it (reason ``untokenizable_text``) or, under ``--on-error raise``,
names record and field before anything is written; ``train`` names it before its output folder exists; ``reward``
skips and counts it. ``train`` says how many sequences it truncated, in ``score``'s words and manifest keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpocheck.cli import main
from dpocheck.llm.data.types import PreferencePair
from dpocheck.llm.manifest import MANIFEST, read_manifest
from dpocheck.llm.models import save_toy_model, toy_tokenizer
from dpocheck.llm.scoring.encode import ScoringError, encode_pair

GOOD = [
    {"prompt": f"Question {i}: what is the capital of France?", "chosen": f" Paris {i}.", "rejected": " The dog."}
    for i in range(4)
]


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy") / "toy", seed=3)


def _data(path: Path, bad: dict | None = None, at: int = 2) -> Path:
    records = list(GOOD)
    if bad is not None:
        records.insert(at, bad)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))  # json.dumps writes "\ud800" as an escape
    return path


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    status = main(argv)
    cap = capsys.readouterr()
    return status, cap.out, cap.err


def _one_error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith(f"dpocheck {command}: error: ")]
    assert len(lines) == 1 and err.strip().endswith(lines[0]) and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"prompt": "Hi \ud800", "chosen": " a", "rejected": " b"}, "prompt"),
        ({"prompt": "Hi", "chosen": " a \udfff", "rejected": " b"}, "chosen"),
        ({"prompt": [{"role": "user", "content": "x\ud800"}], "chosen": " a", "rejected": " b"}, "prompt"),
    ],
)
def test_encode_names_the_record_and_field_of_untokenizable_text(bad, field):
    tok = toy_tokenizer()
    pair = PreferencePair(index=7, prompt=bad["prompt"], chosen=bad["chosen"], rejected=bad["rejected"])
    for use_tpl in (False, True):
        with pytest.raises(ScoringError) as info:
            encode_pair(tok, pair, use_chat_template=use_tpl, max_length=64)
        assert info.value.reason == "untokenizable_text" and info.value.field == field
        assert str(info.value).startswith(f"record 7: field '{field}'") and "lone surrogate" in str(info.value)


def test_score_skips_and_counts_a_lone_surrogate(tmp_path, capsys, toy_dir):
    data = _data(tmp_path / "d.jsonl", {"prompt": "Hi \ud800", "chosen": " a", "rejected": " b"})
    out = tmp_path / "o"
    status, std, err = _run(capsys, ["score", "--model", str(toy_dir), "--data", str(data), "--out", str(out)])
    assert status == 0, err
    assert "scored 4, skipped 1 (untokenizable_text: 1) of 5 records read" in err
    manifest = read_manifest(out / MANIFEST)
    assert manifest["status"] == "complete" and manifest["counts"]["skipped_by_reason"] == {"untokenizable_text": 1}
    assert [(s["index"], s["reason"]) for s in manifest["skipped"]] == [(2, "untokenizable_text")]
    assert "record 2: field 'prompt'" in manifest["skipped"][0]["error"]
    assert len((out / "scores.jsonl").read_text().splitlines()) == 4 and json.loads(std)["skipped"] == 1


def test_score_under_on_error_raise_names_it_and_writes_nothing(tmp_path, capsys, toy_dir):
    data = _data(tmp_path / "d.jsonl", {"prompt": "Hi", "chosen": " a", "rejected": " \ud800b"})
    out = tmp_path / "o"
    argv = ["score", "--model", str(toy_dir), "--data", str(data), "--out", str(out), "--on-error", "raise"]
    status, _, err = _run(capsys, argv)
    assert status == 2
    line = _one_error_line(err, "score")
    assert str(data) in line and "record 2" in line and "'rejected'" in line and "lone surrogate" in line
    assert not out.exists()  # nothing half-written: a plain rerun after fixing the data is not refused


def test_train_names_the_record_before_its_output_exists(tmp_path, capsys, toy_dir):
    data = _data(tmp_path / "d.jsonl", {"prompt": "Hi \ud800", "chosen": " a", "rejected": " b"}, at=1)
    out = tmp_path / "run"
    argv = ["train", "--model", str(toy_dir), "--data", str(data), "--out", str(out), "--loss", "dpo"]
    for on_error in ("raise", "skip"):
        extra = ["--beta", "0.1", "--max-steps", "1", "--no-progress", "--on-error", on_error]
        status, _, err = _run(capsys, [*argv, *extra])
        if on_error == "raise":
            assert status == 2
            line = _one_error_line(err, "train")
            assert f"--data {data}" in line and "record 1: field 'prompt'" in line and "lone surrogate" in line
            assert not out.exists()
        else:
            assert status == 0, err
            assert "training on 4, skipped 1 (untokenizable_text: 1) of 5 records read" in err
            counts = read_manifest(out / MANIFEST)["counts"]
            assert counts["skipped_by_reason"] == {"untokenizable_text": 1} and counts["pairs"] == 4


def test_reward_skips_and_counts_a_lone_surrogate(tmp_path, capsys):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = toy_tokenizer(chat_template=None)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=8, n_layer=1, n_head=2, num_labels=1)
    cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    torch.manual_seed(0)
    rm = tmp_path / "rm"
    GPT2ForSequenceClassification(cfg).save_pretrained(rm, safe_serialization=True)
    tok.save_pretrained(rm)
    data = _data(tmp_path / "d.jsonl", {"prompt": "Hi", "chosen": " a\ud800", "rejected": " b"})
    out = tmp_path / "r.jsonl"
    argv = ["reward", "--reward-model", str(rm), "--data", str(data), "--no-progress"]
    status, _, err = _run(capsys, [*argv, "--out", str(out)])
    assert status == 0, err
    assert "skipped 1 (untokenizable_text: 1)" in err
    assert [json.loads(r)["index"] for r in out.read_text().splitlines()] == [0, 1, 3, 4]
    status, _, err = _run(capsys, [*argv, "--out", str(tmp_path / "r2.jsonl"), "--on-error", "raise"])
    assert status == 2 and "record 2: field 'chosen'" in _one_error_line(err, "reward")


# ---------------------------------------------------------------------------------------- truncation, reported
def test_train_reports_truncation_like_score(tmp_path, capsys, toy_dir):
    data = _data(tmp_path / "d.jsonl")
    score_out, run = tmp_path / "ref", tmp_path / "run"
    common = ["--model", str(toy_dir), "--data", str(data), "--max-length", "8", "--no-progress"]
    status, _, score_err = _run(capsys, ["score", *common, "--out", str(score_out), "--dtype", "fp32"])
    assert status == 0, score_err
    argv = ["train", *common, "--out", str(run), "--loss", "dpo", "--beta", "0.1", "--max-steps", "1"]
    status, _, err = _run(capsys, [*argv, "--eval-every", "1", "--threads", "1"])
    assert status == 0, err
    said = "8 sequences truncated to max_length=8 (the prompt cut in 4 pairs)"
    assert said in score_err and said in err and "training on 4, skipped 0 of 4 records read" in err
    keys = ("chosen_truncated", "rejected_truncated", "prompt_truncated")
    train_counts, score_counts = read_manifest(run / MANIFEST)["counts"], read_manifest(score_out / MANIFEST)["counts"]
    assert {k: train_counts[k] for k in keys} == {k: score_counts[k] for k in keys} == dict.fromkeys(keys, 4)
    # the eval files carry the flags, as score rows do
    for step in (0, 1):
        rows = [json.loads(r) for r in (run / "eval" / f"step-{step}.jsonl").read_text().splitlines()]
        assert all(r["chosen_truncated"] and r["rejected_truncated"] for r in rows)
    ref_rows = [json.loads(r) for r in (score_out / "scores.jsonl").read_text().splitlines()]
    assert [r["chosen_tokens"] for r in ref_rows] == [r["chosen_tokens"] for r in rows]


def test_train_max_length_zero_is_the_model_context(tmp_path, capsys):
    small = save_toy_model(tmp_path / "small", max_position_embeddings=48)
    long_reply = " " + "The quick brown fox jumps over the lazy dog." * 12
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "Say hi.", "chosen": long_reply, "rejected": " Hi!"}) + "\n")
    argv = ["train", "--model", str(small), "--data", str(data), "--out", str(tmp_path / "run"), "--loss", "dpo"]
    status, _, err = _run(capsys, [*argv, "--beta", "0.1", "--max-steps", "1", "--max-length", "0", "--no-progress"])
    assert status == 0, err
    assert "--max-length 0: the model's context, 48 tokens" in err and "2 sequences truncated to max_length=48" in err
    manifest = read_manifest(tmp_path / "run" / MANIFEST)
    assert manifest["max_length_used"] == 48 and manifest["counts"]["chosen_truncated"] == 1


def test_train_with_no_pair_left_writes_nothing(tmp_path, capsys, toy_dir):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "Hi \ud800", "chosen": " a", "rejected": " b"}) + "\n")
    out = tmp_path / "run"
    argv = ["train", "--model", str(toy_dir), "--data", str(data), "--out", str(out), "--loss", "dpo", "--beta", "0.1"]
    status, _, err = _run(capsys, [*argv, "--max-steps", "1", "--no-progress", "--on-error", "skip"])
    assert status == 2
    line = _one_error_line(err, "train")
    assert "no pair to train on (1 records read; skipped: untokenizable_text: 1)" in line
    assert not out.exists()
