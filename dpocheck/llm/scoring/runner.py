"""The sharded, resumable scoring runner behind ``dpocheck score``: pairs in, score rows and a manifest out.

For each pair (x, y_w, y_l) a row holds log π(y|x) for y = y_w and y = y_l, summed over the response tokens and
as the per-token mean (the released code's length-normalised convention, PAPER.md §1), with token counts,
truncation flags and CHES from the same forward pass (:mod:`~dpocheck.llm.scoring.hidden`, PAPER §6)
(:data:`ROW_KEYS`, the contract with :mod:`dpocheck.llm.analysis`). Text comes from
:mod:`~dpocheck.llm.scoring.render`, tokens from :mod:`~dpocheck.llm.scoring.encode`, log-probs from
:mod:`~dpocheck.llm.scoring.kernels`.

**Bad pairs** (an empty response, no response token within ``max_length``, a pair over ``batch_tokens``, a
non-finite log-prob) stop the run with an error naming the record (``on_error="raise"``) or are skipped and
listed with their reason in the manifest (``on_error="skip"``, the CLI's default, like the readers'). The
manifest's counts hold ``records_read``, ``scored`` and ``skipped_by_reason`` (reader and scorer reasons
together), with ``records_read = scored + sum(skipped_by_reason)``.

**Output directory** (:func:`score_to_directory`): shards ``scores-<rank>-<k>.jsonl`` (written to a temp file and
renamed, so a shard is complete or absent), ``manifest.json`` (:mod:`~dpocheck.llm.manifest`: model identity,
data sha256, settings, tokenizer and chat template, counts) and, after all ranks finish, the merged
``scores.jsonl`` sorted by index. The batch plan is a deterministic function of the data and settings, and shard
``k`` always holds the same pairs, so a resumed run (``resume=True``) skips complete shards and reproduces the
uninterrupted output exactly; a shard file that is cut (a last line without its newline, a line that is not
JSON) or does not hold the pairs of its plan is named on screen, removed and scored again. Under ``torchrun``
the shards are dealt to ranks round-robin (``k % world_size``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dpocheck._io import jsonl_text, read_jsonl, write_text_atomic
from dpocheck.errors import InputError
from dpocheck.llm.data.types import PreferencePair
from dpocheck.llm.manifest import MANIFEST, MERGED, SHARD_RE, OutputRun, differences, open_output, read_manifest
from dpocheck.llm.models import pad_token_id

from .account import truncation_counts
from .distributed import barrier, dist_info, raise_if_any_rank_failed
from .encode import (
    EncodedPair,
    EncodeResult,
    ScoringError,
    encode_pairs,
    padded_cost,
    plan_batches,
    plan_shards,
    real_cost,
)
from .hidden import ches_fields
from .kernels import SequenceScore, score_batch
from .render import resolve_chat_template
from .settings import ROW_KEYS, ScoreSettings

TOOL = "score"


def tokenizer_info(tokenizer: Any, use_chat_template: bool, with_template: bool = True) -> dict[str, Any]:
    """What a scores manifest records about the tokenizer and the chat template (the chat template itself, and
    its sha256 in the fingerprint); ``with_template=False`` leaves the template's text out (a train manifest)."""
    tpl = getattr(tokenizer, "chat_template", None) if use_chat_template else None
    info = {
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "chat_template_used": use_chat_template,
        "chat_template_sha256": hashlib.sha256(tpl.encode()).hexdigest() if isinstance(tpl, str) else None,
        "chat_template": tpl if isinstance(tpl, str) else None,
    }
    if not with_template:
        del info["chat_template"]
    return info


def scores_fingerprint(
    model_identity: dict[str, Any], data_identity: dict[str, Any], settings: dict[str, Any], tok: dict[str, Any]
) -> dict[str, Any]:
    """What must match for ``dpocheck score --resume``: model, data, settings, tokenizer (without the template
    text; its hash is in)."""
    return {
        "model": model_identity,
        "data": data_identity,
        "settings": settings,
        "tokenizer": {k: v for k, v in tok.items() if k != "chat_template"},
    }


def make_row(pair: PreferencePair, enc: EncodedPair, chosen: SequenceScore, rejected: SequenceScore) -> dict:
    """The output row of one pair (exact keys :data:`ROW_KEYS`, the contract with the analysis side)."""
    for name, s in (("chosen", chosen), ("rejected", rejected)):
        if not s.finite or not math.isfinite(s.logp_sum):
            raise ScoringError(pair.index, name, f"has a non-finite log-probability ({s.logp_sum})", "non_finite")
        if s.tokens < 1:
            raise ScoringError(pair.index, name, "has no scored tokens", "empty_response")
    return {
        "index": pair.index,
        "chosen_logp_sum": chosen.logp_sum,
        "rejected_logp_sum": rejected.logp_sum,
        "chosen_logp_mean": chosen.logp_mean,
        "rejected_logp_mean": rejected.logp_mean,
        "chosen_tokens": chosen.tokens,
        "rejected_tokens": rejected.tokens,
        "chosen_truncated": enc.chosen_truncated,
        "rejected_truncated": enc.rejected_truncated,
        "delta_reward": pair.delta_reward,
        "reward_source": pair.reward_source,
        "subset": pair.subset,
        **ches_fields(chosen, rejected),
    }


