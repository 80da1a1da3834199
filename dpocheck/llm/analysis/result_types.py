"""Typed results of ``dpocheck violations`` (C2, C3, C4, C8; displacement, PAPER §6): frozen dataclasses.

:func:`dpocheck.llm.analysis.results.analyze` builds them; :mod:`dpocheck.llm.analysis.report` renders them; each
``as_dict()`` is the JSON layout (key order included) of the ``violations-*.json`` files, so readers of those files
see the same format whichever version wrote it. :data:`CLAIMS` says which claim of PAPER.md each number belongs to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

NORMALIZATION_NOTES = {
    "sum": "log π(y|x) = sum of the response's token log-probs (PAPER §1)",
    "mean": "log π̄(y|x) = per-token mean log-prob (released code's length normalisation; 1/π̄ = perplexity)",
}
CLAIMS = {
    "violation_rate": "C2 (Eq. 11): share of pairs with β·δ_ref + Δr* ≤ 0 (π* prefers y_l or is indifferent)",
    "idealized_ranking_accuracy": "C2 / Chen et al. 2024 Thm 3.1: 1 − violation rate",
    "reference_preference_rate": "C2 context: share of pairs with δ_ref > 0 (π_ref already prefers y_w)",
    "u_nonempty_share": "C3: share of pairs with δ_ref < 0, i.e. U = {δ_ref < δ_π < 0} non-empty",
    "share_in_u": "C3 (Def. 3.3, Eq. 14): share of pairs with δ_ref < δ_θ < 0 (released code's frac_in_U)",
    "ranking_accuracy": "C3 context: share of pairs with δ_θ > 0 (policy prefers y_w)",
    "implicit_reward_accuracy": "share with δ_θ > δ_ref (TRL rewards/accuracies; DPO loss below log 2)",
    "dpo_loss": "PAPER §1: mean ℓ_DPO = softplus(−β(δ_θ − δ_ref)); log 2 at π_θ = π_ref",
    "dpo_gradient_weight": "C4 (Prop. 3.4): |∂ℓ_DPO/∂δ_θ| = β·σ(β(δ_ref − δ_θ)); β/2 at π_θ = π_ref",
    "exit_gradient_weight": "C4: weight at the exit of U (δ_θ = 0), β·σ(β·δ_ref), on pairs in U",
    "gamma_star": "C8 (Eq. 27, Thm 4.9): γ* = max over pairs of [−β·δ_ref − Δr*]_+ / (1/π_ref(y_w) + 1/π_ref(y_l))",
    "log_cpo_margin": "C8: log m = log γ + logaddexp(−log π_ref(y_w), −log π_ref(y_l))",
    "violation_rate_with_cpo_margin": "C8: share still violated with margin m (β·δ_ref + Δr* + m ≤ 0 ⇔ γ ≤ γ*_pair)",
    "logp_shift": "PAPER §6 (Razin et al. 2024): Δ = log π_θ(y|x) − log π_ref(y|x); δ_θ − δ_ref = Δ_w − Δ_l",
    "share_displaced": "PAPER §6 (Razin et al. 2024): share with Δ_w < 0, the chosen response's log-prob fell",
    "share_both_fell": "PAPER §6 (Razin et al. 2024): share with Δ_w < 0 and Δ_l < 0",
    "share_displaced_while_ranked_correct": "PAPER §6: share with Δ_w < 0 while δ_θ > 0 (ranked right, y_w displaced)",
    "share_displaced_while_implicit_correct": "PAPER §6: share with Δ_w < 0 while δ_θ > δ_ref (TRL counts it right; "
    "then Δ_l < Δ_w < 0)",
    "u_by_displacement": "C3 × PAPER §6: share of pairs in each cell of (in U: δ_ref < δ_θ < 0) × (displaced: Δ_w < 0)",
    "ches": "PAPER §6 (Razin et al. 2024): CHES = ⟨Σ_k h_k(y_w), Σ_k h_k(y_l)⟩ − ‖Σ_k h_k(y_w)‖² under the model "
    "scored (mean: per-token means of h_k)",
    "ches_predicts": "PAPER §6 (Razin et al. 2024: high CHES predicts displacement): Spearman ρ over pairs of the "
    "reference's CHES with the policy's quantity, percentile bootstrap interval",
    "health": "a measured verdict on the policy (dpocheck's; thresholds in dpocheck.llm.analysis.displacement)",
}
#: the four cells of the U × displacement table (C3 × PAPER §6), in report order
U_BY_DISPLACEMENT_CELLS = ("in_u_and_displaced", "in_u_not_displaced", "displaced_not_in_u", "neither")


# --------------------------------------------------------------------------------------------- typed results
@dataclass(frozen=True)
class Share:
    """A share of pairs with a property, its bootstrap interval and the claim, β and normalisation it belongs to."""

    value: float | None
    ci95: tuple[float, float] | None
    count: int
    n: int
    claim: str
    beta: float | None
    normalization: str
    tags: tuple[tuple[str, Any], ...] = ()  # extra labels, e.g. ("gamma", γ) or ("delta_reward", label)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": self.value,
            "ci95": None if self.ci95 is None else list(self.ci95),
            "count": self.count,
            "n": self.n,
            "claim": self.claim,
            "beta": self.beta,
            "normalization": self.normalization,
        }
        out.update(self.tags)
        return out

    def tag(self, name: str) -> Any:
        """The value of an extra label (None if absent)."""
        return dict(self.tags).get(name)

    def complement(self, claim: str) -> Share:
        """1 − this share (count and interval mirrored) under another claim; labels kept."""
        return replace(
            self,
            value=None if self.value is None else 1.0 - self.value,
            ci95=None if self.ci95 is None else (1.0 - self.ci95[1], 1.0 - self.ci95[0]),
            count=self.n - self.count,
            claim=claim,
        )


@dataclass(frozen=True)
class Summary:
    """Summary statistics (n, mean, median, min, max) of a per-pair quantity, with its labels (None = absent)."""

    n: int
    mean: float | None
    median: float | None
    min: float | None
    max: float | None
    claim: str | None = None
    beta: float | None = None
    normalization: str | None = None
    note: str | None = None
    at_reference: float | None = None

    @classmethod
    def of(cls, x: Any, **labels: Any) -> Summary:
        a = np.asarray(x, dtype=np.float64).ravel()
        if a.size == 0:
            return cls(0, None, None, None, None, **labels)
        return cls(int(a.size), float(np.mean(a)), float(np.median(a)), float(np.min(a)), float(np.max(a)), **labels)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "mean": self.mean, "median": self.median, "min": self.min, "max": self.max}
        for name in ("claim", "beta", "normalization", "note", "at_reference"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class GammaStar:
    """γ* (C8, Eq. 27, Thm 4.9) over the pairs at one β: the smallest margin scale that aligns every pair."""

    claim: str
    beta: float
    normalization: str
    n_pairs_needing_margin: int
    log_gamma_star: float | None  # None: no pair is violated (γ* = 0)
    gamma_star: float | None  # None: overflows float64 (use log_gamma_star)
    argmax_index: int | None
    note: str | None

    @property
    def log10_gamma_star(self) -> float | None:
        return None if self.log_gamma_star is None else self.log_gamma_star / math.log(10.0)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "claim": self.claim,
            "beta": self.beta,
            "normalization": self.normalization,
            "n_pairs_needing_margin": self.n_pairs_needing_margin,
        }
        if self.log_gamma_star is None:
            out.update({"log_gamma_star": None, "gamma_star": self.gamma_star, "note": self.note})
            return out
        out.update(
            {
                "log_gamma_star": self.log_gamma_star,
                "log10_gamma_star": self.log10_gamma_star,
                "gamma_star": self.gamma_star,
                "argmax_index": self.argmax_index,
            }
        )
        if self.note is not None:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class PolicyAtBeta:
    """A trained policy's DPO loss and gradient weights (C4) at one β."""

    beta: float
    normalization: str
    dpo_loss_mean: float
    dpo_gradient_weight: Summary
    dpo_gradient_weight_in_u: Summary
    exit_gradient_weight_in_u: Summary

    def as_dict(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "normalization": self.normalization,
            "dpo_loss_mean": {
                "value": self.dpo_loss_mean,
                "claim": CLAIMS["dpo_loss"],
                "beta": self.beta,
                "normalization": self.normalization,
                "log2": math.log(2.0),
            },
            "dpo_gradient_weight": self.dpo_gradient_weight.as_dict(),
            "dpo_gradient_weight_in_u": self.dpo_gradient_weight_in_u.as_dict(),
            "exit_gradient_weight_in_u": self.exit_gradient_weight_in_u.as_dict(),
        }


