"""Plain record types shared by the LLM readers, scorers and analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ChatMessages = list[dict[str, str]]


@dataclass(frozen=True)
class PreferencePair:
    """One preference record (x, y_w, y_l) as read from a dataset.

    index: the record's 0-based position in the input file (kept through filtering, so outputs join back).
    prompt: the shared context x, either plain text or a list of chat messages ``{"role", "content"}`` that
        precede the final response.
    chosen / rejected: the response texts y_w (preferred by the data) and y_l.
    delta_reward: Δr* = r*(y_w) − r*(y_l) when the data carries one (score columns, soft preference q via
        logit(q)); None otherwise.
    reward_source: where delta_reward came from (e.g. ``"soft_preference_logit"``, ``"score_columns"``).
    preference_prob: the data's probability that y_w is preferred, when it has one.
    subset: a grouping label for per-subset breakdowns (e.g. AlpacaEval's ``dataset`` or generator).
    meta: any other per-record fields worth carrying to the outputs.
    """

    index: int
    prompt: str | ChatMessages
    chosen: str
    rejected: str
    delta_reward: float | None = None
    reward_source: str | None = None
    preference_prob: float | None = None
    subset: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
