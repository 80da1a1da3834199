"""The displacement part of a sweep report (dpocheck.llm.train.displacement_report, PAPER §6), on a toy sweep.

Invariants: two entries × two seeds give one summary row per (loss, R, quantity) with n_seeds = 2; the seed mean and
t-interval equal those recomputed from the per-run table, the pooled value equals the mean over every (pair, seed)
recomputed from the last eval files; CHES from a rescored reference (``ches_root``) yields the correlation table and
the CHES figure; the sweep's Markdown carries the section; ``--report-only`` rebuilds it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")

from toy_pairs import toy_records  # noqa: E402

from dpocheck.cli import main as cli_main  # noqa: E402
from dpocheck.llm.analysis.stats import t_interval  # noqa: E402
from dpocheck.llm.models import save_toy_model  # noqa: E402
from dpocheck.llm.train.displacement_report import write_displacement_report  # noqa: E402


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("dsweep")
    model = save_toy_model(base / "model", seed=5)
    data = base / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_records(8, varied=False)))
    out = base / "sweep"
    for seed in (0, 1):
        argv = ["train-sweep", "--out", str(out), "--model", str(model), "--data", str(data), "--threads", "1"]
        argv += ["--no-progress", "--max-steps", "4", "--eval-every", "2", "--save-steps", "4", "--batch-size", "2"]
        argv += ["--lr", "3e-3", "--batch-tokens", "400", "--seed", str(seed)]
        assert cli_main([*argv, "--only", f"dpo_R0_s{seed}", f"dpop_R0_s{seed}"]) == 0
    return model, data, out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_summary_recomputes_from_the_runs(sweep):
    _, _, out = sweep
    runs = _csv(out / "displacement_runs.csv")
    assert sorted(r["run"] for r in runs) == ["dpo_R0_s0", "dpo_R0_s1", "dpop_R0_s0", "dpop_R0_s1"]
    summary = _csv(out / "displacement_summary.csv")
    assert {(r["label"], r["metric"]) for r in summary} >= {("dpo", "share_in_u"), ("dpop", "share_displaced")}
    for row in summary:
        assert row["n_seeds"] == "2" and row["seeds"] == "0 1" and row["n_pair_runs"] == "16"
        per_seed = [float(r[row["metric"]]) for r in runs if r["label"] == row["label"]]
        mean, (lo, hi), _ = t_interval(per_seed)
        assert float(row["seed_mean"]) == pytest.approx(mean) and float(row["seed_t95_lo"]) == pytest.approx(lo)
        assert float(row["seed_t95_hi"]) == pytest.approx(hi)
        # equal seed sizes: the pooled share is the seed mean
        assert float(row["pooled"]) == pytest.approx(mean)
        assert float(row["pooled_boot95_lo"]) <= float(row["pooled"]) <= float(row["pooled_boot95_hi"])
    steps = _csv(out / "displacement.csv")
    assert [int(r["step"]) for r in steps if r["run"] == "dpo_R0_s0"] == [0, 2, 4]
    md = (out / "e2_llm.md").read_text()
    assert "## Likelihood displacement next to U" in md and "| dpop | sum, 0.1 | 0 | 0 1 |" in md
    assert (out / "displacement.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "displacement_cells.png").read_bytes()[:4] == b"\x89PNG"
    pooled_u = np.mean(
        [
            json.loads(line)["in_u"]
            for seed in (0, 1)
            for line in (out / "runs" / f"dpo_R0_s{seed}" / "eval" / "step-4.jsonl").read_text().splitlines()
        ]
    )
    got = next(r for r in summary if r["label"] == "dpo" and r["metric"] == "share_in_u")
    assert float(got["pooled"]) == pytest.approx(pooled_u)


def test_ches_from_a_rescored_reference(sweep, tmp_path):
    model, data, out = sweep
    ches_root = tmp_path / "ches"
    for run in ("dpo_R0_s0", "dpo_R0_s1", "dpop_R0_s0", "dpop_R0_s1"):  # R = 0: the reference is the model itself
        argv = ["score", "--model", str(model), "--data", str(data), "--out", str(ches_root / run), "--threads", "1"]
        assert cli_main([*argv, "--no-progress", "--dtype", "fp32", "--max-length", "1024"]) == 0
    dest = tmp_path / "report"
    written, md = write_displacement_report(out / "runs", dest, ches_root)
    assert {p.name for p in written} >= {"displacement_ches.csv", "ches.csv", "ches.png"}
    rows = _csv(dest / "displacement_ches.csv")
    assert len(rows) == 4 * 10 and {r["n"] for r in rows} == {"8"}
    assert md["ches"].startswith("Does the reference's CHES predict what training did?")
    assert len({r["reference"] for r in _csv(dest / "ches.csv")}) == 1  # the four runs share one reference
