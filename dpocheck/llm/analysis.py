"""The analysis behind ``dpocheck violations``: C2, C3, C4 and C8 on scored real preference pairs.

Input is a scores directory written by ``dpocheck score`` (JSONL shards, one row per pair; see
:data:`REQUIRED_FIELDS`), optionally a second one with a trained policy's log-probabilities, a β grid, a
normalisation (``sum``: log π(y|x) is the sum of the response's token log-probs, PAPER §1; ``mean``: the
per-token mean, the released code's "length-normalised" convention) and a source of the reward gap Δr*.

Every pair-level quantity is computed by :mod:`dpocheck.theory` (``violation_mask``, ``delta_opt``,
``in_undesirable_space``, ``undesirable_space_nonempty``, ``dpo_gradient_weight``, ``exit_gradient_weight``,
``dpo_loss``, ``log_cpo_margin``, ``log_gamma_star_pair``); this module only aggregates (shares, bootstrap
intervals, subsets) and reports. Every number in the JSON and Markdown output carries its claim, β and
normalisation.

Δr* is never invented: it comes from the score rows (the scorer copies it from the data, e.g. AlpacaEval's
logit(q)), from a ``dpocheck reward`` file joined on ``index``, or from a user-chosen constant
(``--assume-delta-reward``), labelled as such. Without any, only the Δr*-free quantities are reported
(δ_ref sign, share with U non-empty, and the policy metrics).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck.theory import (
    delta_opt,
    dpo_gradient_weight,
    dpo_loss,
    exit_gradient_weight,
    in_undesirable_space,
    log_cpo_margin,
    log_gamma_star_pair,
    undesirable_space_nonempty,
    violation_mask,
)

NORMALIZATIONS = ("sum", "mean")
DEFAULT_BETAS = (0.01, 0.1, 1.0, 5.0, 10.0)
DEFAULT_GAMMAS = (0.05, 0.5)  # the released code's demo (0.05) and default (0.5) γ (C10)
LOGP_FIELDS = ("chosen_logp_sum", "rejected_logp_sum", "chosen_logp_mean", "rejected_logp_mean")
REQUIRED_FIELDS = ("index", *LOGP_FIELDS)
MANIFEST = "manifest.json"
MERGED = "scores.jsonl"  # the merged, index-sorted file `dpocheck score` writes beside its shards
OPTIONAL_FIELDS = (
    "chosen_tokens",
    "rejected_tokens",
    "chosen_truncated",
    "rejected_truncated",
    "delta_reward",
    "reward_source",
    "subset",
)
NORMALIZATION_NOTES = {
    "sum": "log π(y|x) = sum of the response's token log-probs (PAPER §1)",
    "mean": "log π̄(y|x) = per-token mean log-prob (released code's length normalisation; 1/π̄ = perplexity)",
}
CLAIMS = {
    "violation_rate": "C2 (Eq. 11): share of pairs with β·δ_ref + Δr* ≤ 0 (π* prefers y_l or is indifferent)",
    "idealized_ranking_accuracy": "C2 / Chen et al. 2024 Thm 3.1: 1 − violation rate",
    "reference_preference_rate": "C2 context: share of pairs with δ_ref > 0 (π_ref already prefers y_w)",
    "u_nonempty_share": "C3: share of pairs with δ_ref < 0, i.e. U = {δ_ref < δ_π < 0} non-empty",
    "share_in_U": "C3 (Def. 3.3, Eq. 14): share of pairs with δ_ref < δ_θ < 0 (released code's frac_in_U)",
    "preference_accuracy": "C3 context: share of pairs with δ_θ > 0 (policy prefers y_w)",
    "implicit_reward_accuracy": "share with δ_θ > δ_ref (TRL rewards/accuracies; DPO loss below log 2)",
    "dpo_loss": "PAPER §1: mean ℓ_DPO = softplus(−β(δ_θ − δ_ref)); log 2 at π_θ = π_ref",
    "dpo_gradient_weight": "C4 (Prop. 3.4): |∂ℓ_DPO/∂δ_θ| = β·σ(β(δ_ref − δ_θ)); β/2 at π_θ = π_ref",
    "exit_gradient_weight": "C4: weight at the exit of U (δ_θ = 0), β·σ(β·δ_ref), on pairs in U",
    "gamma_star": "C8 (Eq. 27, Thm 4.9): γ* = max over pairs of [−β·δ_ref − Δr*]_+ / (1/π_ref(y_w) + 1/π_ref(y_l))",
    "log_cpo_margin": "C8: log m = log γ + logaddexp(−log π_ref(y_w), −log π_ref(y_l))",
    "violation_rate_with_cpo_margin": "C8: share still violated with margin m (β·δ_ref + Δr* + m ≤ 0 ⇔ γ ≤ γ*_pair)",
}


class ScoresError(ValueError):
    """A malformed scores directory or row; the message names the shard, line and field."""


# --------------------------------------------------------------------------------------------- reading scores
@dataclass
class ScoreTable:
    """Score rows of one model, sorted by ``index`` (one row per pair), as float64 / int / bool arrays.

    delta_reward is NaN where a row has none; subset and reward_source are object arrays (None when absent).
    """

    index: np.ndarray
    chosen_logp_sum: np.ndarray
    rejected_logp_sum: np.ndarray
    chosen_logp_mean: np.ndarray
    rejected_logp_mean: np.ndarray
    chosen_tokens: np.ndarray
    rejected_tokens: np.ndarray
    chosen_truncated: np.ndarray
    rejected_truncated: np.ndarray
    delta_reward: np.ndarray
    reward_source: np.ndarray
    subset: np.ndarray
    source: str = ""
    shards: list[str] = field(default_factory=list)
    n_duplicates: int = 0
    manifest: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.index.size)

    def log_pi(self, which: str, normalization: str) -> np.ndarray:
        """log π(y_w|x) (``which="chosen"``) or log π(y_l|x) under the ``sum`` or ``mean`` convention."""
        _check_normalization(normalization)
        return getattr(self, f"{which}_logp_{normalization}")

    def delta(self, normalization: str) -> np.ndarray:
        """The model's preference margin δ = log π(y_w|x) − log π(y_l|x) (PAPER §1)."""
        return self.log_pi("chosen", normalization) - self.log_pi("rejected", normalization)


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate_row(row: Any, where: str) -> dict[str, Any]:
    """Check one score row against the contract with ``dpocheck score``; return it normalised."""
    if not isinstance(row, dict):
        raise ScoresError(f"{where}: a score row must be a JSON object, got {type(row).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in row or row[name] is None:
            raise ScoresError(f"{where}: field '{name}' is missing")
    idx = row["index"]
    if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
        raise ScoresError(f"{where}: field 'index' must be a non-negative integer, got {idx!r}")
    out: dict[str, Any] = {"index": idx}
    for name in LOGP_FIELDS:
        v = row[name]
        if not _is_number(v) or not math.isfinite(float(v)):
            raise ScoresError(f"{where}: field '{name}' must be a finite number (a log-probability), got {v!r}")
        if float(v) > 1e-6:
            raise ScoresError(f"{where}: field '{name}' is a log-probability and must be <= 0, got {v!r}")
        out[name] = float(v)
    for name in ("chosen_tokens", "rejected_tokens"):
        v = row.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ScoresError(f"{where}: field '{name}' must be a positive integer (empty response?), got {v!r}")
        out[name] = -1 if v is None else v
    for name in ("chosen_truncated", "rejected_truncated"):
        v = row.get(name, False)
        if not isinstance(v, bool):
            raise ScoresError(f"{where}: field '{name}' must be true/false, got {v!r}")
        out[name] = v
    dr = row.get("delta_reward")
    if dr is not None and (not _is_number(dr) or not math.isfinite(float(dr))):
        raise ScoresError(f"{where}: field 'delta_reward' must be a finite number or null, got {dr!r}")
    out["delta_reward"] = math.nan if dr is None else float(dr)
    for name in ("reward_source", "subset"):
        v = row.get(name)
        if v is not None and not isinstance(v, str):
            raise ScoresError(f"{where}: field '{name}' must be a string or null, got {v!r}")
        out[name] = v
    return out


def read_scores(directory: str | os.PathLike[str]) -> ScoreTable:
    """Read every ``*.jsonl`` shard of a scores directory into a :class:`ScoreTable` sorted by ``index``.

    When the directory holds both the merged ``scores.jsonl`` and the shards of a run marked complete in
    ``manifest.json``, only the merged file is read. A row repeated with identical values is kept once and
    counted in ``n_duplicates``; the same index with different values is an error. Missing rows are detected
    against the manifest's scored-pair count (``counts.scored``) and an incomplete run is flagged; gaps in the
    index range are expected where the data reader skipped records and are reported as a count only.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ScoresError(f"scores directory not found: {d}")
    manifest, warnings = _read_manifest(d)
    shards = _select_shards(d, manifest, warnings)
    rows: dict[int, tuple[dict[str, Any], str]] = {}
    n_dup = 0
    for shard in shards:
        with open(shard, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{shard.name} line {line_no}"
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ScoresError(f"{where}: not valid JSON ({err.msg})") from err
                row = _validate_row(raw, where)
                prev = rows.get(row["index"])
                if prev is not None:
                    if _same_row(prev[0], row):
                        n_dup += 1
                        continue
                    raise ScoresError(f"{where}: index {row['index']} already seen at {prev[1]} with different values")
                rows[row["index"]] = (row, where)
    if not rows:
        raise ScoresError(f"the score shards in {d} contain no rows")
    ordered = [rows[k][0] for k in sorted(rows)]
    table = ScoreTable(
        index=np.array([r["index"] for r in ordered], dtype=np.int64),
        **{name: np.array([r[name] for r in ordered], dtype=np.float64) for name in LOGP_FIELDS},
        chosen_tokens=np.array([r["chosen_tokens"] for r in ordered], dtype=np.int64),
        rejected_tokens=np.array([r["rejected_tokens"] for r in ordered], dtype=np.int64),
        chosen_truncated=np.array([r["chosen_truncated"] for r in ordered], dtype=bool),
        rejected_truncated=np.array([r["rejected_truncated"] for r in ordered], dtype=bool),
        delta_reward=np.array([r["delta_reward"] for r in ordered], dtype=np.float64),
        reward_source=np.array([r["reward_source"] for r in ordered], dtype=object),
        subset=np.array([r["subset"] for r in ordered], dtype=object),
        source=str(d),
        shards=[s.name for s in shards],
        n_duplicates=n_dup,
        manifest=manifest,
        warnings=warnings,
    )
    expected = _manifest_pair_count(manifest)
    if expected is not None and expected != len(table):
        warnings.append(
            f"manifest.json expects {expected} scored pairs but the shards hold {len(table)} rows "
            f"({expected - len(table)} missing)"
        )
    return table


def _read_manifest(d: Path) -> tuple[dict[str, Any] | None, list[str]]:
    warnings: list[str] = []
    mpath = d / MANIFEST
    if not mpath.is_file():
        return None, warnings
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return None, [f"{MANIFEST} is not valid JSON ({err.msg}); ignored"]
    if not isinstance(manifest, dict):
        return None, [f"{MANIFEST} is not a JSON object; ignored"]
    status = manifest.get("status")
    if (status is not None and status != "complete") or manifest.get("complete") is False:
        warnings.append(
            f"{MANIFEST} marks the scoring run as not complete (status {status!r}); rows may be missing "
            "(`dpocheck score --resume` continues it)"
        )
    skipped = manifest.get("skipped")
    if isinstance(skipped, list) and skipped:
        warnings.append(f"the scorer skipped {len(skipped)} pairs (listed in {MANIFEST})")
    return manifest, warnings


def _select_shards(d: Path, manifest: dict[str, Any] | None, warnings: list[str]) -> list[Path]:
    """The ``*.jsonl`` files to read: the merged ``scores.jsonl`` of a complete run, else the shards."""
    files = sorted(f for f in d.glob("*.jsonl") if not f.name.startswith("."))
    if not files:
        raise ScoresError(f"no *.jsonl score shards in {d} (expected the output directory of `dpocheck score`)")
    merged = d / MERGED
    others = [f for f in files if f != merged]
    if merged in files and others:
        if manifest is not None and manifest.get("status") == "complete":
            return [merged]  # the shards hold the same rows
        warnings.append(f"{MERGED} is ignored because the run is not marked complete; reading the shards")
        return others
    return files


def _manifest_pair_count(manifest: dict[str, Any] | None) -> int | None:
    """Scored-pair count recorded by the scorer (``counts.scored``, or ``n_pairs``), when there is one."""
    if not manifest:
        return None
    counts = manifest.get("counts")
    cands = [counts.get("scored") if isinstance(counts, dict) else None]
    cands += [manifest.get(k) for k in ("n_pairs", "n_rows")]
    for v in cands:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _same_row(a: dict[str, Any], b: dict[str, Any]) -> bool:
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and math.isnan(x) and isinstance(y, float) and math.isnan(y):
            continue
        if x != y:
            return False
    return True


def index_gaps(index: np.ndarray) -> int:
    """How many integers between the lowest and highest index have no row (skipped records, missing rows)."""
    if index.size == 0:
        return 0
    return int(index[-1] - index[0] + 1 - index.size)


def read_delta_reward_file(path: str | os.PathLike[str]) -> dict[int, float]:
    """Δr* per pair from a JSONL file with ``index`` and ``delta_reward`` (as ``dpocheck reward`` writes)."""
    p = Path(path)
    if not p.is_file():
        raise ScoresError(f"delta-reward file not found: {p}")
    out: dict[int, float] = {}
    with open(p, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{p.name} line {line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ScoresError(f"{where}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ScoresError(f"{where}: must be a JSON object")
            idx, dr = row.get("index"), row.get("delta_reward")
            if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
                raise ScoresError(f"{where}: field 'index' must be a non-negative integer, got {idx!r}")
            if not _is_number(dr) or not math.isfinite(float(dr)):
                raise ScoresError(f"{where}: field 'delta_reward' must be a finite number, got {dr!r}")
            if idx in out and out[idx] != float(dr):
                raise ScoresError(f"{where}: index {idx} appears twice with different delta_reward")
            out[idx] = float(dr)
    if not out:
        raise ScoresError(f"delta-reward file {p} has no rows")
    return out


@dataclass
class DeltaReward:
    """Δr* per pair of a score table (NaN where unknown) and a label saying where it came from."""

    values: np.ndarray | None
    label: str
    assumed: bool = False
    n_missing: int = 0


def resolve_delta_reward(
    table: ScoreTable,
    *,
    delta_reward_file: str | os.PathLike[str] | None = None,
    assume: float | None = None,
    use_rows: bool = True,
) -> DeltaReward:
    """Pick the Δr* source: a reward file (joined on index), else a user-assumed constant, else the rows.

    Returns ``values=None`` with an explanatory label when no source is available; never invents a value.
    """
    if delta_reward_file is not None and assume is not None:
        raise ValueError("give either a delta-reward file or an assumed constant Δr*, not both")
    n = len(table)
    if delta_reward_file is not None:
        mapping = read_delta_reward_file(delta_reward_file)
        vals = np.array([mapping.get(int(i), math.nan) for i in table.index], dtype=np.float64)
        n_missing = int(np.isnan(vals).sum())
        if n_missing == n:
            raise ScoresError(f"no index of {delta_reward_file} matches a scored pair")
        return DeltaReward(
            vals, f"reward-model file {Path(delta_reward_file).name} (joined on index)", False, n_missing
        )
    if assume is not None:
        if not math.isfinite(assume):
            raise ValueError(f"assumed Δr* must be finite, got {assume!r}")
        return DeltaReward(
            np.full(n, float(assume)),
            f"ASSUMED constant Δr* = {assume:g} (user-chosen, not from data)",
            True,
            0,
        )
    if use_rows and n and not np.all(np.isnan(table.delta_reward)):
        vals = table.delta_reward.copy()
        srcs = sorted({str(s) for s in table.reward_source[~np.isnan(vals)]})
        return DeltaReward(vals, "score rows' delta_reward (" + ", ".join(srcs) + ")", False, int(np.isnan(vals).sum()))
    return DeltaReward(
        None,
        "none: the data carries no reward gap; the violation rate (C2) and γ* (C8) need Δr* "
        "(pass --delta-reward FILE from `dpocheck reward`, or --assume-delta-reward VALUE)",
    )


# ------------------------------------------------------------------------------------------------- statistics
def bootstrap_mean_ci(
    values: Any, n_resamples: int = 2000, seed: int | Sequence[int] = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (vectorised resampling of indices, seeded).

    Returns (nan, nan) for an empty sample. Resamples are drawn in blocks so memory stays below ~32 MB.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    if n == 0:
        return math.nan, math.nan
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, 4_000_000 // n))
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _stats(x: np.ndarray) -> dict[str, float | int | None]:
    if x.size == 0:
        return {"n": 0, "mean": None, "median": None, "min": None, "max": None}
    return {
        "n": int(x.size),
        "mean": float(np.mean(x)),
        "median": float(np.median(x)),
        "min": float(np.min(x)),
        "max": float(np.max(x)),
    }


def _share(
    mask: np.ndarray, claim: str, beta: float | None, normalization: str, n_boot: int, seed: Any
) -> dict[str, Any]:
    m = np.asarray(mask, dtype=bool)
    lo, hi = bootstrap_mean_ci(m, n_boot, seed) if n_boot > 0 else (math.nan, math.nan)
    return {
        "value": float(m.mean()) if m.size else None,
        "ci95": [lo, hi] if m.size and n_boot > 0 else None,
        "count": int(m.sum()),
        "n": int(m.size),
        "claim": claim,
        "beta": beta,
        "normalization": normalization,
    }


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# --------------------------------------------------------------------------------------------- the analysis
def analyze(
    reference: ScoreTable,
    *,
    betas: Sequence[float] = DEFAULT_BETAS,
    normalization: str = "sum",
    delta_reward: DeltaReward | None = None,
    policy: ScoreTable | None = None,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The violations report (a JSON-ready dict) for one normalisation and a β grid.

    reference: π_ref's scores; policy: a trained policy's scores (joined on index); delta_reward: from
    :func:`resolve_delta_reward` (None = use the rows' delta_reward if any).
    """
    _check_normalization(normalization)
    betas = [float(b) for b in betas]
    if not betas or any(not (math.isfinite(b) and b > 0) for b in betas):
        raise ValueError(f"every β must be finite and > 0 (KL-regularised RLHF), got {betas}")
    for g in gammas:
        if not (math.isfinite(g) and g > 0):
            raise ValueError(f"every γ must be finite and > 0, got {g!r}")
    if delta_reward is None:
        delta_reward = resolve_delta_reward(reference)
    norm = normalization
    ref = reference
    dr_all = delta_reward.values

    report: dict[str, Any] = {
        "tool": "dpocheck violations",
        "normalization": norm,
        "normalization_note": NORMALIZATION_NOTES[norm],
        "betas": betas,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "inputs": {
            "scores": ref.source,
            "shards": ref.shards,
            "n_pairs": len(ref),
            "n_duplicate_rows_dropped": ref.n_duplicates,
            "index_gaps": index_gaps(ref.index),
            "n_truncated_pairs": int((ref.chosen_truncated | ref.rejected_truncated).sum()),
            "warnings": list(ref.warnings),
            "manifest": ref.manifest,
        },
        "delta_reward": {
            "source": delta_reward.label,
            "available": dr_all is not None,
            "assumed": delta_reward.assumed,
        },
    }
    d_ref = ref.delta(norm)
    lw, ll = ref.log_pi("chosen", norm), ref.log_pi("rejected", norm)
    have = None if dr_all is None else ~np.isnan(dr_all)
    if dr_all is not None:
        report["delta_reward"].update(
            {"n_with": int(have.sum()), "n_without": int((~have).sum()), "stats": _stats(dr_all[have])}
        )
        if (~have).any():
            report["delta_reward"]["note"] = (
                f"{int((~have).sum())} pairs have no Δr* and are left out of the C2/C8 numbers"
            )

    # β-independent reference quantities
    report["reference"] = {
        "delta_ref": {**_stats(d_ref), "normalization": norm},
        "reference_preference_rate": _share(
            d_ref > 0, CLAIMS["reference_preference_rate"], None, norm, n_bootstrap, [seed, 1]
        ),
        "u_nonempty_share": _share(
            np.asarray(undesirable_space_nonempty(d_ref)),
            CLAIMS["u_nonempty_share"],
            None,
            norm,
            n_bootstrap,
            [seed, 2],
        ),
        "n_ties": int((d_ref == 0).sum()),
        "log_margin_per_unit_gamma": {
            **_stats(np.asarray(log_cpo_margin(lw, ll, 1.0))),
            "claim": CLAIMS["log_cpo_margin"] + " at γ = 1",
            "normalization": norm,
            "note": (
                "log(1/π̄_ref(y_w) + 1/π̄_ref(y_l)): 1/π̄ is the response's perplexity under π_ref"
                if norm == "mean"
                else "log(1/π_ref(y_w) + 1/π_ref(y_l)) of whole responses: astronomically large margins"
            ),
        },
    }
    subsets = _subset_positions(ref.subset)

    # optional policy, joined on index
    pol = None
    if policy is not None:
        common, i_ref, i_pol = np.intersect1d(ref.index, policy.index, return_indices=True)
        if common.size == 0:
            raise ScoresError("the policy scores share no index with the reference scores")
        pol = {
            "d_theta": policy.delta(norm)[i_pol],
            "d_ref": d_ref[i_ref],
        }
        in_u = np.asarray(in_undesirable_space(pol["d_theta"], pol["d_ref"]))
        pol["in_u"] = in_u
        report["policy"] = {
            "scores": policy.source,
            "n_joined": int(common.size),
            "n_reference_only": int(len(ref) - common.size),
            "n_policy_only": int(len(policy) - common.size),
            "delta_theta": {**_stats(pol["d_theta"]), "normalization": norm},
            "share_in_U": _share(in_u, CLAIMS["share_in_U"], None, norm, n_bootstrap, [seed, 3]),
            "preference_accuracy": _share(
                pol["d_theta"] > 0, CLAIMS["preference_accuracy"], None, norm, n_bootstrap, [seed, 4]
            ),
            "implicit_reward_accuracy": _share(
                pol["d_theta"] > pol["d_ref"],
                CLAIMS["implicit_reward_accuracy"],
                None,
                norm,
                n_bootstrap,
                [seed, 5],
            ),
        }

    per_beta = []
    for k, beta in enumerate(betas):
        entry: dict[str, Any] = {"beta": beta, "normalization": norm}
        if dr_all is not None:
            dref_h, dr_h = d_ref[have], dr_all[have]
            viol = np.asarray(violation_mask(dref_h, dr_h, beta))
            vr = _share(viol, CLAIMS["violation_rate"], beta, norm, n_bootstrap, [seed, 10, k])
            if delta_reward.assumed:
                vr["delta_reward"] = delta_reward.label
            entry["violation_rate"] = vr
            acc = dict(vr)
            acc["claim"] = CLAIMS["idealized_ranking_accuracy"]
            acc["value"] = None if vr["value"] is None else 1.0 - vr["value"]
            acc["ci95"] = None if vr["ci95"] is None else [1.0 - vr["ci95"][1], 1.0 - vr["ci95"][0]]
            acc["count"] = vr["n"] - vr["count"]
            entry["idealized_ranking_accuracy"] = acc
            entry["delta_opt"] = {
                **_stats(np.asarray(delta_opt(dref_h, dr_h, beta))),
                "claim": "key identity: δ_{π*} = δ_ref + Δr*/β",
                "beta": beta,
                "normalization": norm,
            }
            if subsets:
                by = {}
                pos_h = np.flatnonzero(have)
                for j, (name, positions) in enumerate(subsets.items()):
                    sel = np.isin(pos_h, positions)
                    by[name] = _share(viol[sel], CLAIMS["violation_rate"], beta, norm, n_bootstrap, [seed, 20, k, j])
                entry["violation_rate_by_subset"] = by
            entry["gamma_star"] = _gamma_star_entry(dref_h, dr_h, beta, lw[have], ll[have], ref.index[have], norm)
            lgs = np.asarray(log_gamma_star_pair(dref_h, dr_h, beta, lw[have], ll[have]))
            entry["violation_rate_with_cpo_margin"] = [
                {
                    **_share(lgs >= math.log(g), CLAIMS["violation_rate_with_cpo_margin"], beta, norm, 0, None),
                    "gamma": g,
                }
                for g in gammas
            ]
        else:
            entry["violation_rate"] = {
                "value": None,
                "claim": CLAIMS["violation_rate"],
                "beta": beta,
                "normalization": norm,
                "note": delta_reward.label,
            }
        if pol is not None:
            entry["policy"] = _policy_beta_entry(pol, beta, norm)
        per_beta.append(entry)
    report["per_beta"] = per_beta
    return report


def _subset_positions(subset: np.ndarray) -> dict[str, np.ndarray]:
    names = sorted({s for s in subset if s is not None})
    out = {name: np.flatnonzero(subset == name) for name in names}
    if names and any(s is None for s in subset):
        out["(none)"] = np.flatnonzero(np.array([s is None for s in subset]))
    return out


def _gamma_star_entry(
    d_ref: np.ndarray,
    dr: np.ndarray,
    beta: float,
    lw: np.ndarray,
    ll: np.ndarray,
    index: np.ndarray,
    norm: str,
) -> dict[str, Any]:
    lgs = np.asarray(log_gamma_star_pair(d_ref, dr, beta, lw, ll))
    need = np.isfinite(lgs)
    entry: dict[str, Any] = {
        "claim": CLAIMS["gamma_star"],
        "beta": beta,
        "normalization": norm,
        "n_pairs_needing_margin": int(need.sum()),
    }
    if not need.any():
        entry.update({"log_gamma_star": None, "gamma_star": 0.0, "note": "no pair is violated: γ* = 0"})
        return entry
    j = int(np.argmax(np.where(need, lgs, -np.inf)))
    log_gs = float(lgs[j])
    with np.errstate(over="ignore", under="ignore"):
        gs = math.exp(log_gs) if log_gs < 709.0 else math.inf
    entry.update(
        {
            "log_gamma_star": log_gs,
            "log10_gamma_star": log_gs / math.log(10.0),
            "gamma_star": _finite_or_none(gs),
            "argmax_index": int(index[j]),
        }
    )
    if gs == 0.0:
        entry["note"] = "γ* underflows float64; use log_gamma_star"
    if norm == "sum":
        entry.setdefault("note", "whole-sequence 1/π_ref is astronomically large, so γ* is tiny; compare in log space")
    return entry


def _policy_beta_entry(pol: dict[str, Any], beta: float, norm: str) -> dict[str, Any]:
    d_theta, d_ref, in_u = pol["d_theta"], pol["d_ref"], pol["in_u"]
    loss = np.asarray(dpo_loss(d_theta, d_ref, beta).loss)
    w = np.asarray(dpo_gradient_weight(d_theta, d_ref, beta))
    out: dict[str, Any] = {
        "beta": beta,
        "normalization": norm,
        "dpo_loss_mean": {
            "value": float(loss.mean()),
            "claim": CLAIMS["dpo_loss"],
            "beta": beta,
            "normalization": norm,
            "log2": math.log(2.0),
        },
        "dpo_gradient_weight": {
            **_stats(w),
            "claim": CLAIMS["dpo_gradient_weight"],
            "beta": beta,
            "normalization": norm,
            "at_reference": beta / 2.0,
        },
        "dpo_gradient_weight_in_U": {
            **_stats(w[in_u]),
            "claim": CLAIMS["dpo_gradient_weight"] + " on pairs in U",
            "beta": beta,
            "normalization": norm,
        },
        "exit_gradient_weight_in_U": {
            **_stats(np.asarray(exit_gradient_weight(d_ref[in_u], beta))),
            "claim": CLAIMS["exit_gradient_weight"],
            "beta": beta,
            "normalization": norm,
        },
    }
    return out


# ------------------------------------------------------------------------------------------------- outputs
def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


def _pct(share: dict[str, Any] | None) -> str:
    if not share or share.get("value") is None:
        return "—"
    s = f"{100 * share['value']:.1f} %"
    if share.get("ci95"):
        lo, hi = share["ci95"]
        s += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return s


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables; every table names its claim, β and normalisation."""
    norm = report["normalization"]
    inp = report["inputs"]
    ref = report["reference"]
    lines = [
        f"# DPO–RLHF equivalence check on {inp['n_pairs']} scored pairs ({norm} log-probs)",
        "",
        f"- scores: `{inp['scores']}` ({len(inp['shards'])} shard(s), "
        f"{inp['n_duplicate_rows_dropped']} duplicate rows dropped, {inp['index_gaps']} index gaps, "
        f"{inp['n_truncated_pairs']} pairs with a truncated response)",
        f"- normalisation `{norm}`: {report['normalization_note']}",
        f"- Δr* source: {report['delta_reward']['source']}",
        f"- 95 % intervals: percentile bootstrap, {report['n_bootstrap']} resamples, seed {report['seed']}",
    ]
    for w in inp["warnings"]:
        lines.append(f"- WARNING: {w}")
    if report["delta_reward"].get("note"):
        lines.append(f"- {report['delta_reward']['note']}")
    lines += [
        "",
        f"## Reference model (β-independent, {norm})",
        "",
        "| quantity | claim | value [95 % CI] |",
        "|---|---|---|",
        f"| reference preference rate (δ_ref > 0) | {ref['reference_preference_rate']['claim']} | "
        f"{_pct(ref['reference_preference_rate'])} |",
        f"| U non-empty (δ_ref < 0) | {ref['u_nonempty_share']['claim']} | {_pct(ref['u_nonempty_share'])} |",
        f"| median δ_ref | PAPER §1 | {_fmt(ref['delta_ref']['median'])} |",
        f"| median log(1/π_ref(y_w) + 1/π_ref(y_l)) | {ref['log_margin_per_unit_gamma']['claim']} | "
        f"{_fmt(ref['log_margin_per_unit_gamma']['median'])} ({ref['log_margin_per_unit_gamma']['note']}) |",
        "",
    ]
    if report["delta_reward"]["available"]:
        label = " (ASSUMED constant Δr*)" if report["delta_reward"]["assumed"] else ""
        lines += [
            f"## Violation of the implicit assumption (C2, Eq. 11){label}, {norm} log-probs",
            "",
            "| β | violation rate (C2) [95 % CI] | idealized ranking accuracy (1 − rate) | violated / n | "
            "log10 γ* (C8, Eq. 27) |"
            + "".join(
                f" still violated with γ = {g['gamma']:g} (C8) |"
                for g in report["per_beta"][0]["violation_rate_with_cpo_margin"]
            ),
            "|---|---|---|---|---|" + "---|" * len(report["per_beta"][0]["violation_rate_with_cpo_margin"]),
        ]
        for e in report["per_beta"]:
            v = e["violation_rate"]
            gs = e["gamma_star"]
            lines.append(
                f"| {e['beta']:g} | {_pct(v)} | {_pct(e['idealized_ranking_accuracy'])} | "
                f"{v['count']} / {v['n']} | "
                f"{_fmt(gs.get('log10_gamma_star'))} |"
                + "".join(f" {_pct(g)} |" for g in e["violation_rate_with_cpo_margin"])
            )
        if report["per_beta"][0].get("violation_rate_by_subset"):
            names = list(report["per_beta"][0]["violation_rate_by_subset"])
            lines += [
                "",
                f"### Violation rate (C2) by subset, {norm} log-probs",
                "",
                "| β | "
                + " | ".join(f"{n} (n={report['per_beta'][0]['violation_rate_by_subset'][n]['n']})" for n in names)
                + " |",
                "|---|" + "---|" * len(names),
            ]
            for e in report["per_beta"]:
                by = e["violation_rate_by_subset"]
                lines.append(f"| {e['beta']:g} | " + " | ".join(_pct(by[n]) for n in names) + " |")
    else:
        lines += [
            "## Violation rate (C2): not computed",
            "",
            f"No reward gap Δr*: {report['delta_reward']['source']}. Reported above is what needs no Δr*.",
        ]
    if "policy" in report:
        p = report["policy"]
        lines += [
            "",
            f"## Trained policy vs reference ({norm} log-probs, {p['n_joined']} joined pairs)",
            "",
            "| quantity | claim | value [95 % CI] |",
            "|---|---|---|",
            f"| share in U (δ_ref < δ_θ < 0) | {p['share_in_U']['claim']} | {_pct(p['share_in_U'])} |",
            f"| preference accuracy (δ_θ > 0) | {p['preference_accuracy']['claim']} | "
            f"{_pct(p['preference_accuracy'])} |",
            f"| implicit-reward accuracy (δ_θ > δ_ref) | {p['implicit_reward_accuracy']['claim']} | "
            f"{_pct(p['implicit_reward_accuracy'])} |",
            "",
            "| β | mean DPO loss (log 2 at π_ref) | mean DPO gradient weight (C4; β/2 at π_ref) | "
            "mean weight in U | mean exit weight in U (C4) |",
            "|---|---|---|---|---|",
        ]
        for e in report["per_beta"]:
            q = e["policy"]
            lines.append(
                f"| {e['beta']:g} | {_fmt(q['dpo_loss_mean']['value'])} | "
                f"{_fmt(q['dpo_gradient_weight']['mean'])} "
                f"(β/2 = {_fmt(e['beta'] / 2)}) | {_fmt(q['dpo_gradient_weight_in_U']['mean'])} | "
                f"{_fmt(q['exit_gradient_weight_in_U']['mean'])} |"
            )
    lines.append("")
    return "\n".join(lines)


def plot_fig1(
    reference: ScoreTable,
    delta_reward: DeltaReward,
    betas: Sequence[float],
    normalization: str,
    path: str | Path,
) -> Path:
    """Toy Fig. 1: per β, a histogram of δ_{π*} = δ_ref + Δr*/β with the violated share (δ_{π*} ≤ 0) shaded.

    Without Δr*, a single histogram of δ_ref with the share where U is non-empty (δ_ref < 0, C3) shaded.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d_ref = reference.delta(normalization)
    if delta_reward.values is None:
        panels = [(None, d_ref, np.asarray(undesirable_space_nonempty(d_ref)))]
    else:
        have = ~np.isnan(delta_reward.values)
        panels = []
        for beta in betas:
            d_opt = np.asarray(delta_opt(d_ref[have], delta_reward.values[have], beta))
            panels.append((beta, d_opt, np.asarray(violation_mask(d_ref[have], delta_reward.values[have], beta))))
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    for ax, (beta, x, bad) in zip(axes.ravel(), panels, strict=False):
        lo, hi = np.quantile(x, [0.005, 0.995]) if x.size else (-1.0, 1.0)
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        width = (hi - lo) / 60 if hi > lo else 1.0
        edges = width * np.arange(math.floor(lo / width), math.ceil(hi / width) + 1)
        xc = np.clip(x, edges[0], edges[-1])
        ax.hist(xc[~bad], bins=edges, color="0.6", label="holds")
        ax.hist(xc[bad], bins=edges, color="tab:red", alpha=0.8, label="violated" if beta else "U non-empty")
        ax.axvline(0.0, color="k", lw=0.8)
        share = 100.0 * float(bad.mean()) if bad.size else float("nan")
        if beta is None:
            ax.set_title(f"δ_ref ({normalization}); δ_ref < 0: {share:.1f} % (C3)", fontsize=9)
            ax.set_xlabel("δ_ref = log π_ref(y_w) − log π_ref(y_l)")
        else:
            ax.set_title(f"β = {beta:g} ({normalization}): violated {share:.1f} % (C2)", fontsize=9)
            ax.set_xlabel("δ_π* = δ_ref + Δr*/β")
        ax.set_ylabel("pairs")
        ax.legend(fontsize=7)
    suffix = " — ASSUMED constant Δr*" if delta_reward.assumed else ""
    fig.suptitle(f"Toy Fig. 1: implicit assumption of DPO (C1/C2){suffix}; tails clipped into edge bins", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def report_to_json(report: dict[str, Any]) -> str:
    """JSON text of a report; NaN/inf become null (strict JSON)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(report), indent=2, ensure_ascii=False, default=_json_default) + "\n"
