"""Likelihood displacement next to U: per pair, per policy, over training, and a health verdict (PAPER §6).

U (C3, δ_ref < δ_θ < 0) says whether a policy prefers the right response; *likelihood displacement* (Razin et al.
2024, "Unintentional Unalignment: Likelihood Displacement in DPO", arXiv 2410.08847) says whether it got there by
pushing the preferred response's probability down: Δ_w = log π_θ(y_w|x) − log π_ref(y_w|x) < 0. Since
δ_θ − δ_ref = Δ_w − Δ_l, no DPO-family loss of δ_θ − δ_ref sees the sign of Δ_w, and the two are independent
failure modes (PAPER §6, [ours]). Every per-pair flag is a theory function (:func:`~dpocheck.theory.logp_shift`,
:func:`~dpocheck.theory.likelihood_displaced`, :func:`~dpocheck.theory.both_likelihoods_fell`,
:func:`~dpocheck.theory.in_undesirable_space`); this module aligns the inputs and aggregates:

* :func:`pair_table` — the tidy per-pair table (shifts in both conventions, the flags, U, the per-pair
  degenerate mark) from a policy's and its reference's log-probs;
* :func:`displacement_result` — the shares with bootstrap intervals, the U × displaced table, CHES's rank
  correlation with displacement and U, and :func:`health_verdict`;
* :func:`ches_result` — CHES (Razin et al.'s centered hidden embedding similarity) of the reference, by δ_ref sign;
* :func:`episode_patterns` — how each pair's membership of a set (U, displaced) evolves over eval steps.

**Health** (dpocheck's rule, not a claim of either paper): with Δ̄_w the per-token shift of the chosen response
(``mean`` convention: log-prob per token, comparable across lengths and datasets), a policy is *degenerate* when any
pair has a non-finite log-prob or the mean over pairs of −Δ̄_w exceeds :data:`DEGENERATE_CHOSEN_DROP_NATS` (2 nats:
the preferred responses' tokens became e² ≈ 7.4 times less likely on average; SmolLM2-135M-Instruct gives HH-RLHF's
chosen responses −2.9 nats per token and the uniform distribution over its 49,152 tokens −10.8, where ``--lr 1e6``
puts every token, so 2 nats is a quarter of the way to no language model at all); *degraded* when it exceeds
:data:`DEGRADED_CHOSEN_DROP_NATS` (0.5 nats: each preferred token 1.65 times less likely on average); *healthy*
otherwise. A pair is marked degenerate when its own drop exceeds the degenerate threshold or its log-probs are not
finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dpocheck.llm.scoring.settings import LOGP_CONVENTIONS, LOGP_FIELDS, check_convention
from dpocheck.theory import both_likelihoods_fell, in_undesirable_space, likelihood_displaced, logp_shift

from .result_types import (
    CLAIMS,
    U_BY_DISPLACEMENT_CELLS,
    ChesResult,
    DisplacementResult,
    HealthVerdict,
    RankCorrelation,
    Summary,
)
from .scores import ScoresError, ScoreTable
from .stats import share_of, spearman_ci

#: mean per-token drop of the chosen responses' log-prob (nats) above which a policy is degenerate (module docstring)
DEGENERATE_CHOSEN_DROP_NATS = 2.0
#: … and above which it is degraded
DEGRADED_CHOSEN_DROP_NATS = 0.5
HEALTH_VERDICTS = ("healthy", "degraded", "degenerate")
EPISODE_PATTERNS = ("never", "entered_and_left", "entered_and_stuck", "left_and_reentered")
LOGP_KEYS = LOGP_FIELDS  # chosen/rejected × sum/mean: the log-probs every table here is built from


# ------------------------------------------------------------------------------------------- per pair
def eval_row_logps(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(index, policy log-probs, reference log-probs) of ``dpocheck train`` eval rows (``chosen_logp_sum`` … and
    ``ref_chosen_logp_sum`` …), float64 with NaN where a value is missing or null."""

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=np.float64)

    index = np.array([int(r["index"]) for r in rows], dtype=np.int64)
    return index, {k: col(k) for k in LOGP_KEYS}, {k: col("ref_" + k) for k in LOGP_KEYS}