def score_pairs(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    settings: ScoreSettings | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score pairs in memory: (rows sorted by index, skipped records). Same batching as the CLI."""
    settings = settings or ScoreSettings()
    use_tpl = resolve_chat_template(tokenizer, settings.chat_template)
    enc = encode_pairs(tokenizer, pairs, settings, use_tpl)
    pad = pad_token_id(tokenizer)
    rows, skipped = [], list(enc.skipped)
    for batch in plan_batches(enc.encoded, settings.batch_tokens, settings.prefix_mode):
        r, s = _score_planned_batch(model, enc, batch, pad, settings)
        rows += r
        skipped += s
        if progress is not None:
            progress(len(batch))
    rows.sort(key=lambda row: row["index"])
    return rows, skipped


def _score_planned_batch(
    model: Any, enc: EncodeResult, batch: Sequence[int], pad: int, settings: ScoreSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import torch

    with torch.inference_mode():
        scores = score_batch(model, [enc.encoded[i] for i in batch], pad, settings.prefix_mode, hidden_sums=True)
    rows, skipped = [], []
    for k, i in enumerate(batch):
        try:
            rows.append(make_row(enc.pairs[i], enc.encoded[i], scores[2 * k], scores[2 * k + 1]))
        except ScoringError as err:
            if settings.on_error == "raise":
                raise
            skipped.append({"index": enc.pairs[i].index, "reason": err.reason, "error": str(err)})
    return rows, skipped


# ----------------------------------------------------------------------------------------------- files
def _shard_files(out: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for f in out.iterdir():
        m = SHARD_RE.match(f.name)
        if m:
            k = int(m.group(2))
            if k in found:
                raise RuntimeError(f"two files for shard {k} in {out}: {found[k].name}, {f.name}")
            found[k] = f
    return found


def _skipped_file(shard: Path) -> Path:
    return shard.with_name(shard.stem + ".skipped.json")


# ----------------------------------------------------------------------------------------------- the runner
@dataclass
class ScoreRun:
    """What :func:`score_to_directory` did on this rank."""

    out_dir: Path
    n_pairs: int
    n_scored_now: int
    n_shards: int
    shards_done_before: int
    skipped: list[dict[str, Any]]
    seconds: float
    tokens: int
    merged: Path | None
    counts: dict[str, Any] | None = None


def score_to_directory(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    out_dir: str | os.PathLike[str],
    settings: ScoreSettings,
    *,
    model_identity: dict[str, Any],
    data_identity: dict[str, Any],
    resume: bool = False,
    extra: dict[str, Any] | None = None,
    show_progress: bool = True,
    reader_skipped: dict[str, int] | None = None,
    n_records: int | None = None,
    bound_memory: bool = False,
) -> ScoreRun:
    """Score ``pairs`` into ``out_dir`` (shards, manifest, merged ``scores.jsonl``); resumable; torchrun-aware.

    Rank r processes the shards k with k % world_size == r that are not complete yet (a shard file exists only
    once complete: it is written to a temp file and renamed). After a barrier, rank 0 checks every shard against
    the plan and merges them. ``reader_skipped`` (reason → count) and ``n_records`` are the reader's account of
    the records that did not become pairs, added to the manifest's counts. ``bound_memory`` (``dpocheck
    score``): a pair that alone needs more than ``settings.batch_tokens`` tokens is a bad record
    (``over_batch_tokens``, see :func:`~dpocheck.llm.scoring.encode.encode_pairs`) rather than a batch of its own.
    """
    rank, world = dist_info()
    out = Path(out_dir)
    use_tpl = resolve_chat_template(tokenizer, settings.chat_template)
    tok = tokenizer_info(tokenizer, use_tpl)
    fp = scores_fingerprint(model_identity, data_identity, asdict(settings), tok)
    failure: Exception | None = None
    t0 = time.perf_counter()
    try:  # every record is encoded before anything is written: a bad one (under on_error="raise") leaves no output
        enc = encode_pairs(tokenizer, pairs, settings, use_tpl, bound_memory=bound_memory)
    except ScoringError as exc:  # name the file beside the record and field
        failure = InputError(f"--data {data_identity.get('path', '?')}: {exc}")
        failure.__cause__ = exc
    except Exception as exc:
        failure = exc
    raise_if_any_rank_failed(failure)
    run = OutputRun(out / MANIFEST, {}, write=False)
    try:
        if rank == 0:
            run = open_scores_output(out, fp, resume=resume, world_size=world, tokenizer_detail=tok, extra=extra)
            if run.previous_failure:
                print(f"dpocheck score: {out}: {run.previous_failure}", file=sys.stderr)
    except Exception as exc:  # every rank stops with rank 0's message (resume mismatch, bad output dir)
        failure = exc
    raise_if_any_rank_failed(failure)
    with run.guard():
        try:
            if rank != 0 and differences(read_manifest(out / MANIFEST).get("fingerprint", {}), fp):
                raise InputError(f"rank {rank}: inputs differ from rank 0's manifest in {out}")
        except Exception as exc:  # a fingerprint mismatch on one rank stops all of them
            failure = exc
        raise_if_any_rank_failed(failure)
        shards = plan_shards(
            plan_batches(enc.encoded, settings.batch_tokens, settings.prefix_mode), settings.shard_pairs
        )
        done = _shard_files(out)
        for k in [k for k in sorted(done) if k % world == rank and k < len(shards)]:
            problem = _shard_problem(done[k], enc, shards[k])
            if problem:
                print(f"dpocheck score: {problem}; scoring shard {k} again", file=sys.stderr)
                _skipped_file(done[k]).unlink(missing_ok=True)
                done[k].unlink()
                del done[k]
        mine = [k for k in range(len(shards)) if k % world == rank and k not in done]
        todo_pairs = sum(len(b) for k in mine for b in shards[k])
        n_tokens, skipped_now = _score_shards(model, tokenizer, enc, shards, mine, out, settings, show_progress, t0)
        seconds = time.perf_counter() - t0
        barrier()
        merged = counts = None
        if rank == 0:
            merged, counts = merge_shards(
                run,
                enc,
                shards,
                settings.prefix_mode,
                session={"rank_0_seconds": seconds, "world_size": world, "tokens_rank_0": n_tokens},
                reader_skipped=reader_skipped,
                n_records=n_records,
            )
        barrier()
    return ScoreRun(
        out,
        len(pairs),
        todo_pairs,
        len(shards),
        len(done),
        enc.skipped + skipped_now,
        seconds,
        n_tokens,
        merged,
        counts,
    )


def open_scores_output(
    out: Path,
    fingerprint: dict[str, Any],
    *,
    resume: bool,
    world_size: int,
    tokenizer_detail: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> OutputRun:
    """Open a scores directory through the output protocol (:func:`dpocheck.llm.manifest.open_output`): new, or a
    ``--resume`` with the same fingerprint; shards without a manifest are refused; a killed writer's temporary
    files are removed."""
    out.mkdir(parents=True, exist_ok=True)
    stray = [f for f in out.iterdir() if SHARD_RE.match(f.name)]
    run = open_output(
        out / MANIFEST,
        fingerprint,
        tool=TOOL,
        resume=resume,
        extra={
            "world_size": world_size,
            "row_keys": list(ROW_KEYS),
            "tokenizer_detail": tokenizer_detail,
            **(extra or {}),
        },
        keep=("sessions", "precision_check"),
        outputs=stray[:1],
    )
    for f in out.iterdir():  # leftovers of a killed writer
        if f.name.startswith(".") and ".tmp-" in f.name:
            f.unlink()
    return run


def _score_shards(
    model: Any,
    tokenizer: Any,
    enc: EncodeResult,
    shards: Sequence[Sequence[Sequence[int]]],
    mine: Sequence[int],
    out: Path,
    settings: ScoreSettings,
    show_progress: bool,
    t0: float,
) -> tuple[int, list[dict[str, Any]]]:
    """Score this rank's shards ``mine`` into ``out`` (each shard written atomically); (tokens, skipped pairs)."""
    from tqdm import tqdm

    rank, world = dist_info()
    pad = pad_token_id(tokenizer)
    n_tokens = 0
    skipped_now: list[dict[str, Any]] = []
    bar = tqdm(
        total=sum(len(b) for k in mine for b in shards[k]),
        desc=f"score rank {rank}" if world > 1 else "score",
        unit="pair",
        file=sys.stderr,
        disable=not show_progress,
        position=rank if world > 1 else None,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        dynamic_ncols=True,
    )
    try:
        for k in mine:
            rows: list[dict[str, Any]] = []
            shard_skipped: list[dict[str, Any]] = []
            for batch in shards[k]:
                r, s = _score_planned_batch(model, enc, batch, pad, settings)
                rows += r
                shard_skipped += s
                n_tokens += sum(real_cost(enc.encoded[i], settings.prefix_mode) for i in batch)
                bar.update(len(batch))
                bar.set_postfix_str(f"{n_tokens / max(time.perf_counter() - t0, 1e-9):.0f} tok/s")
            rows.sort(key=lambda row: row["index"])
            path = out / f"scores-{rank}-{k}.jsonl"
            if shard_skipped:
                write_text_atomic(_skipped_file(path), json.dumps(shard_skipped) + "\n")
            write_text_atomic(path, jsonl_text(rows))
            skipped_now += shard_skipped
    finally:
        bar.close()
    return n_tokens, skipped_now


