"""``dpocheck train-sweep`` (dpocheck.llm.train.sweep) on a tiny random Llama: the declared e2_llm sweep at toy size.

Invariants: the entries run as ``dpocheck train`` folders under OUT/runs; a γ*-relative entry trains with γ = γ*/2
where γ* is Eq. 27 (Δr* = 0) on the step-0 reference log-probs of a finished run of the same R (recomputed here
with the theory function); a second invocation reuses finished runs without training; a finished run with other
settings is refused; the tidy table equals the per-run recomputation from the eval files; bad input exits 2.
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
from dpocheck.llm.models import save_toy_model  # noqa: E402
from dpocheck.llm.train.experiment import e2_llm_entries, tidy_rows  # noqa: E402
from dpocheck.theory.pairs import gamma_star  # noqa: E402

ONLY = ("dpo_R0_s0", "cpo_margin_ggstardiv2_R0_s0")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("sweep")
    model = save_toy_model(base / "model", seed=5)
    data = base / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_records(6, varied=False)))
    return model, data


def _argv(setup, out: Path, *extra: str) -> list[str]:
    model, data = setup
    return [
        "train-sweep", "--out", str(out), "--model", str(model), "--data", str(data), "--threads", "1",
        "--no-progress", "--max-steps", "2", "--eval-every", "2", "--save-steps", "2", "--batch-size", "2",
        "--lr", "1e-3", "--batch-tokens", "400", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def swept(setup, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "sweep"
    assert cli_main(_argv(setup, out, "--only", *ONLY)) == 0
    return out


def test_entries_are_declared_once():
    names = [e.name for e in e2_llm_entries()]
    assert len(names) == len(set(names)) == 16
    assert {e.loss for e in e2_llm_entries()} == {"dpo", "released_clip", "cpo_margin", "dpop", "dpo_nll"}


def test_runs_table_and_gamma_star(swept):
    manifest = json.loads((swept / "sweep.json").read_text())
    assert set(manifest["entries"]) == set(ONLY)
    assert not (swept / "runs" / "dpo_R0_s0" / "checkpoints").exists()  # pruned once finished
    # γ*/2 from the dpo run's step-0 reference log-probs (mean convention, β = 2.5, Δr* = 0), recomputed here
    ev = [json.loads(x) for x in (swept / "runs/dpo_R0_s0/eval/step-0.jsonl").read_text().splitlines()]
    lw = np.array([r["ref_chosen_logp_mean"] for r in ev])
    ll = np.array([r["ref_rejected_logp_mean"] for r in ev])
    g_star = gamma_star(lw - ll, np.zeros(len(ev)), 2.5, lw, ll)
    rec = manifest["entries"]["cpo_margin_ggstardiv2_R0_s0"]
    assert rec["gamma_star_dr0"] == pytest.approx(g_star, rel=1e-12) and g_star > 0
    assert rec["gamma"] == pytest.approx(g_star / 2, rel=1e-12)
    run = json.loads((swept / "runs/cpo_margin_ggstardiv2_R0_s0/manifest.json").read_text())
    assert run["status"] == "complete" and run["fingerprint"]["settings"]["gamma"] == pytest.approx(
        g_star / 2, rel=1e-12
    )
    # the tidy table: one row per run × eval step, equal to tidy_rows on each run folder
    with open(swept / "e2_llm.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert sorted({r["run"] for r in table}) == sorted(ONLY)
    assert [int(r["step"]) for r in table if r["run"] == "dpo_R0_s0"] == [0, 2]
    first = [r for r in table if r["run"] == "dpo_R0_s0"][0]
    again = tidy_rows(swept / "runs/dpo_R0_s0", "dpo_R0_s0", {"normalize": "sum", "beta": 0.1})
    assert float(first["share_in_u"]) == again[0]["share_in_u"] == 0.0  # π_θ = π_ref at step 0: U is empty
    assert float(first["ranking_accuracy"]) == pytest.approx(again[0]["ranking_accuracy"])
    assert (swept / "e2_llm.png").read_bytes()[:4] == b"\x89PNG"
    md = (swept / "e2_llm.md").read_text()
    assert "| dpo_R0_s0 | 0.0 | 0→2 |" in md and "Final policies" in md
    final = json.loads((swept / "violations" / "dpo_R0_s0.json").read_text())
    last = [r for r in table if r["run"] == "dpo_R0_s0"][-1]
    assert final["policy"]["share_in_u"]["value"] == float(last["share_in_u"])  # the final policy is the last eval
    assert final["per_beta"][0]["beta"] == 0.1 and "ASSUMED" in final["delta_reward"]["source"]


def test_second_invocation_reuses_finished_runs(setup, swept, capsys):
    before = (swept / "runs/dpo_R0_s0/metrics.jsonl").read_bytes()
    assert cli_main(_argv(setup, swept, "--only", *ONLY)) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier, reused") == 2 and "training" not in err
    assert (swept / "runs/dpo_R0_s0/metrics.jsonl").read_bytes() == before


def test_finished_run_with_other_settings_refused(setup, swept, capsys):
    assert cli_main([*_argv(setup, swept, "--only", "dpo_R0_s0"), "--lr", "2e-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dpocheck train-sweep: error:") and "lr" in err


def test_report_only_rebuilds_the_table(swept):
    (swept / "e2_llm.csv").unlink()
    assert cli_main(["train-sweep", "--out", str(swept), "--report-only"]) == 0
    assert (swept / "e2_llm.csv").read_text().startswith("run,loss,beta,gamma,normalize,R,step")


@pytest.mark.parametrize(
    "extra,needle",
    [
        (("--only", "nope"), "--only: unknown entry"),
        (("--only", "cpo_margin_ggstardiv2_R0.4_s0"), "needs γ* of the R = 0.4 reference"),
        (("--sweep", "e9"), "--sweep: unknown sweep"),
        (("--lr", "0"), "--lr"),
    ],
)
def test_bad_input_exits_2(setup, tmp_path, capsys, extra, needle):
    assert cli_main(_argv(setup, tmp_path / "s", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dpocheck train-sweep: error:") and needle in err, err


def test_existing_folder_without_a_sweep_refused(setup, tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x").write_text("")
    assert cli_main(_argv(setup, tmp_path / "s")) == 2
    assert "holds no sweep (sweep.json)" in capsys.readouterr().err


def test_violations_reads_a_train_eval_file(swept, tmp_path, capsys):
    """``violations --policy-scores RUN/eval/step-N.jsonl`` joins the run's per-pair policy log-probs with its
    reference scores; the share in U equals the sweep table's; another data hash is refused."""
    run = swept / "runs" / "dpo_R0_s0"
    argv = ["violations", "--scores", str(run / "reference"), "--policy-scores", str(run / "eval" / "step-2.jsonl")]
    argv += ["--beta", "0.1", "--assume-delta-reward", "0", "--quiet", "--no-plot", "--bootstrap", "0"]
    assert cli_main([*argv, "--out", str(tmp_path / "v")]) == 0
    rep = json.loads((tmp_path / "v" / "violations-sum.json").read_text())
    with open(swept / "e2_llm.csv", newline="", encoding="utf-8") as f:
        last = [r for r in csv.DictReader(f) if r["run"] == "dpo_R0_s0"][-1]
    assert rep["policy"]["n_joined"] == int(last["n_pairs"]) == 6
    assert rep["policy"]["share_in_u"]["value"] == pytest.approx(float(last["share_in_u"]), abs=1e-12)
    assert rep["policy"]["ranking_accuracy"]["value"] == pytest.approx(float(last["ranking_accuracy"]), abs=1e-12)
    other = tmp_path / "other"
    (other / "eval").mkdir(parents=True)
    (other / "eval" / "step-2.jsonl").write_bytes((run / "eval" / "step-2.jsonl").read_bytes())
    m = json.loads((run / "manifest.json").read_text())
    m["fingerprint"]["data"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(m))
    argv[4] = str(other / "eval" / "step-2.jsonl")
    assert cli_main([*argv, "--out", str(tmp_path / "v2")]) == 2
    assert "data mismatch" in capsys.readouterr().err
