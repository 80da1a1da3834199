"""The ``dpocheck train`` sub-command: preference training with any loss of the registry, U watched (C3, C4).

Import cost is kept low: torch, transformers and TRL are imported inside the handler (by :mod:`.run`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from dpocheck.errors import InputError
from dpocheck.llm.cli_args import add_data_args
from dpocheck.llm.cli_model import _add_model_args


def _add_data_args(p: argparse.ArgumentParser, data: str | None = None, sizes: dict[str, object] | None = None) -> None:
    """The data-reading options of every command (:mod:`dpocheck.llm.cli_args`) and the token budgets.

    ``data``: a declared sweep's default data file (else ``--data`` is required); ``sizes``: its declared
    ``limit`` and ``max_length``. Bad records stop training by default (``--on-error raise``): a run's pairs are
    its experiment; ``--on-error skip`` skips and counts them as ``score`` does.
    """
    sizes = sizes or {}
    add_data_args(p, data=data, limit=sizes.get("limit"), on_error="raise")  # type: ignore[arg-type]
    p.add_argument(
        "--max-length",
        type=int,
        default=sizes.get("max_length", 1024),
        help="token budget per sequence; the prompt is cut from the left first (0: no limit)",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=4096,
        help="memory budget of the no-grad scoring passes (reference, eval): padded tokens per forward batch",
    )


def _add_training_args(p: argparse.ArgumentParser, defaults: dict[str, object] | None) -> None:
    """Optimisation, evaluation and checkpoint options shared by ``train`` and ``train-sweep``.

    ``defaults`` (a declared sweep's sizes) replaces the single-run defaults where it names an option.
    """
    d = {
        "epochs": None,
        "lr": 1e-6,
        "batch_size": 2,
        "grad_accum": 1,
        "eval_every": 10,
        "save_steps": 50,
        "corrupt_steps": 20,
        "corrupt_lr": 1e-4,
        **(defaults or {}),
    }
    length = p.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, default=None, help="optimizer steps")
    length.add_argument(
        "--epochs", type=float, default=d["epochs"], help=f"passes over the training pairs (default {d['epochs'] or 1})"
    )
    p.add_argument(
        "--lr", type=float, default=d["lr"], help=f"learning rate (AdamW, linear schedule; default {d['lr']})"
    )
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="pairs per device per forward")
    p.add_argument("--grad-accum", type=int, default=d["grad_accum"], help="gradient accumulation steps")
    p.add_argument("--eval-every", type=int, default=d["eval_every"], help="score the whole training set every K steps")
    p.add_argument(
        "--save-steps", type=int, default=d["save_steps"], help="checkpoint every N steps (the --resume unit)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corrupt-steps", type=int, default=d["corrupt_steps"], help="SFT steps of --corrupt-reference")
    p.add_argument("--corrupt-lr", type=float, default=d["corrupt_lr"], help="SFT learning rate of --corrupt-reference")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="train a causal LM with dpo, ipo, cpo_margin, the released losses, hinge or simpo; U watched (C3, C4)",
        description="Preference training on TRL's DPOTrainer with dpocheck's tokenisation and precomputed "
        "reference log-probs (packed scorer). Logs per step the loss, the share in U (C3), ranking accuracy, TRL's "
        "accuracy and the DPO gradient weight inside/outside U (C4); scores the whole training set every "
        "--eval-every steps. Output: metrics.jsonl, eval/step-N.jsonl, final/, manifest.json, checkpoints/. "
        "Run under `accelerate launch` for several processes or GPUs.",
    )
    _add_model_args(p)
    _add_data_args(p)
    p.add_argument("--loss", required=True, help="loss name from the registry (dpo, ipo, cpo_margin, ...)")
    p.add_argument("--beta", type=float, required=True, help="β > 0 (KL strength / inverse temperature)")
    p.add_argument("--gamma", type=float, default=None, help="γ ≥ 0 of the margin losses (C8, C10)")
    p.add_argument("--tau", type=float, default=None, help="τ of the released adaptive softplus (C10)")
    p.add_argument("--alpha", type=float, default=None, help="α of the released adaptive softplus (C10)")
    p.add_argument(
        "--normalize",
        choices=("sum", "mean"),
        default="sum",
        help="log-prob convention the loss is trained on: sum (PAPER §1) or mean (per token, released code)",
    )
    p.add_argument("--out", required=True, help="output directory (must not exist unless --resume)")
    _add_training_args(p, defaults=None)
    p.add_argument("--heldout", default=None, help="optional held-out pairs (same format options) scored at eval")
    p.add_argument(
        "--reference-scores",
        default=None,
        help="reuse this `dpocheck score` output as π_ref (its manifest must match --model and --data)",
    )
    p.add_argument(
        "--corrupt-reference",
        type=float,
        default=None,
        metavar="R",
        help="misalign the reference first: short SFT on the rejected response of a seeded share R of the pairs "
        "(PAPER §5, our reading); the result is reference and starting policy",
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (same settings)")
    p.set_defaults(func=_train)
    _register_sweep(subparsers)


def _register_sweep(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train-sweep`` sub-command (a declared sweep of ``train`` runs → table and figure)."""
    from dpocheck.llm.data import default_data_dir

    from .sweep import DECLARED_SIZES

    sizes = DECLARED_SIZES["e2_llm"]
    p = subparsers.add_parser(
        "train-sweep",
        help="run the declared E2-at-LLM-scale sweep of `train` runs, then its tidy table and figure (C3, C4, C8)",
        description="Runs every entry of a declared sweep (e2_llm: dpo and released_clip at β 0.1 sum, cpo_margin "
        "at β 2.5 mean with γ = 0, 0.05, γ*/2, 1.5·γ*; R = 0 and 0.4) as a `dpocheck train` run under OUT/runs/, "
        "reusing finished runs and resuming unfinished ones; then writes OUT/e2_llm.csv, .png and .md from the runs' "
        "eval files. Defaults are the sweep's declared size (16 HH-RLHF pairs, 128 tokens, batch 4, 2 epochs).",
    )
    p.add_argument("--sweep", default="e2_llm", help="declared sweep (e2_llm)")
    p.add_argument("--out", required=True, help="sweep folder (created, or an earlier sweep folder to continue)")
    p.add_argument("--only", default=None, help="comma-separated entry names to run (see --list)")
    p.add_argument("--list", action="store_true", help="print the entries and their run settings, run nothing")
    p.add_argument("--report-only", action="store_true", help="only rebuild the table, figure and summary")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep finished runs' checkpoints (default: deleted)")
    _add_model_args(p)
    _add_data_args(p, data=str(default_data_dir() / "hh-rlhf-harmless-base-test.jsonl.gz"), sizes=sizes)
    _add_training_args(p, defaults=sizes)
    p.set_defaults(func=_train_sweep)


def _train_sweep(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from .experiment import resolve_gamma
    from .settings import TrainSettings
    from .sweep import SWEEPS, run_sweep, select, write_report

    if args.sweep not in SWEEPS:
        raise InputError(f"--sweep: unknown sweep {args.sweep!r}; declared: {sorted(SWEEPS)}")
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    if only is not None and not all(only):
        raise InputError(f"--only: empty entry name in {args.only!r}")
    out = Path(args.out)
    if args.report_only:
        for path in write_report(out.absolute()):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    args.loss, args.beta, args.gamma, args.tau, args.alpha, args.normalize = "dpo", 1.0, None, None, None, "sum"
    args.heldout = args.reference_scores = args.corrupt_reference = None
    args.resume = False
    if args.max_steps is not None:  # --max-steps replaces the declared epochs
        args.epochs = None
    common: TrainSettings = settings_from_args(args)
    entries = select(SWEEPS[args.sweep](common.seed), only)
    if args.list:
        for e in entries:
            g = e.gamma if isinstance(e.gamma, str) else resolve_gamma(e.gamma, 0.0)
            print(f"{e.name:<34} loss={e.loss} beta={e.beta:g} normalize={e.normalize} R={e.corrupt:g} gamma={g}")
        return 0
    from .settings import validate

    validate(replace(common, out=str(out / "runs" / "probe")))  # bad common settings fail before any training
    manifest = run_sweep(
        args.sweep,
        common,
        out,
        only=only,
        keep_checkpoints=args.keep_checkpoints,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(json.dumps({"sweep": args.sweep, "out": str(out), "runs": len(manifest["entries"])}))
    return 0


def settings_from_args(args: argparse.Namespace):  # -> TrainSettings (imported lazily)
    """The :class:`~dpocheck.llm.train.run.TrainSettings` of parsed command-line arguments."""
    from .run import TrainSettings

    return TrainSettings(
        model=args.model,
        data=args.data,
        format=args.format,
        delta_reward_source=args.delta_reward_source,
        max_length=args.max_length if args.max_length and args.max_length > 0 else None,
        batch_tokens=args.batch_tokens,
        limit=args.limit,
        on_error=args.on_error,
        chat_template=args.chat_template,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        loss=args.loss,
        beta=args.beta,
        gamma=args.gamma,
        tau=args.tau,
        alpha=args.alpha,
        normalize=args.normalize,
        out=args.out,
        max_steps=args.max_steps,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        eval_every=args.eval_every,
        save_steps=args.save_steps,
        heldout=args.heldout,
        seed=args.seed,
        reference_scores=args.reference_scores,
        corrupt_reference=args.corrupt_reference,
        corrupt_steps=args.corrupt_steps,
        corrupt_lr=args.corrupt_lr,
        resume=args.resume,
        threads=args.threads,
        progress=not args.no_progress,
    )


def _train(args: argparse.Namespace) -> int:
    from .run import train
    from .settings import InputError

    try:
        result = train(settings_from_args(args))
    except OverflowError as err:  # a setting beyond float64 is bad input (exit 2), not a numerical failure
        raise InputError(str(err)) from err
    if result.is_main_process:
        print(json.dumps(result.summary()))
    return 0
