"""Study: what bf16 costs in *training* (C3, C4): the same LoRA run of ``dpocheck train`` in fp32 and in bf16.

Two runs that differ only in ``--dtype`` (SmolLM2-135M-Instruct GGUF, the first ``--pairs`` HH-RLHF harmless-base
test records, ``--loss dpo --beta 0.1``, LoRA r 16 on every projection, the same seed, batch, learning rate and
schedule; the bf16 run computes one pair per forward with the same effective batch, see
:mod:`dpocheck.llm.train.precision`), then each run's final policy (``final/``: the merged model, fp32 weights)
is rescored in fp32 by ``dpocheck score``.
Reported, in both log-prob conventions where it applies:

* step 0: the first logged loss of each run against log 2 (exact in bf16 by construction: the per-pair layout);
* the per-step loss gap |loss_bf16 − loss_fp32| over the run;
* the share in U (C3) at the last eval as each run reports it, and for the bf16-trained policy as fp32 sees it
  (its final policy rescored in fp32, against the fp32 reference);
* the δ_θ error of the bf16 run: its last eval's δ_θ against the fp32 rescoring of its own final policy, and the
  same for the fp32 run (the baseline: fp32 merge rounding and batching noise, ~1e-4);
* the δ_ref error: the bf16 reference against the fp32 reference (the scoring study of docs/bf16.md, on these pairs);
* the pairs whose in-U verdict flips between the bf16 run's reading and fp32's reading of the same policy, and how
  much of the policy's movement Σ|δ_θ − δ_ref| the bf16 run's own eval shows against fp32's reading;
* why a bf16 run computes one pair per forward: the same weights scored in the scorer's batches and one pair per
  forward, in fp32 and in bf16;
* what a bf16 merge of the adapter would lose (the share of moved weights that round back to the bf16 base);
* why bf16 *full* fine-tuning is refused: the share of SmolLM2's weights AdamW changes in 3 steps at lr 1e-6 with
  bf16 weights against fp32 weights;
* seconds per step of each run (a shared 2-core machine: noisy, not a speed measurement).

    python benchmarks/bf16_train_study.py [--pairs 32] [--epochs 2] [--threads 1] [--work DIR]

Writes benchmarks/results/bf16_train_study.json (published in docs/bf16.md, "Training in bf16").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from dpocheck._io import read_jsonl, write_text_atomic  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "bf16_train_study.json"
DATA = "hh-rlhf-harmless-base-test.jsonl.gz"


def _cli(args: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dpocheck.cli", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"failed: dpocheck {' '.join(args)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def _stats(diff: list[float]) -> dict[str, float]:
    a = np.abs(np.asarray(diff, dtype=np.float64))
    return {"max_abs": float(a.max()), "median_abs": float(np.median(a)), "p90_abs": float(np.quantile(a, 0.9))}


def _delta(row: dict, conv: str) -> float:
    return row[f"chosen_logp_{conv}"] - row[f"rejected_logp_{conv}"]


def study(args: argparse.Namespace) -> dict:
    from dpocheck.llm.data.load import default_data_dir

    work = Path(args.work or tempfile.mkdtemp(prefix="bf16_train_study_"))
    data = str(default_data_dir() / DATA)
    common = ["--data", data, "--limit", str(args.pairs), "--max-length", str(args.max_length), "--threads",
              str(args.threads), "--no-progress", "--loss", "dpo", "--beta", str(args.beta), "--epochs",
              str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--eval-every",
              str(args.eval_every), "--save-steps", "1000", "--seed", "0", "--lora-r", "16", "--on-error", "skip",
              "--device", "cpu"]  # fmt: skip
    runs, commands = {}, {}
    seconds = json.loads(RESULTS.read_text()).get("process_seconds", {}) if RESULTS.is_file() else {}
    for dtype in ("fp32", "bf16"):
        out = work / f"train-{dtype}"
        cmd = ["train", *common, "--dtype", dtype, "--out", str(out)]
        if not (out / "final" / "config.json").is_file():
            seconds[f"train_{dtype}"] = round(_cli(cmd, args.threads), 1)
        scores = work / f"final-{dtype}-scored-fp32"
        score_cmd = ["score", "--model", str(out / "final"), "--data", data, "--limit", str(args.pairs),
                     "--max-length", str(args.max_length), "--dtype", "fp32", "--threads", str(args.threads),
                     "--no-progress", "--on-error", "skip", "--out", str(scores)]  # fmt: skip
        if not (scores / "scores.jsonl").is_file():
            seconds[f"rescore_{dtype}"] = round(_cli(score_cmd, args.threads), 1)
        commands[dtype] = {"train": "dpocheck " + " ".join(cmd), "rescore": "dpocheck " + " ".join(score_cmd)}
        runs[dtype] = out
    return analyze(runs, work, commands, seconds, args)


def _metrics(run: Path) -> list[dict]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r and "train_runtime" not in r]


def analyze(runs: dict[str, Path], work: Path, commands: dict, seconds: dict, args: argparse.Namespace) -> dict:
    from dpocheck.theory import in_undesirable_space

    m = {d: _metrics(runs[d]) for d in runs}
    steps = min(len(m["fp32"]), len(m["bf16"]))
    loss_gap = [abs(m["bf16"][k]["loss"] - m["fp32"][k]["loss"]) for k in range(steps)]
    manifests = {d: json.loads((runs[d] / "manifest.json").read_text()) for d in runs}
    last_step = manifests["bf16"]["result"]["steps"]
    evals = {d: {r["index"]: r for r in read_jsonl(runs[d] / "eval" / f"step-{last_step}.jsonl")} for d in runs}
    refs = {d: {r["index"]: r for r in read_jsonl(runs[d] / "reference" / "scores.jsonl")} for d in runs}
    rescored = {d: {r["index"]: r for r in read_jsonl(work / f"final-{d}-scored-fp32" / "scores.jsonl")} for d in runs}
    common = sorted(set(evals["bf16"]) & set(rescored["bf16"]) & set(refs["fp32"]))
    out: dict = {"pairs": len(common), "steps": steps, "last_eval_step": last_step}
    out["step0"] = {
        d: {"first_loss": m[d][0]["loss"], "minus_log2": m[d][0]["loss"] - math.log(2),
            "exactly_log2": m[d][0]["loss"] == math.log(2)} for d in runs
    }  # fmt: skip
    out["loss_gap"] = {**_stats(loss_gap), "per_step": loss_gap, "fp32": [r["loss"] for r in m["fp32"][:steps]],
                       "bf16": [r["loss"] for r in m["bf16"][:steps]]}  # fmt: skip
    for conv in ("sum", "mean"):
        d_theta = {d: [_delta(evals[d][i], conv) for i in common] for d in runs}
        d_fp32 = {d: [_delta(rescored[d][i], conv) for i in common] for d in runs}
        ref32 = [_delta(refs["fp32"][i], conv) for i in common]
        ref16 = [_delta(refs["bf16"][i], conv) for i in common]
        in_u_bf16_run = [bool(in_undesirable_space(a, b)) for a, b in zip(d_theta["bf16"], ref16, strict=True)]
        in_u_fp32_view = [bool(in_undesirable_space(a, b)) for a, b in zip(d_fp32["bf16"], ref32, strict=True)]
        in_u_fp32_run = [bool(in_undesirable_space(a, b)) for a, b in zip(d_theta["fp32"], ref32, strict=True)]
        out[conv] = {
            "delta_theta_error_bf16_run_vs_fp32_rescoring": _stats(
                [a - b for a, b in zip(d_theta["bf16"], d_fp32["bf16"], strict=True)]
            ),
            "delta_theta_error_fp32_run_vs_fp32_rescoring": _stats(
                [a - b for a, b in zip(d_theta["fp32"], d_fp32["fp32"], strict=True)]
            ),
            "delta_ref_error_bf16_vs_fp32": _stats([a - b for a, b in zip(ref16, ref32, strict=True)]),
            "delta_theta_bf16_policy_vs_fp32_policy_fp32_scored": _stats(
                [a - b for a, b in zip(d_fp32["bf16"], d_fp32["fp32"], strict=True)]
            ),
            "share_in_u": {
                "fp32_run": float(np.mean(in_u_fp32_run)),
                "bf16_run_as_reported": float(np.mean(in_u_bf16_run)),
                "bf16_policy_read_in_fp32": float(np.mean(in_u_fp32_view)),
            },
            "movement_bf16_reading_over_fp32_reading": float(
                np.abs(np.subtract(d_theta["bf16"], ref16)).sum() / np.abs(np.subtract(d_fp32["bf16"], ref32)).sum()
            ),
            "in_u_flips_bf16_reading_vs_fp32_reading": int(
                sum(a != b for a, b in zip(in_u_bf16_run, in_u_fp32_view, strict=True))
            ),  # fmt: skip
        }
    out["bf16_merge"] = bf16_merge_loss(runs["bf16"], manifests["bf16"])
    out["bf16_full_fine_tuning_underflow"] = underflow(threads=args.threads)
    out["layout_effect"] = layout_effect(args.pairs, args.max_length)
    out["seconds_per_step"] = {
        d: round(manifests[d]["result"]["train_seconds_this_session"] / max(manifests[d]["result"]["steps"], 1), 2)
        for d in runs
    }
    out["precision"] = {d: manifests[d]["precision"] for d in runs}
    out["lora"] = {k: manifests["bf16"]["lora"][k] for k in ("r", "alpha", "target_modules", "trainable_parameters")}
    out["settings"] = {k: getattr(args, k) for k in ("pairs", "max_length", "beta", "epochs", "batch_size", "lr",
                                                     "eval_every", "threads")}  # fmt: skip
    out["commands"] = commands
    out["process_seconds"] = seconds
    note = "2-core Xeon (avx512_bf16, amx_bf16) shared with other jobs; times are noisy"
    out["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "note": note}
    write_text_atomic(RESULTS, json.dumps(out, indent=1) + "\n")
    return out


def bf16_merge_loss(run: Path, manifest: dict) -> dict:
    """What a bf16 merge would lose: among the adapted weights of the bf16 run's merged fp32 ``final/``, the share
    whose update vanishes when rounded to bf16 (bf16(W + scale·B·A) == W, the bf16 base weight)."""
    import torch
    from safetensors.torch import load_file

    from dpocheck.llm.models import load_model

    base = load_model(None, dtype="bf16", device="cpu", progress=False).model.state_dict()
    merged = load_file(str(run / "final" / "model.safetensors"))
    targets = tuple(manifest["lora"]["target_modules"])
    changed = vanished = 0
    for name, w in merged.items():
        if name.rsplit(".", 2)[-2] not in targets or name not in base:
            continue
        b = base[name]
        moved = w != b.float()
        changed += int(moved.sum())
        vanished += int((moved & (w.to(torch.bfloat16) == b)).sum())
    return {"weights_moved_fp32": changed, "moved_weights_lost_in_a_bf16_merge": vanished,
            "share_lost": vanished / max(changed, 1)}  # fmt: skip


def layout_effect(n: int = 32, max_length: int = 256) -> dict:
    """Why a bf16 run computes one pair per forward: the same weights score the first ``n`` HH pairs in the scorer's
    token-budget batches (4096 tokens) and one pair per forward; |Δ| of the summed log-probs and of δ, per dtype."""
    from dpocheck.llm.data.load import default_data_dir, load_pairs
    from dpocheck.llm.models import load_model
    from dpocheck.llm.scoring.runner import score_pairs
    from dpocheck.llm.scoring.settings import ScoreSettings

    pairs = load_pairs(str(default_data_dir() / DATA), "auto", limit=n, prompt_style="chat", on_error="skip").pairs
    out: dict = {"pairs": len(pairs), "max_length": max_length}
    for dtype in ("fp32", "bf16"):
        loaded = load_model(None, dtype=dtype, device="cpu", progress=False)
        rows = {}
        for tokens in (4096, 1):
            sset = ScoreSettings(max_length=max_length, batch_tokens=tokens, chat_template="auto", dtype=dtype)
            rows[tokens] = {r["index"]: r for r in score_pairs(loaded.model, loaded.tokenizer, pairs, sset)[0]}
        logp = [rows[4096][i][k] - rows[1][i][k] for i in rows[1] for k in ("chosen_logp_sum", "rejected_logp_sum")]
        delta = [_delta(rows[4096][i], "sum") - _delta(rows[1][i], "sum") for i in rows[1]]
        out[dtype] = {"logp_sum": _stats(logp), "delta_sum": _stats(delta)}
    return out


def underflow(steps: int = 3, lr: float = 1e-6, threads: int = 1) -> dict:
    """Why ``dpocheck train`` refuses bf16 *full* fine-tuning: the share of SmolLM2's weights that AdamW changes in
    ``steps`` steps at ``lr`` with bf16 weights against fp32 weights (dpocheck's trainer, 2 HH pairs a step)."""
    import copy

    import torch
    from transformers.trainer_callback import PrinterCallback

    from dpocheck.llm.data.load import default_data_dir, load_pairs
    from dpocheck.llm.models import load_model
    from dpocheck.llm.scoring.encode import encode_pairs
    from dpocheck.llm.scoring.runner import score_pairs
    from dpocheck.llm.scoring.settings import ScoreSettings
    from dpocheck.llm.train import build_training_rows
    from dpocheck.llm.train.precision import TrainingPrecision
    from dpocheck.llm.train.run import build_trainer
    from dpocheck.llm.train.settings import TrainSettings
    from dpocheck.llm.train.trainer import trainable_model

    torch.set_num_threads(threads)
    out = {"steps": steps, "lr": lr}
    pairs = load_pairs(str(default_data_dir() / DATA), "auto", limit=2 * steps, prompt_style="chat", on_error="skip")
    pairs = pairs.pairs
    for dtype in ("fp32", "bf16"):
        loaded = load_model(None, dtype=dtype, device="cpu", progress=False)
        sset = ScoreSettings(max_length=128, batch_tokens=1, chat_template="auto", dtype=dtype)
        ref, _ = score_pairs(loaded.model, loaded.tokenizer, pairs, sset)
        enc = encode_pairs(loaded.tokenizer, pairs, sset, True)
        rows = build_training_rows(enc.encoded, ref, "dpo", 0.1)
        before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
        with tempfile.TemporaryDirectory() as work:
            s = TrainSettings(data=work, loss="dpo", beta=0.1, out=work, max_steps=steps, lr=lr, batch_size=2,
                              save_steps=1000, progress=False)  # fmt: skip
            precision = TrainingPrecision(dtype, dtype == "bf16", 2, 1, 1)
            trainer = build_trainer(trainable_model(copy.deepcopy(loaded.model)), loaded.tokenizer, rows, s,
                                    Path(work), precision)  # fmt: skip
            trainer.remove_callback(PrinterCallback)
            trainer.train()
        changed = total = 0
        for n, p in trainer.model.named_parameters():
            changed += int((p.detach() != before[n]).sum())
            total += p.numel()
        out[dtype] = {"weights": total, "changed": changed, "share_changed": changed / total}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None, help="working folder (kept; rerunning reuses finished runs)")
    result = study(ap.parse_args())
    print(json.dumps({k: result[k] for k in ("step0", "sum", "mean", "seconds_per_step")}, indent=1))


if __name__ == "__main__":
    main()
