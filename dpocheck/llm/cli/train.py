"""The ``dpocheck train`` sub-command: preference training with any loss of the registry, U watched (C3, C4).

Import cost is kept low: torch, transformers and TRL are imported inside the handler (by :mod:`.run`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from dpocheck.errors import InputError
from dpocheck.llm.scoring.settings import LOGP_CONVENTIONS
from dpocheck.llm.train.settings import TRAIN_DTYPES
from dpocheck.theory.registry import LOSS_NAMES

from .args import add_data_args, add_model_args

SWEEP_DATA_FILE = "hh-rlhf-harmless-base-test.jsonl.gz"  # in the shared data folder (dpocheck.llm.data)
TRAIN_DTYPE_HELP = (
    "training precision: fp32; bf16 (bf16 weights, fp32 log-softmax, float64 sums and loss; needs --lora-r; one pair "
    "per forward, --batch-size N becomes N accumulated micro-batches); auto = bf16 on CUDA with --lora-r, else fp32"
)


def _add_data_args(p: argparse.ArgumentParser, sizes: dict[str, object] | None = None, **data_kw: str) -> None:
    """The data-reading options of every command (:mod:`dpocheck.llm.cli.args`) and the token budgets.

    ``sizes``: a declared sweep's ``limit`` and ``max_length``; ``data_kw``: how ``--data`` defaults (see
    :func:`~dpocheck.llm.cli.args.add_data_args`). Bad records stop training by default (``--on-error raise``): a
    run's pairs are its experiment; ``--on-error skip`` skips and counts them as ``score`` does.
    """
    sizes = sizes or {}
    add_data_args(p, limit=sizes.get("limit"), on_error="raise", **data_kw)  # type: ignore[arg-type]
    p.add_argument(
        "--max-length",
        type=int,
        default=sizes.get("max_length", 1024),
        help="token budget per sequence; the prompt is cut from the left first, then the response from the right "
        "(0: the model's context; a larger value is capped at it)",
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
    p.add_argument("--seed", type=int, default=0, help="seed of the data order, the corrupted share and the init")
    p.add_argument("--corrupt-steps", type=int, default=d["corrupt_steps"], help="SFT steps of --corrupt-reference")
    p.add_argument("--corrupt-lr", type=float, default=d["corrupt_lr"], help="SFT learning rate of --corrupt-reference")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_scale_args(p)


def _add_scale_args(p: argparse.ArgumentParser) -> None:
    """LoRA / QLoRA (PEFT) and gradient checkpointing (``--dtype`` is :func:`add_model_args`'s; docs/scale.md)."""
    g = p.add_argument_group("scale (LoRA through PEFT, QLoRA, gradient checkpointing; docs/scale.md)")
    g.add_argument(
        "--lora-r",
        type=int,
        default=None,
        metavar="R",
        help="train a LoRA adapter of rank R (PEFT) instead of every weight; the reference is the frozen base; "
        "final/ holds the merged model, adapter/ the adapter",
    )
    g.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale numerator alpha (default: 2·R)")
    g.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the adapter input (default 0)")
    g.add_argument(
        "--lora-target-modules",
        nargs="+",
        default=None,
        metavar="NAME",
        help="linear layers of the decoder layers to adapt (default: all of them, e.g. q_proj k_proj v_proj o_proj "
        "gate_proj up_proj down_proj); the output head and embeddings are refused",
    )
    g.add_argument(
        "--load-in-4bit",
        action="store_true",
        help="QLoRA: load the base in 4-bit NF4 (bitsandbytes, CUDA only; needs --lora-r)",
    )
    g.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute each decoder layer's activations in the backward pass (less memory, ~30 %% more time)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="train a causal LM with any registry loss (dpo, ipo, cpo_margin, the released losses, hinge, simpo, dpop, "
        "dpo_nll); U watched (C3, C4)",
        description="Preference training on TRL's DPOTrainer with dpocheck's tokenisation and precomputed "
        "reference log-probs (packed scorer). Logs per step the loss, the share in U (C3), ranking accuracy, TRL's "
        "accuracy and the DPO gradient weight inside/outside U (C4); scores the whole training set every "
        "--eval-every steps. Output: metrics.jsonl, eval/step-N.jsonl, final/, manifest.json, checkpoints/. "
        "Run under `accelerate launch --config_file examples/accelerate/{ddp,fsdp,zero3}.yaml` for several processes "
        "or GPUs (docs/scale.md).",
    )
    add_model_args(p, dtype_help=TRAIN_DTYPE_HELP, dtypes=TRAIN_DTYPES)
    _add_data_args(p)
    p.add_argument(
        "--loss",
        required=True,
        help=f"loss from the registry: {', '.join(LOSS_NAMES)} (cpo_margin is the paper's constrained preference "
        "optimization, C8, not TRL's CPOTrainer)",
    )
    p.add_argument("--beta", type=float, required=True, help="β > 0 (KL strength / inverse temperature)")
    p.add_argument("--gamma", type=float, default=None, help="γ ≥ 0 of the margin losses (C8, C10)")
    p.add_argument("--tau", type=float, default=None, help="τ of the released adaptive softplus (C10)")
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="α: of the released adaptive softplus (C10, > 0), or the weight of dpo_nll's per-token NLL of the chosen "
        "response (RPO, >= 0; default 1)",
    )
    p.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=None,
        help="λ >= 0 of dpop, the DPO-Positive penalty on a chosen log-prob that fell below the reference's "
        "(Pal et al. 2024; default 50)",
    )
    p.add_argument(
        "--normalize",
        choices=LOGP_CONVENTIONS,
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
    from dpocheck.llm.train.sweep import DECLARED_SIZES

    sizes = DECLARED_SIZES["e2_llm"]
    p = subparsers.add_parser(
        "train-sweep",
        help="run the declared E2-at-LLM-scale sweep of `train` runs, then its tidy table and figure (C3, C4, C8)",
        description="Runs every entry of a declared sweep (e2_llm: dpo, released_clip, dpop and dpo_nll at β 0.1 sum, "
        "cpo_margin at β 2.5 mean with γ = 0, 0.05, γ*/2, 1.5·γ*; R = 0 and 0.4) as a `dpocheck train` run under "
        "OUT/runs/, reusing finished runs and resuming unfinished ones; then writes OUT/e2_llm.csv, .png and .md "
        "from the runs' eval files. Defaults are the sweep's declared size (16 HH-RLHF pairs, 128 tokens, batch 4, "
        "2 epochs).",
    )
    p.add_argument("--sweep", default="e2_llm", help="declared sweep (e2_llm)")
    p.add_argument("--out", default=None, help="sweep folder (created, or an earlier sweep folder to continue)")
    p.add_argument("--only", nargs="+", default=None, metavar="ENTRY", help="entry names to run (see --list)")
    p.add_argument("--list", action="store_true", help="print the entries and their run settings, run nothing")
    p.add_argument("--report-only", action="store_true", help="only rebuild the table, figure and summary")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep finished runs' checkpoints (default: deleted)")
    add_model_args(p, dtype_help=TRAIN_DTYPE_HELP, dtypes=TRAIN_DTYPES)
    _add_data_args(
        p,
        sizes=sizes,
        data_default="",
        data_help=f"preference data file (default: {SWEEP_DATA_FILE} in the shared data folder, "
        "$DPOCHECK_DATA_DIR or ../shared/data beside the repository)",
    )
    _add_training_args(p, defaults=sizes)
    p.set_defaults(func=_train_sweep)


def _train_sweep(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from dpocheck.llm.data.load import default_data_dir
    from dpocheck.llm.train.experiment import resolve_gamma
    from dpocheck.llm.train.settings import validate
    from dpocheck.llm.train.sweep import SWEEPS, run_sweep, select, write_report

    _require_train_extra()
    if args.sweep not in SWEEPS:
        raise InputError(f"--sweep: unknown sweep {args.sweep!r}; declared: {sorted(SWEEPS)}")
    bad = [n for n in args.only or [] if not n or "," in n]
    if bad:
        raise InputError(f"--only: give entry names separated by spaces, got {bad[0]!r}")
    entries = select(SWEEPS[args.sweep](args.seed), args.only)
    if args.list:
        for e in entries:
            g = e.gamma if isinstance(e.gamma, str) else resolve_gamma(e.gamma, 0.0)
            print(f"{e.name:<34} loss={e.loss} beta={e.beta:g} normalize={e.normalize} R={e.corrupt:g} gamma={g}")
        return 0
    if not args.out:
        raise InputError("--out: the sweep folder is required (except with --list)")
    out = Path(args.out)
    if args.report_only:
        for path in write_report(out.absolute()):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    args.data = args.data or str(default_data_dir() / SWEEP_DATA_FILE)
    if args.max_steps is not None:  # --max-steps replaces the declared epochs
        args.epochs = None
    first = entries[0]
    # the common settings of every run; the entries set loss, β, γ, convention, R and seed (here the first one's)
    common = settings_from_args(args, loss=first.loss, beta=first.beta, normalize=first.normalize)
    validate(replace(common, out=str(out / "runs" / "probe")))  # bad common settings fail before any training
    manifest = run_sweep(
        args.sweep,
        common,
        out,
        only=args.only,
        keep_checkpoints=args.keep_checkpoints,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(json.dumps({"sweep": args.sweep, "out": str(out), "runs": len(manifest["entries"])}))
    return 0


def settings_from_args(args: argparse.Namespace, **fixed: object):  # -> TrainSettings (imported lazily)
    """The :class:`~dpocheck.llm.train.settings.TrainSettings` of parsed arguments: every field the command has an
    option for, ``fixed`` for the others (``train-sweep`` has no ``--loss``); ``--max-length 0`` is kept as 0 (the
    model's context, resolved once the model is known) and ``--no-progress`` becomes ``progress``."""
    from dataclasses import fields

    from dpocheck.llm.train.settings import TrainSettings

    values = {f.name: getattr(args, f.name) for f in fields(TrainSettings) if hasattr(args, f.name)}
    values["progress"] = not args.no_progress
    values.update(fixed)
    return TrainSettings(**values)


def _require_train_extra() -> None:
    """The ``train`` extra (trl, datasets) must be installed: an InputError saying how, not a traceback."""
    import importlib.util

    missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(
            f"dpocheck train needs {', '.join(missing)} (the train extra): pip install -e '.[llm,train]' in the "
            "checkout (see the README's 'Install' section)"
        )


def _train(args: argparse.Namespace) -> int:
    _require_train_extra()
    from dpocheck.llm.train.run import train

    try:
        result = train(settings_from_args(args))
    except OverflowError as err:  # a setting beyond float64 is bad input (exit 2), not a numerical failure
        raise InputError(str(err)) from err
    if result.is_main_process:
        print(json.dumps(result.summary()))
    return 0
