"""The analysis behind ``dpocheck violations`` (C2, C3, C4, C8; displacement, PAPER §6): score folders in, a typed
report out.

What lives where (imports go down the list):

- ``scores`` — reading and validating score folders (a ``dpocheck score`` folder or a train run's eval file) into a
  :class:`ScoreTable`, the data-hash join check, and the Δr* source (never invented);
- ``tokenisation`` — the refusal to join a policy's scores with a reference's made under other tokenisation
  settings (token budget, chat template, tokenizer) or with other token counts pair by pair;
- ``result_types`` — the typed, frozen results (:class:`ViolationsReport` and its parts; ``as_dict()`` is the JSON
  layout) and :data:`CLAIMS`, which claim each number belongs to;
- ``stats`` — bootstrap intervals of shares, Spearman's ρ with a bootstrap interval, t-intervals across seeds;
- ``displacement`` — likelihood displacement next to U per pair and per policy, CHES, the health verdict;
- ``results`` — :func:`analyze`, the computation (every pair quantity from :mod:`dpocheck.theory`);
- ``report`` — Markdown, strict JSON, the toy Fig. 1 and the displacement figure.

This package re-exports the public names of the reading, statistics, displacement, result, computation and report
modules.
"""

from __future__ import annotations

from dpocheck.llm.manifest import MANIFEST, MERGED
from dpocheck.llm.scoring.settings import LOGP_CONVENTIONS, LOGP_FIELDS, OPTIONAL_FIELDS, REQUIRED_FIELDS

from .displacement import (
    DEGENERATE_CHOSEN_DROP_NATS,
    DEGRADED_CHOSEN_DROP_NATS,
    displacement_result,
    episode_patterns,
    health_verdict,
    pair_table,
)
from .report import join_summary, plot_fig1, render_markdown, report_to_json
from .result_types import (
    CLAIMS,
    NORMALIZATION_NOTES,
    BetaResult,
    ChesResult,
    DeltaRewardInfo,
    DisplacementResult,
    GammaStar,
    HealthVerdict,
    Inputs,
    PolicyAtBeta,
    PolicyResult,
    RankCorrelation,
    ReferenceResult,
    Share,
    Summary,
    ViolationsReport,
)
from .results import DEFAULT_BETAS, DEFAULT_GAMMAS, analyze
from .scores import (
    DeltaReward,
    ScoresError,
    ScoreTable,
    index_gaps,
    read_delta_reward_file,
    read_scores,
    resolve_delta_reward,
)
from .stats import bootstrap_mean_ci, spearman_ci, t_interval

__all__ = [
    "BetaResult",
    "ChesResult",
    "DisplacementResult",
    "HealthVerdict",
    "RankCorrelation",
    "DEGENERATE_CHOSEN_DROP_NATS",
    "DEGRADED_CHOSEN_DROP_NATS",
    "displacement_result",
    "episode_patterns",
    "health_verdict",
    "pair_table",
    "spearman_ci",
    "t_interval",
    "DeltaRewardInfo",
    "GammaStar",
    "Inputs",
    "PolicyAtBeta",
    "PolicyResult",
    "ReferenceResult",
    "Share",
    "Summary",
    "ViolationsReport",
    "CLAIMS",
    "DEFAULT_BETAS",
    "DEFAULT_GAMMAS",
    "LOGP_CONVENTIONS",
    "LOGP_FIELDS",
    "MANIFEST",
    "MERGED",
    "NORMALIZATION_NOTES",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "DeltaReward",
    "ScoreTable",
    "ScoresError",
    "analyze",
    "bootstrap_mean_ci",
    "index_gaps",
    "join_summary",
    "plot_fig1",
    "read_delta_reward_file",
    "read_scores",
    "render_markdown",
    "report_to_json",
    "resolve_delta_reward",
]
