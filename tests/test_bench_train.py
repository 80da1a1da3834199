"""benchmarks/bench_train.py's arithmetic (no training here): the FLOP formula, the sides' FLOPs, the ratios and
their spread over rounds, and the guard of the bf16/LoRA sides."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_train", BENCH / "bench_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_flops_of_a_packed_row_and_of_trls_two_sequences(bench, tmp_path):
    from dpocheck.llm.models import save_toy_model

    model = save_toy_model(tmp_path / "m")
    # prompt 3, chosen 2, rejected 1 tokens: packed runs 6 tokens, the head on 3, attention 6 + (2·3 + 3) +
    # (1·3 + 1) = 19 pairs; TRL runs 2·3 + 3 = 9 tokens, the head on all 9, attention 15 + 10 = 25 pairs
    f = bench.flop_model(str(model), [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]}])
    layer, head = f["layer_parameters"], f["head_parameters"]
    attn = 4.0 * 2 * 32  # layers × hidden of the toy config
    assert f["dpocheck_forward_flops_per_pair"] == 2 * layer * 6 + 2 * head * 3 + attn * 19
    assert f["trl_forward_flops_per_pair"] == 2 * (layer + head) * 9 + attn * 25
    assert bench.step_flops("dpocheck", f, 2) == (6 * f["dpocheck_forward_flops_per_pair"],) * 2
    assert bench.step_flops("trl-ref", f, 2)[0] == 8 * f["trl_forward_flops_per_pair"]  # + the reference forward
    assert bench.step_flops("trl-precompute", f, 2)[0] == 6 * f["trl_forward_flops_per_pair"]


def test_ratios_per_round_and_their_spread(bench):
    def run(step, e2e, losses):
        return {
            "median_step_seconds": step,
            "median_step_cpu_seconds": step,
            "end_to_end_seconds": e2e,
            "peak_rss_gb": 1.0,
            "losses": losses,
        }

    res = {
        "dpocheck": [run(1.0, 10.0, [0.69, 0.70]), run(2.0, 20.0, [0.69, 0.70])],
        "trl-ref": [run(3.0, 25.0, [0.69, 0.7001]), run(5.0, 40.0, [0.69, 0.70])],
    }
    flops = {"dpocheck_forward_flops_per_pair": 1e9, "trl_forward_flops_per_pair": 2e9}
    a = argparse.Namespace(batch_size=2)
    s = bench.summarise(res, ["dpocheck", "trl-ref"], a, flops, {"fp32": 10.0, "bf16": 20.0}, 100.0)
    ratio = s["trl-ref"]["time_ratio_vs_dpocheck"]
    assert ratio["median_step_seconds"] == {"median": 2.75, "min": 2.5, "max": 3.0, "per_round": [3.0, 2.5]}
    assert ratio["end_to_end_seconds"]["min"] == 2.0 and ratio["end_to_end_seconds"]["max"] == 2.5
    assert s["trl-ref"]["max_loss_difference_vs_dpocheck"] == pytest.approx(1e-4)
    assert s["dpocheck"]["median_step_seconds"] == 1.5
    assert s["dpocheck"]["share_of_matmul_peak"] == pytest.approx(6e9 / 1.5 / 1e9 / 10.0)


def test_lora_and_bf16_sides_are_options_train_accepts(bench, tmp_path):
    """Every LoRA/bf16 side is a TrainSettings that passes dpocheck train's checks on a toy Llama (bf16 full
    fine-tuning, which train refuses, is not a side)."""
    from dpocheck.llm.models import save_toy_model
    from dpocheck.llm.train.precision import cpu_bf16_support
    from dpocheck.llm.train.settings import TrainSettings, validate

    model = save_toy_model(tmp_path / "model", seed=0)
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "Hi", "chosen": " yes", "rejected": " no"}\n')
    assert set(bench.SCALE_SIDES) == {s for s in bench.SIDES if s.startswith("dpocheck-")}
    for side, options in bench.SCALE_SIDES.items():
        assert options["lora_r"] == 16
        if options.get("dtype") == "bf16" and cpu_bf16_support() is None:
            continue  # train refuses bf16 on a CPU without bf16 matmuls (tested in the scale tests)
        out = tmp_path / side
        validate(TrainSettings(data=str(data), out=str(out), model=str(model), loss="dpo", beta=0.1, **options))
