"""Sub-commands on the model side of ``dpocheck.llm``: ``score`` (log-probs of preference pairs) and ``sample``.

Import cost is kept low: torch and transformers are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from .args import add_data_args, add_model_args, add_sampling_args, positive_int, set_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score`` and ``sample`` sub-commands."""
    p = subparsers.add_parser(
        "score",
        help="log-probs of preference pairs under a causal LM (δ_ref / δ_θ for C2, C3, C4, C8, C10)",
        description="Score chosen and rejected responses of every pair: summed and per-token-mean log-probs, "
        "token counts, truncation flags and CHES (Razin et al. 2024's centered hidden embedding similarity, from the "
        "same forward pass), in resumable shards plus a merged scores.jsonl and a manifest. "
        "Run the same command under torchrun to shard the pairs across processes.",
    )
    add_model_args(p)
    add_data_args(
        p,
        on_error_help="bad records (missing/empty fields, invalid JSON, a pair over --batch-tokens, non-finite "
        "log-probs): skip and count them by reason, on screen and in the manifest (skip, the default, as for "
        "reward and the readers), or stop with an error naming the record (raise)",
    )
    p.add_argument("--out", required=True, help="output directory (shards, manifest.json, scores.jsonl)")
    p.add_argument(
        "--max-length",
        type=int,
        default=1024,
        help="token budget per sequence; the prompt is cut from the left first, then the response from the "
        "right, and the pair is flagged *_truncated (0: the model's context, from its config; a larger "
        "value is capped at the context too)",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=4096,
        help="memory budget: padded tokens per forward batch; a pair that alone needs more is a bad record "
        "(reason over_batch_tokens: skipped, or an error under --on-error raise)",
    )
    p.add_argument(
        "--shard-pairs",
        type=int,
        default=128,
        help=(
            "pairs per output shard (the resume unit); a lower bound: shards hold whole batches, "
            "so a shard may hold a few more"
        ),
    )
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out (same inputs only)")
    p.add_argument(
        "--prefix-mode",
        choices=("packed", "cache", "none"),
        default="packed",
        help="how the prompt is shared by the two responses: packed = one row per pair "
        "(prompt | chosen | rejected) with a block mask; cache = prompt pass, then both responses "
        "against its repeated key/value cache; none = every sequence in full",
    )
    p.add_argument(
        "--sdpa-backend",
        choices=("auto", "math", "efficient", "flash", "cudnn"),
        default="auto",
        help="force one scaled-dot-product-attention kernel (auto: torch's choice; flash takes no custom mask)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (scoring and model loading)")
    p.add_argument(
        "--check-fp32",
        type=positive_int,
        default=None,
        metavar="N",
        help="after a bf16/fp16 run, rescore N random scored pairs with the same weights in fp32 and record the "
        "gap of log-probs and δ_ref in manifest.json (precision_check; see docs/bf16.md); once per run",
    )
    p.add_argument("--check-fp32-seed", type=int, default=0, help="seed of the pairs --check-fp32 draws")
    p.set_defaults(func=_score)

    s = subparsers.add_parser(
        "sample",
        help="K seeded responses per prompt with their log-probs under the sampler (on-policy data)",
        description="Sample K responses per prompt (seeded, reproducible) and record each response's summed and "
        "mean log-prob under the model, recomputed by a forward pass; optionally form preference pairs.",
    )
    add_model_args(s)
    s.add_argument(
        "--prompts",
        required=True,
        help="JSONL with a 'prompt' field (text or chat messages), or a .txt file (one prompt a line)",
    )
    s.add_argument("--out", required=True, help="output JSONL of samples")
    add_sampling_args(s, seed_help="sampling seed (prompt i uses the seed pair (seed, i))")
    s.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        help="prompts per generate call (left-padded); the samples depend on it: the same batch size gives the "
        "same samples, 1 makes each prompt's samples independent of the others",
    )
    s.add_argument(
        "--pairs-out",
        default=None,
        help="also write TRL-style pair records (prompt, chosen, rejected) formed from the samples",
    )
    s.add_argument(
        "--pair-mode",
        choices=("all", "best-worst"),
        default="all",
        help="all: every pair of distinct samples; best-worst: highest vs lowest --reward-field",
    )
    s.add_argument(
        "--reward-field",
        default=None,
        help="numeric field of each sample row that orders pairs (e.g. after `dpocheck reward`)",
    )
    s.add_argument("--resume", action="store_true", help="keep prompts already complete in --out")
    s.add_argument("--no-progress", action="store_true", help="no progress bars (sampling and model loading)")
    s.set_defaults(func=_sample)


