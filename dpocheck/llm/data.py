"""Preference-data readers with validation: TRL-style, HH-RLHF, AlpacaEval, generic JSON/JSONL/Parquet.

Every reader yields :class:`~dpocheck.llm.types.PreferencePair` records (x, y_w, y_l) and, where the data has
one, the reward gap Δr* = r*(y_w) − r*(y_l) that the violation check of C2 needs (β·δ_ref + Δr* ≤ 0).

Conventions (documented decisions):

* **Record numbers** are 0-based positions of the records in the file (for JSONL: the non-blank lines, for
  JSON: the list items, for Parquet: the rows). ``PreferencePair.index`` is that number, and every error names
  it: ``record 17 (line 18): field 'chosen' is empty``. Blank JSONL lines are not records.
* **Bad records** either raise :class:`RecordError` (``on_error="raise"``) or are skipped and counted by
  reason in ``LoadResult.skipped`` (``on_error="skip"``, the default); nothing is dropped silently. If no pair
  at all can be read (an empty file, or every record bad) the loader raises, since that means a wrong file or
  format.
* **Empty responses** (empty or whitespace-only text) are an error (reason ``empty_response``): a pair whose
  response has no tokens has no log-probability to compare.
* **chosen == rejected** (identical response texts) is an error (reason ``identical_responses``): δ_π ≡ 0 for
  every policy, so no claim about the pair's ordering can be checked.
* **HH-RLHF transcripts**: the prompt is the shared dialogue up to and including the last
  ``"\\n\\nAssistant:"``; the response is the rest, *with its leading space kept* (``" Sure, ..."``), which is
  how the transcript was written and how BPE tokenizers merge the space into the first word. Transcripts whose
  text before the last ``"\\n\\nAssistant:"`` differs between chosen and rejected are skipped (reason
  ``prefix_mismatch``): they compare two different conversations, not two responses. With
  ``prompt_style="chat"`` the prompt is converted to chat messages (``Human`` → ``user``, ``Assistant`` →
  ``assistant``, one leading space removed from each turn and from the responses).
* **AlpacaEval annotations**: q = ``preference`` − 1 is the judge's probability that ``output_2`` is better.
  The pair is oriented so that y_w is the more preferred output (``output_2`` if q > 1/2, else ``output_1``),
  its probability is q_w = max(q, 1 − q) and Δr* = logit(q_w) = log q_w − log(1 − q_w) with q_w clipped to
  [q_clip, 1 − q_clip] (default 1e-3, so 0 ≤ Δr* ≤ log 999 ≈ 6.907; most judgements are near-deterministic and
  would otherwise give Δr* ≈ 15). Under Bradley–Terry this is the reward gap the judge implies (C2; Chen et
  al. 2024's α = q_w). Exact ties (q = 1/2) are skipped (reason ``tie``): the orientation would be arbitrary
  and Δr* = 0. ``subset`` is the ``dataset`` field; the generators are in ``meta``.
* **Δr* from other data** (``delta_reward_source``): a ``delta_reward`` field;
  ``score_chosen``/``score_rejected`` (Δr* = score_chosen − score_rejected); or a probability that the chosen
  response is better (``preference_prob``, ``prob_chosen`` or ``p_chosen``; Δr* = logit(p) with the same
  clip). The data's chosen/rejected labels are kept as given, so such a Δr* may be negative. ``"auto"`` takes
  the first of these present in each record.
* ``prompt_style="text"`` (default) keeps text prompts as text (HH transcripts, AlpacaEval instructions, TRL
  strings); ``"chat"`` turns them into chat messages (a text prompt becomes one ``user`` message).

Untrusted input: only JSON and Parquet are parsed; nothing is unpickled.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .types import ChatMessages, PreferencePair

RECORD_FORMATS = ("trl", "hh", "alpacaeval")
DELTA_REWARD_SOURCES = ("auto", "none", "delta_reward", "score_columns", "probability", "soft_preference")
PROBABILITY_FIELDS = ("preference_prob", "prob_chosen", "p_chosen")
HH_ASSISTANT = "\n\nAssistant:"
HH_HUMAN = "\n\nHuman:"
HH_RLHF_FILE = "hh-rlhf-harmless-base-test.jsonl.gz"
ALPACAEVAL_FILE = "alpacaeval-gpt4turbo-annotations.jsonl.gz"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_MAX_EXAMPLES = 3


def default_data_dir() -> Path:
    """Where the shared real preference data lives: $DPOCHECK_DATA_DIR, else ``<repo>/../shared/data``.

    The path is returned whether or not it exists; callers check (tests skip when it is absent).
    """
    env = os.environ.get("DPOCHECK_DATA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "data"


class RecordError(ValueError):
    """A record that cannot become a preference pair; the message names the record number and the field."""

    def __init__(self, record: int, field_name: str | None, message: str, reason: str, line: int | None = None):
        self.record = record
        self.field = field_name
        self.reason = reason
        self.line = line
        self.detail = message
        where = f"record {record}" + (f" (line {line})" if line is not None else "")
        what = f"field '{field_name}' " if field_name else ""
        super().__init__(f"{where}: {what}{message}")

    def with_line(self, line: int | None) -> RecordError:
        """The same error with the file's line number added to its message."""
        if line is None or self.line is not None:
            return self
        return RecordError(self.record, self.field, self.detail, self.reason, line)


