"""Turn symbolic and numerical evidence into one verdict (`proved`, `verified`, `fails as stated`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .core import FAILS, PROVED, VERIFIED, Outcome
from .search import SearchResult
from .symbolic import SymbolicCheck


def evidence_details(syms: Sequence[SymbolicCheck], nums: Sequence[SearchResult]) -> dict[str, Any]:
    """The details block shared by every claim: each symbolic step and each search with all its numbers."""
    return {
        "symbolic": [s.to_details() for s in syms],
        "numerical": [n.to_details() for n in nums],
    }


def combine(
    reading: str,
    syms: Sequence[SymbolicCheck],
    nums: Sequence[SearchResult],
    *,
    details: dict[str, Any] | None = None,
    corrected: dict[str, Any] | None = None,
    note: str = "",
) -> Outcome:
    """Verdict rules: any symbolic mismatch or numerical counterexample → `fails as stated` (evidence: the first
    one); else every symbolic step proved (at least one) → `proved`; else (numerical only, or sympy undecided)
    → `verified`. The evidence line lists the symbolic steps briefly and every search's N and largest error.
    """
    bad_sym = [s for s in syms if s.equal is False]
    bad_num = [n for n in nums if not n.passed]
    det = {**evidence_details(syms, nums), **(details or {})}
    if bad_sym or bad_num:
        first = bad_sym[0].summary() if bad_sym else bad_num[0].summary()
        return Outcome(FAILS, reading, first + (f"; {note}" if note else ""), det, corrected)
    proved = bool(syms) and all(s.equal for s in syms)
    parts = []
    if syms:
        n_ok = sum(1 for s in syms if s.equal)
        more = f" (+{len(syms) - 1} more step(s))" if len(syms) > 1 else ""
        parts.append(
            f"sympy derives {syms[0].name} as claimed{more}"
            if proved
            else f"sympy proves {n_ok}/{len(syms)} steps (rest undecided)"
        )
    if nums:
        parts.append("no counterexample: " + "; ".join(n.short() for n in nums))
    if note:
        parts.append(note)
    return Outcome(PROVED if proved else VERIFIED, reading, "; ".join(parts), det, corrected)
