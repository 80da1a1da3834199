"""The fp32 check of low-precision scores (``dpocheck score --check-fp32 N``): how far bf16/fp16 δ's are from fp32.

Every verdict of the paper on real pairs reads δ_ref = log π_ref(y_w|x) − log π_ref(y_l|x) (C2, C3, C4, C8), and
the C2 verdict β·δ_ref + Δr* ≤ 0 flips when the error of δ_ref crosses the margin. After a low-precision run,
:func:`check_fp32_gap` draws N of the scored pairs (seeded), rescores them with the same weights loaded in fp32,
the same rendering, truncation and prefix mode (:func:`dpocheck.llm.scoring.runner.score_pairs`), and summarises
Δ = low − fp32 of the per-response summed and mean log-probs and of δ_ref in both conventions (max, median,
p90 of |Δ|, signed mean). :func:`record_fp32_check` stores it in the scores manifest as ``precision_check``
(:func:`record_fp32_check`); ``dpocheck violations`` prints it. The rescoring
batches the N pairs among themselves, so in fp32 against fp32 the gap is the batching noise (≤ ~1e-4 nats).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck.errors import InputError, NumericalError
from dpocheck.llm.data.types import PreferencePair
from dpocheck.llm.manifest import MANIFEST, MERGED, is_complete, read_manifest, write_manifest

from .settings import LOGP_CONVENTIONS

GAP_KEYS = ("logp_sum", "logp_mean", "delta_ref_sum", "delta_ref_mean")
STAT_KEYS = ("max_abs", "median_abs", "p90_abs", "mean_signed")


def choose_check_indices(indices: Sequence[int], n: int, seed: int) -> list[int]:
    """N pair indices drawn without replacement among ``indices`` (all of them when N ≥ their number), sorted."""
    if n < 1:
        raise InputError(f"--check-fp32 must be >= 1, got {n}")
    pool = np.asarray(sorted(set(int(i) for i in indices)), dtype=np.int64)
    if n >= pool.size:
        return pool.tolist()
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(pool, size=n, replace=False).tolist())


def _stats(diff: np.ndarray) -> dict[str, float]:
    a = np.abs(diff)
    return {
        "max_abs": float(a.max()),
        "median_abs": float(np.median(a)),
        "p90_abs": float(np.quantile(a, 0.9)),
        "mean_signed": float(diff.mean()),
    }


def gap_summary(low: Sequence[dict[str, Any]], ref: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Δ = low − ref statistics of score rows joined on ``index`` (both lists hold the same indices).

    ``logp_sum``/``logp_mean`` pool the chosen and rejected responses (2 values a pair); ``delta_ref_*`` is
    δ = chosen − rejected in the summed and the per-token-mean convention.
    """
    by_ref = {r["index"]: r for r in ref}
    if sorted(by_ref) != sorted(r["index"] for r in low):
        raise InputError("precision check: the two score lists hold different pairs")
    if not low:
        raise InputError("precision check: no pair to compare")
    diffs: dict[str, list[float]] = {k: [] for k in GAP_KEYS}
    for a in low:
        b = by_ref[a["index"]]
        for conv in LOGP_CONVENTIONS:
            dc = a[f"chosen_logp_{conv}"] - b[f"chosen_logp_{conv}"]
            dr = a[f"rejected_logp_{conv}"] - b[f"rejected_logp_{conv}"]
            diffs[f"logp_{conv}"] += [dc, dr]
            diffs[f"delta_ref_{conv}"].append(dc - dr)
    out = {k: _stats(np.asarray(v, dtype=np.float64)) for k, v in diffs.items()}
    if not all(np.isfinite(v) for s in out.values() for v in s.values()):
        raise NumericalError(f"precision check: non-finite gap {out}")
    return out


def check_fp32_gap(
    model_fp32: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    rows: Sequence[dict[str, Any]],
    settings: Any,
    n: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Rescore N seeded random pairs among ``rows`` (the low-precision scores) with ``model_fp32``; the gap record.

    ``settings`` is the run's :class:`~dpocheck.llm.scoring.runner.ScoreSettings` (rendering, truncation, prefix mode,
    batch budget are reused; pairs the rescoring cannot score are counted in ``n_failed``).
    """
    from dataclasses import replace

    from .runner import score_pairs

    t0 = time.perf_counter()
    chosen = choose_check_indices([r["index"] for r in rows], n, seed)
    by_index = {p.index: p for p in pairs}
    missing = [i for i in chosen if i not in by_index]
    if missing:
        raise InputError(f"precision check: scored pairs {missing[:5]} are not in the loaded data")
    ref_rows, skipped = score_pairs(
        model_fp32, tokenizer, [by_index[i] for i in chosen], replace(settings, on_error="skip", limit=None)
    )
    keep = {r["index"] for r in ref_rows}
    low = [r for r in rows if r["index"] in keep]
    return {
        "n_requested": n,
        "n_checked": len(ref_rows),
        "n_failed": len(skipped),
        "seed": seed,
        "dtype_scored": str(settings.dtype),
        "dtype_reference": "fp32",
        "indices": sorted(keep),
        "gap": gap_summary(low, ref_rows),
        "gap_definition": "Δ = scored − fp32 rescore, same weights and rendering; logp_*: chosen and rejected "
        "pooled; delta_ref_*: δ_ref = chosen − rejected, summed / per-token-mean convention",
        "seconds": time.perf_counter() - t0,
    }


def existing_check(out_dir: str | Path, n: int, seed: int) -> dict[str, Any] | None:
    """The manifest's ``precision_check`` when it was made with the same N and seed (resume: done once)."""
    manifest = read_manifest(Path(out_dir) / MANIFEST)
    rec = manifest.get("precision_check")
    if isinstance(rec, dict) and rec.get("n_requested") == n and rec.get("seed") == seed:
        return rec
    return None


def record_fp32_check(
    out_dir: str | Path,
    model_fp32: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    settings: Any,
    n: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Run :func:`check_fp32_gap` on a complete scores directory and record it in its manifest (idempotent)."""
    from dpocheck._io import read_jsonl

    out = Path(out_dir)
    done = existing_check(out, n, seed)
    if done is not None:
        return done
    merged = out / MERGED
    if not merged.exists():
        raise InputError(f"{out}: no {MERGED} yet; the fp32 check runs on a complete scoring run")
    rec = check_fp32_gap(model_fp32, tokenizer, pairs, read_jsonl(merged), settings, n, seed)
    manifest = read_manifest(out / MANIFEST)
    if not is_complete(manifest):
        raise InputError(f"{out}: the scoring run is not complete; the fp32 check needs the merged scores")
    manifest["precision_check"] = rec
    write_manifest(out / MANIFEST, manifest)
    return rec
