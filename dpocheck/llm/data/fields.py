"""Field checks shared by every record reader: each failure is a :class:`RecordError` naming record and field.

Also the optional reward fields of TRL/HH records (Δr* for C2's check β·δ_ref + Δr* ≤ 0) and the per-record
extras (subset, meta) every reader carries to the outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dpocheck.errors import InputError

from .types import ChatMessages

DELTA_REWARD_SOURCES = ("auto", "none", "delta_reward", "score_columns", "probability", "soft_preference")
PROBABILITY_FIELDS = ("preference_prob", "prob_chosen", "p_chosen")
#: What a command does with a bad record: skip and count it by reason, or stop naming it.
ON_ERROR_CHOICES = ("skip", "raise")


class RecordError(InputError):
    """A record that cannot become a preference pair; the message names the record number and the field."""

    def __init__(
        self,
        record: int,
        field_name: str | None,
        message: str,
        reason: str,
        line: int | None = None,
        path: str | None = None,
    ):
        self.record = record
        self.field = field_name
        self.reason = reason
        self.line = line
        self.path = path
        self.detail = message
        where = (f"{path}: " if path else "") + f"record {record}" + (f" (line {line})" if line is not None else "")
        what = f"field '{field_name}' " if field_name else ""
        super().__init__(f"{where}: {what}{message}")

    def with_line(self, line: int | None, path: str | None = None) -> RecordError:
        """The same error with the file's line number (and the file) added to its message."""
        line = self.line if line is None else line
        path = self.path if path is None else path
        if line == self.line and path == self.path:
            return self
        return RecordError(self.record, self.field, self.detail, self.reason, line, path)


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode text (a lone surrogate, as JSON's ``"\\ud800"`` decodes to), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"is not valid Unicode text (a lone surrogate {text[err.start]!r} at character {err.start})"
    return None


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def get_field(rec: dict[str, Any], name: str, rn: int) -> Any:
    if name not in rec or rec[name] is None:
        raise RecordError(rn, name, "is missing", "missing_field")
    return rec[name]


def text_field(rec: dict[str, Any], name: str, rn: int, *, response: bool = True) -> str:
    v = get_field(rec, name, rn)
    if not isinstance(v, str):
        raise RecordError(rn, name, f"must be a string, got {type(v).__name__}", "wrong_type")
    if not v.strip():
        raise RecordError(rn, name, "is empty", "empty_response" if response else "empty_prompt")
    return v


def finite_number(rec: dict[str, Any], name: str, rn: int) -> float:
    v = get_field(rec, name, rn)
    if not is_number(v):
        raise RecordError(rn, name, f"must be a number, got {type(v).__name__}", "wrong_type")
    try:
        x = float(v)
    except OverflowError:  # an integer beyond float range
        raise RecordError(rn, name, f"must be finite, got an integer of {v.bit_length()} bits", "non_finite") from None
    if not math.isfinite(x):
        raise RecordError(rn, name, f"must be finite, got {x!r}", "non_finite")
    return x


def messages_field(value: Any, name: str, rn: int) -> ChatMessages:
    if not isinstance(value, list):
        raise RecordError(rn, name, f"must be a list of chat messages, got {type(value).__name__}", "wrong_type")
    out: ChatMessages = []
    for k, m in enumerate(value):
        if not isinstance(m, dict):
            raise RecordError(rn, f"{name}[{k}]", f"must be a message object, got {type(m).__name__}", "wrong_type")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                got = "missing" if m.get(key) is None else type(m.get(key)).__name__
                raise RecordError(rn, f"{name}[{k}].{key}", f"must be a string, got {got}", "wrong_type")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def logit_clipped(q: float, q_clip: float) -> float:
    """logit(q) = log q − log(1 − q), q clipped to [q_clip, 1 − q_clip] (Bradley–Terry reward gap, C2)."""
    tail = q if q <= 0.5 else 1.0 - q  # the smaller of q, 1 − q (1 − q is exact for q ≥ 1/2)
    tail = max(tail, q_clip)
    value = math.log(tail) - math.log1p(-tail)
    return value if q <= 0.5 else -value


@dataclass(frozen=True)
class ReaderOptions:
    delta_reward_source: str
    q_clip: float
    prompt_style: str


def delta_reward_of(rec: dict[str, Any], rn: int, opts: ReaderOptions) -> tuple[float | None, str | None, float | None]:
    """(Δr*, reward_source, preference probability) from a TRL/HH record's optional reward fields."""
    src = opts.delta_reward_source
    if src == "none":
        return None, None, None
    has_scores = rec.get("score_chosen") is not None or rec.get("score_rejected") is not None
    prob_field = next((f for f in PROBABILITY_FIELDS if rec.get(f) is not None), None)
    if src == "delta_reward" or (src == "auto" and rec.get("delta_reward") is not None):
        return finite_number(rec, "delta_reward", rn), "delta_reward_field", None
    if src == "score_columns" or (src == "auto" and has_scores):
        sc = finite_number(rec, "score_chosen", rn)
        sr = finite_number(rec, "score_rejected", rn)
        return sc - sr, "score_columns", None
    if src == "probability" or (src == "auto" and prob_field is not None):
        name = prob_field or PROBABILITY_FIELDS[0]
        p = finite_number(rec, name, rn)
        if not 0.0 <= p <= 1.0:
            raise RecordError(rn, name, f"must be a probability in [0, 1], got {p!r}", "out_of_range")
        return logit_clipped(p, opts.q_clip), "probability_logit", p
    return None, None, None


def subset_of(rec: dict[str, Any]) -> str | None:
    for key in ("subset", "dataset"):
        v = rec.get(key)
        if isinstance(v, str) and v:
            return v
    return None


CONSUMED_FIELDS = {
    "prompt",
    "chosen",
    "rejected",
    "delta_reward",
    "score_chosen",
    "score_rejected",
    "subset",
    *PROBABILITY_FIELDS,
}


def meta_of(rec: dict[str, Any]) -> dict[str, Any]:
    """Other scalar fields worth carrying to outputs (ids, sources); long strings are left out."""
    out = {}
    for k, v in rec.items():
        if k in CONSUMED_FIELDS:
            continue
        if (isinstance(v, str) and len(v) <= 200) or is_number(v) or isinstance(v, bool):
            out[k] = v
    return out


def check_distinct(chosen: str, rejected: str, rn: int, fields: tuple[str, str]) -> None:
    if chosen == rejected:
        raise RecordError(
            rn,
            None,
            f"'{fields[0]}' and '{fields[1]}' are identical responses (δ ≡ 0: nothing to compare)",
            "identical_responses",
        )
