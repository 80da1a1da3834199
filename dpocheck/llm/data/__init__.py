"""Preference data: the record every reader yields and the readers behind :func:`load_pairs` (C2's Δr* included).

What lives where (imports go down the list):

- ``types`` — :class:`PreferencePair`, the record (x, y_w, y_l, Δr*) every reader yields;
- ``fields`` — :class:`RecordError` and the field checks every reader uses, the optional Δr* fields, the bad-record
  policy (:data:`ON_ERROR_CHOICES`: skip and count, or raise);
- ``containers`` — JSONL / JSON / Parquet files (optionally gzip), one raw record at a time;
- ``hh``, ``trl``, ``alpacaeval`` — one reader per source (HH-RLHF transcripts, TRL records, AlpacaEval annotations);
- ``load`` — :func:`load_pairs`, the one entry point (format detection, validation, skip counts, duplicates), and
  :func:`default_data_dir`, where the shared real data live.

No torch or transformers here: reading data is cheap and checked before any model loads.
"""

from __future__ import annotations

from .fields import ON_ERROR_CHOICES, RecordError
from .load import RECORD_FORMATS, LoadResult, default_data_dir, detect_format, load_pairs
from .types import ChatMessages, PreferencePair

__all__ = [
    "ON_ERROR_CHOICES",
    "RECORD_FORMATS",
    "ChatMessages",
    "LoadResult",
    "PreferencePair",
    "RecordError",
    "default_data_dir",
    "detect_format",
    "load_pairs",
]
