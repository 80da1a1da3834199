"""Tests of dpocheck.llm.scoring.precision and ``dpocheck score --check-fp32``: the recorded bf16-vs-fp32 gap of
δ_ref (C2).

Exact values on a hand-worked gap; the seeded draw is a sorted subset of the scored pairs; an fp32 model checked
against itself gives a zero gap when the rescoring sees the same batches (≤ 1e-4 nats otherwise); a bf16 copy of
the same weights gives a positive, finite gap; the CLI records the field once (resume is idempotent), refuses
nothing but says so for fp32 runs, and ``dpocheck violations`` prints the recorded gap. Tiny random Llamas only.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dpocheck.errors import InputError
from dpocheck.llm.analysis.report import precision_check_lines
from dpocheck.llm.data.types import PreferencePair
from dpocheck.llm.models import save_toy_model, toy_model, toy_tokenizer
from dpocheck.llm.scoring.precision import GAP_KEYS, STAT_KEYS, check_fp32_gap, choose_check_indices, gap_summary
from dpocheck.llm.scoring.runner import score_pairs
from dpocheck.llm.scoring.settings import ScoreSettings

WORDS = "the capital of France is Paris sure here a short poem about sea waves roll in out dog fox".split()


def _pairs(n: int = 10) -> list[PreferencePair]:
    out = []
    for i in range(n):
        prompt = "Question: " + " ".join(WORDS[(3 * i + j) % len(WORDS)] for j in range(2 + i % 5)) + "?"
        chosen = " " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(2 + i % 4)) + "."
        rejected = " " + " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(1 + (5 * i) % 7)) + "!"
        out.append(PreferencePair(i, prompt, chosen, rejected, float(i % 3) - 1.0, "score_columns", None, None))
    return out


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return toy_model(tok, seed=0)


SETTINGS = ScoreSettings(chat_template="none", batch_tokens=200)


# ------------------------------------------------------------------------------------------- pure helpers
def test_choose_check_indices_seeded_sorted_subset():
    pool = [7, 3, 11, 5, 2, 9]
    a = choose_check_indices(pool, 3, seed=1)
    assert a == choose_check_indices(pool, 3, seed=1) and a == sorted(a) and set(a) <= set(pool) and len(a) == 3
    assert choose_check_indices(pool, 10, seed=0) == [2, 3, 5, 7, 9, 11]
    with pytest.raises(InputError, match="--check-fp32 must be >= 1"):
        choose_check_indices(pool, 0, seed=0)


@given(st.sets(st.integers(0, 10_000), min_size=1, max_size=60), st.integers(1, 80), st.integers(0, 2**32 - 1))
def test_choose_check_indices_size(pool, n, seed):
    got = choose_check_indices(list(pool), n, seed)
    assert len(got) == min(n, len(pool)) and len(set(got)) == len(got) and set(got) <= pool


def _row(i, cs, rs, cm, rm):
    return {
        "index": i,
        "chosen_logp_sum": cs,
        "rejected_logp_sum": rs,
        "chosen_logp_mean": cm,
        "rejected_logp_mean": rm,
    }


def test_gap_summary_hand_worked():
    ref = [_row(0, -10.0, -20.0, -1.0, -2.0), _row(1, -5.0, -4.0, -0.5, -0.4)]
    low = [_row(1, -5.5, -4.0, -0.5, -0.25), _row(0, -9.0, -20.25, -1.0, -2.0)]
    g = gap_summary(low, ref)
    # logp_sum Δ: pair 0 (+1, -0.25), pair 1 (-0.5, 0) -> |Δ| = 1, .25, .5, 0
    assert g["logp_sum"]["max_abs"] == 1.0 and g["logp_sum"]["median_abs"] == pytest.approx(0.375)
    assert g["logp_sum"]["mean_signed"] == pytest.approx(0.0625)
    # δ Δ (chosen − rejected): pair 0: 1 − (−0.25) = 1.25, pair 1: −0.5 − 0 = −0.5
    assert g["delta_ref_sum"]["max_abs"] == 1.25 and g["delta_ref_sum"]["median_abs"] == pytest.approx(0.875)
    assert g["delta_ref_sum"]["p90_abs"] == pytest.approx(0.5 + 0.9 * 0.75)
    assert g["delta_ref_mean"]["max_abs"] == pytest.approx(0.15) and g["logp_mean"]["max_abs"] == pytest.approx(0.15)
    with pytest.raises(InputError, match="different pairs"):
        gap_summary(low[:1], ref)


# ------------------------------------------------------------------------------------------- with a model
def test_fp32_against_itself_gives_zero_gap(model, tok):
    pairs = _pairs()
    rows, _ = score_pairs(model, tok, pairs, SETTINGS)
    rec = check_fp32_gap(model, tok, pairs, rows, SETTINGS, n=len(pairs), seed=0)  # same pairs -> same batches
    assert rec["n_checked"] == len(pairs) and rec["n_failed"] == 0
    assert all(rec["gap"][k][s] == 0.0 for k in GAP_KEYS for s in STAT_KEYS)
    sub = check_fp32_gap(model, tok, pairs, rows, SETTINGS, n=4, seed=3)  # other batches: fp32 noise only
    assert sub["n_checked"] == 4 and all(sub["gap"][k]["max_abs"] <= 1e-4 for k in GAP_KEYS)


def test_bf16_gap_is_positive_and_finite(model, tok):
    pairs = _pairs()
    low = copy.deepcopy(model).to(torch.bfloat16)
    settings = ScoreSettings(chat_template="none", batch_tokens=200, dtype="bf16")
    rows, _ = score_pairs(low, tok, pairs, settings)
    rec = check_fp32_gap(model, tok, pairs, rows, settings, n=6, seed=0)
    assert rec["n_checked"] == 6 and rec["dtype_scored"] == "bf16" and rec["dtype_reference"] == "fp32"
    assert all(math.isfinite(rec["gap"][k][s]) for k in GAP_KEYS for s in STAT_KEYS)
    assert rec["gap"]["logp_sum"]["max_abs"] > 1e-3 and rec["gap"]["delta_ref_sum"]["max_abs"] > 0


# ------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("precision")
    model_dir = save_toy_model(root / "model", seed=1)
    data = root / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "score_chosen": 1.0 + p.index}
                | {"score_rejected": 0.5}
            )
            + "\n"
            for p in _pairs(12)
        )
    )
    return model_dir, data


def _score_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "score",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--out",
        str(out),
        "--threads",
        "1",
        "--batch-tokens",
        "300",
        "--no-progress",
        *extra,
    ]


def test_cli_check_fp32_records_gap_once(cli_inputs, tmp_path, capsys):
    from dpocheck.cli import main

    model_dir, data = cli_inputs
    out = tmp_path / "bf16"
    assert main(_score_args(model_dir, data, out, "--dtype", "bf16", "--check-fp32", "5")) == 0
    man = json.loads((out / "manifest.json").read_text())
    rec = man["precision_check"]
    assert {"n_requested", "n_checked", "seed", "dtype_scored", "dtype_reference", "gap", "indices"} <= set(rec)
    assert rec["n_requested"] == rec["n_checked"] == 5 and rec["seed"] == 0 and rec["dtype_scored"] == "bf16"
    assert set(rec["gap"]) == set(GAP_KEYS) and all(set(rec["gap"][k]) == set(STAT_KEYS) for k in GAP_KEYS)
    assert all(math.isfinite(v) for g in rec["gap"].values() for v in g.values())
    assert rec["gap"]["logp_sum"]["max_abs"] > 0
    assert "precision: bf16 scores vs an fp32 rescore of 5 random pairs" in capsys.readouterr().err
    # resume with the same check: done once, the record is unchanged
    assert main(_score_args(model_dir, data, out, "--dtype", "bf16", "--check-fp32", "5", "--resume")) == 0
    assert json.loads((out / "manifest.json").read_text())["precision_check"] == rec
    # violations prints the recorded gap in its report
    assert main(["violations", "--scores", str(out), "--no-plot", "--bootstrap", "0", "--quiet"]) == 0
    md = (out / "violations" / "violations-sum.md").read_text()
    assert "precision: bf16 scores vs an fp32 rescore of 5 random pairs (seed 0, same weights)" in md


def test_cli_check_fp32_is_a_noop_for_fp32(cli_inputs, tmp_path, capsys):
    from dpocheck.cli import main

    model_dir, data = cli_inputs
    out = tmp_path / "fp32"
    assert main(_score_args(model_dir, data, out, "--dtype", "fp32", "--check-fp32", "3")) == 0
    assert "precision_check" not in json.loads((out / "manifest.json").read_text())
    assert "nothing to check" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_score_args(model_dir, data, tmp_path / "bad", "--check-fp32", "0"))


def test_precision_check_lines_without_record():
    assert precision_check_lines(None) == [] and precision_check_lines({"precision_check": {"gap": 1}}) == []
