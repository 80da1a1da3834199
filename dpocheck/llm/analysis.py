"""The analysis behind ``dpocheck violations`` (C2, C3, C4, C8), re-exported from the modules that hold it.

:mod:`dpocheck.llm.scores` reads and validates scores directories and resolves Δr*;
:mod:`dpocheck.llm.results` computes the report as the typed dataclasses of :mod:`dpocheck.llm.result_types`
(:class:`ViolationsReport` and its parts; ``as_dict()`` is the JSON layout);
:mod:`dpocheck.llm.report` renders Markdown, JSON and Fig. 1.
"""

from __future__ import annotations

from .report import join_summary, plot_fig1, render_markdown, report_to_json
from .result_types import (
    CLAIMS,
    NORMALIZATION_NOTES,
    BetaResult,
    DeltaRewardInfo,
    GammaStar,
    Inputs,
    PolicyAtBeta,
    PolicyResult,
    ReferenceResult,
    Share,
    Summary,
    ViolationsReport,
)
from .results import DEFAULT_BETAS, DEFAULT_GAMMAS, analyze, bootstrap_mean_ci
from .scores import (
    LOGP_FIELDS,
    MANIFEST,
    MERGED,
    NORMALIZATIONS,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    DeltaReward,
    ScoresError,
    ScoreTable,
    index_gaps,
    read_delta_reward_file,
    read_scores,
    resolve_delta_reward,
)

__all__ = [
    "BetaResult",
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
    "LOGP_FIELDS",
    "MANIFEST",
    "MERGED",
    "NORMALIZATIONS",
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