def _shard_problem(path: Path, enc: EncodeResult, shard: Sequence[Sequence[int]]) -> str | None:
    """Why a shard file on disk cannot be kept (cut, not JSON, other pairs than its plan), or None."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        last = data.count(b"\n") + 1
        return f"shard {path} line {last} is cut (no newline at the end)"
    indices = []
    for n, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            row = json.loads(line)
            indices.append(int(row["index"]))
        except (ValueError, TypeError, KeyError):
            return f"shard {path} line {n} is not a score row"
    sk = _skipped_file(path)
    try:
        indices += [int(r["index"]) for r in json.loads(sk.read_text())] if sk.exists() else []
    except (ValueError, TypeError, KeyError):
        return f"shard {path}: its {sk.name} is not valid"
    if sorted(indices) != sorted(enc.pairs[i].index for b in shard for i in b):
        return f"shard {path} does not hold the pairs its plan puts in it"
    return None


def merge_shards(
    run: OutputRun,
    enc: EncodeResult,
    shards: Sequence[Sequence[Sequence[int]]],
    prefix_mode: str,
    session: dict[str, Any],
    *,
    reader_skipped: dict[str, int] | None = None,
    n_records: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Check every shard against the plan, write ``scores.jsonl`` sorted by index, finish the manifest.

    Returns the merged file and the manifest's counts.
    """
    out = run.path.parent
    files = _shard_files(out)
    missing = [k for k in range(len(shards)) if k not in files]
    if missing:
        raise RuntimeError(f"cannot merge {out}: shards {missing[:10]} are missing")
    extra = sorted(set(files) - set(range(len(shards))))
    if extra:
        raise RuntimeError(f"cannot merge {out}: shard files {extra[:10]} are not in the plan")
    rows: list[dict[str, Any]] = []
    skipped = list(enc.skipped)
    for k in range(len(shards)):
        shard_rows = read_jsonl(files[k])
        sk_path = _skipped_file(files[k])
        shard_skipped = json.loads(sk_path.read_text()) if sk_path.exists() else []
        expect = sorted(enc.pairs[i].index for b in shards[k] for i in b)
        got = sorted([r["index"] for r in shard_rows] + [s["index"] for s in shard_skipped])
        if got != expect:
            raise RuntimeError(f"shard file {files[k].name} does not hold the pairs the plan puts in shard {k}")
        rows += shard_rows
        skipped += shard_skipped
    rows.sort(key=lambda r: r["index"])
    indices = [r["index"] for r in rows]
    scored = set(indices)
    if len(scored) != len(indices):
        raise RuntimeError(f"duplicate indices while merging {out}")
    merged = out / MERGED
    write_text_atomic(merged, jsonl_text(rows))
    real = sum(real_cost(e, prefix_mode) for e in enc.encoded)
    padded = sum(padded_cost([enc.encoded[i] for i in b], prefix_mode) for s in shards for b in s)
    by_reason = dict(reader_skipped or {})
    for item in skipped:
        by_reason[item["reason"]] = by_reason.get(item["reason"], 0) + 1
    pairs_in = len(enc.pairs) + len(enc.skipped)
    counts = {
        "records_read": pairs_in + sum((reader_skipped or {}).values()) if n_records is None else n_records,
        "pairs_in": pairs_in,
        "scored": len(rows),
        "skipped": len(skipped),
        "skipped_reading": sum((reader_skipped or {}).values()),
        "skipped_by_reason": dict(sorted(by_reason.items())),
        **truncation_counts(e for e in enc.encoded if e.index in scored),
        "boundary_merged": sum(e.boundary_merged for e in enc.encoded),
        "shards": len(shards),
        "batches": sum(len(s) for s in shards),
        "tokens_real": real,
        "tokens_padded": padded,
        "padding_efficiency": real / padded if padded else 1.0,
    }
    run.complete(counts, skipped=skipped, sessions=[*run.manifest.get("sessions", []), session])
    return merged, counts