@dataclass(frozen=True)
class BetaResult:
    """Everything at one β: C2 violation rate (None without Δr*), δ_{π*}, γ* and the C8 margin, the policy."""

    beta: float
    normalization: str
    violation_rate: Share | None
    unavailable_note: str | None = None  # why there is no violation rate
    idealized_ranking_accuracy: Share | None = None
    delta_opt: Summary | None = None
    violation_rate_by_subset: dict[str, Share] | None = None
    gamma_star: GammaStar | None = None
    violation_rate_with_cpo_margin: tuple[Share, ...] = ()
    policy: PolicyAtBeta | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"beta": self.beta, "normalization": self.normalization}
        if self.violation_rate is None:
            out["violation_rate"] = {
                "value": None,
                "claim": CLAIMS["violation_rate"],
                "beta": self.beta,
                "normalization": self.normalization,
                "note": self.unavailable_note,
            }
        else:
            assert self.idealized_ranking_accuracy is not None and self.delta_opt is not None
            assert self.gamma_star is not None
            out["violation_rate"] = self.violation_rate.as_dict()
            out["idealized_ranking_accuracy"] = self.idealized_ranking_accuracy.as_dict()
            out["delta_opt"] = self.delta_opt.as_dict()
            if self.violation_rate_by_subset is not None:
                out["violation_rate_by_subset"] = {k: v.as_dict() for k, v in self.violation_rate_by_subset.items()}
            out["gamma_star"] = self.gamma_star.as_dict()
            out["violation_rate_with_cpo_margin"] = [s.as_dict() for s in self.violation_rate_with_cpo_margin]
        if self.policy is not None:
            out["policy"] = self.policy.as_dict()
        return out


