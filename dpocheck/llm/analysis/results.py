"""The computation behind ``dpocheck violations``: C2, C3, C4 and C8 on scored real preference pairs, and with a
policy its likelihood displacement next to U (PAPER §6, :mod:`~dpocheck.llm.analysis.displacement`).

Every pair-level quantity is computed by :mod:`dpocheck.theory` (``violation_mask``, ``delta_opt``,
``in_undesirable_space``, ``undesirable_space_nonempty``, ``dpo_gradient_weight``, ``exit_gradient_weight``,
``dpo_loss``, ``log_cpo_margin``, ``log_gamma_star_pair``); this module only aggregates (shares, bootstrap
intervals, subsets) into the typed, frozen results of :mod:`dpocheck.llm.analysis.result_types`
(:class:`ViolationsReport`, :class:`Share`, :class:`Summary`, :class:`GammaStar`, …). Every number carries its
claim, β and normalisation (``sum``: log π(y|x) is the sum of the response's token log-probs, PAPER §1; ``mean``:
the per-token mean, the released code's convention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dpocheck.llm.scoring.settings import LOGP_CONVENTIONS, check_convention
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

from .displacement import ches_result, displacement_result, joined_logps, vocab_size_of
from .result_types import (
    CLAIMS,
    BetaResult,
    DeltaRewardInfo,
    GammaStar,
    Inputs,
    PolicyAtBeta,
    PolicyResult,
    ReferenceResult,
    Summary,
    ViolationsReport,
)
from .scores import DeltaReward, ScoresError, ScoreTable, index_gaps, resolve_delta_reward
from .stats import share_of

DEFAULT_BETAS = (0.01, 0.1, 1.0, 5.0, 10.0)
# the released code's demo and default γ (C10), from the theory layer's one definition
DEFAULT_GAMMAS = (CPO_MARGIN_DEMO_GAMMA, RELEASED_DEFAULTS["gamma"])


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
) -> ViolationsReport:
    """The violations report for one normalisation and a β grid (C2, C3, C4, C8).

    reference: π_ref's scores; policy: a trained policy's scores (joined on index); delta_reward: from
    :func:`resolve_delta_reward` (None = use the rows' delta_reward if any).
    """
    check_convention(normalization)
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

    inputs = Inputs(
        scores=ref.source,
        shards=ref.shards,
        n_pairs=len(ref),
        n_duplicate_rows_dropped=ref.n_duplicates,
        index_gaps=index_gaps(ref.index),
        n_truncated_pairs=int((ref.chosen_truncated | ref.rejected_truncated).sum()),
        warnings=list(ref.warnings),
        manifest=ref.manifest,
    )
    d_ref = ref.delta(norm)
    lw, ll = ref.log_pi("chosen", norm), ref.log_pi("rejected", norm)
    have = None if dr_all is None else ~np.isnan(dr_all)
    if dr_all is None:
        dr_info = DeltaRewardInfo(delta_reward.label, False, delta_reward.assumed)
    else:
        dr_info = DeltaRewardInfo(
            delta_reward.label,
            True,
            delta_reward.assumed,
            n_with=int(have.sum()),
            n_without=int((~have).sum()),
            stats=Summary.of(dr_all[have]),
        )

    reference_result = ReferenceResult(
        delta_ref=Summary.of(d_ref, normalization=norm),
        reference_preference_rate=share_of(
            d_ref > 0, CLAIMS["reference_preference_rate"], None, norm, n_bootstrap, [seed, 1]
        ),
        u_nonempty_share=share_of(
            np.asarray(undesirable_space_nonempty(d_ref)),
            CLAIMS["u_nonempty_share"],
            None,
            norm,
            n_bootstrap,
            [seed, 2],
        ),
        n_ties=int((d_ref == 0).sum()),
        log_margin_per_unit_gamma=Summary.of(
            np.asarray(log_cpo_margin(lw, ll, 1.0)),
            claim=CLAIMS["log_cpo_margin"] + " at γ = 1",
            normalization=norm,
            note=(
                "log(1/π̄_ref(y_w) + 1/π̄_ref(y_l)): 1/π̄ is the response's perplexity under π_ref"
                if norm == "mean"
                else "log(1/π_ref(y_w) + 1/π_ref(y_l)) of whole responses: astronomically large margins"
            ),
        ),
        ches=ches_result({c: ref.ches(c) for c in LOGP_CONVENTIONS}, d_ref),
    )
    subsets = _subset_positions(ref.subset)

    # optional policy, joined on index
    policy_result = displacement = None
    joined: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    if policy is not None:
        common, i_ref, i_pol = np.intersect1d(ref.index, policy.index, return_indices=True)
        if common.size == 0:
            raise ScoresError("the policy scores share no index with the reference scores")
        d_theta, d_ref_j = policy.delta(norm)[i_pol], d_ref[i_ref]
        in_u = np.asarray(in_undesirable_space(d_theta, d_ref_j))
        joined = (d_theta, d_ref_j, in_u)
        policy_result = PolicyResult(
            scores=policy.source,
            n_joined=int(common.size),
            n_reference_only=int(len(ref) - common.size),
            n_policy_only=int(len(policy) - common.size),
            delta_theta=Summary.of(d_theta, normalization=norm),
            share_in_u=share_of(in_u, CLAIMS["share_in_u"], None, norm, n_bootstrap, [seed, 3]),
            ranking_accuracy=share_of(d_theta > 0, CLAIMS["ranking_accuracy"], None, norm, n_bootstrap, [seed, 4]),
            implicit_reward_accuracy=share_of(
                d_theta > d_ref_j, CLAIMS["implicit_reward_accuracy"], None, norm, n_bootstrap, [seed, 5]
            ),
        )
        _, pol_logps, ref_logps, ches = joined_logps(ref, policy)
        displacement = displacement_result(
            pol_logps,
            ref_logps,
            norm,
            ches=ches,
            vocab_size=vocab_size_of(ref.manifest),
            n_bootstrap=n_bootstrap,
            seed=seed,
        )

    per_beta = []
    for k, beta in enumerate(betas):
        pol_at = None if joined is None else _policy_at_beta(*joined, beta, norm)
        if dr_all is None:
            per_beta.append(BetaResult(beta, norm, None, unavailable_note=delta_reward.label, policy=pol_at))
            continue
        delta_ref_known, delta_reward_known = d_ref[have], dr_all[have]
        violated = np.asarray(violation_mask(delta_ref_known, delta_reward_known, beta))
        tags = {"delta_reward": delta_reward.label} if delta_reward.assumed else {}
        rate = share_of(violated, CLAIMS["violation_rate"], beta, norm, n_bootstrap, [seed, 10, k], **tags)
        by_subset = None
        if subsets:
            by_subset = {}
            known_positions = np.flatnonzero(have)
            for j, (name, positions) in enumerate(subsets.items()):
                sel = np.isin(known_positions, positions)
                by_subset[name] = share_of(
                    violated[sel], CLAIMS["violation_rate"], beta, norm, n_bootstrap, [seed, 20, k, j]
                )
        log_gamma_star = np.asarray(log_gamma_star_pair(delta_ref_known, delta_reward_known, beta, lw[have], ll[have]))
        per_beta.append(
            BetaResult(
                beta,
                norm,
                rate,
                idealized_ranking_accuracy=rate.complement(CLAIMS["idealized_ranking_accuracy"]),
                delta_opt=Summary.of(
                    np.asarray(delta_opt(delta_ref_known, delta_reward_known, beta)),
                    claim="key identity: δ_{π*} = δ_ref + Δr*/β",
                    beta=beta,
                    normalization=norm,
                ),
                violation_rate_by_subset=by_subset,
                gamma_star=_gamma_star(log_gamma_star, beta, ref.index[have], norm),
                violation_rate_with_cpo_margin=tuple(
                    share_of(
                        log_gamma_star >= math.log(g),
                        CLAIMS["violation_rate_with_cpo_margin"],
                        beta,
                        norm,
                        0,
                        None,
                        gamma=g,
                    )
                    for g in gammas
                ),
                policy=pol_at,
            )
        )
    return ViolationsReport(
        normalization=norm,
        betas=betas,
        n_bootstrap=n_bootstrap,
        seed=seed,
        inputs=inputs,
        delta_reward=dr_info,
        reference=reference_result,
        policy=policy_result,
        per_beta=per_beta,
        displacement=displacement,
    )


def _subset_positions(subset: np.ndarray) -> dict[str, np.ndarray]:
    names = sorted({s for s in subset if s is not None})
    out = {name: np.flatnonzero(subset == name) for name in names}
    if names and any(s is None for s in subset):
        out["(none)"] = np.flatnonzero(np.array([s is None for s in subset]))
    return out


def _gamma_star(log_gamma_star_pairs: np.ndarray, beta: float, index: np.ndarray, norm: str) -> GammaStar:
    """γ* from the per-pair log γ*_pair (−inf for pairs that need no margin)."""
    need = np.isfinite(log_gamma_star_pairs)
    head = (CLAIMS["gamma_star"], beta, norm, int(need.sum()))
    if not need.any():
        return GammaStar(*head, None, 0.0, None, "no pair is violated: γ* = 0")
    j = int(np.argmax(np.where(need, log_gamma_star_pairs, -np.inf)))
    log_gamma_star = float(log_gamma_star_pairs[j])
    with np.errstate(over="ignore", under="ignore"):
        gamma_star = math.exp(log_gamma_star) if log_gamma_star < 709.0 else math.inf
    note = None
    if gamma_star == 0.0:
        note = "γ* underflows float64; use log_gamma_star"
    elif norm == "sum":
        note = "whole-sequence 1/π_ref is astronomically large, so γ* is tiny; compare in log space"
    return GammaStar(*head, log_gamma_star, _finite_or_none(gamma_star), int(index[j]), note)


def _policy_at_beta(d_theta: np.ndarray, d_ref: np.ndarray, in_u: np.ndarray, beta: float, norm: str) -> PolicyAtBeta:
    loss = np.asarray(dpo_loss(d_theta, d_ref, beta).loss)
    w = np.asarray(dpo_gradient_weight(d_theta, d_ref, beta))
    return PolicyAtBeta(
        beta=beta,
        normalization=norm,
        dpo_loss_mean=float(loss.mean()),
        dpo_gradient_weight=Summary.of(
            w, claim=CLAIMS["dpo_gradient_weight"], beta=beta, normalization=norm, at_reference=beta / 2.0
        ),
        dpo_gradient_weight_in_u=Summary.of(
            w[in_u], claim=CLAIMS["dpo_gradient_weight"] + " on pairs in U", beta=beta, normalization=norm
        ),
        exit_gradient_weight_in_u=Summary.of(
            np.asarray(exit_gradient_weight(d_ref[in_u], beta)),
            claim=CLAIMS["exit_gradient_weight"],
            beta=beta,
            normalization=norm,
        ),
    )
