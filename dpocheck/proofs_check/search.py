"""Counterexample search with hypothesis, used programmatically (the numerical evidence of every claim).

:func:`search` runs a property over a strategy of *valid* inputs (bandits with normalised references, β > 0, …)
and returns either "no counterexample in N cases, largest error e" or the shrunk minimal counterexample. The
strategies (:mod:`dpocheck.proofs_check.strategies`) generate valid inputs by construction rather than by filtering;
pinned boundary cases run first (hypothesis ``@example``) on every profile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, example, given, settings
from hypothesis import strategies as st

from .core import fmt, fmt_example, jsonable


@dataclass
class SearchResult:
    """Outcome of one hypothesis search.

    n_cases: examples evaluated inside the claim's domain before any failure (pinned ones included);
    n_skipped: generated examples outside the domain (not counted in n_cases, reported);
    max_error: the largest error seen on passing examples; counterexample: the shrunk minimal failing example
    (None if none was found), with its error and any extra numbers the property attached.
    """

    name: str
    n_cases: int
    n_skipped: int
    max_error: float
    tolerance: float
    worst_example: dict[str, Any] | None = None
    counterexample: dict[str, Any] | None = None
    counterexample_error: float | None = None
    counterexample_info: dict[str, Any] | None = None
    error_meaning: str = "error"

    @property
    def passed(self) -> bool:
        return self.counterexample is None

    def summary(self) -> str:
        """One-line evidence: N cases and the largest error, or the minimal counterexample."""
        skipped = f" ({self.n_skipped} outside the domain skipped)" if self.n_skipped else ""
        if self.passed:
            return (
                f"{self.name}: no counterexample in {self.n_cases} cases{skipped}, "
                f"largest {self.error_meaning} {fmt(self.max_error, 3)} (tolerance {fmt(self.tolerance, 2)})"
            )
        crash = (self.counterexample_info or {}).get("solver_error")
        return f"{self.name}: counterexample {fmt_example(self.counterexample or {})} " + (
            f"(the implementation crashed: {crash})"
            if crash
            else f"({self.error_meaning} {fmt(self.counterexample_error, 4)} > {fmt(self.tolerance, 2)})"
        )

    def short(self) -> str:
        """Compact form for one-line evidence: `N cases, largest error e` or the counterexample."""
        if not self.passed:
            return self.summary()
        return f"{self.n_cases} cases, largest {self.error_meaning} {fmt(self.max_error, 2)}"

    def to_details(self) -> dict[str, Any]:
        return jsonable(
            {
                "name": self.name,
                "n_cases": self.n_cases,
                "n_skipped": self.n_skipped,
                "max_error": self.max_error,
                "tolerance": self.tolerance,
                "error_meaning": self.error_meaning,
                "worst_example": self.worst_example,
                "counterexample": self.counterexample,
                "counterexample_error": self.counterexample_error,
                "counterexample_info": self.counterexample_info,
            }
        )


class SolverError(Exception):
    """Raised by a property when the implementation under test crashes on a valid input; :func:`search` records it
    as a counterexample (infinite error, message in the info) rather than letting the whole check crash."""


class _Counterexample(Exception):
    def __init__(self, example: Any, error: float, info: dict[str, Any]) -> None:
        super().__init__(f"counterexample with error {error!r}")
        self.example = example
        self.error = error
        self.info = info


CheckFn = Callable[[Any], "float | None | tuple[float | None, dict[str, Any]]"]


def search(
    name: str,
    strategy: st.SearchStrategy,
    check: CheckFn,
    *,
    max_examples: int,
    tolerance: float,
    pinned: Sequence[Any] = (),
    error_meaning: str = "error",
) -> SearchResult:
    """Search `strategy` for an example whose error exceeds `tolerance`; shrink it to a minimal one.

    check(example) returns the error (a float; NaN counts as a failure), None when the example lies outside the
    claim's domain, or (error, info) to attach numbers to a counterexample. Deterministic (derandomized, no
    example database), so a report is reproducible.
    """
    state: dict[str, Any] = {"n": 0, "skipped": 0, "max": 0.0, "worst": None, "failing": False}

    def run_one(ex: Any) -> None:
        try:
            out = check(ex)
        except SolverError as err:
            out = (math.inf, {"solver_error": str(err)})
        info: dict[str, Any] = {}
        if isinstance(out, tuple):
            out, info = out
        if out is None:
            if not state["failing"]:
                state["skipped"] += 1
            return
        err = float(out)
        if math.isnan(err) or err > tolerance:
            state["failing"] = True
            raise _Counterexample(ex, math.inf if math.isnan(err) else err, info)
        if not state["failing"]:
            state["n"] += 1
            if err > state["max"] or state["worst"] is None:
                state["max"] = max(err, state["max"])
                state["worst"] = ex

    test = given(strategy)(run_one)
    for ex in reversed(list(pinned)):
        test = example(ex)(test)
    test = settings(
        max_examples=max(1, int(max_examples)),
        database=None,
        derandomize=True,
        deadline=None,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )(test)
    result = SearchResult(name, 0, 0, 0.0, tolerance, error_meaning=error_meaning)
    try:
        test()
    except _Counterexample as ce:
        result.counterexample = jsonable(ce.example)
        result.counterexample_error = ce.error
        result.counterexample_info = jsonable(ce.info)
    result.n_cases = state["n"]
    result.n_skipped = state["skipped"]
    result.max_error = float(state["max"])
    result.worst_example = jsonable(state["worst"])
    return result


def rel_err(a: Any, b: Any) -> float:
    """max |a − b| / max(1, |b|) elementwise (0 for empty arrays); inf where exactly one side is non-finite."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    both_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.where(both_inf, 0.0, np.abs(a - b) / np.maximum(1.0, np.abs(b)))
    e = np.where(np.isnan(e), np.inf, e)
    return float(np.max(e))
