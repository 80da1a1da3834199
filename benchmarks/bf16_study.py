"""Study: what bf16 scoring costs in verdicts (C2) against fp32 on the same weights, SmolLM2 on HH and AlpacaEval.

Four phases, each resumable (``all`` runs them in order):

1. ``verify``: today's fp32 scores of one planned batch of each data set (the batch plan of the full run, so the
   arithmetic is that of ``docs/real_scores``) against the stored ``docs/real_scores/{hh,alpacaeval}`` rows,
   byte for byte; records the largest |Δ|. Also records the module class and parameter dtype of the bf16 model
   (what "bf16" means on this CPU: plain ``nn.Linear`` with bf16 weights; the log-softmax upcast to fp32 in
   :func:`dpocheck.llm.scoring.kernels._scored_logps`).
2. ``score``: ``dpocheck score`` on the first ``--hh`` / ``--alpacaeval`` records in fp32 and in bf16, same
   settings as ``docs/real_scores`` (chat template auto, max-length 1024, batch-tokens 4096, packed, shard-pairs
   64, on-error skip) and ``--threads``; both dtypes share one batch plan, so they differ only in dtype. Each run
   is ``--resume``d, so killing and restarting the study loses at most one shard.
3. ``speed``: bf16/fp32 speed on the same two HH batches, the dtypes timed alternately (best of 3 rounds).
4. ``analyze``: per data set, the error distribution of bf16 − fp32 (summed and mean log-probs of both
   responses, δ_ref in both conventions), the share of pairs whose C2 verdict (``dpocheck.theory.violation_mask``)
   flips at each β of the grid with Wilson 95 % intervals, and the bf16/fp32 speed ratio (sequence tokens per
   second of the two runs, from their manifests). Δr*: AlpacaEval's soft preference logit(q) (the rows'
   ``delta_reward``, see :mod:`dpocheck.llm.data.load`); HH has none, so Δr* = 0 is ASSUMED and the verdict is the sign
   of δ_ref (then it does not depend on β). Writes ``benchmarks/results/bf16_study.json``.

    python benchmarks/bf16_study.py all --hh 500 --alpacaeval 200 --threads 1 [--work DIR]

The published numbers and the commands behind them are in docs/bf16.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from dpocheck._io import write_text_atomic  # noqa: E402

DATASETS = {
    "hh": "hh-rlhf-harmless-base-test.jsonl.gz",
    "alpacaeval": "alpacaeval-gpt4turbo-annotations.jsonl.gz",
}
BETAS = (0.01, 0.1, 0.5, 1.0, 2.5, 10.0)
SETTINGS = {  # those of docs/real_scores/*/manifest.json
    "--max-length": "1024",
    "--batch-tokens": "4096",
    "--chat-template": "auto",
    "--prefix-mode": "packed",
    "--shard-pairs": "64",
    "--on-error": "skip",
}
RESULT = REPO / "benchmarks" / "results" / "bf16_study.json"


def data_dir() -> Path:
    """The shared real data (the one rule: :func:`dpocheck.llm.data.load.default_data_dir`)."""
    from dpocheck.llm.data.load import default_data_dir

    return default_data_dir()


# ------------------------------------------------------------------------------------------------ statistics
def wilson(count: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """Wilson score 95 % interval of a share count/n (None for n = 0)."""
    if n == 0:
        return None
    p = count / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def error_summary(diff: np.ndarray) -> dict[str, float]:
    """median/p90/p99/max/mean of |Δ| and the signed mean of Δ = bf16 − fp32."""
    a = np.abs(diff)
    return {
        "n": int(diff.size),
        "median_abs": float(np.median(a)),
        "p90_abs": float(np.quantile(a, 0.9)),
        "p99_abs": float(np.quantile(a, 0.99)),
        "max_abs": float(a.max()),
        "mean_abs": float(a.mean()),
        "mean_signed": float(diff.mean()),
    }


# ------------------------------------------------------------------------------------------------ phase 1
def verify(threads: int) -> dict[str, Any]:
    """Today's fp32 scores of one batch of the full plan vs the stored docs/real_scores rows (byte for byte)."""
    import torch

    from dpocheck._io import read_jsonl
    from dpocheck.llm import data as data_mod
    from dpocheck.llm.models import load_model, pad_token_id
    from dpocheck.llm.scoring.encode import encode_pairs, plan_batches
    from dpocheck.llm.scoring.render import resolve_chat_template
    from dpocheck.llm.scoring.runner import _score_planned_batch
    from dpocheck.llm.scoring.settings import ScoreSettings

    torch.set_num_threads(threads)
    out: dict[str, Any] = {}
    loaded = load_model(None, dtype="fp32", device="cpu")
    use_tpl = resolve_chat_template(loaded.tokenizer, "auto")
    for name, file in DATASETS.items():
        stored = {r["index"]: r for r in read_jsonl(REPO / "docs" / "real_scores" / name / "scores.jsonl")}
        settings = ScoreSettings(dtype="fp32", shard_pairs=64, on_error="skip")
        load = data_mod.load_pairs(data_dir() / file, "auto", on_error="skip", prompt_style="chat")
        enc = encode_pairs(loaded.tokenizer, load.pairs, settings, use_tpl)
        batches = plan_batches(enc.encoded, settings.batch_tokens, settings.prefix_mode)
        batch = [b for b in batches if len(b) >= 5][0]
        rows, _ = _score_planned_batch(loaded.model, enc, batch, pad_token_id(loaded.tokenizer), settings)
        keys = ("chosen_logp_sum", "rejected_logp_sum", "chosen_logp_mean", "rejected_logp_mean")
        equal = sum(all(r[k] == stored[r["index"]][k] for k in keys) for r in rows)
        gap = max(abs(r[k] - stored[r["index"]][k]) for r in rows for k in ("chosen_logp_sum", "rejected_logp_sum"))
        out[name] = {"pairs": len(rows), "byte_equal": equal, "max_abs_diff_sum_logp": gap}
        print(f"verify {name}: {equal}/{len(rows)} rows byte-equal, max |Δ| {gap:.3g} nats", file=sys.stderr)
    del loaded
    bf = load_model(None, dtype="bf16", device="cpu")
    lin = bf.model.model.layers[0].mlp.down_proj
    cls = f"{type(lin).__module__}.{type(lin).__name__}"
    out["bf16_model"] = {"linear_class": cls, "weight": str(lin.weight.dtype)}
    return out


