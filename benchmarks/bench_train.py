"""Benchmark: ``dpocheck train --loss dpo`` against TRL 1.16 ``DPOTrainer`` at its strongest, on the CPU.

Same model (SmolLM2-135M-Instruct GGUF, de-quantised), same pairs (the first N HH-RLHF harmless-base test pairs,
chat template), same token ids (dpocheck's ``encode_pair`` rows: TRL is handed exactly those
``prompt_ids``/``chosen_ids``/``rejected_ids``), same batch, learning rate, seed and threads, no gradient
checkpointing. Every side runs in its own subprocess (so its peak RSS is its own); ``--repeats`` rounds run the
sides interleaved (round 1: every side, round 2: every side, …), so a load change on the shared machine hits all
sides alike. Sides (``--sides``, default all):

* ``dpocheck`` — :func:`dpocheck.llm.train.run.train` in fp32 (what the command runs): the reference log-probs
  precomputed by the packed scorer (``reference_seconds``); each step runs the policy once per pair on one packed
  row ``prompt | chosen | rejected``; the U metrics of every step are timed inside the step (``metrics_share``);
  the whole-set eval runs at step 0 and after the last step (``eval_seconds``);
* ``trl-precompute`` — ``DPOTrainer`` (sigmoid loss) with ``precompute_ref_log_probs=True``, TRL's strongest CPU
  configuration: one reference pass over the data before training (its ``_precompute_ref_logps`` on the rows,
  timed: ``reference_seconds``), no reference model held; each step runs the policy on chosen and rejected
  sequences, concatenated and padded (the prompt twice);
* ``trl-ref`` — ``DPOTrainer`` with a reference model passed in (a second fp32 copy), run at every step;
* ``dpocheck-lora``, ``dpocheck-bf16-lora`` and ``dpocheck-bf16-lora-gc`` — ``dpocheck train --lora-r 16`` in fp32,
  the same with ``--dtype bf16`` (a frozen bf16 base with LoRA adapters on the attention and MLP projections;
  ``final/`` is the merged model), and that with ``--gradient-checkpointing``: LoRA alone, bf16 weights, and the
  memory-lean setting, each against fp32 full fine-tuning. bf16 *full* fine-tuning is not a side: ``dpocheck
  train`` refuses it (pure-bf16 Adam updates at lr 1e-5 round away; docs/bf16.md).

Reported per side (steps after ``--warmup``): the **median** step wall time, the mean and median process CPU time
(all threads), **end-to-end** wall time (from before the model loads to the end of training: each side's
reference precompute included and, for dpocheck, the two whole-set evals and the final save), peak RSS, sequence
tokens/s, and the losses of every step side by side. ``time_ratio_vs_dpocheck`` = the side's time / dpocheck's
(fp32) time, per round and as the median and min–max over the rounds: above 1, dpocheck is that many times faster;
for the bf16/LoRA sides, below 1 is their speed-up over fp32 full fine-tuning. Model FLOP/s against the fp32 and
bf16 matmul peaks measured in the same run (``torch.matmul`` of 2048², best of 6, same threads), with the formula
in the JSON:

* FLOPs of a step = 3 × forward FLOPs (forward + backward ≈ 3 forwards) of the tokens the side runs;
  forward FLOPs = 2 × decoder-layer parameters × tokens + 2 × head parameters × tokens given to the head +
  4 × layers × hidden × attended query–key pairs. dpocheck runs the prompt once and the head on scored positions
  only; TRL runs the prompt twice (once with each response) and the head on every position; ``trl-ref`` adds one
  reference forward. ``useful`` = the dpocheck FLOPs for every side (the work the step needs); LoRA sides are
  counted with the same 3× (their frozen weights need no weight gradient, so ≈ 2× is their real work).

    python benchmarks/bench_train.py [--pairs 16] [--steps 5] [--batch-size 2] [--threads 2] [--repeats 3]

Writes benchmarks/results/bench_train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_llm_score import matmul_peak_gflops  # noqa: E402  (the one matmul-peak measurement)

SIDES = ("dpocheck", "trl-precompute", "trl-ref", "dpocheck-lora", "dpocheck-bf16-lora", "dpocheck-bf16-lora-gc")
SCALE_SIDES = {  # TrainSettings options of the LoRA / bf16 sides
    "dpocheck-lora": {"lora_r": 16},
    "dpocheck-bf16-lora": {"dtype": "bf16", "lora_r": 16},
    "dpocheck-bf16-lora-gc": {"dtype": "bf16", "lora_r": 16, "gradient_checkpointing": True},
}


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
    """Wall and process-CPU seconds of each step; median wall, mean and median CPU over the steps after ``warmup``."""
    wall, cpu = timer.seconds[warmup:], timer.cpu_seconds[warmup:]
    return {
        "step_seconds": timer.seconds,
        "step_cpu_seconds": timer.cpu_seconds,
        "median_step_seconds": statistics.median(wall),
        "min_step_seconds": min(wall),
        "mean_step_cpu_seconds": statistics.fmean(cpu),
        "median_step_cpu_seconds": statistics.median(cpu),
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


# ------------------------------------------------------------------------------------------------ the sides
def run_dpocheck(a: argparse.Namespace, data: Path, work: Path, side: str) -> dict:
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
        out=str(work / side),
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
        **SCALE_SIDES.get(side, {}),
    )
    t0 = time.perf_counter()
    result = train(s, callbacks=[timer])
    total = time.perf_counter() - t0
    rows = [r for r in read_metrics(s.out) if "loss" in r and "train_runtime" not in r]
    warm = metric_seconds[a.warmup :]
    out = {
        "losses": [r["loss"] for r in rows],
        **step_stats(timer, a.warmup),
        "metrics_seconds_per_step": sum(warm) / max(1, len(warm)),
        "eval_seconds": eval_seconds,
        "reference_seconds": result.manifest["reference"].get("seconds"),
        "end_to_end_seconds": total,
    }
    if side == "dpocheck":
        out["rows"] = _token_rows(s)
    return out


def _token_rows(s) -> list[dict]:
    """The training rows' token ids (the same for TRL), rebuilt from the reference scores just written."""
    from dpocheck.llm.data.load import load_pairs
    from dpocheck.llm.models import load_tokenizer
    from dpocheck.llm.train.run import score_settings, training_rows
    from dpocheck.llm.train.settings import resolve_loss, resolve_model_path

    tok = load_tokenizer(resolve_model_path(s.model))
    pairs = load_pairs(s.data, prompt_style="chat").pairs
    ref = {}
    for line in (Path(s.out) / "reference" / "scores.jsonl").read_text().splitlines():
        r = json.loads(line)
        ref[r["index"]] = r
    _, params = resolve_loss(s)
    rows = training_rows(tok, pairs, ref, params, s, True, score_settings(s, s.max_length))
    return [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows]


