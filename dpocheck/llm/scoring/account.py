"""The one account of the records a command reads: kept, skipped by reason, truncated — on screen and in counts.

``dpocheck score`` and ``dpocheck train`` tokenise pairs with the same rules (:mod:`~dpocheck.llm.scoring.encode`)
and report them the same way: a screen line ``scored N, skipped M (reason: count, …) of R records read; K
sequences truncated to max_length=L (the prompt cut in P pairs)`` (``train`` says ``training on N``), and the
manifest's ``counts`` with the keys :data:`TRUNCATION_KEYS` and ``skipped_by_reason``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .encode import EncodedPair

#: Counts of truncated sequences (chosen, rejected) and of pairs whose shared prompt was cut.
TRUNCATION_KEYS = ("chosen_truncated", "rejected_truncated", "prompt_truncated")


def truncation_counts(encoded: Iterable[EncodedPair]) -> dict[str, int]:
    """How many chosen and rejected sequences were truncated, and in how many pairs the prompt was cut."""
    counts = dict.fromkeys(TRUNCATION_KEYS, 0)
    for e in encoded:
        counts["chosen_truncated"] += e.chosen_truncated
        counts["rejected_truncated"] += e.rejected_truncated
        counts["prompt_truncated"] += e.prompt_truncated
    return counts


def truncation_line(counts: Mapping[str, Any], max_length: int | None) -> str:
    """``K sequences truncated to max_length=L`` (and ``(the prompt cut in P pairs)`` where it was)."""
    n = int(counts.get("chosen_truncated", 0)) + int(counts.get("rejected_truncated", 0))
    line = f"{n} sequences truncated to max_length={max_length}"
    cut = int(counts.get("prompt_truncated", 0))
    return line + (f" (the prompt cut in {cut} pairs)" if cut else "")


def skip_line(kept: int, skipped: Mapping[str, int], verb: str = "scored") -> str:
    """``scored N, skipped M (reason: count, …)``: the account of every record read."""
    why = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))
    return f"{verb} {kept}, skipped {sum(skipped.values())}" + (f" ({why})" if why else "")
