"""The GPU suite (benchmarks/gpu_suite.py) at tiny size on the CPU: every part runs or says why not, the JSON keeps
finished parts when a part is killed, and the LoRA training part's code runs (with an fp32 stand-in where the
scale-training options are absent)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def suite():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("gpu_suite", BENCH / "gpu_suite.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = mod
    spec.loader.exec_module(mod)
    return mod


def _check_schema(report: dict, suite) -> None:
    assert report["suite"] == "dpocheck GPU suite" and report["format_version"] == suite.FORMAT_VERSION
    assert set(report) >= {"mode", "command", "started", "machine", "versions", "targets", "parts", "total_seconds"}
    for name, part in report["parts"].items():
        assert name in suite.PARTS and part["status"] in suite.STATUSES
        assert part["budget_seconds"] > 0 and part["wall_seconds"] >= 0
        if part["status"] == "ok":
            assert isinstance(part["result"], dict) and part["seconds"] >= 0
        else:
            assert part["reason"], f"{name}: {part['status']} without a reason"


def test_tiny_suite_runs_every_part_or_reports_why(suite, tmp_path):
    out = tmp_path / "suite.json"
    report = suite.run_suite(out, tiny=True, parts=list(suite.PARTS))
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    _check_schema(report, suite)
    parts = report["parts"]
    assert report["mode"].startswith("tiny") and report["total_seconds"] < 60
    for name in ("matmul_peak", "scoring_8b", "sampling_8b", "full_finetune_1b"):
        assert parts[name]["status"] == "ok", parts[name]
    assert parts["scoring_8b"]["result"]["check_passed"]
    s = parts["sampling_8b"]["result"]
    assert s["generated_tokens"] == 4 * 2 * 8 and s["max_abs_sampler_vs_forward_logp"] < 1e-3  # fp32, temperature 1
    f = parts["full_finetune_1b"]["result"]
    assert f["seconds_per_step"] > 0 and f["tokens_per_second"] > 0 and "AdamW" in f["path"]
    lora = parts["lora_train_8b"]
    if lora["status"] == "skipped":  # before the scale-training options land
        assert "scale-training options" in lora["reason"] or "not importable" in lora["reason"]
    else:
        assert lora["status"] == "ok" and 0 <= lora["result"]["u_callback_share"] < 1
        assert lora["result"]["first_loss"] == math.log(2) and all(lora["result"]["checks"].values())


def test_a_part_past_its_budget_is_recorded_and_the_finished_ones_kept(suite, tmp_path, monkeypatch):
    monkeypatch.setitem(suite.PARTS, "sampling_8b", (0.5, 0.5))
    out = tmp_path / "suite.json"
    report = suite.run_suite(out, tiny=True, parts=["matmul_peak", "sampling_8b"])
    on_disk = json.loads(out.read_text())
    assert on_disk["parts"]["matmul_peak"]["status"] == "ok"
    assert on_disk["parts"]["sampling_8b"]["status"] == "timed_out" == report["parts"]["sampling_8b"]["status"]
    _check_schema(on_disk, suite)


def test_gpu_mode_without_cuda_refuses_and_bad_parts_are_refused(suite, tmp_path):
    import torch

    if not torch.cuda.is_available():
        assert suite.main(["--out", str(tmp_path / "x.json")]) == 2
    with pytest.raises(SystemExit):
        suite.main(["--tiny", "--parts", "nope", "--out", str(tmp_path / "y.json")])


def test_lora_part_code_path_runs(suite, tmp_path, monkeypatch):
    """Part 4 through ``dpocheck train``: where TrainSettings lacks the scale-training fields, a stand-in drops
    them (fp32, full fine-tuning) so the part's own code — data, timers, FLOPs, U shares — is still exercised."""
    pytest.importorskip("trl")
    import dpocheck.llm.train.settings as settings_mod

    names = {f.name for f in dataclasses.fields(settings_mod.TrainSettings)}
    if "lora_r" not in names:
        real = settings_mod.TrainSettings

        def stand_in(**kw):
            kw = {k: v for k, v in kw.items() if k in names}
            kw["dtype"] = "fp32"
            return real(**kw)

        monkeypatch.setattr(settings_mod, "TrainSettings", stand_in)
    lora = importlib.import_module("gpu_suite_lora")
    r = lora.run_lora_part(True, tmp_path)
    assert r["steps"] == 4 and r["pairs"] == 8 and r["seconds_per_step"] > 0 and r["tokens_per_second"] > 0
    assert len(r["u_eval_seconds"]) == 3 and 0 < r["u_callback_share"] < 1 and r["u_metrics_share_of_step"] < 1
