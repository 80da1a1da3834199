"""The GPU benchmark script at tiny size on the CPU: it runs end to end and its equality check can fail."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_llama8b_score.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_llama8b_score", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_run_passes_its_check_and_reports_both_mfu_definitions(bench, tmp_path):
    out = tmp_path / "r.json"
    assert bench.main(["--tiny", "--pairs", "6", "--check-pairs", "3", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["check_passed"] and r["max_abs_diff_vs_unshared"] <= r["check_tolerance"] == 1e-3
    assert r["peak_tflops"] is None and r["mfu_true"] is None  # CPU: no peak, MFU n/a
    assert set(r["definitions"]) >= {"mfu_true", "mfu_all_params"}
    assert 0 < r["padding_efficiency"] <= 1 and r["scored_tokens"] < r["tokens"]


def test_check_fails_on_a_plain_causal_mask(bench, monkeypatch, tmp_path):
    import torch

    from dpocheck.llm.scoring import kernels

    def causal_only(seg, dtype):
        n = seg.shape[1]
        allowed = torch.ones((n, n), dtype=torch.bool).tril()[None].expand(seg.shape[0], -1, -1)
        return kernels._additive_mask(allowed, dtype)

    monkeypatch.setattr(kernels, "packed_attention_mask", causal_only)
    assert bench.main(["--tiny", "--pairs", "6", "--check-pairs", "3", "--json", str(tmp_path / "r.json")]) == 1


def test_peak_table_and_true_flops(bench):
    from types import SimpleNamespace

    from dpocheck.llm.scoring.encode import EncodedPair

    assert bench.device_peak_tflops("NVIDIA H200") == 989.0
    assert bench.device_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.device_peak_tflops("NVIDIA L40S") == 362.0
    assert bench.device_peak_tflops("cpu") is None
    # shared 2 → packed prompt part 1 token (the last shared token starts each continuation), continuations of
    # 2 and 3 tokens: 1 + (2·1 + 3) + (3·1 + 6) = 15 attended query-key pairs over the 6 real tokens
    e = EncodedPair(0, (5, 6, 7), (5, 6, 8, 9), 2, 2, 2, False, False)
    assert e.prefix_len == 1 and bench.attended_pairs(e) == 15
    cfg = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, hidden_size=8)
    assert bench.model_flops(cfg, 100, 10, tokens=5, scored=3, attended=13) == 2 * 100 * 5 + 2 * 10 * 3 + 4 * 2 * 8 * 13
