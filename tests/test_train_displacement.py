"""Likelihood displacement and health in ``dpocheck train`` (PAPER §6; Razin et al. 2024), on tiny random Llamas.

Invariants: the per-step displacement metrics equal hand-worked values; a run with a huge learning rate (``--lr
10``) is recorded, printed and summarised as ``degenerate`` with the numbers behind it and its eval rows are marked,
while a sane run is ``healthy``; the per-step table and the transitions are recomputed from the eval files alone
(step 0 has nothing displaced and nothing in U; the transition patterns partition the pairs); CHES of a reference
scored by ``dpocheck score`` is correlated with what training did.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")

from toy_pairs import toy_records  # noqa: E402

from dpocheck.cli import main as cli_main  # noqa: E402
from dpocheck.llm.models import save_toy_model  # noqa: E402
from dpocheck.llm.train.metrics import displacement_metrics  # noqa: E402


def test_displacement_metrics_by_hand():
    """π_ref (w, l) / π_θ (w, l): (−10, −8)/(−11, −10), (−10, −8)/(−9, −8), (−10, −11)/(−11, −14),
    (−10, −11)/(−9, −12): Δ_w = −1, 1, −1, 1 (mean 0), Δ_l = −2, 0, −3, −1 (mean −1.5); displaced ½, both fell ½,
    displaced with δ_θ > 0 (δ_θ = −1, −1, 3, 3): pair 2 only, ¼. A NaN pair is left out."""
    pw, pl = np.array([-11.0, -9.0, -11.0, -9.0, np.nan]), np.array([-10.0, -8.0, -14.0, -12.0, -1.0])
    rw, rl = np.array([-10.0, -10.0, -10.0, -10.0, -1.0]), np.array([-8.0, -8.0, -11.0, -11.0, -1.0])
    assert displacement_metrics(pw, pl, rw, rl, "mean") == {
        "chosen_logp_shift/mean": 0.0,
        "rejected_logp_shift/mean": -1.5,
        "share_displaced/mean": 0.5,
        "share_both_fell/mean": 0.5,
        "share_displaced_ranked_correct/mean": 0.25,
    }
    assert displacement_metrics([np.nan], [1.0], [1.0], [1.0]) == {}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("disp")
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_records(12)))
    return save_toy_model(root / "model", seed=3), data


def _train(inputs, out: Path, lr: str) -> int:
    model, data = inputs
    argv = ["train", "--model", str(model), "--data", str(data), "--out", str(out), "--threads", "1"]
    argv += ["--batch-tokens", "400", "--no-progress", "--loss", "dpo", "--beta", "0.5", "--max-steps", "4"]
    argv += ["--eval-every", "2", "--save-steps", "100", "--lr", lr, "--batch-size", "2", "--seed", "7"]
    return cli_main(argv)


@pytest.fixture(scope="module")
def runs(inputs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, lr in (("sane", "1e-3"), ("wrecked", "10")):
        assert _train(inputs, root / name, lr) == 0
        out[name] = root / name
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_huge_learning_rate_is_flagged_degenerate_with_the_numbers(runs):
    health = json.loads((runs["wrecked"] / "manifest.json").read_text())["health"]
    assert health["verdict"] == "degenerate" and health["step"] == 4 and health["eval_file"] == "eval/step-4.jsonl"
    assert health["chosen_logp_drop_per_token"] > 100 and health["n_non_finite"] == 0
    assert health["thresholds_nats_per_token"] == {"degraded": 0.5, "degenerate": 2.0}
    assert health["uniform_logp_per_token"] == pytest.approx(-math.log(health_vocab(runs["wrecked"])))
    assert [s["verdict"] for s in health["per_step"]][0] == "healthy"  # step 0: the policy is the reference
    assert health["line"].startswith("health: degenerate — the chosen responses' log-prob per token fell")
    last = _rows(runs["wrecked"] / "eval" / "step-4.jsonl")
    assert all(r["degenerate"] and r["displaced"] for r in last)
    assert all(r["chosen_logp_shift_mean"] < -2 for r in last)


def health_vocab(run: Path) -> int:
    return json.loads((run / "reference" / "manifest.json").read_text())["tokenizer_detail"]["vocab_size"]


def test_sane_run_is_healthy_and_every_row_is_marked(runs):
    manifest = json.loads((runs["sane"] / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["health"]["verdict"] == "healthy"
    first = _rows(runs["sane"] / "eval" / "step-0.jsonl")
    assert all(r["chosen_logp_shift_sum"] == 0.0 and not r["displaced"] and not r["degenerate"] for r in first)
    keys = {"chosen_logp_shift_sum", "rejected_logp_shift_mean", "displaced", "both_fell", "degenerate"}
    assert keys <= set(_rows(runs["sane"] / "eval" / "step-4.jsonl")[0])
    metrics = _rows(runs["sane"] / "metrics.jsonl")
    assert any("share_displaced/sum" in r for r in metrics)  # the trainer's per-step metrics
    assert any("eval/share_displaced/mean" in r and "eval/chosen_logp_shift/mean" in r for r in metrics)


def test_the_command_prints_the_verdict(inputs, tmp_path, capsys):
    assert _train(inputs, tmp_path / "again", "10") == 0
    captured = capsys.readouterr()
    assert "dpocheck train: health: degenerate — " in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["health"] == "degenerate"


def test_step_table_and_transitions_from_the_eval_files(runs):
    from dpocheck.llm.analysis.displacement import EPISODE_PATTERNS
    from dpocheck.llm.train.trajectories import STEP_FIELDS, step_rows, transitions

    rows = step_rows(runs["sane"])
    assert [r["step"] for r in rows] == [0, 2, 4] and all(tuple(r) == STEP_FIELDS for r in rows)
    assert rows[0]["share_in_u"] == rows[0]["share_displaced"] == 0.0 and rows[0]["share_neither"] == 1.0
    for r in rows:
        cells = sum(r[f"share_{c}"] for c in ("in_u_and_displaced", "in_u_not_displaced", "displaced_not_in_u"))
        assert cells + r["share_neither"] == pytest.approx(1.0)
    assert [r["health"] for r in step_rows(runs["wrecked"])][-1] == "degenerate"
    counts = transitions(runs["sane"])
    assert set(counts) == {"in_u", "displaced"}
    assert all(list(c) == list(EPISODE_PATTERNS) and sum(c.values()) == 12 for c in counts.values())


def test_ches_of_a_scored_reference_predicts_what_training_did(inputs, runs, tmp_path):
    from dpocheck.llm.analysis import read_scores
    from dpocheck.llm.train.trajectories import ches_predictions

    model, data = inputs
    ref = tmp_path / "ref"
    argv = ["score", "--model", str(model), "--data", str(data), "--out", str(ref), "--threads", "1"]
    assert cli_main([*argv, "--no-progress", "--dtype", "fp32"]) == 0
    table = read_scores(ref)
    assert np.isfinite(table.ches_sum).all() and np.isfinite(table.ches_mean).all()
    got = ches_predictions(runs["sane"], table, n_bootstrap=100)
    assert len(got) == 10 and {c.n for c in got} == {12}
    assert all(c.value is None or -1.0 <= c.value <= 1.0 for c in got)
