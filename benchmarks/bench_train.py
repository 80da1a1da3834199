"""Benchmark: one optimizer step of ``dpocheck train --loss dpo`` vs plain TRL 1.16 ``DPOTrainer``, on the CPU.

Same model (SmolLM2-135M-Instruct GGUF, de-quantised to fp32), same pairs (the first N HH-RLHF harmless-base test
pairs, chat template), same token ids (dpocheck's ``encode_pair`` rows: TRL is handed exactly those
``prompt_ids``/``chosen_ids``/``rejected_ids``), same batch, learning rate, seed, threads and precision (fp32,
no gradient checkpointing). Each side runs in its own subprocess (so peak RSS is its own):

1. **dpocheck** — :func:`dpocheck.llm.train.run.train` (what the command runs): the reference log-probs come
   precomputed from the packed scorer (timed separately: ``reference_seconds``); each step runs the policy once
   per pair on one packed row ``prompt | chosen | rejected``; the U metrics of every step (share in U, ranking /
   TRL accuracy, gradient weights, C3/C4) are timed inside the step (``metrics_share``). The whole-set eval runs
   only at step 0 and after the last step (outside the timed steps; its time is reported as ``eval_seconds``).
2. **TRL** — ``DPOTrainer`` (``loss_type`` sigmoid) with a reference model passed in (a second fp32 copy): every
   step runs the reference and the policy on chosen and rejected sequences, concatenated and padded (the prompt
   twice each time).

Timing: wall time and process CPU time (all threads) of each optimizer step (``on_step_begin`` → ``on_step_end``),
the first ``--warmup`` steps dropped. On a machine shared with other jobs the wall time swings with their load;
the CPU time of the process does much less, so its ratio is the steadier speed-up. Throughput is *sequence
tokens per second*: B × the mean tokens of a pair's two full sequences (prompt + response, both sides) over the
mean step time — the same numerator for both. The loss of every step is printed side by side (both start at
log 2; the issue's bound is ≤ 1e-4 apart).

    python benchmarks/bench_train.py [--pairs 16] [--steps 5] [--batch-size 2] [--threads 2]

Writes benchmarks/results/bench_train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []
            self._t = self._c = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._t)
            self.cpu_seconds.append(time.process_time() - self._c)

    return StepTimer()


def step_stats(timer, warmup: int) -> dict:
    """Wall and process-CPU seconds of each step; means (and the wall minimum) over the steps after ``warmup``."""
    wall, cpu = timer.seconds[warmup:], timer.cpu_seconds[warmup:]
    return {
        "step_seconds": timer.seconds,
        "step_cpu_seconds": timer.cpu_seconds,
        "mean_step_seconds": sum(wall) / len(wall),
        "min_step_seconds": min(wall),
        "mean_step_cpu_seconds": sum(cpu) / len(cpu),
    }


def write_pairs(n: int, path: Path) -> Path:
    """The first ``n`` HH-RLHF harmless-base test records, as a JSONL file."""
    import gzip

    from dpocheck.llm.data.load import default_data_dir

    src = default_data_dir() / "hh-rlhf-harmless-base-test.jsonl.gz"
    with gzip.open(src, "rt", encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(n)]
    path.write_text("".join(lines))
    return path


def run_dpocheck(a: argparse.Namespace, data: Path, work: Path) -> dict:
    from dpocheck.llm.train import callback as cb_mod
    from dpocheck.llm.train import trainer as tr_mod
    from dpocheck.llm.train.run import read_metrics, train
    from dpocheck.llm.train.settings import TrainSettings

    metric_seconds: list[float] = []
    eval_seconds: list[float] = []
    store, evaluate = tr_mod.PreferenceTrainer._store_metrics, cb_mod.UndesirableSpaceCallback.evaluate

    def timed_store(self, *args, **kwargs):
        t = time.perf_counter()
        store(self, *args, **kwargs)
        metric_seconds.append(time.perf_counter() - t)

    def timed_eval(self, *args, **kwargs):
        t = time.perf_counter()
        out = evaluate(self, *args, **kwargs)
        eval_seconds.append(time.perf_counter() - t)
        return out

    tr_mod.PreferenceTrainer._store_metrics = timed_store
    cb_mod.UndesirableSpaceCallback.evaluate = timed_eval
    timer = _step_timer()
    s = TrainSettings(
        data=str(data),
        model=a.model,
        out=str(work / "dpocheck"),
        loss="dpo",
        beta=a.beta,
        max_steps=a.steps,
        lr=a.lr,
        batch_size=a.batch_size,
        eval_every=10**9,
        save_steps=10**9,
        seed=a.seed,
        max_length=a.max_length,
        threads=a.threads,
        progress=False,
    )
    t0 = time.perf_counter()
    result = train(s, callbacks=[timer])
    total = time.perf_counter() - t0
    rows = [r for r in read_metrics(s.out) if "loss" in r and "train_runtime" not in r]
    manifest = result.manifest
    return {
        "losses": [r["loss"] for r in rows],
        **step_stats(timer, a.warmup),
        "metrics_seconds_per_step": sum(metric_seconds[a.warmup :]) / max(1, len(metric_seconds[a.warmup :])),
        "eval_seconds": eval_seconds,
        "reference_seconds": manifest["reference"].get("seconds"),
        "total_seconds": total,
        "rows": _token_rows(s, work),
    }


def _token_rows(s, work: Path) -> list[dict]:
    """The training rows' token ids (the same for TRL), rebuilt from the reference scores just written."""
    from dpocheck.llm.data.load import load_pairs
    from dpocheck.llm.models import load_tokenizer
    from dpocheck.llm.train.run import training_rows
    from dpocheck.llm.train.settings import resolve_loss, resolve_model_path

    tok = load_tokenizer(resolve_model_path(s.model))
    pairs = load_pairs(s.data, prompt_style="chat").pairs
    ref = {}
    for line in (Path(s.out) / "reference" / "scores.jsonl").read_text().splitlines():
        r = json.loads(line)
        ref[r["index"]] = r
    _, params = resolve_loss(s)
    rows = training_rows(tok, pairs, ref, params, s, True)
    return [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows]


