"""One ``dpocheck train`` run over its eval steps: U and likelihood displacement per step, per-pair transitions, the
health verdict, and how well the reference's CHES predicts what training did (PAPER §6; Razin et al. 2024).

Everything here is recomputed from the run's ``eval/step-N.jsonl`` files alone (policy and reference log-probs per
pair), so it applies to runs made before these fields were written, and anyone can recompute it from the rows:

* :func:`step_rows` — the tidy per-step table (:data:`STEP_FIELDS`): shares in U (C3), displaced, both fell, …,
  the four cells of U × displaced, mean shifts, the health verdict of the policy at that step;
* :func:`transitions` — per pair, membership of U and of "displaced" across the eval steps
  (:func:`~dpocheck.llm.analysis.displacement.episode_patterns`: never / entered and left / entered and stuck /
  left and re-entered), counted;
* :func:`run_health` — the verdict of the final policy (the last eval file) with the numbers behind it and every
  step's verdict: what ``dpocheck train`` records in its manifest as ``health``;
* :func:`ches_predictions` — Spearman ρ (bootstrap interval over pairs) of the reference's CHES (a scores folder
  whose rows carry ``ches_sum`` / ``ches_mean``) with the final Δ_w, final displacement, U entry and final U.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._io import read_jsonl
from dpocheck.llm.analysis.displacement import (
    EPISODE_PATTERNS,
    episode_patterns,
    eval_row_logps,
    health_verdict,
    pair_table,
    u_by_displacement_masks,
)
from dpocheck.llm.analysis.result_types import CLAIMS, U_BY_DISPLACEMENT_CELLS, RankCorrelation
from dpocheck.llm.analysis.stats import spearman_ci
from dpocheck.llm.manifest import MANIFEST, read_manifest

from .experiment import eval_files

STEP_FIELDS = (
    "step",
    "n_pairs",
    "share_in_u",
    "share_displaced",
    "share_both_fell",
    "share_displaced_while_ranked_correct",
    "share_displaced_while_implicit_correct",
    *(f"share_{c}" for c in U_BY_DISPLACEMENT_CELLS),
    "chosen_logp_shift_sum",
    "rejected_logp_shift_sum",
    "chosen_logp_shift_mean",
    "rejected_logp_shift_mean",
    "n_degenerate_pairs",
    "health",
)
SHARED_FLAGS = ("in_u", "displaced", "both_fell", "displaced_while_ranked_correct", "displaced_while_implicit_correct")
SHIFTS = ("chosen_logp_shift_sum", "rejected_logp_shift_sum", "chosen_logp_shift_mean", "rejected_logp_shift_mean")
PAIR_SETS = ("in_u", "displaced")  # the per-pair memberships whose transitions are counted


def run_convention(run: Path) -> str:
    """The log-prob convention a run trained in (its manifest's ``loss.convention``): the one U is measured in."""
    return read_manifest(run / MANIFEST)["loss"]["convention"]


def read_steps(run: Path) -> list[tuple[int, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """(step, index, policy log-probs, reference log-probs) of every eval file of a run, rows sorted by index."""
    out = []
    for step, path in eval_files(run):
        index, pol, ref = eval_row_logps(read_jsonl(path))
        order = np.argsort(index, kind="stable")
        out.append((step, index[order], {k: v[order] for k, v in pol.items()}, {k: v[order] for k, v in ref.items()}))
    return out


def step_rows(run: Path, convention: str | None = None, vocab_size: int | None = None) -> list[dict[str, Any]]:
    """One tidy row per eval step (:data:`STEP_FIELDS`); shares over the pairs with finite log-probs, δ and U in
    ``convention`` (default: the run's)."""
    conv = convention or run_convention(run)
    rows = []
    for step, _, pol, ref in read_steps(run):
        t = pair_table(pol, ref, conv)
        ok = t["finite"]

        def mean(values: np.ndarray, ok: np.ndarray = ok) -> float:
            return float(np.mean(values[ok])) if ok.any() else float("nan")

        row: dict[str, Any] = {"step": step, "n_pairs": int(ok.sum())}
        for key in SHARED_FLAGS:
            row[f"share_{key}"] = mean(t[key])
        for cell, mask in u_by_displacement_masks(t["in_u"], t["displaced"]).items():
            row[f"share_{cell}"] = mean(mask)
        for key in SHIFTS:
            row[key] = mean(t[key])
        row["n_degenerate_pairs"] = int(t["degenerate"].sum())
        row["health"] = _health(pol, ref, vocab_size).verdict
        rows.append(row)
    return rows


def _health(pol: dict[str, np.ndarray], ref: dict[str, np.ndarray], vocab_size: int | None) -> Any:
    return health_verdict(
        pol["chosen_logp_mean"],
        ref["chosen_logp_mean"],
        pol["rejected_logp_mean"],
        ref["rejected_logp_mean"],
        vocab_size=vocab_size,
    )


def pair_flags(run: Path, convention: str | None = None) -> tuple[np.ndarray, list[int], dict[str, np.ndarray]]:
    """(index, steps, {set: [pairs, steps] bool}) for the sets of :data:`PAIR_SETS`, on the pairs every eval file
    holds (a non-finite pair counts as in neither set)."""
    conv = convention or run_convention(run)
    steps = read_steps(run)
    if not steps:
        return np.empty(0, dtype=np.int64), [], {k: np.zeros((0, 0), dtype=bool) for k in PAIR_SETS}
    common = steps[0][1]
    for _, index, _, _ in steps[1:]:
        common = np.intersect1d(common, index)
    flags: dict[str, list[np.ndarray]] = {k: [] for k in PAIR_SETS}
    for _, index, pol, ref in steps:
        keep = np.isin(index, common)
        t = pair_table({k: v[keep] for k, v in pol.items()}, {k: v[keep] for k, v in ref.items()}, conv)
        for k in PAIR_SETS:
            flags[k].append(t[k])
    return common, [s for s, *_ in steps], {k: np.stack(v, axis=1) for k, v in flags.items()}


def transitions(run: Path, convention: str | None = None) -> dict[str, dict[str, int]]:
    """Per set of :data:`PAIR_SETS`, how many pairs follow each pattern of
    :data:`~dpocheck.llm.analysis.displacement.EPISODE_PATTERNS` across the eval steps (step 0 included)."""
    _, steps, flags = pair_flags(run, convention)
    out: dict[str, dict[str, int]] = {}
    for name, f in flags.items():
        patterns = episode_patterns(f) if steps else np.empty(0, dtype=object)
        out[name] = {p: int((patterns == p).sum()) for p in EPISODE_PATTERNS}
    return out


def run_health(run: Path, vocab_size: int | None = None) -> dict[str, Any]:
    """The health of a run: the final policy's verdict (:func:`~dpocheck.llm.analysis.displacement.health_verdict`,
    as a dict) with its one-line summary ``line``, ``step`` and ``eval_file``, and ``per_step`` (step, verdict,
    chosen per-token drop) of every eval file; ``{"verdict": "unknown", …}`` when the run has no eval file."""
    files = eval_files(run)
    if not files:
        return {"verdict": "unknown", "reasons": ["the run has no eval/step-N.jsonl file"], "line": "health: unknown"}
    per_step = []
    final = None
    for step, _, pol, ref in read_steps(run):
        h = _health(pol, ref, vocab_size)
        per_step.append(
            {"step": step, "verdict": h.verdict, "chosen_logp_drop_per_token": h.chosen_logp_drop_per_token}
        )
        final = (step, h)
    assert final is not None
    step, h = final
    record = {**h.as_dict(), "line": h.line(), "step": step, "eval_file": str(files[-1][1].relative_to(run))}
    return {**record, "per_step": per_step}


def ches_predictions(
    run: Path, reference: Any, convention: str | None = None, n_bootstrap: int = 2000, seed: int = 0
) -> tuple[RankCorrelation, ...]:
    """Spearman ρ of the reference's CHES (``reference``: a :class:`~dpocheck.llm.analysis.scores.ScoreTable` whose
    rows carry CHES; both forms) with what training did to each pair: the final Δ_w in the run's convention,
    displaced at the last step and at some eval step (0/1), entered U at some eval step (0/1) and in U at the last
    step (0/1). Razin et
    al. 2024: higher CHES, more displacement — expect ρ < 0 with Δ_w and ρ > 0 with displacement."""
    conv = convention or run_convention(run)
    index, steps, flags = pair_flags(run, conv)
    if not steps:
        return ()
    last = read_steps(run)[-1]
    keep = np.isin(last[1], index)
    t = pair_table({k: v[keep] for k, v in last[2].items()}, {k: v[keep] for k, v in last[3].items()}, conv)
    common, i_ref, i_run = np.intersect1d(reference.index, index, return_indices=True)
    targets = {
        "final Δ_w (run's convention)": t[f"chosen_logp_shift_{conv}"][i_run],
        "displaced at the last step": flags["displaced"][i_run, -1].astype(float),
        "displaced at some step": flags["displaced"][i_run].any(axis=1).astype(float),
        "entered U at some step": flags["in_u"][i_run].any(axis=1).astype(float),
        "in U at the last step": flags["in_u"][i_run, -1].astype(float),
    }
    out = []
    for k, form in enumerate(("sum", "mean")):
        x = reference.ches(form)[i_ref]
        for j, (name, y) in enumerate(targets.items()):
            rho, ci, n = spearman_ci(x, y, n_bootstrap, [seed, 40, k, j])
            out.append(RankCorrelation(f"step-0 ches_{form} (reference)", name, rho, ci, n, CLAIMS["ches_predicts"]))
    return tuple(out)
