"""Reading and validating ``dpocheck score`` output: :class:`ScoreTable`, :func:`read_scores` and the Δr* source.

A scores directory holds JSONL shards (one row per pair; see :data:`REQUIRED_FIELDS`) and ``manifest.json``
(read through :mod:`dpocheck.llm.manifest`). Δr* is never invented (C2, C8): it comes from the score rows, from
a ``dpocheck reward`` file joined on ``index``, or from a user-chosen constant labelled as such.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck.errors import InputError
from dpocheck.llm.manifest import (
    MANIFEST,
    MERGED,
    ManifestError,
    data_sha256,
    is_complete,
    read_manifest,
    scored_pair_count,
    sidecar_path,
)
from dpocheck.llm.scoring.hidden import CHES_FIELDS
from dpocheck.llm.scoring.settings import LOGP_FIELDS, REQUIRED_FIELDS, check_convention


class ScoresError(InputError):
    """A malformed scores directory or row; the message names the shard, line and field."""


# --------------------------------------------------------------------------------------------- reading scores
@dataclass
class ScoreTable:
    """Score rows of one model, sorted by ``index`` (one row per pair), as float64 / int / bool arrays.

    delta_reward is NaN where a row has none; subset and reward_source are object arrays (None when absent);
    ches_sum / ches_mean (CHES of the pair under this model, Razin et al. 2024, PAPER §6) are NaN where a row has
    none (scored through the model's own forward, or by a dpocheck before CHES).
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
    ches_sum: np.ndarray = field(default_factory=lambda: np.empty(0))
    ches_mean: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        for name in ("ches_sum", "ches_mean"):
            if getattr(self, name).size != self.index.size:
                setattr(self, name, np.full(self.index.size, np.nan))

    def ches(self, normalization: str) -> np.ndarray:
        """CHES per pair in the ``sum`` (hidden-state sums) or ``mean`` (per-token means) form; NaN where absent."""
        check_convention(normalization)
        return getattr(self, f"ches_{normalization}")

    truncation_recorded: bool = True  # every row carried both *_truncated flags (else they read as False)

    def __len__(self) -> int:
        return int(self.index.size)

    def log_pi(self, which: str, normalization: str) -> np.ndarray:
        """log π(y_w|x) (``which="chosen"``) or log π(y_l|x) under the ``sum`` or ``mean`` convention."""
        check_convention(normalization)
        return getattr(self, f"{which}_logp_{normalization}")

    def delta(self, normalization: str) -> np.ndarray:
        """The model's preference margin δ = log π(y_w|x) − log π(y_l|x) (PAPER §1)."""
        return self.log_pi("chosen", normalization) - self.log_pi("rejected", normalization)


_INT64 = 2**63  # indices and token counts are read into int64 arrays


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    """A JSON number that is a finite float64 (an integer beyond float64's range is not)."""
    try:
        return _is_number(v) and math.isfinite(float(v))
    except OverflowError:
        return False


def _validate_row(row: Any, where: str) -> dict[str, Any]:
    """Check one score row against the contract with ``dpocheck score``; return it normalised."""
    if not isinstance(row, dict):
        raise ScoresError(f"{where}: a score row must be a JSON object, got {type(row).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in row or row[name] is None:
            raise ScoresError(f"{where}: field '{name}' is missing")
    idx = row["index"]
    if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < _INT64:
        raise ScoresError(f"{where}: field 'index' must be a non-negative integer below 2**63, got {idx!r}")
    out: dict[str, Any] = {"index": idx}
    for name in LOGP_FIELDS:
        v = row[name]
        if not _is_finite(v):
            raise ScoresError(f"{where}: field '{name}' must be a finite number (a log-probability), got {v!r}")
        if float(v) > 1e-6:
            raise ScoresError(f"{where}: field '{name}' is a log-probability and must be <= 0, got {v!r}")
        out[name] = float(v)
    for name in ("chosen_tokens", "rejected_tokens"):
        v = row.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v < _INT64):
            raise ScoresError(f"{where}: field '{name}' must be a positive integer (empty response?), got {v!r}")
        out[name] = -1 if v is None else v
    for name in ("chosen_truncated", "rejected_truncated"):
        v = row.get(name, False)
        if not isinstance(v, bool):
            raise ScoresError(f"{where}: field '{name}' must be true/false, got {v!r}")
        out[name] = v
    dr = row.get("delta_reward")
    if dr is not None and not _is_finite(dr):
        raise ScoresError(f"{where}: field 'delta_reward' must be a finite number or null, got {dr!r}")
    out["delta_reward"] = math.nan if dr is None else float(dr)
    for name in ("reward_source", "subset"):
        v = row.get(name)
        if v is not None and not isinstance(v, str):
            raise ScoresError(f"{where}: field '{name}' must be a string or null, got {v!r}")
        out[name] = v
    for name in CHES_FIELDS:
        v = row.get(name)
        if v is not None and (not _is_number(v) or not math.isfinite(float(v))):
            raise ScoresError(f"{where}: field '{name}' must be a finite number or null, got {v!r}")
        out[name] = math.nan if v is None else float(v)
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
    note = None
    if _is_train_eval_file(d):
        return _read_rows([d], d.parent.parent, read_manifest(d.parent.parent / MANIFEST), [], str(d))
    if d.is_file() and d.suffix == ".jsonl" and (d.parent / MANIFEST).is_file():
        note = f"{d} is a file; read the scores directory that holds it ({d.parent})"
        d = d.parent
    elif d.is_file():
        raise ScoresError(
            f"{d} is a file, not a scores directory (pass the folder `dpocheck score --out` wrote, with its {MANIFEST})"
        )
    if not d.is_dir():
        raise ScoresError(f"scores directory not found: {d}")
    manifest, warnings = _read_manifest(d)
    if note:
        warnings.insert(0, note)
    shards = _select_shards(d, manifest, warnings)
    return _read_rows(shards, d, manifest, warnings, str(d))


def _is_train_eval_file(p: Path) -> bool:
    """``RUN/eval/step-N.jsonl`` of a ``dpocheck train`` run: per-pair policy log-probs at step N (C3)."""
    if not (p.is_file() and p.parent.name == "eval" and re.fullmatch(r"step-\d+\.jsonl", p.name)):
        return False
    mpath = p.parent.parent / MANIFEST
    if not mpath.is_file():
        return False
    try:
        manifest = read_manifest(mpath)
    except (OSError, ValueError):
        return False
    return manifest.get("tool") == "train"


def _read_rows(
    shards: list[Path], d: Path, manifest: dict[str, Any] | None, warnings: list[str], source: str
) -> ScoreTable:
    """Validated rows of ``shards`` as a :class:`ScoreTable` sorted by index (see :func:`read_scores`)."""
    rows: dict[int, tuple[dict[str, Any], str]] = {}
    n_dup = 0
    flags = True
    for shard in shards:
        with open(shard, "rb") as fh:
            for line_no, data in enumerate(fh, start=1):
                if not data.strip():
                    continue
                where = f"{shard.name} line {line_no}"
                try:
                    raw = json.loads(data.decode("utf-8"))
                except UnicodeDecodeError as err:
                    raise ScoresError(f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})") from err
                except json.JSONDecodeError as err:
                    raise ScoresError(f"{where}: not valid JSON ({err.msg})") from err
                except RecursionError as err:
                    raise ScoresError(f"{where}: not a score row (JSON nested too deeply)") from err
                row = _validate_row(raw, where)
                flags = flags and "chosen_truncated" in raw and "rejected_truncated" in raw
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
        ches_sum=np.array([r["ches_sum"] for r in ordered], dtype=np.float64),
        ches_mean=np.array([r["ches_mean"] for r in ordered], dtype=np.float64),
        source=source,
        shards=[s.name for s in shards],
        n_duplicates=n_dup,
        manifest=manifest,
        warnings=warnings,
        truncation_recorded=flags,
    )
    expected = scored_pair_count(manifest)
    if expected is not None and expected != len(table):
        warnings.append(
            f"manifest.json expects {expected} scored pairs but the shards hold {len(table)} rows "
            f"({expected - len(table)} missing)"
        )
    return table