def joined_logps(
    reference: ScoreTable, policy: ScoreTable
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(index, policy log-probs, reference log-probs, the reference's CHES by form) on the pairs both tables
    score, joined on index (ScoresError when they share none)."""
    common, i_ref, i_pol = np.intersect1d(reference.index, policy.index, return_indices=True)
    if common.size == 0:
        raise ScoresError("the policy scores share no index with the reference scores")
    pol = {k: getattr(policy, k)[i_pol] for k in LOGP_KEYS}
    ref = {k: getattr(reference, k)[i_ref] for k in LOGP_KEYS}
    return common, pol, ref, {c: reference.ches(c)[i_ref] for c in LOGP_CONVENTIONS}


def pair_table(
    policy: Mapping[str, Any], reference: Mapping[str, Any], convention: str, *, degenerate_drop: float | None = None
) -> dict[str, np.ndarray]:
    """The per-pair displacement table of aligned log-probs (``chosen_logp_sum`` … ``rejected_logp_mean`` of the
    policy and of the reference), columns of equal length:

    ``chosen_logp_shift_<conv>`` / ``rejected_logp_shift_<conv>`` (Δ_w, Δ_l in both conventions), ``delta_theta``
    and ``delta_ref`` (in ``convention``), ``in_u`` (C3), ``displaced`` (Δ_w < 0), ``both_fell``,
    ``displaced_while_ranked_correct`` (and δ_θ > 0), ``displaced_while_implicit_correct`` (and δ_θ > δ_ref),
    ``finite`` (all eight log-probs finite; the flags are False elsewhere) and ``degenerate`` (not finite, or the
    chosen response's per-token log-prob fell more than ``degenerate_drop`` nats, default
    :data:`DEGENERATE_CHOSEN_DROP_NATS`).
    """
    check_convention(convention)
    drop = DEGENERATE_CHOSEN_DROP_NATS if degenerate_drop is None else degenerate_drop
    pol = {k: np.asarray(policy[k], dtype=np.float64) for k in LOGP_KEYS}
    ref = {k: np.asarray(reference[k], dtype=np.float64) for k in LOGP_KEYS}
    n = pol[LOGP_KEYS[0]].size
    finite = np.ones(n, dtype=bool)
    for k in LOGP_KEYS:
        finite &= np.isfinite(pol[k]) & np.isfinite(ref[k])
    out: dict[str, np.ndarray] = {"finite": finite}
    f = {k: v[finite] for k, v in pol.items()}
    r = {k: v[finite] for k, v in ref.items()}

    def spread(values: Any, fill: Any) -> np.ndarray:
        full = np.full(n, fill, dtype=np.asarray(values).dtype)
        full[finite] = values
        return full

    for c in LOGP_CONVENTIONS:
        for side in ("chosen", "rejected"):
            key = f"{side}_logp_{c}"
            out[f"{side}_logp_shift_{c}"] = spread(np.asarray(logp_shift(f[key], r[key]), dtype=np.float64), np.nan)
    cw, cl = f"chosen_logp_{convention}", f"rejected_logp_{convention}"
    d_theta, d_ref = f[cw] - f[cl], r[cw] - r[cl]
    displaced = np.asarray(likelihood_displaced(f[cw], r[cw]), dtype=bool)
    out["delta_theta"] = spread(d_theta, np.nan)
    out["delta_ref"] = spread(d_ref, np.nan)
    out["in_u"] = spread(np.asarray(in_undesirable_space(d_theta, d_ref), dtype=bool), False)
    out["displaced"] = spread(displaced, False)
    out["both_fell"] = spread(np.asarray(both_likelihoods_fell(f[cw], r[cw], f[cl], r[cl]), dtype=bool), False)
    out["displaced_while_ranked_correct"] = spread(displaced & (d_theta > 0), False)
    out["displaced_while_implicit_correct"] = spread(displaced & (d_theta > d_ref), False)
    out["degenerate"] = ~finite | (np.nan_to_num(-out["chosen_logp_shift_mean"], nan=np.inf) > drop)
    return out


PAIR_COLUMNS = (
    "index",
    "delta_ref",
    "delta_theta",
    "chosen_logp_shift_sum",
    "rejected_logp_shift_sum",
    "chosen_logp_shift_mean",
    "rejected_logp_shift_mean",
    "in_u",
    "displaced",
    "both_fell",
    "displaced_while_ranked_correct",
    "displaced_while_implicit_correct",
    "degenerate",
    "ches_sum",
    "ches_mean",
)


def pair_rows(index: Any, table: Mapping[str, Any], ches: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The tidy per-pair rows (:data:`PAIR_COLUMNS`) of a :func:`pair_table` and the reference's CHES (form → values);
    None for what is unknown (NaN, no CHES)."""
    cols = {k: np.asarray(v) for k, v in table.items()}
    cols["index"] = np.asarray(index)
    for form in LOGP_CONVENTIONS:
        cols[f"ches_{form}"] = np.asarray((ches or {}).get(form, np.full(cols["index"].size, np.nan)), np.float64)
    rows = []
    for i in range(cols["index"].size):
        row: dict[str, Any] = {}
        for k in PAIR_COLUMNS:
            v = cols[k][i].item()
            row[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        rows.append(row)
    return rows


def csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    """A tidy table as CSV text (header ``fields``; None becomes an empty cell)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


EVAL_ROW_MARKS = (
    "chosen_logp_shift_sum",
    "rejected_logp_shift_sum",
    "chosen_logp_shift_mean",
    "rejected_logp_shift_mean",
    "displaced",
    "both_fell",
    "degenerate",
)


def eval_row_marks(rows: Sequence[Mapping[str, Any]], convention: str) -> list[dict[str, Any]]:
    """Per ``dpocheck train`` eval row (policy ``chosen_logp_sum`` … and reference ``ref_chosen_logp_sum`` …), the
    displacement fields :data:`EVAL_ROW_MARKS` of :func:`pair_table` (None where a log-prob is not finite; a
    non-finite pair is ``degenerate``)."""
    if not rows:
        return []
    _, pol, ref = eval_row_logps(rows)
    t = pair_table(pol, ref, convention)
    out = []
    for i in range(len(rows)):
        marks: dict[str, Any] = {}
        for k in EVAL_ROW_MARKS:
            v = t[k][i].item()
            marks[k] = (
                None
                if (isinstance(v, float) and not math.isfinite(v))
                or (k in ("displaced", "both_fell") and not t["finite"][i])
                else v
            )
        out.append(marks)
    return out


def episode_patterns(flags: Any) -> np.ndarray:
    """Per pair, how membership of a set evolved over eval steps (``flags``: [pairs, steps] bool, step order):
    ``never`` (never in), ``entered_and_left`` (one stretch, over before the last step), ``entered_and_stuck`` (one
    stretch reaching the last step) or ``left_and_reentered`` (two stretches or more). A partition of the pairs."""
    f = np.asarray(flags, dtype=bool)
    if f.ndim != 2 or f.shape[1] == 0:
        raise ValueError(f"flags must be [pairs, steps] with at least one step, got shape {f.shape}")
    stretches = f[:, 0].astype(int) + (f[:, 1:] & ~f[:, :-1]).sum(axis=1)
    out = np.where(stretches == 0, "never", "left_and_reentered").astype(object)
    one = stretches == 1
    out[one & f[:, -1]] = "entered_and_stuck"
    out[one & ~f[:, -1]] = "entered_and_left"
    return out


def u_by_displacement_masks(in_u: Any, displaced: Any) -> dict[str, np.ndarray]:
    """The four cells of U (C3) × displacement (PAPER §6), :data:`U_BY_DISPLACEMENT_CELLS`, as boolean masks."""
    u, d = np.asarray(in_u, dtype=bool), np.asarray(displaced, dtype=bool)
    return dict(zip(U_BY_DISPLACEMENT_CELLS, (u & d, u & ~d, ~u & d, ~u & ~d), strict=True))


# ------------------------------------------------------------------------------------------- health
def health_verdict(
    policy_chosen_mean: Any,
    reference_chosen_mean: Any,
    policy_rejected_mean: Any = None,
    reference_rejected_mean: Any = None,
    *,
    vocab_size: int | None = None,
    degraded_drop: float = DEGRADED_CHOSEN_DROP_NATS,
    degenerate_drop: float = DEGENERATE_CHOSEN_DROP_NATS,
) -> HealthVerdict:
    """The health verdict of a policy from its and its reference's per-token mean log-probs of the chosen (and
    rejected) responses, aligned by pair (rule and thresholds: module docstring)."""
    pw, rw = np.asarray(policy_chosen_mean, np.float64).ravel(), np.asarray(reference_chosen_mean, np.float64).ravel()
    ok = np.isfinite(pw) & np.isfinite(rw)
    if policy_rejected_mean is not None:
        ok &= np.isfinite(np.asarray(policy_rejected_mean, np.float64).ravel())
    n, bad = int(pw.size), int((~ok).sum())
    uniform = -math.log(vocab_size) if vocab_size else None
    thresholds = (degraded_drop, degenerate_drop)
    if not ok.any():
        reason = "no pair has finite log-probs" if n else "no pairs"
        return HealthVerdict("degenerate", (reason,), n, bad, None, None, None, None, None, *thresholds, uniform)
    drop_each = rw[ok] - pw[ok]
    drop = float(drop_each.mean())
    drop_l = None
    if policy_rejected_mean is not None and reference_rejected_mean is not None:
        pl = np.asarray(policy_rejected_mean, np.float64).ravel()[ok]
        rl = np.asarray(reference_rejected_mean, np.float64).ravel()[ok]
        drop_l = float((rl - pl).mean())
    reasons = []
    if bad:
        reasons.append(f"{bad} of {n} pairs have a non-finite log-prob")
    if drop > degenerate_drop:
        reasons.append(f"the chosen responses' log-prob fell {drop:.3g} nats per token (> {degenerate_drop:g})")
    elif drop > degraded_drop:
        reasons.append(f"the chosen responses' log-prob fell {drop:.3g} nats per token (> {degraded_drop:g})")
    verdict = "degenerate" if bad or drop > degenerate_drop else "degraded" if drop > degraded_drop else "healthy"
    if verdict == "healthy":
        reasons.append(f"the chosen responses' log-prob moved {-drop:+.3g} nats per token (drop ≤ {degraded_drop:g})")
    return HealthVerdict(
        verdict,
        tuple(reasons),
        n,
        bad,
        drop,
        drop_l,
        float(pw[ok].mean()),
        float(rw[ok].mean()),
        float((drop_each > degenerate_drop).mean()),
        *thresholds,
        uniform,
    )


# ------------------------------------------------------------------------------------------- CHES
def ches_result(ches: Mapping[str, Any], delta_ref: Any) -> ChesResult | None:
    """CHES summaries (``ches`` maps form ``sum`` / ``mean`` to per-pair values, NaN where absent), overall and split
    by δ_ref < 0 (U non-empty, C3) vs δ_ref ≥ 0; None when no pair has CHES."""
    d = np.asarray(delta_ref, dtype=np.float64)
    have = {k: np.isfinite(np.asarray(v, dtype=np.float64)) for k, v in ches.items()}
    n_with = max((int(h.sum()) for h in have.values()), default=0)
    if n_with == 0:
        return None
    summaries, split = {}, {}
    for form, values in ches.items():
        v = np.asarray(values, dtype=np.float64)
        h = have[form]
        summaries[form] = Summary.of(v[h], claim=CLAIMS["ches"], normalization=form)
        split[form] = {
            "delta_ref<0": Summary.of(v[h & (d < 0)], normalization=form),
            "delta_ref>=0": Summary.of(v[h & (d >= 0)], normalization=form),
        }
    return ChesResult(n_with, summaries, split)


def ches_correlations(
    ches: Mapping[str, Any], targets: Mapping[str, Any], n_bootstrap: int, seed: Any
) -> tuple[RankCorrelation, ...]:
    """Spearman ρ (bootstrap interval) of each CHES form with each per-pair target (e.g. Δ_w, in U as 0/1)."""
    out = []
    for k, (form, c) in enumerate(ches.items()):
        for j, (name, y) in enumerate(targets.items()):
            rho, ci, n = spearman_ci(c, np.asarray(y, dtype=np.float64), n_bootstrap, [*np.atleast_1d(seed), k, j])
            out.append(RankCorrelation(f"ches_{form} (reference)", name, rho, ci, n, CLAIMS["ches_predicts"]))
    return tuple(out)


# ------------------------------------------------------------------------------------------- per policy
def displacement_result(
    policy: Mapping[str, Any],
    reference: Mapping[str, Any],
    normalization: str,
    *,
    ches: Mapping[str, Any] | None = None,
    vocab_size: int | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> DisplacementResult:
    """Displacement of a policy against its reference on aligned pairs (:func:`pair_table`): shares with percentile
    bootstrap intervals (over the pairs with finite log-probs), the U × displaced table, Δ summaries in both
    conventions, the health verdict and, where ``ches`` (form → the reference's per-pair CHES) is given, Spearman ρ
    of CHES with Δ_w (Razin et al.: expect ρ < 0) and with U membership."""
    t = pair_table(policy, reference, normalization)
    ok = t["finite"]
    norm = normalization

    def share(key: str, claim: str, k: int) -> Any:
        return share_of(t[key][ok], CLAIMS[claim], None, norm, n_bootstrap, [seed, 30, k])

    u = t["in_u"][ok]
    cells = u_by_displacement_masks(u, t["displaced"][ok])
    table = {
        name: share_of(mask, CLAIMS["u_by_displacement"], None, norm, n_bootstrap, [seed, 31, k])
        for k, (name, mask) in enumerate(cells.items())
    }
    predicts: tuple[RankCorrelation, ...] = ()
    if ches is not None:
        forms = {k: np.asarray(v, dtype=np.float64)[ok] for k, v in ches.items()}
        targets = {f"chosen_logp_shift_{norm}": t[f"chosen_logp_shift_{norm}"][ok], "in_u": u.astype(float)}
        if any(np.isfinite(v).any() for v in forms.values()):
            predicts = ches_correlations(forms, targets, n_bootstrap, [seed, 32])
    return DisplacementResult(
        normalization=norm,
        n_pairs=int(ok.sum()),
        chosen_logp_shift={
            c: Summary.of(t[f"chosen_logp_shift_{c}"][ok], claim=CLAIMS["logp_shift"], normalization=c)
            for c in LOGP_CONVENTIONS
        },
        rejected_logp_shift={
            c: Summary.of(t[f"rejected_logp_shift_{c}"][ok], claim=CLAIMS["logp_shift"], normalization=c)
            for c in LOGP_CONVENTIONS
        },
        share_displaced=share("displaced", "share_displaced", 0),
        share_both_fell=share("both_fell", "share_both_fell", 1),
        share_displaced_while_ranked_correct=share(
            "displaced_while_ranked_correct", "share_displaced_while_ranked_correct", 2
        ),
        share_displaced_while_implicit_correct=share(
            "displaced_while_implicit_correct", "share_displaced_while_implicit_correct", 3
        ),
        u_by_displacement=table,
        health=health_verdict(
            policy["chosen_logp_mean"],
            reference["chosen_logp_mean"],
            policy["rejected_logp_mean"],
            reference["rejected_logp_mean"],
            vocab_size=vocab_size,
        ),
        ches_predicts=predicts,
    )


def vocab_size_of(manifest: Mapping[str, Any] | None) -> int | None:
    """The tokenizer's vocabulary size a scores manifest records (``tokenizer_detail.vocab_size``), else None."""
    v = ((manifest or {}).get("tokenizer_detail") or {}).get("vocab_size")
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 1 else None
