"""The ``dpocheck train`` sub-command: preference training with any loss of the registry, U watched (C3, C4).

Import cost is kept low: torch, transformers and TRL are imported inside the handler (by :mod:`.run`).
"""

from __future__ import annotations

import argparse
import json

from dpocheck.llm.cli_model import _add_model_args


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """The data reader and truncation options, with the meanings and defaults of ``dpocheck score``."""
    p.add_argument("--data", required=True, help="preference data file (JSONL/JSON, optionally .gz, or Parquet)")
    p.add_argument("--format", default="auto", help="record format: auto, trl, hh, alpacaeval")
    p.add_argument(
        "--delta-reward-source",
        default="auto",
        help="where Δr* comes from (see dpocheck.llm.data): auto, none, delta_reward, "
        "score_columns, probability, soft_preference",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=1024,
        help="token budget per sequence; the prompt is cut from the left first (0: no limit)",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=4096,
        help="memory budget of the no-grad scoring passes (reference, eval): padded tokens per forward batch",
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N records of the data")
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="bad records / empty responses: stop with an error naming the record (raise) or skip and count them",
    )


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
    length = p.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, default=None, help="optimizer steps")
    length.add_argument("--epochs", type=float, default=None, help="passes over the training pairs (default 1)")
    p.add_argument("--lr", type=float, default=1e-6, help="learning rate (AdamW, linear schedule)")
    p.add_argument("--batch-size", type=int, default=2, help="pairs per device per forward")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--eval-every", type=int, default=10, help="score the whole training set every K steps")
    p.add_argument("--save-steps", type=int, default=50, help="checkpoint every N steps (the --resume unit)")
    p.add_argument("--heldout", default=None, help="optional held-out pairs (same format options) scored at eval")
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--corrupt-steps", type=int, default=20, help="SFT steps of --corrupt-reference")
    p.add_argument("--corrupt-lr", type=float, default=1e-4, help="SFT learning rate of --corrupt-reference")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (same settings)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


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