def _read_manifest(d: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The scores directory's manifest (None when absent or unreadable, with a warning) and its warnings."""
    warnings: list[str] = []
    mpath = d / MANIFEST
    if not mpath.is_file():
        return None, warnings
    try:
        manifest = read_manifest(mpath)
    except ManifestError as err:
        return None, [f"{MANIFEST} is not a valid JSON object ({err}); ignored"]
    status = manifest.get("status")
    if status is not None and not is_complete(manifest):
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
        if is_complete(manifest):
            return [merged]  # the shards hold the same rows
        warnings.append(f"{MERGED} is ignored because the run is not marked complete; reading the shards")
        return others
    return files


def check_same_data(
    reference: ScoreTable,
    other_manifest: dict[str, Any] | None,
    other_name: str,
    *,
    allow_mismatch: bool = False,
) -> str | None:
    """Refuse to join ``reference`` with an output made from a different data file (C2, C3 need the same pairs).

    Compares the data sha256 the two manifests record. Returns None when they match or either is unknown; with
    ``allow_mismatch`` returns a note for the report instead of raising :class:`ScoresError`.
    """
    mine, theirs = data_sha256(reference.manifest), data_sha256(other_manifest)
    if mine is None or theirs is None or mine == theirs:
        return None
    msg = (
        f"data mismatch: {reference.source} was scored on data sha256 {mine} but {other_name} was made from "
        f"data sha256 {theirs}; joining them by index pairs unrelated records"
    )
    if not allow_mismatch:
        raise ScoresError(msg + " (pass --allow-data-mismatch to join anyway)")
    return msg + " (joined anyway: --allow-data-mismatch)"


def delta_reward_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest ``dpocheck reward`` wrote beside a Δr* file (``OUT.manifest.json``), None when absent."""
    side = sidecar_path(path)
    return read_manifest(side) if side.is_file() else None


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
            if not _is_finite(dr):
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