@dataclass
class LoadResult:
    """The pairs read from a file and an account of everything that was not turned into a pair.

    n_records: records read (including skipped ones); skipped: reason → count; examples: reason → the first
    few error messages; format: the record format used (``trl``, ``hh``, ``alpacaeval``); container:
    ``jsonl``, ``json`` or ``parquet`` (``+gz`` when compressed); delta_reward_sources: reward_source → number
    of pairs (``none`` for pairs without Δr*).
    """

    pairs: list[PreferencePair]
    n_records: int
    skipped: dict[str, int]
    format: str
    path: str = ""
    container: str = ""
    examples: dict[str, list[str]] = field(default_factory=dict)
    delta_reward_sources: dict[str, int] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        """Total number of skipped records."""
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line for logs: how many pairs, from how many records, and why the rest were skipped."""
        parts = [
            f"{len(self.pairs)} pairs from {self.n_records} records of {self.path or 'input'} "
            f"(format {self.format}, {self.container})"
        ]
        if self.skipped:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
            parts.append(f"skipped {self.n_skipped} ({why})")
        else:
            parts.append("skipped 0")
        if self.delta_reward_sources:
            src = ", ".join(f"{k}: {v}" for k, v in sorted(self.delta_reward_sources.items()))
            parts.append(f"Δr* sources ({src})")
        return "; ".join(parts)


# ------------------------------------------------------------------------------------------- file containers
def _open_bytes(path: Path) -> tuple[io.BufferedIOBase, bool]:
    """Open a file for binary reading, transparently un-gzipping it (detected by its magic bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb"), True  # type: ignore[return-value]
    return open(path, "rb"), False


def _container_of(path: Path) -> str:
    """``jsonl``, ``json`` or ``parquet`` from the file name (``.gz`` is ignored), else by sniffing."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, kind in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
        (".parquet", "parquet"),
    ):
        if name.endswith(suffix):
            return kind
    fh, _ = _open_bytes(path)
    with fh:
        head = fh.read(4096)
    if head[:4] == b"PAR1":
        return "parquet"
    text = head.lstrip()
    if text.startswith(b"["):
        return "json"
    return "jsonl"


RawRecord = tuple[int, "int | None", Any]  # (record number, line number or None, parsed object or RecordError)


def _iter_jsonl(path: Path) -> Iterator[RawRecord]:
    fh, _ = _open_bytes(path)
    with fh:
        record = 0
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj: Any = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                obj = RecordError(record, None, f"is not valid UTF-8 ({err.reason})", "invalid_json", line_no)
            except json.JSONDecodeError as err:
                obj = RecordError(record, None, f"is not valid JSON ({err.msg})", "invalid_json", line_no)
            yield record, line_no, obj
            record += 1


def _iter_json(path: Path) -> Iterator[RawRecord]:
    fh, _ = _open_bytes(path)
    with fh:
        try:
            data = json.loads(fh.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a valid JSON document ({err})") from err
    if isinstance(data, dict):
        lists = [k for k in ("data", "records", "rows", "examples") if isinstance(data.get(k), list)]
        if not lists:
            raise ValueError(
                f"{path}: top-level JSON must be a list of records or an object with a 'data' list; "
                f"got an object with keys {sorted(data)[:10]}"
            )
        data = data[lists[0]]
    if not isinstance(data, list):
        raise ValueError(f"{path}: top-level JSON must be a list of records, got {type(data).__name__}")
    for i, obj in enumerate(data):
        yield i, None, obj


def _iter_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    record = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for obj in batch.to_pylist():
            yield record, None, obj
            record += 1


def iter_raw_records(path: str | os.PathLike[str], container: str = "auto") -> Iterator[RawRecord]:
    """Yield ``(record number, line number or None, object)`` per record of a JSON/JSONL(.gz)/Parquet file.

    A JSONL line that is not valid JSON yields a :class:`RecordError` in place of the object.
    """
    p = Path(path)
    kind = _container_of(p) if container == "auto" else container
    readers = {"jsonl": _iter_jsonl, "json": _iter_json, "parquet": _iter_parquet}
    if kind not in readers:
        raise ValueError(f"unknown container {container!r}; expected one of {sorted(readers)} or 'auto'")
    yield from readers[kind](p)


# ---------------------------------------------------------------------------------------------- field checks
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _get(rec: dict[str, Any], name: str, rn: int) -> Any:
    if name not in rec or rec[name] is None:
        raise RecordError(rn, name, "is missing", "missing_field")
    return rec[name]


def _text(rec: dict[str, Any], name: str, rn: int, *, response: bool = True) -> str:
    v = _get(rec, name, rn)
    if not isinstance(v, str):
        raise RecordError(rn, name, f"must be a string, got {type(v).__name__}", "wrong_type")
    if not v.strip():
        raise RecordError(rn, name, "is empty", "empty_response" if response else "empty_prompt")
    return v


def _finite_number(rec: dict[str, Any], name: str, rn: int) -> float:
    v = _get(rec, name, rn)
    if not _is_number(v):
        raise RecordError(rn, name, f"must be a number, got {type(v).__name__}", "wrong_type")
    x = float(v)
    if not math.isfinite(x):
        raise RecordError(rn, name, f"must be finite, got {x!r}", "non_finite")
    return x


def _messages(value: Any, name: str, rn: int) -> ChatMessages:
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
class _Options:
    delta_reward_source: str
    q_clip: float
    prompt_style: str


def _delta_reward(rec: dict[str, Any], rn: int, opts: _Options) -> tuple[float | None, str | None, float | None]:
    """(Δr*, reward_source, preference probability) from a TRL/HH record's optional reward fields."""
    src = opts.delta_reward_source
    if src == "none":
        return None, None, None
    has_scores = rec.get("score_chosen") is not None or rec.get("score_rejected") is not None
    prob_field = next((f for f in PROBABILITY_FIELDS if rec.get(f) is not None), None)
    if src == "delta_reward" or (src == "auto" and rec.get("delta_reward") is not None):
        return _finite_number(rec, "delta_reward", rn), "delta_reward_field", None
    if src == "score_columns" or (src == "auto" and has_scores):
        sc = _finite_number(rec, "score_chosen", rn)
        sr = _finite_number(rec, "score_rejected", rn)
        return sc - sr, "score_columns", None
    if src == "probability" or (src == "auto" and prob_field is not None):
        name = prob_field or PROBABILITY_FIELDS[0]
        p = _finite_number(rec, name, rn)
        if not 0.0 <= p <= 1.0:
            raise RecordError(rn, name, f"must be a probability in [0, 1], got {p!r}", "out_of_range")
        return logit_clipped(p, opts.q_clip), "probability_logit", p
    return None, None, None


def _subset(rec: dict[str, Any]) -> str | None:
    for key in ("subset", "dataset"):
        v = rec.get(key)
        if isinstance(v, str) and v:
            return v
    return None


_CONSUMED = {
    "prompt",
    "chosen",
    "rejected",
    "delta_reward",
    "score_chosen",
    "score_rejected",
    "subset",
    *PROBABILITY_FIELDS,
}


def _meta(rec: dict[str, Any]) -> dict[str, Any]:
    """Other scalar fields worth carrying to outputs (ids, sources); long strings are left out."""
    out = {}
    for k, v in rec.items():
        if k in _CONSUMED:
            continue
        if (isinstance(v, str) and len(v) <= 200) or _is_number(v) or isinstance(v, bool):
            out[k] = v
    return out


def _check_distinct(chosen: str, rejected: str, rn: int, fields: tuple[str, str]) -> None:
    if chosen == rejected:
        raise RecordError(
            rn,
            None,
            f"'{fields[0]}' and '{fields[1]}' are identical responses (δ ≡ 0: nothing to compare)",
            "identical_responses",
        )


# ------------------------------------------------------------------------------------------------ HH-RLHF
def hh_split(chosen: str, rejected: str, rn: int = 0) -> tuple[str, str, str]:
    """Split two HH-RLHF transcripts into (shared prompt, chosen response, rejected response).

    The prompt ends with the last ``"\\n\\nAssistant:"``; responses keep their leading space.
    """
    cut = []
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        i = text.rfind(HH_ASSISTANT)
        if i < 0:
            raise RecordError(rn, name, "has no '\\n\\nAssistant:' turn (not an HH-RLHF transcript)", "hh_no_assistant")
        cut.append(i + len(HH_ASSISTANT))
    prompt_c, prompt_r = chosen[: cut[0]], rejected[: cut[1]]
    if prompt_c != prompt_r:
        n = min(len(prompt_c), len(prompt_r))
        k = next((j for j in range(n) if prompt_c[j] != prompt_r[j]), n)
        raise RecordError(
            rn,
            None,
            "'chosen' and 'rejected' transcripts differ before their last '\\n\\nAssistant:' turn "
            f"(first difference at character {k}): two conversations, not two responses",
            "prefix_mismatch",
        )
    return prompt_c, chosen[cut[0] :], rejected[cut[1] :]


def hh_prompt_to_messages(prompt: str, rn: int = 0) -> ChatMessages:
    """An HH-RLHF dialogue prefix (ending in ``"\\n\\nAssistant:"``) as chat messages, minus the open turn."""
    parts = _HH_TURN.split(prompt)
    if parts[0].strip():
        raise RecordError(rn, "chosen", "has text before the first '\\n\\nHuman:' turn", "hh_unparsable")
    roles = {"Human": "user", "Assistant": "assistant"}
    msgs: ChatMessages = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        msgs.append({"role": roles[role], "content": content.removeprefix(" ")})
    if not msgs or msgs[-1]["role"] != "assistant" or msgs[-1]["content"]:
        raise RecordError(rn, "chosen", "dialogue prefix does not end with an open Assistant turn", "hh_unparsable")
    return msgs[:-1]


def _parse_hh(rec: dict[str, Any], rn: int, opts: _Options) -> PreferencePair:
    chosen_t = _text(rec, "chosen", rn)
    rejected_t = _text(rec, "rejected", rn)
    prompt, chosen, rejected = hh_split(chosen_t, rejected_t, rn)
    for name, resp in (("chosen", chosen), ("rejected", rejected)):
        if not resp.strip():
            raise RecordError(rn, name, "has an empty final Assistant response", "empty_response")
    _check_distinct(chosen, rejected, rn, ("chosen", "rejected"))
    prompt_out: str | ChatMessages = prompt
    if opts.prompt_style == "chat":
        prompt_out = hh_prompt_to_messages(prompt, rn)
        chosen, rejected = chosen.removeprefix(" "), rejected.removeprefix(" ")
    dr, src, prob = _delta_reward(rec, rn, opts)
    return PreferencePair(rn, prompt_out, chosen, rejected, dr, src, prob, _subset(rec), _meta(rec))


# ------------------------------------------------------------------------------------------------ TRL-style
def _parse_trl(rec: dict[str, Any], rn: int, opts: _Options) -> PreferencePair:
    chosen_v = _get(rec, "chosen", rn)
    rejected_v = _get(rec, "rejected", rn)
    prompt_v = rec.get("prompt")
    conversational = any(isinstance(v, list) for v in (prompt_v, chosen_v, rejected_v))
    if not conversational:
        if prompt_v is None:
            if isinstance(chosen_v, str) and HH_ASSISTANT in chosen_v:
                return _parse_hh(rec, rn, opts)
            raise RecordError(rn, "prompt", "is missing (and 'chosen' is not an HH-RLHF transcript)", "missing_field")
        prompt = _text(rec, "prompt", rn, response=False)
        chosen = _text(rec, "chosen", rn)
        rejected = _text(rec, "rejected", rn)
        _check_distinct(chosen, rejected, rn, ("chosen", "rejected"))
        prompt_out: str | ChatMessages = prompt
        if opts.prompt_style == "chat":
            prompt_out = [{"role": "user", "content": prompt}]
    else:
        if prompt_v is None:
            prompt_msgs: ChatMessages = []
        elif isinstance(prompt_v, str):
            prompt_msgs = [{"role": "user", "content": _text(rec, "prompt", rn, response=False)}]
        else:
            prompt_msgs = _messages(prompt_v, "prompt", rn)
        full = {}
        for name, v in (("chosen", chosen_v), ("rejected", rejected_v)):
            if isinstance(v, str):
                msgs = [{"role": "assistant", "content": _text(rec, name, rn)}]
            else:
                msgs = _messages(v, name, rn)
                if not msgs:
                    raise RecordError(rn, name, "is an empty message list", "empty_response")
            conv = prompt_msgs + msgs
            if conv[-1]["role"] != "assistant":
                raise RecordError(
                    rn,
                    name,
                    f"final message has role {conv[-1]['role']!r}, expected 'assistant'",
                    "wrong_role",
                )
            if not conv[-1]["content"].strip():
                raise RecordError(rn, name, "final assistant message is empty", "empty_response")
            full[name] = conv
        if full["chosen"][:-1] != full["rejected"][:-1]:
            raise RecordError(
                rn,
                None,
                "'chosen' and 'rejected' conversations differ before their final assistant message",
                "prefix_mismatch",
            )
        prompt_out = full["chosen"][:-1]
        if not prompt_out:
            raise RecordError(rn, "prompt", "is empty (no shared messages before the responses)", "empty_prompt")
        chosen, rejected = full["chosen"][-1]["content"], full["rejected"][-1]["content"]
        _check_distinct(chosen, rejected, rn, ("chosen", "rejected"))
    dr, src, prob = _delta_reward(rec, rn, opts)
    return PreferencePair(rn, prompt_out, chosen, rejected, dr, src, prob, _subset(rec), _meta(rec))


# ------------------------------------------------------------------------------------------------ AlpacaEval
def _parse_alpacaeval(rec: dict[str, Any], rn: int, opts: _Options) -> PreferencePair:
    instruction = _text(rec, "instruction", rn, response=False)
    out1 = _text(rec, "output_1", rn)
    out2 = _text(rec, "output_2", rn)
    pref = _finite_number(rec, "preference", rn)
    if not 1.0 <= pref <= 2.0:
        raise RecordError(rn, "preference", f"must be in [1, 2], got {pref!r}", "out_of_range")
    _check_distinct(out1, out2, rn, ("output_1", "output_2"))
    q = pref - 1.0  # judge's probability that output_2 is better
    if q == 0.5:
        raise RecordError(rn, "preference", "is an exact tie (1.5): no preferred output", "tie")
    second = q > 0.5
    q_w = q if second else 1.0 - q
    chosen, rejected = (out2, out1) if second else (out1, out2)
    g1, g2 = rec.get("generator_1"), rec.get("generator_2")
    meta = {
        "chosen_field": "output_2" if second else "output_1",
        "generator_chosen": g2 if second else g1,
        "generator_rejected": g1 if second else g2,
        "q_output_2": q,
        "q_clipped": not (opts.q_clip <= q_w <= 1.0 - opts.q_clip),
    }
    if isinstance(rec.get("annotator"), str):
        meta["annotator"] = rec["annotator"]
    dr, src = None, None
    if opts.delta_reward_source in ("auto", "soft_preference"):
        dr, src = logit_clipped(q_w, opts.q_clip), "soft_preference_logit"
    prompt_out: str | ChatMessages = instruction
    if opts.prompt_style == "chat":
        prompt_out = [{"role": "user", "content": instruction}]
    subset = rec.get("dataset") if isinstance(rec.get("dataset"), str) else None
    return PreferencePair(rn, prompt_out, chosen, rejected, dr, src, q_w, subset, meta)


_PARSERS = {"trl": _parse_trl, "hh": _parse_hh, "alpacaeval": _parse_alpacaeval}


def detect_format(record: dict[str, Any]) -> str:
    """Record format from a record's fields: ``alpacaeval``, ``trl`` or ``hh``."""
    keys = set(record)
    if {"output_1", "output_2", "preference"} <= keys:
        return "alpacaeval"
    if {"chosen", "rejected"} <= keys:
        if "prompt" in keys:
            return "trl"
        if isinstance(record["chosen"], str):
            return "hh"
        return "trl"  # implicit-prompt conversations
    raise ValueError(
        f"cannot detect the record format from fields {sorted(keys)[:12]}; expected TRL-style "
        "(prompt, chosen, rejected), HH-RLHF (chosen, rejected transcripts) or AlpacaEval "
        "(instruction, output_1, output_2, preference); pass format= explicitly"
    )


def load_pairs(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    delta_reward_source: str = "auto",
    q_clip: float = 1e-3,
    limit: int | None = None,
    on_error: str = "skip",
    prompt_style: str = "text",
    container: str = "auto",
) -> LoadResult:
    """Read preference pairs from a JSON / JSONL (optionally gzip) / Parquet file, validating every record.

    format: ``auto`` (detected from the first record), ``trl``, ``hh`` or ``alpacaeval``.
    delta_reward_source: see the module docstring; ``soft_preference`` is AlpacaEval's logit(q) and ``none``
        drops Δr* (AlpacaEval pairs are still oriented by q).
    q_clip: probabilities are clipped to [q_clip, 1 − q_clip] before the logit (0 < q_clip < 1/2).
    limit: read at most this many records (pairs keep their record numbers as ``index``).
    on_error: ``skip`` (count the reason in ``skipped``) or ``raise`` (:class:`RecordError`).
    prompt_style: ``text`` keeps text prompts, ``chat`` converts them to chat messages.
    """
    if format not in ("auto", *RECORD_FORMATS):
        raise ValueError(f"unknown format {format!r}; expected 'auto' or one of {RECORD_FORMATS}")
    if delta_reward_source not in DELTA_REWARD_SOURCES:
        raise ValueError(f"unknown delta_reward_source {delta_reward_source!r}; expected one of {DELTA_REWARD_SOURCES}")
    if not (isinstance(q_clip, float | int) and 0.0 < q_clip < 0.5):
        raise ValueError(f"q_clip must be in (0, 0.5), got {q_clip!r}")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if prompt_style not in ("text", "chat"):
        raise ValueError(f"prompt_style must be 'text' or 'chat', got {prompt_style!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit!r}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"preference data file not found: {p}")
    kind = _container_of(p) if container == "auto" else container
    _, gz = _open_bytes(p)
    opts = _Options(delta_reward_source, float(q_clip), prompt_style)

    pairs: list[PreferencePair] = []
    skipped: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    sources: dict[str, int] = {}
    fmt = None if format == "auto" else format
    if fmt is not None:
        _check_source_for_format(fmt, delta_reward_source)
    n_records = 0
    for rn, line, obj in iter_raw_records(p, kind):
        if limit is not None and n_records >= limit:
            break
        n_records += 1
        try:
            if isinstance(obj, RecordError):
                raise obj
            if not isinstance(obj, dict):
                raise RecordError(rn, None, f"must be a JSON object, got {type(obj).__name__}", "not_an_object")
            if fmt is None:
                fmt = detect_format(obj)
                _check_source_for_format(fmt, delta_reward_source)
            pair = _PARSERS[fmt](obj, rn, opts)
        except RecordError as err:
            err = err.with_line(line)
            if on_error == "raise":
                raise err
            skipped[err.reason] = skipped.get(err.reason, 0) + 1
            ex = examples.setdefault(err.reason, [])
            if len(ex) < _MAX_EXAMPLES:
                ex.append(str(err))
            continue
        pairs.append(pair)
        key = pair.reward_source or "none"
        sources[key] = sources.get(key, 0) + 1
    result = LoadResult(
        pairs,
        n_records,
        skipped,
        fmt or "unknown",
        str(p),
        kind + ("+gz" if gz else ""),
        examples,
        sources,
    )
    if not pairs:
        if n_records == 0:
            raise ValueError(f"{p} contains no records")
        raise ValueError(f"no usable preference pair in {p}: {result.summary()}; first errors: {examples}")
    return result


def _check_source_for_format(fmt: str, source: str) -> None:
    if fmt == "alpacaeval" and source not in ("auto", "none", "soft_preference"):
        raise ValueError(
            f"delta_reward_source {source!r} does not apply to AlpacaEval annotations; use 'auto' or "
            "'soft_preference' (Δr* = logit(q)) or 'none'"
        )
    if fmt != "alpacaeval" and source == "soft_preference":
        raise ValueError(f"delta_reward_source 'soft_preference' needs AlpacaEval annotations, not {fmt!r} records")