@dataclass(frozen=True)
class ReferenceResult:
    """β-independent quantities of π_ref (C2 context, C3, C8's margin per unit γ)."""

    delta_ref: Summary
    reference_preference_rate: Share
    u_nonempty_share: Share
    n_ties: int
    log_margin_per_unit_gamma: Summary
    ches: ChesResult | None = None  # None: the reference rows carry no CHES

    def as_dict(self) -> dict[str, Any]:
        out = {
            "delta_ref": self.delta_ref.as_dict(),
            "reference_preference_rate": self.reference_preference_rate.as_dict(),
            "u_nonempty_share": self.u_nonempty_share.as_dict(),
            "n_ties": self.n_ties,
            "log_margin_per_unit_gamma": self.log_margin_per_unit_gamma.as_dict(),
        }
        if self.ches is not None:
            out["ches"] = self.ches.as_dict()
        return out


@dataclass(frozen=True)
class PolicyResult:
    """A trained policy joined on index with the reference: share in U (C3) and accuracies."""

    scores: str
    n_joined: int
    n_reference_only: int
    n_policy_only: int
    delta_theta: Summary
    share_in_u: Share
    ranking_accuracy: Share
    implicit_reward_accuracy: Share

    def as_dict(self) -> dict[str, Any]:
        return {
            "scores": self.scores,
            "n_joined": self.n_joined,
            "n_reference_only": self.n_reference_only,
            "n_policy_only": self.n_policy_only,
            "delta_theta": self.delta_theta.as_dict(),
            "share_in_u": self.share_in_u.as_dict(),
            "ranking_accuracy": self.ranking_accuracy.as_dict(),
            "implicit_reward_accuracy": self.implicit_reward_accuracy.as_dict(),
        }


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's ρ over pairs of two per-pair quantities ``x`` and ``y``, with its bootstrap interval."""

    x: str
    y: str
    value: float | None  # None: fewer than 3 pairs, or a constant variable
    ci95: tuple[float, float] | None
    n: int
    claim: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "y": self.y,
            "spearman_rho": self.value,
            "ci95": None if self.ci95 is None else list(self.ci95),
            "n": self.n,
            "claim": self.claim,
        }


