"""An honest verdict for every claim of the paper (PAPER.md C1–C10): `proved`, `verified`, `fails as stated`
(with the minimal counterexample and a corrected statement) or `not checkable` (with the reason).

Public API (used by `dpocheck proofs` and the demo report):

- :data:`CLAIMS` — the ordered registry; each :class:`Claim` has id, paper_ref, statement, readings, methods, the
  check function and the expected verdict(s).
- :func:`run_claims` ``(profile="fast", only=None, progress=None)`` → list of :class:`ClaimResult`.
- :func:`results_to_json`, :func:`results_to_markdown`, :func:`results_table`; the Markdown's parts
  :func:`verdict_table_markdown`, :func:`claim_sections_markdown` and :func:`claim_anchor` (the demo report).

Names are loaded lazily so that importing :mod:`dpocheck.proofs_check.cli` (done by every `dpocheck` command)
does not import sympy, hypothesis or the theory layer.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FAILS": "core",
    "NOT_CHECKABLE": "core",
    "PROFILES": "core",
    "PROVED": "core",
    "VERDICTS": "core",
    "VERIFIED": "core",
    "Claim": "core",
    "ClaimResult": "core",
    "Outcome": "core",
    "Profile": "core",
    "CLAIMS": "registry",
    "claim_ids": "registry",
    "get_claim": "registry",
    "run_claims": "registry",
    "select_claims": "registry",
    "claim_anchor": "report",
    "claim_sections_markdown": "report",
    "results_table": "report",
    "results_to_json": "report",
    "results_to_markdown": "report",
    "verdict_table_markdown": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