def speed(threads: int, rounds: int = 3) -> dict[str, Any]:
    """bf16/fp32 speed on the same HH batches, timed alternately (``rounds`` each, after a warm-up; best kept).

    The scoring runs' own tokens/s (in ``analyze``) ran minutes apart on a shared machine; this interleaved
    measurement sees the same load for both dtypes.
    """
    import torch

    from dpocheck.llm import data as data_mod
    from dpocheck.llm.models import load_model, pad_token_id
    from dpocheck.llm.scoring.encode import encode_pairs, plan_batches, real_cost
    from dpocheck.llm.scoring.render import resolve_chat_template
    from dpocheck.llm.scoring.runner import _score_planned_batch
    from dpocheck.llm.scoring.settings import ScoreSettings

    torch.set_num_threads(threads)
    models = {dt: load_model(None, dtype=dt, device="cpu") for dt in ("fp32", "bf16")}
    tok = models["fp32"].tokenizer
    settings = ScoreSettings(shard_pairs=64, on_error="skip")
    load = data_mod.load_pairs(data_dir() / DATASETS["hh"], "auto", limit=500, on_error="skip", prompt_style="chat")
    enc = encode_pairs(tok, load.pairs, settings, resolve_chat_template(tok, "auto"))
    batches = plan_batches(enc.encoded, settings.batch_tokens, settings.prefix_mode)
    chosen = [batches[len(batches) // 2], batches[-2]]  # a middle and a long batch
    tokens = sum(real_cost(enc.encoded[i]) for b in chosen for i in b)
    best = {dt: math.inf for dt in models}
    for r in range(rounds + 1):
        for dt, m in models.items():
            t = time.perf_counter()
            for b in chosen:
                _score_planned_batch(m.model, enc, b, pad_token_id(tok), settings)
            if r > 0:  # round 0 is the warm-up
                best[dt] = min(best[dt], time.perf_counter() - t)
    tps = {dt: tokens / best[dt] for dt in models}
    return {
        "tokens_per_round": tokens,
        "rounds": rounds,
        "best_seconds": best,
        "tokens_per_second": tps,
        "bf16_over_fp32": tps["bf16"] / tps["fp32"],
    }


# ------------------------------------------------------------------------------------------------ phase 2
def score_cmd(name: str, dtype: str, limit: int, work: Path, threads: int) -> list[str]:
    """The ``dpocheck score`` command of one (data set, dtype) run."""
    from dpocheck.llm.models import default_model_path

    cmd = [sys.executable, "-c", "import sys; from dpocheck.cli import main; sys.exit(main())", "score"]
    cmd += ["--model", str(default_model_path()), "--data", str(data_dir() / DATASETS[name])]
    cmd += ["--out", str(work / f"{name}-{dtype}"), "--dtype", dtype, "--limit", str(limit)]
    cmd += ["--threads", str(threads), "--resume", "--no-progress"]
    for k, v in SETTINGS.items():
        cmd += [k, v]
    return cmd


def score(limits: dict[str, int], work: Path, threads: int) -> list[str]:
    """Run (or finish) the four scoring runs; returns the commands."""
    work.mkdir(parents=True, exist_ok=True)
    cmds = []
    for name, limit in limits.items():
        for dtype in ("fp32", "bf16"):
            cmd = score_cmd(name, dtype, limit, work, threads)
            cmds.append(" ".join(cmd[3:]))
            t = time.perf_counter()
            subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            print(f"score {name} {dtype}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return cmds


# ------------------------------------------------------------------------------------------------ phase 3
def _speed(directory: Path) -> dict[str, float]:
    """Tokens per second of a finished scoring run (all its sessions)."""
    m = json.loads((directory / "manifest.json").read_text())
    sessions = m.get("sessions", [])
    seconds = sum(s["rank_0_seconds"] for s in sessions)
    tokens = m["counts"]["tokens_real"]
    return {"seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds if seconds else float("nan")}


def analyze_one(name: str, work: Path) -> dict[str, Any]:
    """Error distribution, C2 verdict flips per β (both conventions) and speed of one data set."""
    from dpocheck.llm.analysis.scores import read_scores
    from dpocheck.theory import violation_mask

    t32, t16 = read_scores(work / f"{name}-fp32"), read_scores(work / f"{name}-bf16")
    if not np.array_equal(t32.index, t16.index):
        raise RuntimeError(f"{name}: fp32 and bf16 runs hold different pairs")
    stored = read_scores(REPO / "docs" / "real_scores" / name)
    pos = np.searchsorted(stored.index, t32.index)
    out: dict[str, Any] = {"pairs": len(t32), "errors": {}, "verdict_flips": {}}
    out["fp32_today_vs_stored_max_abs_sum_logp"] = float(
        max(
            np.abs(t32.chosen_logp_sum - stored.chosen_logp_sum[pos]).max(),
            np.abs(t32.rejected_logp_sum - stored.rejected_logp_sum[pos]).max(),
        )
    )
    for norm in ("sum", "mean"):
        for which in ("chosen", "rejected"):
            out["errors"][f"{which}_logp_{norm}"] = error_summary(t16.log_pi(which, norm) - t32.log_pi(which, norm))
        out["errors"][f"delta_ref_{norm}"] = error_summary(t16.delta(norm) - t32.delta(norm))
    dr = t32.delta_reward
    has = ~np.isnan(dr)
    if has.all():
        out["delta_reward"] = "rows' delta_reward (AlpacaEval soft preference logit(q), dpocheck.llm.data.load)"
        d_r = dr
    else:
        out["delta_reward"] = "none in the data: Δr* = 0 ASSUMED, the C2 verdict is δ_ref ≤ 0 (β-independent)"
        d_r = np.zeros(len(t32))
    for norm in ("sum", "mean"):
        d32, d16 = t32.delta(norm), t16.delta(norm)
        rows = []
        for beta in BETAS:
            v32 = np.asarray(violation_mask(d32, d_r, beta))
            v16 = np.asarray(violation_mask(d16, d_r, beta))
            flips = int((v32 != v16).sum())
            n = len(v32)
            rows.append(
                {
                    "beta": beta,
                    "n": n,
                    "flips": flips,
                    "share": flips / n,
                    "wilson95": wilson(flips, n),
                    "violated_fp32": int(v32.sum()),
                    "violated_bf16": int(v16.sum()),
                    "fp32_to_bf16_newly_violated": int((v16 & ~v32).sum()),
                }
            )
        out["verdict_flips"][norm] = rows
    s32, s16 = _speed(work / f"{name}-fp32"), _speed(work / f"{name}-bf16")
    out["speed"] = {"fp32": s32, "bf16": s16, "bf16_over_fp32": s16["tokens_per_second"] / s32["tokens_per_second"]}
    return out


def markdown(result: dict[str, Any]) -> str:
    """The tables of docs/bf16.md, from the result JSON."""
    lines = []
    for name, r in result["datasets"].items():
        lines += [f"### {name} (first {r['records']} records, {r['pairs']} scored pairs)", ""]
        lines += ["| quantity (bf16 − fp32, nats) | median abs | p90 | p99 | max | mean abs | signed mean |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for k, e in r["errors"].items():
            lines.append(
                f"| {k} | {e['median_abs']:.3g} | {e['p90_abs']:.3g} | {e['p99_abs']:.3g} | {e['max_abs']:.3g} | "
                f"{e['mean_abs']:.3g} | {e['mean_signed']:+.3g} |"
            )
        lines += ["", f"C2 verdict flips (Δr*: {r['delta_reward']}):", ""]
        lines += ["| β | sum: flips / n | share [Wilson 95 %] | mean: flips / n | share [Wilson 95 %] |"]
        lines += ["|---|---|---|---|---|"]
        for a, b in zip(r["verdict_flips"]["sum"], r["verdict_flips"]["mean"], strict=True):
            cells = []
            for x in (a, b):
                lo, hi = x["wilson95"]
                cells += [f"{x['flips']} / {x['n']}", f"{100 * x['share']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"]
            lines.append(f"| {a['beta']:g} | " + " | ".join(cells) + " |")
        sp = r["speed"]
        lines += [
            "",
            f"Speed: fp32 {sp['fp32']['tokens_per_second']:.0f} tok/s, bf16 {sp['bf16']['tokens_per_second']:.0f} "
            f"tok/s, ratio bf16/fp32 = {sp['bf16_over_fp32']:.2f}; fp32 today vs stored docs/real_scores: max |Δ| "
            f"{r['fp32_today_vs_stored_max_abs_sum_logp']:.2g} nats.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=("verify", "score", "speed", "analyze", "all"))
    ap.add_argument("--hh", type=int, default=500, help="first N HH records")
    ap.add_argument("--alpacaeval", type=int, default=200, help="first N AlpacaEval records")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/dpocheck_bf16_study", help="where the score directories go")
    ap.add_argument("--out", default=str(RESULT))
    args = ap.parse_args(argv)
    work = Path(args.work)
    limits = {"hh": args.hh, "alpacaeval": args.alpacaeval}
    state_path = work / "study_state.json"
    work.mkdir(parents=True, exist_ok=True)
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if args.phase in ("verify", "all"):
        t = time.perf_counter()
        state["verify"] = {**verify(args.threads), "seconds": time.perf_counter() - t}
        write_text_atomic(state_path, json.dumps(state, indent=2) + "\n")
    if args.phase in ("score", "all"):
        t = time.perf_counter()
        state["commands"] = score(limits, work, args.threads)
        state["score_wall_seconds"] = time.perf_counter() - t
        write_text_atomic(state_path, json.dumps(state, indent=2) + "\n")
    if args.phase in ("speed", "all"):
        state["speed"] = speed(args.threads)
        write_text_atomic(state_path, json.dumps(state, indent=2) + "\n")
    if args.phase in ("analyze", "all"):
        import torch

        result = {
            "study": "bf16 vs fp32 scoring of the same weights (SmolLM2-135M-Instruct GGUF de-quantised), C2 verdicts",
            "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
            "betas": list(BETAS),
            "verify": state.get("verify"),
            "commands": state.get("commands"),
            "score_wall_seconds": state.get("score_wall_seconds"),
            "speed_interleaved": state.get("speed"),
            "datasets": {n: {"records": limits[n], **analyze_one(n, work)} for n in DATASETS},
        }
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
        print(markdown(result))
        sp = result["speed_interleaved"]
        if sp:
            print(f"Interleaved speed: bf16/fp32 = {sp['bf16_over_fp32']:.2f} ({sp['tokens_per_second']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
