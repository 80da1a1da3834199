"""Symbolic (sympy) evidence: compare a claimed formula with one derived from first principles.

:func:`compare` proves ``derived ≡ claimed`` when sympy simplifies their difference to 0. When it does not, a
hypothesis search over the symbols' domain (evaluated with mpmath at 30 digits) looks for a point where the two
differ: found → the claimed formula is wrong there (a counterexample); not found → undecided (the numerical
evidence then decides between `verified` and `fails as stated`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
from hypothesis import strategies as st

from .core import fmt, fmt_example, jsonable
from .search import search
from .strategies import reals


def sigmoid(z: sp.Expr) -> sp.Expr:
    """σ(z) = 1/(1 + e^{−z}) as a sympy expression."""
    return 1 / (1 + sp.exp(-z))


def softplus(z: sp.Expr) -> sp.Expr:
    """softplus(z) = log(1 + e^z) as a sympy expression."""
    return sp.log(1 + sp.exp(z))


@dataclass
class SymbolicCheck:
    """Result of one symbolic comparison. equal: True (proved), False (counterexample found), None (undecided)."""

    name: str
    claimed: str
    derived: str
    equal: bool | None
    steps: list[str] = field(default_factory=list)
    counterexample: dict[str, Any] | None = None
    counterexample_gap: float | None = None
    residual: str = "0"

    def summary(self) -> str:
        if self.equal:
            return f"sympy: {self.name} ≡ {self.claimed}"
        if self.equal is False and not self.counterexample:
            return f"sympy: {self.name} is {self.derived}, not the claimed {self.claimed} ({self.residual})"
        if self.equal is False:
            return (
                f"sympy: {self.name} is {self.derived}, not the claimed {self.claimed}; they differ at "
                f"{fmt_example(self.counterexample or {})} (relative gap {fmt(self.counterexample_gap, 3)})"
            )
        return f"sympy could not simplify {self.name} − claimed to 0 (no numerical difference found either)"

    def to_details(self) -> dict[str, Any]:
        return jsonable(
            {
                "name": self.name,
                "claimed": self.claimed,
                "derived": self.derived,
                "equal": self.equal,
                "residual": self.residual,
                "steps": self.steps,
                "counterexample": self.counterexample,
                "counterexample_gap": self.counterexample_gap,
            }
        )


def _as_list(e: Any) -> list[sp.Expr]:
    if isinstance(e, list | tuple | sp.Matrix):
        return [sp.sympify(v) for v in e]
    return [sp.sympify(e)]


@functools.lru_cache(maxsize=1024)
def _residual(expr: sp.Expr) -> sp.Expr:
    """0 when sympy proves expr ≡ 0 (simplify, then exp/log expansion), else the simplified expression (cached:
    the registry and the mutation tests meet the same expressions many times)."""
    if expr == 0:
        return sp.Integer(0)
    s = sp.simplify(expr)
    if s == 0:
        return sp.Integer(0)
    s2 = sp.simplify(sp.expand_log(sp.expand(s), force=True))
    return sp.Integer(0) if s2 == 0 else s


def is_zero(expr: Any) -> bool:
    """True when sympy proves expr ≡ 0."""
    return _residual(sp.sympify(expr)) == 0


def compare(
    name: str,
    derived: Any,
    claimed: Any,
    domains: dict[sp.Symbol, tuple[float, float]],
    steps: Sequence[str] = (),
    *,
    via_exp: bool = False,
    examples: int = 60,
    rel_tol: float = 1e-9,
) -> SymbolicCheck:
    """Prove `claimed` ≡ `derived` (scalars or equal-length sequences) or find where they differ.

    A cheap numerical probe (8 seeded points of the domain) runs first: if the two already differ there, sympy's
    simplify is skipped and the hypothesis search shrinks the difference to a minimal counterexample.
    via_exp: let sympy compare exp(derived) with exp(claimed) (log-valued expressions; exp is injective).
    domains: the range of every free symbol for the numerical search, consistent with the symbols' assumptions.
    """
    import mpmath

    d_list, c_list = _as_list(derived), _as_list(claimed)
    d_str = ", ".join(sp.sstr(v) for v in d_list) if len(d_list) > 1 else sp.sstr(d_list[0])
    c_str = ", ".join(sp.sstr(v) for v in c_list) if len(c_list) > 1 else sp.sstr(c_list[0])
    out = SymbolicCheck(name, c_str, d_str, None, list(steps))
    if len(d_list) != len(c_list):
        out.equal = False
        out.residual = f"length {len(c_list)} claimed vs {len(d_list)} derived"
        return out
    syms = sorted(set().union(*(sp.sympify(e).free_symbols for e in d_list + c_list)), key=lambda s: s.name)
    missing = [s for s in syms if s not in domains]
    if missing:
        raise ValueError(f"compare({name}): no numerical domain for symbol(s) {missing}")
    fns = [
        (sp.lambdify(syms, d, modules="mpmath"), sp.lambdify(syms, c, modules="mpmath"))
        for d, c in zip(d_list, c_list, strict=True)
    ]

    def gap(ex: dict[str, float]) -> float | None:
        vals = [ex[s.name] for s in syms]
        worst = 0.0
        with mpmath.workdps(30):
            for fd, fc in fns:
                try:
                    a, b = fd(*vals), fc(*vals)
                except (ZeroDivisionError, OverflowError, ValueError, TypeError):
                    return None
                if not (mpmath.isfinite(a) and mpmath.isfinite(b)) or mpmath.im(a) != 0 or mpmath.im(b) != 0:
                    return None
                worst = max(worst, float(abs(a - b) / max(1, abs(a))))
        return worst

    rng = np.random.default_rng(0)
    probe = [{s.name: float(rng.uniform(*domains[s])) for s in syms} for _ in range(8)]
    differs = any((g := gap(ex)) is not None and g > rel_tol for ex in probe)
    if not differs:
        residuals = [
            _residual(sp.sympify((sp.exp(d) - sp.exp(c)) if via_exp else (d - c)))
            for d, c in zip(d_list, c_list, strict=True)
        ]
        if all(r == 0 for r in residuals):
            out.equal = True
            return out
        out.residual = "; ".join(sp.sstr(r) for r in residuals)
    else:
        out.residual = "differs numerically (sympy simplify skipped)"
    strategy = st.fixed_dictionaries({s.name: reals(*domains[s]) for s in syms})
    res = search(f"{name} (symbolic mismatch search)", strategy, gap, max_examples=examples, tolerance=rel_tol)
    if not res.passed:
        out.equal = False
        out.counterexample = res.counterexample
        out.counterexample_gap = res.counterexample_error
    return out


def sign_check(name: str, expr: sp.Expr, sign: str, steps: Sequence[str] = ()) -> SymbolicCheck:
    """Prove expr > 0 / < 0 / ≥ 0 / ≤ 0 from the symbols' assumptions (sympy's assumption system).

    equal is True when proved, False when sympy proves the opposite sign somewhere, None when undecided.
    """
    if sign not in ("positive", "negative", "nonnegative", "nonpositive"):
        raise ValueError(f"unknown sign {sign!r}")
    expr = sp.sympify(expr)
    opposite = {
        "positive": "nonpositive",
        "negative": "nonnegative",
        "nonnegative": "negative",
        "nonpositive": "positive",
    }[sign]
    verdict: bool | None = None
    shown = expr
    for e in (expr, sp.simplify(expr)):  # simplify can hide a sign sympy sees in the raw form, and vice versa
        shown = e
        if getattr(e, f"is_{sign}"):
            verdict = True
            break
        if getattr(e, f"is_{opposite}"):
            verdict = False
            break
    residual = (
        ""
        if verdict
        else (
            f"sympy proves it is {opposite}"
            if verdict is False
            else f"sympy cannot decide the sign of {sp.sstr(shown)}"
        )
    )
    return SymbolicCheck(name, sign, sp.sstr(shown), verdict, list(steps), residual=residual)


def limit_check(
    name: str,
    expr: sp.Expr,
    var: sp.Symbol,
    point: Any,
    claimed: Any,
    steps: Sequence[str] = (),
    direction: str = "+",
) -> SymbolicCheck:
    """Prove lim_{var→point} expr = claimed (sympy's gruntz)."""
    lim = sp.limit(expr, var, point, direction)
    ok = is_zero(lim - claimed) if not (lim.has(sp.oo) or sp.sympify(claimed).has(sp.oo)) else lim == claimed
    out = SymbolicCheck(name, sp.sstr(claimed), sp.sstr(lim), True if ok else False, list(steps))
    if not ok:
        out.residual = f"limit is {sp.sstr(lim)}"
    return out
