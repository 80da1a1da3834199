"""Data types of the proofs checker: profiles, verdicts, the outcome of a check and the reported result.

A *claim* of the paper (PAPER.md C1–C10) is checked by a pure function ``check(profile, **formulas)`` that returns
an :class:`Outcome`; the registry (:mod:`dpocheck.proofs_check.registry`) times it, compares the verdict with the
registered expected one and wraps it into a :class:`ClaimResult`. The formulas under test are keyword parameters
of each check (the injection points used by the mutation tests).
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROVED = "proved"
VERIFIED = "verified"
FAILS = "fails as stated"
NOT_CHECKABLE = "not checkable"
VERDICTS = (PROVED, VERIFIED, FAILS, NOT_CHECKABLE)


@dataclass(frozen=True)
class Profile:
    """How hard the numerical searches work: hypothesis examples for cheap and for expensive properties."""

    name: str
    examples: int
    heavy_examples: int


PROFILES = {
    "fast": Profile("fast", examples=60, heavy_examples=20),
    "thorough": Profile("thorough", examples=800, heavy_examples=150),
}


def get_profile(profile: str | Profile) -> Profile:
    """The :class:`Profile` named `profile` (or `profile` itself)."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}") from None


@dataclass
class Outcome:
    """What a check function returns: the verdict for one reading of the claim, with its evidence.

    corrected: for ``fails as stated`` / ``not checkable``, the corrected (or weaker, checkable) statement as a dict
    with keys statement, reading, verdict, evidence, details.
    """

    verdict: str
    reading: str
    evidence: str
    details: dict[str, Any] = field(default_factory=dict)
    corrected: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.corrected is not None and self.corrected.get("verdict") not in VERDICTS:
            raise ValueError(f"corrected verdict must be one of {VERDICTS}, got {self.corrected.get('verdict')!r}")


def corrected_statement(
    statement: str, reading: str, verdict: str, evidence: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A ClaimResult-like dict for a corrected or weaker statement and its own verdict."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {
        "statement": statement,
        "reading": reading,
        "verdict": verdict,
        "evidence": evidence,
        "details": jsonable(details or {}),
    }


