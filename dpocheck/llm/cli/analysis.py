"""Sub-commands on the data side of ``dpocheck.llm``: ``violations`` (C2, C3, C4, C8 on scored pairs) and
``reward`` (Δr* from a local reward model).

Import cost is kept low: numpy, torch, transformers and matplotlib are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from dpocheck._io import write_text_atomic
from dpocheck.errors import InputError
from dpocheck.llm.analysis.results import DEFAULT_BETAS, DEFAULT_GAMMAS
from dpocheck.llm.scoring.settings import LOGP_CONVENTIONS

from .args import add_data_args, add_model_args, set_threads


def _float_list(text: str) -> list[float]:
    """A comma-separated list of numbers; empty entries (``0.1,,1``) and duplicates (``1,1``) are refused."""
    parts = [v.strip() for v in text.split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError("expected at least one number")
    if not all(parts):
        raise argparse.ArgumentTypeError(f"empty entry in the comma-separated list {text!r}")
    try:
        values = [float(v) for v in parts]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err
    dups = sorted({v for v in values if values.count(v) > 1})
    if dups:
        raise argparse.ArgumentTypeError(f"duplicate value(s) {', '.join(f'{v:g}' for v in dups)} in {text!r}")
    return values


def _bootstrap_count(text: str) -> int:
    """Bootstrap resamples: a whole number >= 0 (0 switches the 95 % intervals off)."""
    try:
        n = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from err
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: no intervals), got {n}")
    return n


def _normalizations(text: str) -> list[str]:
    if text == "both":
        return list(LOGP_CONVENTIONS)
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in LOGP_CONVENTIONS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"expected sum, mean, both or sum,mean; got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``violations`` and ``reward`` sub-commands."""
    v = subparsers.add_parser(
        "violations",
        help="how often DPO's implicit assumption fails on scored pairs (C2); a policy's place (C3, C4, C8)",
        description="Per β: violation rate of β·δ_ref + Δr* ≤ 0 (C2) with a bootstrap 95 % interval, "
        "idealized ranking accuracy, reference preference rate, per-subset breakdown, γ* and CPO margins in "
        "log space (C8); with --policy-scores: share in U (C3), preference and implicit-reward accuracy, DPO "
        "gradient weights (C4), likelihood displacement next to U (shares, U × displaced, shifts; PAPER §6), CHES "
        "and a health verdict. Writes JSON, Markdown and the toy Fig. 1 per normalisation, and with a policy the "
        "per-pair table pairs-<norm>.csv and displacement-<norm>.png.",
    )
    v.add_argument("--scores", required=True, help="scores directory written by `dpocheck score` (π_ref)")
    v.add_argument("--policy-scores", default=None, help="scores directory of a trained policy (same pairs)")
    v.add_argument("--beta", type=_float_list, default=list(DEFAULT_BETAS), help="β grid, e.g. 0.01,0.1,1,5,10")
    v.add_argument(
        "--normalize",
        type=_normalizations,
        default=["sum"],
        help="log-prob convention: sum (PAPER §1), mean (per-token, released code) or both",
    )
    src = v.add_mutually_exclusive_group()
    src.add_argument(
        "--delta-reward", default=None, help="JSONL with index and delta_reward (e.g. from `dpocheck reward`)"
    )
    src.add_argument(
        "--assume-delta-reward",
        type=float,
        default=None,
        help="use this constant Δr* for every pair (user-chosen, labelled ASSUMED in every output)",
    )
    src.add_argument(
        "--ignore-row-delta-reward",
        action="store_true",
        help="do not use the delta_reward the scorer copied from the data (report only Δr*-free numbers)",
    )
    v.add_argument(
        "--gamma",
        type=_float_list,
        default=list(DEFAULT_GAMMAS),
        help="γ values for the C8 'still violated with margin' column (default: released code's demo and default γ)",
    )
    v.add_argument(
        "--bootstrap",
        type=_bootstrap_count,
        default=2000,
        help="bootstrap resamples for 95 %% intervals (0: no intervals)",
    )
    v.add_argument(
        "--allow-data-mismatch",
        action="store_true",
        help="join --policy-scores / --delta-reward made from different data (by index; the report says so)",
    )
    v.add_argument(
        "--allow-settings-mismatch",
        action="store_true",
        help="join --policy-scores tokenised with other settings than --scores (--max-length, chat template, "
        "tokenizer) or whose token counts differ pair by pair (the report says so); default: refused",
    )
    v.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    v.add_argument(
        "--out",
        default=None,
        help="output directory (default: SCORES/violations, or SCORES/violations-POLICY with --policy-scores, "
        "POLICY named after the policy's folder or RUN-step-N); an existing report is never replaced silently",
    )
    v.add_argument("--overwrite", action="store_true", help="replace the report already in the output directory")
    v.add_argument("--no-plot", action="store_true", help="skip the toy Fig. 1 plot")
    v.add_argument("--quiet", action="store_true", help="do not print the Markdown report")
    v.set_defaults(func=_violations)

    r = subparsers.add_parser(
        "reward",
        help="Δr* = r(y_w) − r(y_l) from a local sequence-classification reward model (input to violations)",
        description="Score the chosen and rejected responses of every pair with a Hugging Face "
        "AutoModelForSequenceClassification (num_labels=1) from a local folder; write JSONL rows (index, "
        "reward_chosen, reward_rejected, delta_reward) atomically; --resume continues after a kill.",
    )
    add_model_args(r, option="--reward-model", model_help="local Hugging Face folder of a reward model (one output)")
    add_data_args(r, delta_reward_source=False)
    r.add_argument("--out", required=True, help="output JSONL file")
    r.add_argument(
        "--prompt-style",
        default="text",
        choices=("text", "chat"),
        help="keep text prompts or make chat messages",
    )
    r.add_argument("--batch-size", type=int, default=8, help="pairs per forward batch (2 sequences each)")
    r.add_argument(
        "--max-length",
        type=int,
        default=2048,
        help="tokens per sequence, cut from the left (0: the model's context; a larger value is capped at it)",
    )
    r.add_argument("--resume", action="store_true", help="continue a killed run into --out (same inputs only)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_reward)


def _violations(args: argparse.Namespace) -> int:
    from dpocheck.llm import analysis as A
    from dpocheck.llm.analysis.scores import check_same_data, delta_reward_manifest
    from dpocheck.llm.analysis.tokenisation import check_same_tokenisation

    ref = A.read_scores(args.scores)
    notes = []
    policy = None
    if args.policy_scores:
        policy = A.read_scores(args.policy_scores)
        notes.append(check_same_data(ref, policy.manifest, policy.source, allow_mismatch=args.allow_data_mismatch))
        notes += check_same_tokenisation(ref, policy, allow_mismatch=args.allow_settings_mismatch)
    if args.delta_reward:
        notes.append(
            check_same_data(
                ref,
                delta_reward_manifest(args.delta_reward),
                str(args.delta_reward),
                allow_mismatch=args.allow_data_mismatch,
            )
        )
    ref.warnings.extend(n for n in notes if n)
    dr = A.resolve_delta_reward(
        ref,
        delta_reward_file=args.delta_reward,
        assume=args.assume_delta_reward,
        use_rows=not args.ignore_row_delta_reward,
    )
    out = Path(args.out) if args.out else default_report_dir(ref.source, policy.source if policy else None)
    check_report_dir(out, overwrite=args.overwrite)
    for w in ref.warnings:
        print(f"dpocheck violations: warning: {w}", file=sys.stderr)
    written = []
    for norm in args.normalize:
        report = A.analyze(
            ref,
            betas=args.beta,
            normalization=norm,
            delta_reward=dr,
            policy=policy,
            gammas=args.gamma,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
        )
        md = A.render_markdown(report)
        written.append(write_text_atomic(out / f"violations-{norm}.json", A.report_to_json(report)))
        written.append(write_text_atomic(out / f"violations-{norm}.md", md))
        if not args.no_plot:
            written.append(A.plot_fig1(ref, dr, args.beta, norm, out / f"fig1-{norm}.png"))
        if policy is not None:
            written += write_displacement_outputs(ref, policy, norm, out, plot=not args.no_plot)
            print(f"dpocheck violations ({norm}): {report.displacement.health.line()}", file=sys.stderr)
        if not args.quiet:
            print(md)
    for line in A.join_summary(report):
        print(f"dpocheck violations: {line}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def write_displacement_outputs(ref, policy, norm: str, out: Path, *, plot: bool = True) -> list[Path]:
    """``pairs-<norm>.csv`` (the per-pair displacement table, PAPER §6) and ``displacement-<norm>.png``."""
    from dpocheck.llm.analysis.displacement import PAIR_COLUMNS, csv_text, joined_logps, pair_rows, pair_table
    from dpocheck.llm.analysis.report import plot_displacement

    index, pol, reference, ches = joined_logps(ref, policy)
    rows = pair_rows(index, pair_table(pol, reference, norm), ches)
    written = [write_text_atomic(out / f"pairs-{norm}.csv", csv_text(rows, PAIR_COLUMNS))]
    if plot:
        title = f"{Path(policy.source).name} against {Path(ref.source).name} ({norm} log-probs)"
        written.append(plot_displacement(rows, out / f"displacement-{norm}.png", norm, title))
    return written


REPORT_PATTERNS = (
    "violations-*.json",
    "violations-*.md",
    "fig1-*.png",
    "pairs-*.csv",
    "displacement-*.png",
)  # what `violations` writes into --out


def default_report_dir(scores: str, policy: str | None) -> Path:
    """Where ``violations`` writes by default: beside the reference scores, ``violations`` alone or
    ``violations-<policy>`` (the policy's folder name, or ``<run>-step-<N>`` for a train run's eval file), so a
    second policy analysed against the same reference gets its own folder."""
    base = Path(scores)
    base = base.parent if base.is_file() else base
    if policy is None:
        return base / "violations"
    p = Path(policy)
    name = f"{p.parent.parent.name}-{p.stem}" if p.is_file() and p.parent.name == "eval" else p.name
    return base / ("violations-" + re.sub(r"[^A-Za-z0-9._-]+", "_", name))


def check_report_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write into a folder that already holds a ``violations`` report, unless ``overwrite`` (then the
    old report's files are removed first, so the folder never mixes two reports)."""
    found = [f for pattern in REPORT_PATTERNS for f in sorted(out.glob(pattern))] if out.is_dir() else []
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    if found and not overwrite:
        raise InputError(
            f"{out} already holds a violations report ({found[0].name}); pass --overwrite to replace it or "
            "--out DIR to write elsewhere"
        )
    for f in found:
        f.unlink()


def _reward(args: argparse.Namespace) -> int:
    from dpocheck.llm.generation.reward import RewardSettings, reward_file

    set_threads(args)
    settings = RewardSettings(
        batch_size=args.batch_size,
        max_length=args.max_length or None,  # 0: the model's context (capped once the model is loaded)
        chat_template=args.chat_template,
        dtype=args.dtype,
        format=args.format,
        prompt_style=args.prompt_style,
        limit=args.limit,
    )
    run = reward_file(
        args.reward_model,
        args.data,
        args.out,
        settings,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        resume=args.resume,
        overwrite=args.overwrite,
        on_error=args.on_error,
        show_progress=not args.no_progress,
    )
    print(run.load_summary, file=sys.stderr)
    for note in run.notes:
        print(f"dpocheck reward: {note}", file=sys.stderr)
    print(
        f"rewarded {run.n_scored_now} pairs now ({run.n_done_before} from an earlier run) in "
        f"{run.seconds:.1f} s -> {run.out}",
        file=sys.stderr,
    )
    return 0
