"""`dpocheck sim`: one custom training run on tabular bandits, written as a tidy CSV table."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from dpocheck.errors import InputError
from dpocheck.theory import LOSS_NAMES, LOSSES

from .trainer import REFERENCE_POINTS


def register(subparsers: Any) -> None:
    """Add the `sim` sub-command."""
    p = subparsers.add_parser(
        "sim",
        help="train tabular softmax policies on preference pairs (many instances at once); write a tidy table",
        description="Vectorised training of tabular softmax policies from π_ref. The loss "
        "is the mean over each instance's pairs. Bandits: 'misaligned' = the E2 "
        "construction (reference BT-fit to labels with a share --flip-rate flipped, "
        "temperature --ref-temperature); 'gaussian' = Gaussian rewards with a reference "
        "misaligned to degree --misalignment. Labels: 'hard' (each pair once, y_w ≻ y_l "
        "by true reward) or 'population' (Bradley–Terry soft labels q = σ(Δr*)). --loss "
        "rlhf_optimum / ecpoc evaluate the exact reference points instead of training. The columns p_w and "
        "logp_w_shift measure likelihood displacement, which dpop (--lam) and dpo_nll (--alpha) target.",
    )
    p.add_argument("--loss", default="dpo", choices=LOSS_NAMES + REFERENCE_POINTS, help="loss (default dpo)")
    p.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    p.add_argument(
        "--optimizer", choices=("sgd", "adam"), default="sgd", help="update rule on the logits (sgd: gradient flow)"
    )
    p.add_argument("--lr", type=float, help="step size (default 1.0 for sgd, 0.01 for adam)")
    p.add_argument("--beta", type=float, default=1.0, help="KL strength β (default 1.0)")
    gamma_defaults = "; ".join(f"{n} {s.defaults['gamma']:g}" for n, s in LOSSES.items() if "gamma" in s.params)
    adaptive = LOSSES["released_adaptive"].defaults
    nll_alpha = LOSSES["dpo_nll"].defaults["alpha"]
    p.add_argument("--gamma", type=float, help=f"margin γ (defaults: {gamma_defaults})")
    p.add_argument("--tau", type=float, help=f"released_adaptive τ (default {adaptive['tau']:g})")
    p.add_argument(
        "--alpha",
        type=float,
        help=f"released_adaptive α (> 0, default {adaptive['alpha']:g}) or dpo_nll's NLL weight α (>= 0, default "
        f"{nll_alpha:g}, RPO)",
    )
    p.add_argument(
        "--lam",
        type=float,
        help=f"dpop's λ (>= 0, default {LOSSES['dpop'].defaults['lam']:g}, the Smaug paper's; 0 is DPO). Its "
        "gradient weight reaches β(1 + λ): with sgd keep lr below about 1/(β(1 + λ))",
    )
    p.add_argument("--epsilon", type=float, default=0.0, help="E-CPOC margin ε for --loss ecpoc (default 0)")
    p.add_argument("--instances", type=int, default=16, help="bandit instances trained at once (default 16)")
    p.add_argument("--contexts", type=int, default=4, help="contexts per bandit (default 4)")
    p.add_argument("--responses", type=int, default=6, help="responses per context (default 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bandits (runs are bit-for-bit reproducible)")
    p.add_argument(
        "--reference",
        choices=("misaligned", "gaussian"),
        default="misaligned",
        help="how π_ref is made: misaligned (a share R of flipped labels at temperature T, E2) or gaussian "
        "(reference logits correlated with the rewards at misalignment ρ)",
    )
    p.add_argument("--flip-rate", type=float, default=0.3, help="misaligned: share R of flipped labels (0.3)")
    p.add_argument("--ref-temperature", type=float, default=1.0, help="misaligned: reference temperature T (1.0)")
    p.add_argument("--misalignment", type=float, default=0.75, help="gaussian: misalignment ρ in [0, 1] (0.75)")
    p.add_argument(
        "--labels",
        choices=("hard", "population"),
        default="hard",
        help="hard: y_w ≻ y_l always; population: Bradley–Terry soft labels q = σ(Δr*) (C5's population reading)",
    )
    p.add_argument("--record-every", type=int, help="record metrics every k steps (default steps/100)")
    p.add_argument("--per-instance", action="store_true", help="one row per step and instance (default: means)")
    p.add_argument("--out", help="CSV path (default sim-<loss>.csv)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    for name in ("steps", "instances", "contexts"):
        if getattr(args, name) < (0 if name == "steps" else 1):
            raise ValueError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.responses < 2:
        raise ValueError(f"--responses must be >= 2, got {args.responses}")
    if not (math.isfinite(args.beta) and args.beta > 0):
        raise ValueError(f"--beta must be finite and > 0, got {args.beta}")


def run(args: argparse.Namespace) -> int:
    """Handler: build the bandits, train (or evaluate a reference point), write the table, print a summary."""
    import numpy as np

    from .batch import gaussian_batch
    from .reference import misaligned_reference_batch
    from .tables import trajectory_columns, trajectory_rows, write_table
    from .trainer import METRIC_COLUMNS, LossConfig, reference_point_metrics, train

    try:
        _check(args)
        if args.reference == "misaligned":
            mr = misaligned_reference_batch(
                args.instances,
                args.contexts,
                args.responses,
                args.flip_rate,
                args.beta,
                seed=args.seed,
                temperature=args.ref_temperature,
            )
            batch = mr.batch
            setting = f"misaligned reference R={args.flip_rate:g}, T={args.ref_temperature:g}"
        else:
            batch = gaussian_batch(
                args.instances,
                args.contexts,
                args.responses,
                args.beta,
                seed=args.seed,
                misalignment=args.misalignment,
            )
            setting = f"gaussian ρ={args.misalignment:g}"
        if args.labels == "population":
            batch = batch.with_bt_population_labels()
        keys = {"loss_name": args.loss, "optimizer": args.optimizer, "beta": args.beta, "seed": args.seed}
        out = args.out or f"sim-{args.loss}.csv"
        if args.loss in REFERENCE_POINTS:
            metrics = reference_point_metrics(batch, args.loss, args.epsilon)
            row: dict[str, Any] = {**keys, "loss_label": args.loss, "lr": float("nan"), "step": 0}
            row["n_instances"] = batch.n_instances
            for m in METRIC_COLUMNS:
                vals = metrics[m]
                row[m] = float(np.mean(vals))
                row[f"{m}_se"] = float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else math.nan
            rows = [row]
            cols = trajectory_columns([*keys, "loss_label", "lr"])
            final = {m: row[m] for m in METRIC_COLUMNS}
        else:
            lr = args.lr if args.lr is not None else (1.0 if args.optimizer == "sgd" else 0.01)
            loss = LossConfig(args.loss, gamma=args.gamma, tau=args.tau, alpha=args.alpha, lam=args.lam)
            print(
                f"training {loss.describe()} on {batch.n_instances} bandits ({setting}), {args.steps} "
                f"steps of "
                f"{args.optimizer} lr={lr:g}, β={args.beta:g}, labels {args.labels} …",
                file=sys.stderr,
            )
            every = args.record_every
            progress = None
            if sys.stderr.isatty() and args.steps >= 1000:
                from tqdm import tqdm

                bar = tqdm(total=args.steps, unit="step", file=sys.stderr)

                def progress(t: int, total: int) -> None:
                    bar.update(1)

            traj = train(
                batch,
                loss,
                args.steps,
                optimizer=args.optimizer,
                lr=lr,
                record_every=every,
                progress=progress,
            )
            keys2 = {**keys, "loss_label": loss.describe(), "lr": lr}
            if args.per_instance:
                rows = trajectory_rows(traj, keys2, per_instance=True)
                cols = trajectory_columns(list(keys2), per_instance=True)
            else:
                rows = trajectory_rows(traj, keys2)
                cols = trajectory_columns(list(keys2))
            final = {m: float(np.mean(traj.final(m))) for m in METRIC_COLUMNS}
        write_table(out, rows, cols)
    except (FloatingPointError, OverflowError) as err:  # from extreme settings: bad input (exit 2), named as such
        raise InputError(f"numerical overflow with these settings ({err})") from err
    print(f"{args.loss}: final means over {batch.n_instances} instances (loss = mean over pairs):")
    for m, v in final.items():
        print(f"  {m:16s} {v:.6g}")
    print(f"table written to {out}")
    return 0