@dataclass
class ClaimResult:
    """The reported verdict for one registered claim (one row of `dpocheck proofs`)."""

    id: str
    paper_ref: str
    statement: str
    reading: str
    verdict: str
    evidence: str
    details: dict[str, Any]
    expected: str | None
    regression: bool
    corrected: dict[str, Any] | None
    seconds: float
    methods: tuple[str, ...] = ()
    profile: str = "fast"
    expected_corrected: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite floats become the strings 'inf', '-inf', 'nan')."""
        return jsonable(
            {
                "id": self.id,
                "paper_ref": self.paper_ref,
                "statement": self.statement,
                "reading": self.reading,
                "verdict": self.verdict,
                "evidence": self.evidence,
                "expected": self.expected,
                "expected_corrected": self.expected_corrected,
                "regression": self.regression,
                "corrected": self.corrected,
                "methods": list(self.methods),
                "profile": self.profile,
                "seconds": round(self.seconds, 4),
                "details": self.details,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClaimResult:
        """Rebuild a result from :meth:`to_dict` output (used to resume an interrupted run)."""
        missing = sorted({"id", "verdict", "evidence", "details"} - set(d))
        if missing:
            raise ValueError(f"claim result is missing field(s) {missing}")
        if d["verdict"] not in VERDICTS:
            raise ValueError(f"claim {d['id']!r}: unknown verdict {d['verdict']!r}")
        return cls(
            id=d["id"],
            paper_ref=d.get("paper_ref", ""),
            statement=d.get("statement", ""),
            reading=d.get("reading", ""),
            verdict=d["verdict"],
            evidence=d["evidence"],
            details=d["details"],
            expected=d.get("expected"),
            regression=bool(d.get("regression", False)),
            corrected=d.get("corrected"),
            seconds=float(d.get("seconds", 0.0)),
            methods=tuple(d.get("methods", ())),
            profile=d.get("profile", "fast"),
            expected_corrected=d.get("expected_corrected"),
        )


def fingerprint_files() -> list[Path]:
    """The source files :func:`source_fingerprint` hashes: every module of the checker (claims/ included) and of the
    theory layer, in a fixed order."""
    root = Path(__file__).resolve().parents[1]
    return sorted(f for sub in ("proofs_check", "theory") for f in (root / sub).rglob("*.py"))


def source_fingerprint() -> str:
    """SHA-256 (first 16 hex digits) of the checker's and the theory layer's source files: a resumed run reuses
    saved results only when this matches (otherwise the saved verdicts may be stale)."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in fingerprint_files():
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Claim:
    """One registry entry: a claim (or sub-claim) of the paper and the function that checks it.

    expected / expected_corrected: the verdicts this toolkit has established (None = not recorded); a result that
    differs is a regression.
    """

    id: str
    paper_ref: str
    statement: str
    readings: tuple[str, ...]
    methods: tuple[str, ...]
    check: Callable[..., Outcome]
    expected: str | None
    expected_corrected: str | None = None

    def run(self, profile: str | Profile = "fast", **formulas: Any) -> ClaimResult:
        """Run the check (with optional formulas under test injected) and wrap it into a ClaimResult.

        A check that raises is reported as ``not checkable`` with the error in the details (and counts as a
        regression whenever an expected verdict is recorded), never silently passed.
        """
        import time

        prof = get_profile(profile)
        t0 = time.perf_counter()
        try:
            out = self.check(prof, **formulas)
        except Exception as err:  # noqa: BLE001 - reported, not swallowed
            out = Outcome(
                NOT_CHECKABLE,
                self.readings[0] if self.readings else "",
                f"internal error while checking: {type(err).__name__}: {err}",
                {"error": traceback.format_exc(limit=8)},
            )
        seconds = time.perf_counter() - t0
        corrected_verdict = out.corrected["verdict"] if out.corrected else None
        regression = (self.expected is not None and out.verdict != self.expected) or (
            self.expected_corrected is not None and corrected_verdict != self.expected_corrected
        )
        return ClaimResult(
            id=self.id,
            paper_ref=self.paper_ref,
            statement=self.statement,
            reading=out.reading,
            verdict=out.verdict,
            evidence=out.evidence,
            details=jsonable(out.details),
            expected=self.expected,
            regression=bool(regression),
            corrected=jsonable(out.corrected) if out.corrected else None,
            seconds=seconds,
            methods=self.methods,
            profile=prof.name,
            expected_corrected=self.expected_corrected,
        )


def jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, tuples and non-finite floats into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        x = float(obj)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensor
        return jsonable(obj.detach().cpu().tolist())
    return str(obj)


def fmt(x: Any, digits: int = 4) -> str:
    """Short human-readable number (4 significant digits, scientific when tiny or huge)."""
    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, int | np.integer):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.{digits}g}"
    return f"{v:.{max(digits - 2, 1)}e}"


def fmt_example(ex: dict[str, Any], digits: int = 4) -> str:
    """`key=value, …` for a (small) counterexample dict."""
    parts = []
    for k, v in ex.items():
        if isinstance(v, list | tuple | np.ndarray):
            arr = np.asarray(v, dtype=object)
            if arr.size <= 8:
                parts.append(f"{k}={_fmt_nested(v, digits)}")
            else:
                parts.append(f"{k}=<{arr.size} values>")
        else:
            parts.append(f"{k}={fmt(v, digits)}")
    return ", ".join(parts)


def _fmt_nested(v: Any, digits: int) -> str:
    if isinstance(v, list | tuple | np.ndarray):
        return "[" + ", ".join(_fmt_nested(u, digits) for u in v) + "]"
    return fmt(v, digits)