def run_trl(a: argparse.Namespace, rows: list[dict], work: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from dpocheck.llm.models import load_model
    from dpocheck.llm.train.settings import resolve_model_path
    from dpocheck.llm.train.trainer import trainable_model

    torch.set_num_threads(a.threads)
    path = resolve_model_path(a.model)
    policy = load_model(path, dtype="fp32", device="cpu")
    ref = load_model(path, dtype="fp32", device="cpu").model
    model = trainable_model(policy.model)
    ref.eval()
    config = DPOConfig(
        output_dir=str(work / "trl"),
        beta=a.beta,
        learning_rate=a.lr,
        per_device_train_batch_size=a.batch_size,
        max_steps=a.steps,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        max_length=None,
        seed=a.seed,
        data_seed=a.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    text = Dataset.from_dict(
        {"prompt": ["x"] * len(rows), "chosen": [" a"] * len(rows), "rejected": [" b"] * len(rows)}
    )
    trainer = DPOTrainer(model=model, ref_model=ref, args=config, train_dataset=text, processing_class=policy.tokenizer)
    trainer.train_dataset = Dataset.from_list(rows)  # exactly dpocheck's token ids
    trainer.remove_callback(PrinterCallback)
    timer = _step_timer()
    trainer.add_callback(timer)
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    return {
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        **step_stats(timer, a.warmup),
        "total_seconds": total,
    }


def _child(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    work = Path(a.work)
    if a.child == "dpocheck":
        out = run_dpocheck(a, Path(a.data), work)
    else:
        out = run_trl(a, json.loads((work / "rows.json").read_text()), work)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    (work / f"{a.child}.json").write_text(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per side (the first --warmup not timed)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--model", default=None, help="default: the SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--data", default=None, help="default: the first --pairs HH-RLHF harmless-base test pairs")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_train.json"))
    ap.add_argument("--child", choices=("dpocheck", "trl"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = Path(a.data) if a.data else write_pairs(a.pairs, work / "pairs.jsonl")
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "TOKENIZERS_PARALLELISM": "false"}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        base = [sys.executable, __file__, *sys.argv[1:], "--work", str(work), "--data", str(data)]
        res = {}
        rows: list[dict] = []
        for side in ("dpocheck", "trl"):
            if side == "trl":
                rows = res["dpocheck"].pop("rows")
                (work / "rows.json").write_text(json.dumps(rows))
            subprocess.run([*base, "--child", side], env=env, check=True)
            res[side] = json.loads((work / f"{side}.json").read_text())
    d, t = res["dpocheck"], res["trl"]
    seq_tokens = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows) / len(rows)
    for side in (d, t):
        side["sequence_tokens_per_second"] = a.batch_size * seq_tokens / side["mean_step_seconds"]
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": a.threads},
        "settings": {k: getattr(a, k) for k in ("pairs", "steps", "warmup", "batch_size", "beta", "lr", "seed")},
        "dpocheck": d,
        "trl": t,
        "speedup_step": t["mean_step_seconds"] / d["mean_step_seconds"],
        "speedup_step_min": t["min_step_seconds"] / d["min_step_seconds"],
        "speedup_step_cpu": t["mean_step_cpu_seconds"] / d["mean_step_cpu_seconds"],
        "metrics_share_of_step": d["metrics_seconds_per_step"] / d["mean_step_seconds"],
        "max_loss_difference": max(abs(x - y) for x, y in zip(d["losses"], t["losses"], strict=False)),
    }
    report["mean_sequence_tokens_per_pair"] = seq_tokens
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'step':>4} {'dpocheck loss':>14} {'TRL loss':>14} {'|diff|':>9}")
    for i, (x, y) in enumerate(zip(d["losses"], t["losses"], strict=False), start=1):
        print(f"{i:>4} {x:>14.7f} {y:>14.7f} {abs(x - y):>9.2e}")
    print(
        f"s/step (wall mean): dpocheck {d['mean_step_seconds']:.3f}, TRL {t['mean_step_seconds']:.3f} "
        f"(×{report['speedup_step']:.2f}); wall min ×{report['speedup_step_min']:.2f}; "
        f"CPU s/step: dpocheck {d['mean_step_cpu_seconds']:.3f}, TRL {t['mean_step_cpu_seconds']:.3f} "
        f"(×{report['speedup_step_cpu']:.2f}); sequence tokens/s dpocheck {d['sequence_tokens_per_second']:.0f}, "
        f"TRL {t['sequence_tokens_per_second']:.0f}; "
        f"U metrics {100 * report['metrics_share_of_step']:.4f} % of the step; "
        f"reference precompute {d['reference_seconds']} s, eval passes {[round(x, 2) for x in d['eval_seconds']]} s; "
        f"peak RSS dpocheck {d['peak_rss_gb']:.2f} GB, TRL {t['peak_rss_gb']:.2f} GB"
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