def _require(ok: bool, message: str) -> None:
    """Raise InputError(message) unless `ok`: argument checks that run before any model is loaded."""
    from dpocheck.errors import InputError

    if not ok:
        raise InputError(message)


def _check_score_args(args: argparse.Namespace) -> None:
    """Reject bad score arguments, a model path without a model and an unwritable --out, before loading."""
    from dpocheck.llm.manifest import MANIFEST, check_output
    from dpocheck.llm.preflight import check_model_path, check_output_path
    from dpocheck.llm.scoring.settings import cap_max_length

    _require(args.batch_tokens > 0, f"--batch-tokens must be > 0, got {args.batch_tokens}")
    _require(args.shard_pairs > 0, f"--shard-pairs must be > 0, got {args.shard_pairs}")
    _require(args.limit is None or args.limit >= 0, f"--limit must be >= 0, got {args.limit}")
    cap_max_length(args.max_length, None)  # the range check of --max-length
    args.model = str(check_model_path(args.model))
    out = check_output_path(args.out, directory=True)
    check_output(out / MANIFEST, tool="score", resume=args.resume, where=str(out))


def _check_sample_args(args: argparse.Namespace) -> None:
    """Reject bad sampling parameters, a model path without a model and an unwritable --out, before loading."""
    from dpocheck.llm.manifest import check_output, sidecar_path
    from dpocheck.llm.preflight import check_model_path, check_output_path

    _require(args.k > 0, f"--k must be > 0, got {args.k}")
    _require(args.max_new_tokens > 0, f"--max-new-tokens must be > 0, got {args.max_new_tokens}")
    _require(
        math.isfinite(args.temperature) and args.temperature > 0,
        f"--temperature must be a finite number > 0, got {args.temperature}",
    )
    _require(0 < args.top_p <= 1, f"--top-p must be in (0, 1], got {args.top_p}")
    _require(args.top_k >= 0, f"--top-k must be >= 0, got {args.top_k}")
    _require(args.limit is None or args.limit >= 0, f"--limit must be >= 0, got {args.limit}")
    args.model = str(check_model_path(args.model))
    out = check_output_path(args.out, directory=False)
    if args.pairs_out:
        check_output_path(args.pairs_out, directory=False, option="--pairs-out")
    check_output(sidecar_path(out), tool="sample", resume=args.resume, outputs=(out,), where=str(out))


def _score(args: argparse.Namespace) -> int:
    from dpocheck.llm import data as data_mod
    from dpocheck.llm import models
    from dpocheck.llm.manifest import data_identity
    from dpocheck.llm.scoring.account import skip_line, truncation_line
    from dpocheck.llm.scoring.distributed import finish_distributed, init_distributed
    from dpocheck.llm.scoring.kernels import sdpa_backend
    from dpocheck.llm.scoring.render import resolve_chat_template
    from dpocheck.llm.scoring.runner import score_to_directory
    from dpocheck.llm.scoring.settings import ScoreSettings, cap_max_length, context_length

    _check_score_args(args)
    set_threads(args)
    rank, world = init_distributed()
    # the data are read and checked before the weights load: as text prompts first (whether prompts become chat
    # messages depends on the tokenizer, which loads with the model); read again as chat when the template is used
    read = dict(delta_reward_source=args.delta_reward_source, limit=args.limit, on_error=args.on_error)
    load = data_mod.load_pairs(args.data, args.format, prompt_style="text", **read)
    loaded = models.load_model(
        args.model,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        progress=not args.no_progress,
    )
    use_tpl = resolve_chat_template(loaded.tokenizer, args.chat_template)
    prompt_style = "chat" if use_tpl else "text"
    if use_tpl:
        load = data_mod.load_pairs(args.data, args.format, prompt_style="chat", **read)
    if rank == 0:
        print(f"data: {load.summary()}", file=sys.stderr)
    context = context_length(loaded.model, loaded.tokenizer)
    max_length, note = cap_max_length(args.max_length, context)
    if note and rank == 0:
        print(f"dpocheck score: {note}", file=sys.stderr)
    settings = ScoreSettings(
        max_length=max_length,
        batch_tokens=args.batch_tokens,
        chat_template=args.chat_template,
        dtype=args.dtype,
        prefix_mode=args.prefix_mode,
        shard_pairs=args.shard_pairs,
        on_error=args.on_error,
        limit=args.limit,
    )
    model_id = {**models.model_fingerprint(loaded.path), "source": loaded.source, "dtype": str(loaded.dtype)}
    data_id = data_identity(
        args.data, format=load.format, delta_reward_source=args.delta_reward_source, prompt_style=prompt_style
    )
    extra = {
        "load": {
            "n_records": load.n_records,
            "pairs": len(load.pairs),
            "skipped": load.skipped,
            "examples": load.examples,
            "delta_reward_sources": load.delta_reward_sources,
            "duplicates": load.n_duplicates,
            "duplicate_examples": load.duplicate_examples,
            "duplicates_scored": "each time (every record keeps its index)",
        },
        "model_parameters": loaded.n_parameters,
        "model_context": context,
        "device": str(loaded.device),
        "sdpa_backend": args.sdpa_backend,
        "logp_convention": "chosen/rejected_logp_sum: summed token log-probs of the response given the prompt; "
        "_mean: divided by the scored token count (per-token mean, the released code's convention)",
    }
    with sdpa_backend(args.sdpa_backend):
        run = score_to_directory(
            loaded.model,
            loaded.tokenizer,
            load.pairs,
            args.out,
            settings,
            model_identity=model_id,
            data_identity=data_id,
            resume=args.resume,
            extra=extra,
            show_progress=not args.no_progress,
            reader_skipped=load.skipped,
            n_records=load.n_records,
            bound_memory=True,
        )
    if rank == 0:
        counts = run.counts or {}
        by_reason = counts.get("skipped_by_reason", {})
        line = skip_line(counts.get("scored", 0), by_reason) + f" of {load.n_records} records read"
        if load.n_duplicates:
            line += f"; {load.n_duplicates} duplicate records (same prompt, chosen, rejected) scored each time"
        n_trunc = counts.get("chosen_truncated", 0) + counts.get("rejected_truncated", 0)
        line += "; " + truncation_line(counts, settings.max_length)
        print(line, file=sys.stderr)
        summary = {
            "out": str(run.out_dir),
            "records": load.n_records,
            "pairs": run.n_pairs,
            "scored": counts.get("scored"),
            "scored_this_session": run.n_scored_now,
            "shards": run.n_shards,
            "shards_done_before": run.shards_done_before,
            "skipped": sum(by_reason.values()),
            "skipped_by_reason": by_reason,
            "duplicates": load.n_duplicates,
            "truncated": n_trunc,
            "seconds": round(run.seconds, 2),
            "tokens_per_second": round(run.tokens / run.seconds, 1) if run.seconds > 0 else None,
            "world_size": world,
            "scores": str(run.merged) if run.merged else None,
        }
        print(json.dumps(summary))
    finish_distributed()
    if rank == 0 and args.check_fp32:
        _check_fp32(args, loaded, load.pairs, settings)
    return 0


