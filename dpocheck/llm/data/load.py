"""Preference-data readers with validation: TRL-style, HH-RLHF, AlpacaEval, generic JSON/JSONL/Parquet.

Every reader yields :class:`~dpocheck.llm.data.types.PreferencePair` records (x, y_w, y_l) and, where the data has
one, the reward gap Δr* = r*(y_w) − r*(y_l) that the violation check of C2 needs (β·δ_ref + Δr* ≤ 0).

Conventions (documented decisions):

* **Record numbers** are 0-based positions of the records in the file (for JSONL: the non-blank lines, for
  JSON: the list items, for Parquet: the rows). ``PreferencePair.index`` is that number, and every error names
  it: ``record 17 (line 18): field 'chosen' is empty``. Blank JSONL lines are not records.
* **Bad records: one default everywhere.** A record that cannot become a pair (a missing or empty field, a
  wrong type, a line that is not JSON or not UTF-8, a truncated last line) is skipped and counted by reason in
  ``LoadResult.skipped`` (``on_error="skip"``, the default of this reader and of ``dpocheck score`` and
  ``dpocheck reward``); ``on_error="raise"`` (``--on-error raise``) stops at the first one with a
  :class:`RecordError` naming file, record and field. Nothing is dropped silently: ``n_records`` =
  ``len(pairs)`` + ``n_skipped``, and the commands print ``scored N, skipped M (reason: count, …)``. If no
  pair at all can be read (an empty file, a file that is not JSON, every record bad) the loader raises, since
  that means a wrong file or format.
* **Duplicate records** (same prompt, chosen and rejected as an earlier record) are kept, so every record keeps
  its index and is scored each time; they are counted (``LoadResult.n_duplicates``, with the first few
  ``(record, first record)`` pairs in ``duplicate_examples``) and reported in the summary and the manifest.
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

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpocheck.errors import InputError

from .alpacaeval import parse_alpacaeval
from .containers import container_of, iter_raw_records, open_bytes
from .fields import DELTA_REWARD_SOURCES, ON_ERROR_CHOICES, ReaderOptions, RecordError
from .hh import parse_hh
from .trl import parse_trl
from .types import PreferencePair

RECORD_FORMATS = ("trl", "hh", "alpacaeval")
_MAX_EXAMPLES = 3


DATA_KINDS = "JSONL, JSON or Parquet, optionally .gz"  # the files load_pairs reads


def default_data_dir() -> Path:
    """Where the shared real preference data lives: $DPOCHECK_DATA_DIR, else ``<repo>/../shared/data``.

    The path is returned whether or not it exists; callers check (tests skip when it is absent).
    """
    env = os.environ.get("DPOCHECK_DATA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    return repo.parent / "shared" / "data"


@dataclass
class LoadResult:
    """The pairs read from a file and an account of everything that was not turned into a pair.

    n_records: records read (including skipped ones); skipped: reason → count; examples: reason → the first
    few error messages; format: the record format used (``trl``, ``hh``, ``alpacaeval``); container:
    ``jsonl``, ``json`` or ``parquet`` (``+gz`` when compressed); delta_reward_sources: reward_source → number
    of pairs (``none`` for pairs without Δr*); n_duplicates: pairs equal (prompt, chosen, rejected) to an earlier
    pair, kept; duplicate_examples: the first few as ``[record, first record]``.
    """

    pairs: list[PreferencePair]
    n_records: int
    skipped: dict[str, int]
    format: str
    path: str = ""
    container: str = ""
    examples: dict[str, list[str]] = field(default_factory=dict)
    delta_reward_sources: dict[str, int] = field(default_factory=dict)
    n_duplicates: int = 0
    duplicate_examples: list[list[int]] = field(default_factory=list)

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
        if self.n_duplicates:
            parts.append(f"{self.n_duplicates} duplicates of earlier records (kept, scored each time)")
        return "; ".join(parts)


_PARSERS = {"trl": parse_trl, "hh": parse_hh, "alpacaeval": parse_alpacaeval}


def input_file(path: str | os.PathLike[str], what: str = "preference data file", kinds: str = DATA_KINDS) -> Path:
    """``path`` as a Path when it is a file; a folder is an ``IsADirectoryError`` saying a file is wanted
    (``kinds``: which), a missing path a ``FileNotFoundError`` (both exit status 2 in the CLI, one line)."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a folder, not a {what}: give the file itself ({kinds})")
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


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
    raise InputError(
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
        raise InputError(f"unknown format {format!r}; expected 'auto' or one of {RECORD_FORMATS}")
    if delta_reward_source not in DELTA_REWARD_SOURCES:
        raise InputError(f"unknown delta_reward_source {delta_reward_source!r}; expected one of {DELTA_REWARD_SOURCES}")
    if not (isinstance(q_clip, float | int) and 0.0 < q_clip < 0.5):
        raise InputError(f"q_clip must be in (0, 0.5), got {q_clip!r}")
    if on_error not in ON_ERROR_CHOICES:
        raise InputError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    if prompt_style not in ("text", "chat"):
        raise InputError(f"prompt_style must be 'text' or 'chat', got {prompt_style!r}")
    if limit is not None and limit < 0:
        raise InputError(f"limit must be >= 0, got {limit!r}")
    p = input_file(path)
    kind = container_of(p) if container == "auto" else container
    _, gz = open_bytes(p)
    opts = ReaderOptions(delta_reward_source, float(q_clip), prompt_style)

    pairs: list[PreferencePair] = []
    skipped: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    sources: dict[str, int] = {}
    seen: dict[str, int] = {}
    n_dup = 0
    dup_examples: list[list[int]] = []
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
                try:
                    fmt = detect_format(obj)
                except InputError as err:  # this record says nothing of the format: try the next one
                    raise RecordError(rn, None, str(err), "unknown_format") from None
                _check_source_for_format(fmt, delta_reward_source)
            pair = _PARSERS[fmt](obj, rn, opts)
        except RecordError as err:
            if on_error == "raise":
                raise err.with_line(line, str(p)) from None
            err = err.with_line(line)
            skipped[err.reason] = skipped.get(err.reason, 0) + 1
            ex = examples.setdefault(err.reason, [])
            if len(ex) < _MAX_EXAMPLES:
                ex.append(str(err))
            continue
        pairs.append(pair)
        key = pair.reward_source or "none"
        sources[key] = sources.get(key, 0) + 1
        ident = json.dumps([pair.prompt, pair.chosen, pair.rejected], ensure_ascii=False)
        first = seen.setdefault(ident, pair.index)
        if first != pair.index:
            n_dup += 1
            if len(dup_examples) < _MAX_EXAMPLES:
                dup_examples.append([pair.index, first])
    result = LoadResult(
        pairs,
        n_records,
        skipped,
        fmt or "unknown",
        str(p),
        kind + ("+gz" if gz else ""),
        examples,
        sources,
        n_dup,
        dup_examples,
    )
    if not pairs:
        if n_records == 0:
            raise InputError(f"{p} contains no records")
        raise InputError(f"no usable preference pair in {p}: {result.summary()}; first errors: {examples}")
    return result


def _check_source_for_format(fmt: str, source: str) -> None:
    if fmt == "alpacaeval" and source not in ("auto", "none", "soft_preference"):
        raise InputError(
            f"delta_reward_source {source!r} does not apply to AlpacaEval annotations; use 'auto' or "
            "'soft_preference' (Δr* = logit(q)) or 'none'"
        )
    if fmt != "alpacaeval" and source == "soft_preference":
        raise InputError(f"delta_reward_source 'soft_preference' needs AlpacaEval annotations, not {fmt!r} records")
