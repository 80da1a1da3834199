"""``dpocheck onpolicy``: samples → rewards → best-vs-worst pairs → reference scores → violations, one resumable run.

Import cost is kept low: torch and transformers are imported inside the handler
(:mod:`dpocheck.llm.generation.onpolicy` holds the run).
"""

from __future__ import annotations

import argparse
import json
import sys

from dpocheck.llm.analysis.results import DEFAULT_BETAS

from .analysis import _bootstrap_count, _float_list, _normalizations
from .args import add_model_args, add_sampling_args, positive_int, set_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``onpolicy`` sub-command."""
    p = subparsers.add_parser(
        "onpolicy",
        help="on-policy pairs and their C2 verdict: K samples per prompt, reward-model scores, best vs worst "
        "pairs with Δr* from the reward model, reference scores, violations (resumable)",
        description="Sample K responses per prompt from --model (batched, seeded), score every sample with "
        "--reward-model, pair the best against the worst response of each prompt (Δr* = r(y_w) − r(y_l)), score "
        "the pairs under the reference (default: --model) and report the C2 violation rate per β with that Δr*. "
        "Writes OUT/samples.jsonl, rewards.jsonl, pairs.jsonl, reference/, violations/ and manifest.json; "
        "--resume continues a killed run, skipping finished stages.",
    )
    add_model_args(p)
    p.add_argument("--reward-model", required=True, help="local Hugging Face folder of a reward model (one output)")
    p.add_argument(
        "--reference-model", default=None, help="π_ref for the scores (default: --model, the sampler, as in E1)"
    )
    p.add_argument(
        "--prompts",
        required=True,
        help="JSONL with a 'prompt' field (text or chat messages), or a .txt file (one prompt a line)",
    )
    p.add_argument("--out", required=True, help="output folder (samples, rewards, pairs, reference, violations)")
    add_sampling_args(
        p, seed_help="sampling seed (each batch: the seed and its first prompt)", k_help="responses per prompt (>= 2)"
    )
    p.add_argument(
        "--sample-batch-size",
        type=positive_int,
        default=8,
        help="prompts per generate call (left-padded); the same batch size gives the same samples",
    )
    p.add_argument("--reward-batch-size", type=positive_int, default=8, help="samples per reward-model batch")
    p.add_argument(
        "--reward-max-length",
        type=int,
        default=2048,
        help="tokens per reward-model input, cut from the left (0: the reward model's context)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=1024,
        help="token budget per sequence for the reference scores (0: the model's context)",
    )
    p.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per reference-scoring batch")
    p.add_argument(
        "--pair-mode",
        choices=("best-worst", "all"),
        default="best-worst",
        help="best-worst: one pair per prompt, highest vs lowest reward; all: every pair of distinct samples",
    )
    p.add_argument("--beta", type=_float_list, default=list(DEFAULT_BETAS), help="β grid for violations")
    p.add_argument(
        "--normalize",
        type=_normalizations,
        default=["sum", "mean"],
        help="log-prob convention of the violations: sum, mean or both (default both)",
    )
    p.add_argument("--bootstrap", type=_bootstrap_count, default=2000, help="bootstrap resamples (0: no intervals)")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out (same inputs only)")
    p.add_argument("--no-plot", action="store_true", help="skip the toy Fig. 1 plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_onpolicy)


def _onpolicy(args: argparse.Namespace) -> int:
    from dpocheck.llm.generation.onpolicy import OnPolicySettings, run_onpolicy

    set_threads(args)
    settings = OnPolicySettings(
        prompts=args.prompts,
        reward_model=args.reward_model,
        out=args.out,
        model=args.model,
        reference_model=args.reference_model,
        k=args.k,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        sample_batch_size=args.sample_batch_size,
        reward_batch_size=args.reward_batch_size,
        reward_max_length=args.reward_max_length or None,
        max_length=args.max_length or None,
        batch_tokens=args.batch_tokens,
        pair_mode=args.pair_mode,
        chat_template=args.chat_template,
        dtype=args.dtype,
        limit=args.limit,
        betas=args.beta,
        normalize=args.normalize,
        bootstrap=args.bootstrap,
        trust_remote_code=args.trust_remote_code,
        device=args.device,
        plot=not args.no_plot,
    )
    summary = run_onpolicy(settings, resume=args.resume, show_progress=not args.no_progress)
    for norm, rates in summary["stages"]["violations"]["violation_rate"].items():
        shown = ", ".join(f"β={b}: {v:.3f}" for b, v in rates.items() if v is not None)
        print(f"dpocheck onpolicy: C2 violation rate ({norm}, Δr* from the reward model): {shown}", file=sys.stderr)
    print(json.dumps({"out": summary["out"], "counts": summary["counts"]}))
    return 0
