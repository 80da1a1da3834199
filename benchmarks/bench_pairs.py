"""Benchmark: the pair-level checks (C2 δ*, violation, C3 U membership, C4 gradient weight, C8 CPO log margin)
on 10^7 pairs with numpy and torch (CPU), against a plain Python loop over pairs (the baseline), in one run.

Usage: python benchmarks/bench_pairs.py [--pairs 10000000] [--loop-pairs 200000] [--threads N]
The Python loop is timed on --loop-pairs pairs and its per-pair time extrapolated (stated in the output).
Writes benchmarks/results/bench_pairs.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dpocheck.theory import (
    delta_opt,
    dpo_gradient_weight,
    in_undesirable_space,
    log_cpo_margin,
    violation_mask,
)

BETA = 0.1
GAMMA = 0.5


def all_checks(dref, dr, dpol, lw, ll):
    """The five pair-level checks, through the theory layer (numpy or torch inputs alike)."""
    return (
        delta_opt(dref, dr, BETA),
        violation_mask(dref, dr, BETA),
        in_undesirable_space(dpol, dref),
        dpo_gradient_weight(dpol, dref, BETA),
        log_cpo_margin(lw, ll, GAMMA),
    )


def python_loop(dref, dr, dpol, lw, ll):
    """The baseline: the same five checks, one pair at a time, in plain Python with the math module."""
    out = []
    for a, r, d, w, l in zip(dref, dr, dpol, lw, ll, strict=True):
        dstar = a + r / BETA
        viol = BETA * a + r <= 0
        in_u = a < d < 0
        z = BETA * (a - d)
        weight = BETA / (1.0 + math.exp(-z)) if z > -700 else 0.0
        m = max(-w, -l)
        log_m = math.log(GAMMA) + m + math.log1p(math.exp(min(-w, -l) - m))
        out.append((dstar, viol, in_u, weight, log_m))
    return out


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=10_000_000)
    ap.add_argument("--loop-pairs", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_pairs.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n = args.pairs
    cols = [
        rng.normal(-0.5, 2.0, n),  # δ_ref
        rng.normal(0.3, 1.0, n),  # Δr*
        rng.normal(0.0, 2.0, n),  # δ_θ
        -rng.gamma(2.0, 50.0, n),  # log π_ref(y_w)
        -rng.gamma(2.0, 50.0, n),  # log π_ref(y_l)
    ]
    tcols = [torch.from_numpy(c) for c in cols]
    t_np = best_of(lambda: all_checks(*cols), args.repeats)
    t_torch = best_of(lambda: all_checks(*tcols), args.repeats)
    k = min(args.loop_pairs, n)
    small = [c[:k].tolist() for c in cols]
    t_loop_small = best_of(lambda: python_loop(*small), 1)
    t_loop = t_loop_small * n / k
    # Agreement of the vectorised checks with the loop on the timed prefix.
    ref = python_loop(*small)
    got = all_checks(*[c[:k] for c in cols])
    max_diff = max(
        float(np.max(np.abs(np.asarray(got[j], dtype=float) - np.array([r[j] for r in ref], dtype=float))))
        for j in range(5)
    )
    res = {
        "pairs": n,
        "checks": ["delta_opt", "violation_mask", "in_undesirable_space", "dpo_gradient_weight", "log_cpo_margin"],
        "numpy_seconds": t_np,
        "torch_cpu_seconds": t_torch,
        "python_loop_seconds_extrapolated": t_loop,
        "python_loop_timed_pairs": k,
        "numpy_pairs_per_s": n / t_np,
        "torch_pairs_per_s": n / t_torch,
        "python_loop_pairs_per_s": k / t_loop_small,
        "speedup_numpy_vs_loop": t_loop / t_np,
        "speedup_torch_vs_loop": t_loop / t_torch,
        "max_abs_difference_vs_loop": max_diff,
        "torch_threads": args.threads,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    print(f"pair-level checks on {n:,} pairs (float64, best of {args.repeats}; loop timed on {k:,} pairs)")
    print(f"{'backend':<22}{'seconds':>10}{'pairs/s':>16}{'vs loop':>10}")
    print(f"{'python loop (base)':<22}{t_loop:>10.2f}{k / t_loop_small:>16,.0f}{1.0:>10.1f}")
    print(f"{'numpy':<22}{t_np:>10.3f}{n / t_np:>16,.0f}{t_loop / t_np:>10.1f}")
    print(f"{'torch (cpu)':<22}{t_torch:>10.3f}{n / t_torch:>16,.0f}{t_loop / t_torch:>10.1f}")
    print(f"max |vectorised − loop| on the timed prefix: {max_diff:.2e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