@dataclass(frozen=True)
class HealthVerdict:
    """Whether a policy degenerated, measured against its reference (see
    :func:`dpocheck.llm.analysis.displacement.health_verdict` for the rule and its thresholds)."""

    verdict: str  # healthy | degraded | degenerate
    reasons: tuple[str, ...]
    n_pairs: int
    n_non_finite: int
    chosen_logp_drop_per_token: float | None  # mean over pairs of log π̄_ref(y_w) − log π̄_θ(y_w), nats per token
    rejected_logp_drop_per_token: float | None
    policy_chosen_logp_per_token: float | None
    reference_chosen_logp_per_token: float | None
    share_pairs_over_degenerate_drop: float | None
    degraded_drop_nats: float
    degenerate_drop_nats: float
    uniform_logp_per_token: float | None = None  # −log |V| where the vocabulary is known (context only)

    def line(self) -> str:
        """The verdict and the numbers behind it, in one line."""
        if self.chosen_logp_drop_per_token is None:
            return f"health: {self.verdict} ({'; '.join(self.reasons)})"
        drop = self.chosen_logp_drop_per_token
        size = f"{abs(drop):,.0f}" if abs(drop) >= 1000 else f"{abs(drop):.3g}"
        moved = f"fell {size}" if drop > 0 else f"rose {size}"
        uniform = "" if self.uniform_logp_per_token is None else f", uniform {self.uniform_logp_per_token:.2f}"
        return (
            f"health: {self.verdict} — the chosen responses' log-prob per token {moved} nats "
            f"(policy {self.policy_chosen_logp_per_token:.3f}, reference {self.reference_chosen_logp_per_token:.3f}"
            f"{uniform}; degraded past a {self.degraded_drop_nats:g}-nat fall, degenerate past "
            f"{self.degenerate_drop_nats:g}); {100 * (self.share_pairs_over_degenerate_drop or 0.0):.0f} % of pairs "
            f"fell past {self.degenerate_drop_nats:g}, {self.n_non_finite} of {self.n_pairs} non-finite"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "n_pairs": self.n_pairs,
            "n_non_finite": self.n_non_finite,
            "chosen_logp_drop_per_token": self.chosen_logp_drop_per_token,
            "rejected_logp_drop_per_token": self.rejected_logp_drop_per_token,
            "policy_chosen_logp_per_token": self.policy_chosen_logp_per_token,
            "reference_chosen_logp_per_token": self.reference_chosen_logp_per_token,
            "share_pairs_over_degenerate_drop": self.share_pairs_over_degenerate_drop,
            "thresholds_nats_per_token": {"degraded": self.degraded_drop_nats, "degenerate": self.degenerate_drop_nats},
            "uniform_logp_per_token": self.uniform_logp_per_token,
            "claim": CLAIMS["health"],
        }


@dataclass(frozen=True)
class ChesResult:
    """CHES per pair of one model (the reference), summarised overall and by the sign of δ_ref (PAPER §6)."""

    n_with_ches: int
    ches: dict[str, Summary]  # form (sum, mean) -> summary
    by_delta_ref_sign: dict[str, dict[str, Summary]]  # form -> {"delta_ref<0": …, "delta_ref>=0": …}

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim": CLAIMS["ches"],
            "n_with_ches": self.n_with_ches,
            "ches": {k: v.as_dict() for k, v in self.ches.items()},
            "by_delta_ref_sign": {k: {s: v.as_dict() for s, v in d.items()} for k, d in self.by_delta_ref_sign.items()},
        }


