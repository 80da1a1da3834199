"""Helpers shared by the experiments: headline numbers, summaries and matplotlib set-up (Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._io import write_atomic
from dpocheck.theory import LOSSES

Rows = list[dict[str, Any]]
Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    """A progress callback that prints nothing."""


def headline(claim: str, setting: str, quantity: str, value: Any, text: str) -> dict[str, Any]:
    """One headline number for the report: which claim (C1…C10 or E1…E4), in which setting, what it
    measures."""
    return {"claim": claim, "setting": setting, "quantity": quantity, "value": value, "text": text}


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


def pyplot() -> Any:
    """matplotlib.pyplot with the non-interactive Agg backend (imported lazily: keeps the CLI import
    cheap)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "font.size": 9, "axes.titlesize": 9})
    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure atomically (through :func:`dpocheck._io.write_atomic`) and close it."""
    path = Path(path)
    write_atomic(path, lambda tmp: fig.savefig(tmp, bbox_inches="tight", format=path.suffix.lstrip(".")))
    fig.clf()
    pyplot().close(fig)
    return path


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
