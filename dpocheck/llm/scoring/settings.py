"""What a scoring pass is asked to do, and what it writes: the bottom of ``dpocheck.llm.scoring``.

* :class:`ScoreSettings` — everything that changes the scores or the output layout (recorded in a scores
  manifest; ``--resume`` checks it).
* The score row (:data:`ROW_KEYS`): the contract between ``dpocheck score`` (and a train run's eval files) and
  every reader of scores (:mod:`dpocheck.llm.analysis.scores`). log π(y|x) of both responses in both log-prob
  conventions (:data:`LOGP_CONVENTIONS`: ``sum``, the summed token log-probs of PAPER §1, and ``mean``, the
  per-token mean of the released code), token counts, truncation flags, the data's Δr* (C2) and CHES
  (``ches_sum``, ``ches_mean``: Razin et al. 2024's centered hidden embedding similarity of the pair under the
  scored model, PAPER §6; None where the model is scored through its own forward).
* :func:`cap_max_length` — the one context rule of every command that reads a model (``score``, ``reward``,
  ``train``): ``--max-length 0`` means the model's context, and a larger value is capped at it, so no sequence is
  read past the positions the model was trained on; longer sequences are truncated and flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpocheck.errors import InputError
from dpocheck.llm.data.fields import ON_ERROR_CHOICES

#: The two log-prob conventions of every number (PAPER §1): summed over the response, or per-token mean.
LOGP_CONVENTIONS = ("sum", "mean")
PREFIX_MODES = ("packed", "cache", "none")
CHAT_TEMPLATE_CHOICES = ("auto", "none", "model")

LOGP_FIELDS = ("chosen_logp_sum", "rejected_logp_sum", "chosen_logp_mean", "rejected_logp_mean")
REQUIRED_FIELDS = ("index", *LOGP_FIELDS)
OPTIONAL_FIELDS = (
    "chosen_tokens",
    "rejected_tokens",
    "chosen_truncated",
    "rejected_truncated",
    "delta_reward",
    "reward_source",
    "subset",
    "ches_sum",
    "ches_mean",
)
#: The keys of a score row, in order (what ``dpocheck score`` writes and a scores reader accepts).
ROW_KEYS = (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)


def check_convention(convention: str, name: str = "normalization") -> str:
    """The log-prob convention, ``sum`` or ``mean``; ValueError naming ``name`` otherwise."""
    if convention not in LOGP_CONVENTIONS:
        raise InputError(f"{name} must be one of {LOGP_CONVENTIONS}, got {convention!r}")
    return convention


@dataclass
class ScoreSettings:
    """Everything that changes the scores or the output layout (recorded in the manifest; resume checks it)."""

    max_length: int | None = 1024
    batch_tokens: int = 4096
    chat_template: str = "auto"
    dtype: str = "auto"
    prefix_mode: str = "packed"
    shard_pairs: int = 128
    on_error: str = "raise"
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.chat_template not in CHAT_TEMPLATE_CHOICES:
            raise InputError(f"chat_template must be one of {CHAT_TEMPLATE_CHOICES}, got {self.chat_template!r}")
        if self.prefix_mode not in PREFIX_MODES:
            raise InputError(f"prefix_mode must be one of {PREFIX_MODES}, got {self.prefix_mode!r}")
        if self.on_error not in ON_ERROR_CHOICES:
            raise InputError(f"on_error must be one of {ON_ERROR_CHOICES}, got {self.on_error!r}")
        if self.batch_tokens < 1:
            raise InputError(f"batch_tokens must be >= 1, got {self.batch_tokens}")
        if self.shard_pairs < 1:
            raise InputError(f"shard_pairs must be >= 1, got {self.shard_pairs}")
        if self.max_length is not None and self.max_length < 2:
            raise InputError(f"max_length must be >= 2, got {self.max_length}")


# ------------------------------------------------------------------------------------------ the context rule
_SANE_CONTEXT = 10_000_000  # tokenizers without a limit report 1e30 as model_max_length


def context_length(model: Any, tokenizer: Any = None) -> int | None:
    """The model's context in tokens: its config's ``max_position_embeddings`` (or ``n_positions``), lowered to
    the tokenizer's ``model_max_length`` where that is a real limit; None when neither says."""
    config = getattr(model, "config", model)
    limits = [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions")]
    limits.append(getattr(tokenizer, "model_max_length", None))
    sane = [int(v) for v in limits if isinstance(v, int) and not isinstance(v, bool) and 2 <= v < _SANE_CONTEXT]
    return min(sane) if sane else None


def cap_max_length(requested: int | None, context: int | None) -> tuple[int | None, str | None]:
    """The token budget a command uses for ``--max-length requested`` (0 or None: the model's context).

    Returns (max_length, note): the budget (None only when neither a budget nor a context is known) and a
    one-line note when the request was changed (the commands print it), else None.
    """
    if requested is not None and requested < 0:
        raise InputError(f"--max-length must be >= 0 (0: the model's context), got {requested}")
    if requested == 1:
        raise InputError("--max-length must be 0 (the model's context) or >= 2, got 1")
    asked = requested or None
    if context is None or (asked is not None and asked <= context):
        return asked, None
    what = "0: the model's context," if asked is None else f"{asked} is capped at the model's context of"
    return context, f"--max-length {what} {context} tokens (longer sequences are truncated and flagged)"