def run_trl(a: argparse.Namespace, rows: list[dict], work: Path, side: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from dpocheck.llm.models import load_model
    from dpocheck.llm.train.settings import resolve_model_path
    from dpocheck.llm.train.trainer import CHECKPOINTING_FIELD, trainable_model

    torch.set_num_threads(a.threads)
    precompute = side == "trl-precompute"
    t0 = time.perf_counter()
    path = resolve_model_path(a.model)
    policy = load_model(path, dtype="fp32", device="cpu")
    model = trainable_model(policy.model)
    ref = None
    if not precompute:
        ref = load_model(path, dtype="fp32", device="cpu").model
        ref.eval()
    config = DPOConfig(
        output_dir=str(work / side),
        beta=a.beta,
        learning_rate=a.lr,
        per_device_train_batch_size=a.batch_size,
        max_steps=a.steps,
        bf16=False,
        fp16=False,
        max_length=None,
        seed=a.seed,
        data_seed=a.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        precompute_ref_log_probs=precompute,
        **{CHECKPOINTING_FIELD: False},
    )
    text = Dataset.from_dict(
        {"prompt": ["x"] * len(rows), "chosen": [" a"] * len(rows), "rejected": [" b"] * len(rows)}
    )
    trainer = DPOTrainer(model=model, ref_model=ref, args=config, train_dataset=text, processing_class=policy.tokenizer)
    # exactly dpocheck's token ids; with precompute, TRL's reference pass over them (what __init__ runs on the
    # dataset it is given; it ran above on the tiny placeholder rows, a negligible part of the end-to-end time)
    t_ref = time.perf_counter()
    train_rows = Dataset.from_list(rows)
    if precompute:
        train_rows = trainer._precompute_ref_logps(train_rows, "train", a.batch_size)
    reference_seconds = time.perf_counter() - t_ref if precompute else None
    trainer.train_dataset = train_rows
    trainer.remove_callback(PrinterCallback)
    timer = _step_timer()
    trainer.add_callback(timer)
    trainer.train()
    total = time.perf_counter() - t0
    return {
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        **step_stats(timer, a.warmup),
        "reference_seconds": reference_seconds,
        "end_to_end_seconds": total,
    }


def _child(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    work = Path(a.work)
    load_before = os.getloadavg()[0]
    if a.child.startswith("dpocheck"):
        out = run_dpocheck(a, Path(a.data), work, a.child)
    else:
        out = run_trl(a, json.loads((work / "rows.json").read_text()), work, a.child)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["load_average_1min"] = [load_before, os.getloadavg()[0]]  # the machine's load around this side's run
    (work / f"{a.child}-{a.round}.json").write_text(json.dumps(out))


# ------------------------------------------------------------------------------------------------ FLOPs
def flop_model(model_path: str | None, rows: list[dict]) -> dict:
    """Forward FLOPs per pair (mean over ``rows``) of dpocheck's packed row and of TRL's two padded sequences."""
    import torch
    from transformers import AutoModelForCausalLM

    from dpocheck.llm.models import load_config
    from dpocheck.llm.train.settings import resolve_model_path

    cfg = load_config(resolve_model_path(model_path))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    layer = sum(p.numel() for p in model.model.layers.parameters())
    head = model.get_output_embeddings().weight.numel()
    attn = 4.0 * cfg.num_hidden_layers * cfg.hidden_size
    packed = trl = 0.0
    for r in rows:
        p, c, j = len(r["prompt_ids"]), len(r["chosen_ids"]), len(r["rejected_ids"])
        attended = p * (p + 1) / 2 + sum(n * p + n * (n + 1) / 2 for n in (c, j))
        packed += 2.0 * layer * (p + c + j) + 2.0 * head * (c + j) + attn * attended
        trl_attended = sum((p + n) * (p + n + 1) / 2 for n in (c, j))
        trl += 2.0 * (layer + head) * (2 * p + c + j) + attn * trl_attended
    return {
        "layer_parameters": layer,
        "head_parameters": head,
        "dpocheck_forward_flops_per_pair": packed / len(rows),
        "trl_forward_flops_per_pair": trl / len(rows),
    }


def step_flops(side: str, flops: dict, batch_size: int) -> tuple[float, float]:
    """(FLOPs of one step as the side runs it, the useful FLOPs of the step) — see the module docstring."""
    useful = 3.0 * flops["dpocheck_forward_flops_per_pair"] * batch_size
    if side.startswith("dpocheck"):
        return useful, useful
    trl = flops["trl_forward_flops_per_pair"] * batch_size
    return (4.0 if side == "trl-ref" else 3.0) * trl, useful


# ------------------------------------------------------------------------------------------------ report
def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "per_round": values}


def summarise(res: dict, sides: list[str], a: argparse.Namespace, flops: dict, peaks: dict, seq_tokens: float) -> dict:
    """Per side: the round medians; ratios against dpocheck per round with their spread; FLOP/s vs the peaks."""
    out: dict = {}
    base = res["dpocheck"]
    for side in sides:
        runs = res[side]
        run_flops, useful = step_flops(side, flops, a.batch_size)
        peak = peaks["bf16" if "bf16" in side else "fp32"]
        med = statistics.median(r["median_step_seconds"] for r in runs)
        s = {
            "rounds": runs,
            "median_step_seconds": med,
            "median_step_cpu_seconds": statistics.median(r["median_step_cpu_seconds"] for r in runs),
            "end_to_end_seconds": statistics.median(r["end_to_end_seconds"] for r in runs),
            "peak_rss_gb": max(r["peak_rss_gb"] for r in runs),
            "sequence_tokens_per_second": a.batch_size * seq_tokens / med,
            "step_gflops": run_flops / 1e9,
            "gflops_per_second": run_flops / med / 1e9,
            "share_of_matmul_peak": run_flops / med / 1e9 / peak,
            "useful_share_of_matmul_peak": useful / med / 1e9 / peak,
            "peak_used": "bf16" if "bf16" in side else "fp32",
        }
        if side != "dpocheck":
            s["time_ratio_vs_dpocheck"] = {
                key: _spread([r[key] / b[key] for r, b in zip(runs, base, strict=False)])
                for key in ("median_step_seconds", "median_step_cpu_seconds", "end_to_end_seconds")
            }
            s["max_loss_difference_vs_dpocheck"] = max(
                abs(x - y)
                for r, b in zip(runs, base, strict=False)
                for x, y in zip(r["losses"], b["losses"], strict=False)
            )
        out[side] = s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per side (the first --warmup not timed)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="rounds; each runs every side once, in order")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, dpocheck first (of {', '.join(SIDES)})")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--model", default=None, help="default: the SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--data", default=None, help="default: the first --pairs HH-RLHF harmless-base test pairs")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_train.json"))
    ap.add_argument("--child", choices=SIDES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a)
        return
    sides = [s.strip() for s in a.sides.split(",") if s.strip()]
    bad = [s for s in sides if s not in SIDES]
    if bad or not sides or sides[0] != "dpocheck":
        ap.error(f"--sides: dpocheck first, then any of {SIDES}; got {a.sides!r}")
    import torch

    torch.set_num_threads(a.threads)
    peaks = {"fp32": matmul_peak_gflops("fp32"), "bf16": matmul_peak_gflops("bf16")}
    print(f"matmul peak ({a.threads} threads): fp32 {peaks['fp32']:.1f}, bf16 {peaks['bf16']:.1f} GFLOP/s", flush=True)
    res: dict[str, list[dict]] = {s: [] for s in sides}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = Path(a.data) if a.data else write_pairs(a.pairs, work / "pairs.jsonl")
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "TOKENIZERS_PARALLELISM": "false"}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        argv = sys.argv[1:]
        for r in range(a.repeats):
            for side in sides:
                print(f"round {r + 1}/{a.repeats}: {side}", flush=True)
                rwork = work / f"round-{r}"
                rwork.mkdir(exist_ok=True)
                if not side.startswith("dpocheck"):
                    (rwork / "rows.json").write_text(json.dumps(rows))
                cmd = [sys.executable, __file__, *argv, "--work", str(rwork), "--data", str(data)]
                subprocess.run([*cmd, "--child", side, "--round", str(r)], env=env, check=True)
                res[side].append(json.loads((rwork / f"{side}-{r}.json").read_text()))
                if side == "dpocheck":
                    rows = res[side][-1].pop("rows")
    seq_tokens = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows) / len(rows)
    flops = flop_model(a.model, rows)
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": a.threads,
            "note": load_note(res),
        },
        "settings": {k: getattr(a, k) for k in ("pairs", "steps", "warmup", "batch_size", "beta", "lr", "seed")},
        "repeats": a.repeats,
        "matmul_peak_gflops": peaks,
        "flops": {
            **flops,
            "formula": "step = 3 x forward; forward = 2 x layer params x tokens + 2 x head params x head tokens + "
            "4 x layers x hidden x attended query-key pairs; dpocheck: prompt once, head on scored positions; TRL: "
            "prompt twice, head on every position; trl-ref: + 1 reference forward; useful = dpocheck's FLOPs",
        },
        "mean_sequence_tokens_per_pair": seq_tokens,
        "sides": summarise(res, sides, a, flops, peaks, seq_tokens),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    _print(report, sides)
    print(f"wrote {a.out}")


