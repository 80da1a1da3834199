"""The computation behind ``dpocheck violations``: C2, C3, C4 and C8 on scored real preference pairs.

Every pair-level quantity is computed by :mod:`dpocheck.theory` (``violation_mask``, ``delta_opt``,
``in_undesirable_space``, ``undesirable_space_nonempty``, ``dpo_gradient_weight``, ``exit_gradient_weight``,
``dpo_loss``, ``log_cpo_margin``, ``log_gamma_star_pair``); this module only aggregates (shares, bootstrap
intervals, subsets). Every number carries its claim, β and normalisation (``sum``: log π(y|x) is the sum of the
response's token log-probs, PAPER §1; ``mean``: the per-token mean, the released code's convention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpocheck.theory import (
    CPO_MARGIN_DEMO_GAMMA,
    RELEASED_DEFAULTS,
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

from .scores import DeltaReward, ScoresError, ScoreTable, _check_normalization, index_gaps, resolve_delta_reward

DEFAULT_BETAS = (0.01, 0.1, 1.0, 5.0, 10.0)
# the released code's demo and default γ (C10), from the theory layer's one definition
DEFAULT_GAMMAS = (CPO_MARGIN_DEMO_GAMMA, RELEASED_DEFAULTS["gamma"])
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