def _check_fp32(args: argparse.Namespace, loaded: Any, pairs: Any, settings: Any) -> None:
    """``--check-fp32 N``: rescore N random scored pairs in fp32 (same weights) and record the gap (C2's δ_ref)."""
    import gc

    import torch

    from dpocheck.llm.analysis.report import precision_check_lines
    from dpocheck.llm.models import load_model
    from dpocheck.llm.scoring.precision import existing_check, record_fp32_check

    if loaded.dtype in (torch.float32, torch.float64):
        print(f"dpocheck score: --check-fp32: scored in {loaded.dtype} already; nothing to check", file=sys.stderr)
        return
    rec = existing_check(args.out, args.check_fp32, args.check_fp32_seed)
    if rec is None:
        tokenizer, device = loaded.tokenizer, loaded.device
        loaded.model = None  # free the low-precision weights before loading the fp32 ones
        gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
        ref = load_model(args.model, dtype="fp32", device=device, trust_remote_code=args.trust_remote_code)
        rec = record_fp32_check(args.out, ref.model, tokenizer, pairs, settings, args.check_fp32, args.check_fp32_seed)
    for line in precision_check_lines({"precision_check": rec}):
        print(f"dpocheck score: {line}", file=sys.stderr)


def _sample(args: argparse.Namespace) -> int:
    from dpocheck.llm.generation.sample import SampleSettings, form_pairs, read_prompts, sample_to_file
    from dpocheck.llm.models import load_model

    _check_sample_args(args)
    prompts = read_prompts(args.prompts, limit=args.limit)  # checked before the weights load
    set_threads(args)
    loaded = load_model(
        args.model,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        progress=not args.no_progress,
    )
    settings = SampleSettings(
        k=args.k,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        chat_template=args.chat_template,
        batch_size=args.batch_size,
    )
    info: dict[str, Any] = sample_to_file(
        loaded.model,
        loaded.tokenizer,
        prompts,
        args.out,
        settings,
        resume=args.resume,
        show_progress=not args.no_progress,
        model_path=str(loaded.path),
        prompts_path=args.prompts,
    )
    if args.pairs_out:
        info["pairs"] = form_pairs(args.out, args.pairs_out, mode=args.pair_mode, reward_field=args.reward_field)
    print(json.dumps(info))
    return 0
