"""Benchmark: vectorised DPO training of 10,000 tabular bandits × 1,000 steps (dpocheck.sims.train) against a
per-instance torch-autograd loop, the way peer toy code trains one bandit at a time, in one run.

Setting: Gaussian bandits (2 contexts × 5 responses, all 20 pairs, ρ = 0.75), β = 0.5, DPO loss (mean over pairs),
plain gradient descent lr 0.5, float64. The vectorised run records metrics only at the first and last step. The
autograd loop (one torch.nn.Parameter of logits per instance, log_softmax → δ → −logsigmoid → backward →
torch.optim.SGD) is timed on --baseline-instances instances and its per-instance time **extrapolated** to all
instances (stated in the output). Both give the same policies: the script checks the baseline's final logits
against the vectorised ones on the timed subset. One untimed 5-step warm-up call of the loop comes first (torch's
first autograd call costs seconds of one-off initialisation).

Usage: python benchmarks/bench_sims.py [--instances 10000] [--steps 1000] [--baseline-instances 20]
Writes benchmarks/results/bench_sims.json. Target: ≥ 50× faster than the autograd loop.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpocheck.sims import LossConfig, batched_log_softmax, gaussian_batch, train  # noqa: E402

BETA = 0.5
LR = 0.5


def autograd_loop(log_pi_ref: np.ndarray, pairs: np.ndarray, steps: int) -> np.ndarray:
    """Train one instance the peer-code way: torch autograd on its own logits. Returns the final logits."""
    logits = torch.nn.Parameter(torch.tensor(log_pi_ref, dtype=torch.float64))
    opt = torch.optim.SGD([logits], lr=LR)
    x = torch.as_tensor(pairs[:, 0])
    w = torch.as_tensor(pairs[:, 1])
    l = torch.as_tensor(pairs[:, 2])
    ref = torch.tensor(log_pi_ref, dtype=torch.float64)
    dref = ref[x, w] - ref[x, l]
    for _ in range(steps):
        logp = torch.log_softmax(logits, dim=-1)
        delta = logp[x, w] - logp[x, l]
        loss = -torch.nn.functional.logsigmoid(BETA * (delta - dref)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return logits.detach().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=1_000)
    ap.add_argument("--baseline-instances", type=int, default=20)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the baseline (default 1: fastest for tiny tensors; more threads spin under load)",
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_sims.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    batch = gaussian_batch(args.instances, 2, 5, BETA, seed=0, misalignment=0.75)
    n_pairs = batch.n_pairs
    print(f"{args.instances} instances × {n_pairs} pairs × {args.steps} steps of DPO (sgd lr {LR}, β {BETA})")

    t0 = time.perf_counter()
    traj = train(batch, LossConfig("dpo"), args.steps, optimizer="sgd", lr=LR, record_every=args.steps)
    t_vec = time.perf_counter() - t0
    pair_steps = args.instances * n_pairs * args.steps
    print(f"vectorised (dpocheck.sims.train, numpy): {t_vec:.2f} s, {pair_steps / t_vec:.3g} pair-steps/s")

    k = min(args.baseline_instances, args.instances)
    autograd_loop(batch.log_pi_ref[0], batch.pairs[0], 5)  # untimed warm-up: torch's first call costs seconds
    t0 = time.perf_counter()
    finals = [autograd_loop(batch.log_pi_ref[i], batch.pairs[i], args.steps) for i in range(k)]
    t_sub = time.perf_counter() - t0
    per_instance = t_sub / k
    t_loop = per_instance * args.instances
    print(
        f"torch autograd loop: {t_sub:.2f} s for {k} instances → {per_instance * 1e3:.1f} ms/instance, "
        f"EXTRAPOLATED to {args.instances} instances: {t_loop:.0f} s, {pair_steps / t_loop:.3g} pair-steps/s"
    )
    # Same policies: compare log-softmax of the final logits on the timed subset.
    base = batched_log_softmax(np.stack(finals))
    max_diff = float(np.max(np.abs(base - traj.log_pi[:k])))
    ratio = t_loop / t_vec
    print(
        f"speed-up: {ratio:.0f}× (target ≥ 50×); max |log π_autograd − log π_vectorised| on the subset = {max_diff:.2e}"
    )
    result = {
        "benchmark": "bench_sims",
        "setting": {
            "instances": args.instances,
            "contexts": 2,
            "responses": 5,
            "pairs_per_instance": n_pairs,
            "steps": args.steps,
            "loss": "dpo (mean over pairs)",
            "optimizer": f"sgd lr {LR}",
            "beta": BETA,
            "dtype": "float64",
        },
        "vectorised_seconds": t_vec,
        "vectorised_pair_steps_per_s": pair_steps / t_vec,
        "baseline": "per-instance torch autograd loop (log_softmax, logsigmoid, backward, optim.SGD)",
        "baseline_timed_instances": k,
        "baseline_timed_seconds": t_sub,
        "baseline_extrapolated_seconds": t_loop,
        "baseline_pair_steps_per_s": pair_steps / t_loop,
        "speedup": ratio,
        "target_speedup": 50,
        "meets_target": bool(ratio >= 50),
        "max_abs_logpi_diff_on_subset": max_diff,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    if not math.isfinite(max_diff) or max_diff > 1e-8:
        raise SystemExit("vectorised and autograd policies differ")


if __name__ == "__main__":
    main()
