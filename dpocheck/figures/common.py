"""Helpers shared by the experiments: headline numbers, summaries and matplotlib set-up (Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dpocheck.theory import LOSSES

Rows = list[dict[str, Any]]
Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    """A progress callback that prints nothing."""


Scalar = float | int | bool | str | None


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, float | int | bool | str | np.floating | np.integer | np.bool_)


def _check_label(label: Any, claim: str) -> None:
    if not isinstance(label, str) or not any(ch.isalpha() for ch in label):
        raise TypeError(f"headline ({claim}): every number needs a label in words, got the label {label!r}")


def check_headline_value(value: Any, claim: str = "?") -> None:
    """Raise TypeError unless `value` labels every number it holds.

    Allowed: one scalar (the `quantity` column names it), a mapping label → scalar, or a mapping label →
    (mapping sub-label → scalar) — e.g. {"DPO": {"share in U": 0.3, "reward": 1.2}}. Lists, tuples and
    unlabelled keys are refused: a bare ``[0.08, 0.03]`` in the report does not say which number is which.
    """
    if _is_scalar(value):
        return
    if not isinstance(value, Mapping):
        raise TypeError(
            f"headline ({claim}): value {value!r} is a {type(value).__name__}; pass a scalar or a mapping "
            "label → number so that the report says what each number is"
        )
    for label, v in value.items():
        _check_label(label, claim)
        if _is_scalar(v):
            continue
        if not isinstance(v, Mapping):
            raise TypeError(f"headline ({claim}): {label!r} holds a {type(v).__name__}; label each of its numbers")
        for sub, x in v.items():
            _check_label(sub, claim)
            if not _is_scalar(x):
                raise TypeError(f"headline ({claim}): {label!r} → {sub!r} holds {x!r}; only one level of labels")


def headline(claim: str, setting: str, quantity: str, value: Any, text: str) -> dict[str, Any]:
    """One headline number for the report: which claim (C1…C10 or E1…E4), in which setting, what it
    measures. `value` is a scalar or labels every number (see :func:`check_headline_value`)."""
    check_headline_value(value, claim)
    return {"claim": claim, "setting": setting, "quantity": quantity, "value": value, "text": text}


def format_scalar(v: Any, digits: int = 4) -> str:
    """One headline scalar as report text: yes/no, n/a for NaN or None, `digits` significant digits."""
    if v is None:
        return "n/a"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        return "n/a" if math.isnan(v) else f"{float(v):.{digits}g}"
    return str(v)


def format_headline_value(value: Any) -> str:
    """A headline value as one report cell, every number after its label: ``label = v; label = v`` and, one
    level down, ``label: sub = v, sub = v``."""
    if not isinstance(value, Mapping):
        return format_scalar(value)
    parts = []
    for label, v in value.items():
        if isinstance(v, Mapping):
            parts.append(f"{label}: " + ", ".join(f"{sub} = {format_scalar(x)}" for sub, x in v.items()))
        else:
            parts.append(f"{label} = {format_scalar(v)}")
    return "; ".join(parts)


def mean_se(values: Any) -> tuple[float, float]:
    """(mean, standard error) of a 1-D sample, ignoring NaN; se is NaN for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    se = float(np.std(v, ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(np.mean(v)), se


def select(rows: Iterable[Mapping[str, Any]], **where: Any) -> Rows:
    """Rows whose columns equal every given value (floats compared with a relative tolerance of 1e-12)."""
    out = []
    for r in rows:
        ok = True
        for k, v in where.items():
            rv = r.get(k)
            if isinstance(v, float) and isinstance(rv, int | float):
                ok = math.isclose(rv, v, rel_tol=1e-12, abs_tol=1e-15)
            else:
                ok = rv == v
            if not ok:
                break
        if ok:
            out.append(dict(r))
    return out


def column(rows: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    """One column as a float array (None → NaN)."""
    return np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=np.float64)


def unique(rows: Iterable[Mapping[str, Any]], name: str) -> list[Any]:
    """Distinct values of a column in order of first appearance."""
    seen: list[Any] = []
    for r in rows:
        if r[name] not in seen:
            seen.append(r[name])
    return seen


#: Colours and legend labels: every loss's from the loss registry, plus the exact reference points.
LOSS_COLORS = {**{name: spec.color for name, spec in LOSSES.items()}, "rlhf_optimum": "black", "ecpoc": "tab:cyan"}
LOSS_LABELS = {
    **{name: spec.label for name, spec in LOSSES.items()},
    "rlhf_optimum": "RLHF optimum π*",
    "ecpoc": "E-CPOC",
}


def fmt(v: Any, digits: int = 3) -> str:
    """Compact number formatting for report text."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}g}"
    return str(v)


def pct(v: float, digits: int = 1) -> str:
    """A share as a percentage string."""
    return "n/a" if v is None or math.isnan(v) else f"{100 * v:.{digits}f} %"
