"""Multi-process training on the CPU: FSDP2 in 2 gloo processes (torch's ``fully_shard``, ``tests/fsdp2_worker.py``)
and ``dpocheck train`` under ``accelerate launch --config_file examples/accelerate/ddp_cpu.yaml`` (2 gloo processes).

Invariants: an FSDP-sharded model is scored through its root forward, with the sharded model's log-probs equal to the
unsharded model's and a backward through them; the U callback's distributed scoring (every rank its share of the
planned batches, rows gathered) returns the rows of a one-process run in the same order, with full weights and with
a LoRA adapter on a bf16 base; a 2-process LoRA bf16 run starts at log 2 exactly and its eval files equal a
one-process scoring of its adapter. accelerate itself cannot run FSDP or ZeRO-3 without a GPU (it silently trains
DDP): those configs are the GPU suite's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from test_train_cli import _args, _rows, _step_rows  # noqa: E402
from test_train_scale import LOG2, LORA, _adapter_rows, data_file, model_dir  # noqa: E402, F401

from dpocheck.llm.train.sharding import batch_share, gather_in_order  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + str(REPO / "tests") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def test_batches_are_dealt_round_robin_with_equal_forward_counts():
    shares = [batch_share(5, r, 2) for r in range(2)]
    assert shares == [[0, 2, 4], [1, 3, None]]  # None: a repeat that keeps the ranks' forwards in step
    assert batch_share(0, 0, 2) == [] and batch_share(3, 0, 1) == [0, 1, 2]
    assert gather_in_order([(1, "b"), (0, "a")], 2, 1) == ["a", "b"]
    with pytest.raises(RuntimeError, match="lost rows"):
        gather_in_order([(0, "a")], 2, 1)


@pytest.mark.parametrize("variant", ["full", "lora"])
def test_fsdp2_sharded_model_scores_and_trains_like_the_unsharded_one(variant, tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(REPO / "tests" / "fsdp2_worker.py"), str(out)] + (["lora"] if variant == "lora" else [])
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world"] == 2 and result["sharded"] and result["lora"] == (variant == "lora")
    assert result["logps_max_abs_diff"] == 0.0 and result["grad_norm"] > 0
    assert result["n_rows"] == 7 and result["rows_same_order"] and result["rows_max_abs_diff"] == 0.0


def test_two_processes_lora_bf16_through_the_ddp_cpu_config(model_dir, data_file, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launch += [str(REPO / "examples" / "accelerate" / "ddp_cpu.yaml"), "-m", "dpocheck.cli"]
    args = _args(model_dir, data_file, out, "--loss", "dpo", "--beta", "0.5", "--max-steps", "3", "--eval-every", "2")
    args += ["--save-steps", "2", "--lr", "1e-2", "--batch-size", "2", "--dtype", "bf16", *LORA, "--device", "cpu"]
    proc = subprocess.run(launch + args, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(proc.stdout.strip().splitlines()) == 1  # one JSON summary, from the main process
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "complete" and manifest["lora"]["r"] == 4
    first = next(r for r in _step_rows(out) if "loss" in r)
    assert first["step"] == 1 and first["loss"] == LOG2
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["step-0.jsonl", "step-2.jsonl", "step-3.jsonl"]
    # every rank scored its share; the gathered rows are a one-process scoring of the same weights, in order
    assert _adapter_rows(out, model_dir, data_file, "bf16") == _rows(out / "eval" / "step-3.jsonl")