@dataclass(frozen=True)
class DisplacementResult:
    """Likelihood displacement of a trained policy next to U (PAPER §6, Razin et al. 2024), per pair aggregated.

    ``normalization`` is the convention of the δ-based quantities (U, δ_θ > 0); the shifts Δ are given in both.
    """

    normalization: str
    n_pairs: int
    chosen_logp_shift: dict[str, Summary]  # convention -> Δ_w summary
    rejected_logp_shift: dict[str, Summary]
    share_displaced: Share
    share_both_fell: Share
    share_displaced_while_ranked_correct: Share
    share_displaced_while_implicit_correct: Share
    u_by_displacement: dict[str, Share]  # U_BY_DISPLACEMENT_CELLS -> share
    health: HealthVerdict
    ches_predicts: tuple[RankCorrelation, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "normalization": self.normalization,
            "n_pairs": self.n_pairs,
            "chosen_logp_shift": {k: v.as_dict() for k, v in self.chosen_logp_shift.items()},
            "rejected_logp_shift": {k: v.as_dict() for k, v in self.rejected_logp_shift.items()},
            "share_displaced": self.share_displaced.as_dict(),
            "share_both_fell": self.share_both_fell.as_dict(),
            "share_displaced_while_ranked_correct": self.share_displaced_while_ranked_correct.as_dict(),
            "share_displaced_while_implicit_correct": self.share_displaced_while_implicit_correct.as_dict(),
            "u_by_displacement": {k: v.as_dict() for k, v in self.u_by_displacement.items()},
            "ches_predicts": [c.as_dict() for c in self.ches_predicts],
            "health": self.health.as_dict(),
        }


@dataclass(frozen=True)
class Inputs:
    """What the report was computed from (scores folder, shards, counts, warnings, the scorer's manifest)."""

    scores: str
    shards: list[str]
    n_pairs: int
    n_duplicate_rows_dropped: int
    index_gaps: int
    n_truncated_pairs: int
    warnings: list[str]
    manifest: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scores": self.scores,
            "shards": self.shards,
            "n_pairs": self.n_pairs,
            "n_duplicate_rows_dropped": self.n_duplicate_rows_dropped,
            "index_gaps": self.index_gaps,
            "n_truncated_pairs": self.n_truncated_pairs,
            "warnings": self.warnings,
            "manifest": self.manifest,
        }


@dataclass(frozen=True)
class DeltaRewardInfo:
    """Where Δr* came from and how many pairs have it."""

    source: str
    available: bool
    assumed: bool
    n_with: int | None = None
    n_without: int | None = None
    stats: Summary | None = None

    @property
    def note(self) -> str | None:
        if self.n_without:
            return f"{self.n_without} pairs have no Δr* and are left out of the C2/C8 numbers"
        return None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "available": self.available, "assumed": self.assumed}
        if self.available:
            assert self.stats is not None
            out.update({"n_with": self.n_with, "n_without": self.n_without, "stats": self.stats.as_dict()})
            if self.note is not None:
                out["note"] = self.note
        return out


@dataclass(frozen=True)
class ViolationsReport:
    """The result of :func:`analyze` for one normalisation: typed, with :meth:`as_dict` for the JSON file."""

    normalization: str
    betas: list[float]
    n_bootstrap: int
    seed: int
    inputs: Inputs
    delta_reward: DeltaRewardInfo
    reference: ReferenceResult
    policy: PolicyResult | None
    per_beta: list[BetaResult]
    displacement: DisplacementResult | None = None  # with a policy: likelihood displacement next to U (PAPER §6)

    @property
    def normalization_note(self) -> str:
        return NORMALIZATION_NOTES[self.normalization]

    def at_beta(self, beta: float) -> BetaResult:
        """The entry of one β of the grid."""
        for e in self.per_beta:
            if e.beta == beta:
                return e
        raise KeyError(f"β = {beta!r} is not in the report's grid {self.betas}")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tool": "dpocheck violations",
            "normalization": self.normalization,
            "normalization_note": self.normalization_note,
            "betas": self.betas,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "inputs": self.inputs.as_dict(),
            "delta_reward": self.delta_reward.as_dict(),
            "reference": self.reference.as_dict(),
        }
        if self.policy is not None:
            out["policy"] = self.policy.as_dict()
        out["per_beta"] = [e.as_dict() for e in self.per_beta]
        if self.displacement is not None:
            out["displacement"] = self.displacement.as_dict()
        return out