def load_note(res: dict[str, list[dict]]) -> str:
    """What the machine's 1-minute load average was around the sides (recorded before and after each)."""
    loads = [x for rounds in res.values() for r in rounds for x in r.get("load_average_1min", [])]
    span = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "not recorded"
    return (
        f"one side at a time; 1-minute load average {span} before/after the sides (each side's own threads "
        "included: a load near --threads means nothing else ran)"
    )


def _print(report: dict, sides: list[str]) -> None:
    s = report["sides"]
    first = {side: s[side]["rounds"][0]["losses"] for side in sides}
    print("step " + "".join(f"{side:>22}" for side in sides))
    for i in range(len(first["dpocheck"])):
        print(
            f"{i + 1:>4} " + "".join(f"{first[side][i]:>22.7f}" if i < len(first[side]) else " " * 22 for side in sides)
        )
    for side in sides:
        x = s[side]
        line = (
            f"{side:<22} median step {x['median_step_seconds']:.3f} s, CPU {x['median_step_cpu_seconds']:.3f} s, "
            f"end to end {x['end_to_end_seconds']:.1f} s, peak RSS {x['peak_rss_gb']:.2f} GB, "
            f"{x['gflops_per_second']:.1f} GFLOP/s = {100 * x['share_of_matmul_peak']:.0f} % of the "
            f"{x['peak_used']} peak (useful {100 * x['useful_share_of_matmul_peak']:.0f} %)"
        )
        if "time_ratio_vs_dpocheck" in x:
            v = x["time_ratio_vs_dpocheck"]
            line += "; time / dpocheck's: " + ", ".join(
                f"{k.replace('_seconds', '').replace('median_', '')} ×{v[k]['median']:.2f} "
                f"({v[k]['min']:.2f}–{v[k]['max']:.2f})"
                for k in v
            )
            line += f"; max |Δloss| {x['max_loss_difference_vs_dpocheck']:.1e}"
        print(line)


if __name__ == "__main__":
    main()
