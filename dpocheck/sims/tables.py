"""Tidy tables: one row per observation, one column per variable, written as CSV atomically.

Floats are written with repr (round-trip exact), so a table read back equals the numbers computed; two
runs with the same seed write byte-identical files.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._io import write_text_atomic

from .trainer import METRIC_COLUMNS, Trajectory


def _cell(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "1" if v else "0"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return repr(f)
    if v is None:
        return ""
    return str(v)


def table_to_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text of `rows` with exactly `columns` (a missing column raises KeyError naming it)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise KeyError(f"row {i} lacks column(s) {missing}")
        writer.writerow([_cell(row[c]) for c in columns])
    return buf.getvalue()


def write_table(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write a tidy CSV table atomically; returns the path."""
    write_text_atomic(path, table_to_csv(rows, columns))
    return Path(path)


def _parse(s: str) -> Any:
    if s == "":
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def read_table(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a table written by :func:`write_table`: ints and floats parsed, other cells kept as strings."""
    with open(path, encoding="utf-8", newline="") as fh:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def table_columns(path: str | os.PathLike[str]) -> list[str]:
    """The header of a CSV table."""
    with open(path, encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh))


def trajectory_rows(
    traj: Trajectory,
    keys: Mapping[str, Any] | None = None,
    *,
    instance_keys: Mapping[str, Sequence[Any]] | None = None,
    per_instance: bool = False,
    metrics: Sequence[str] = METRIC_COLUMNS,
) -> list[dict[str, Any]]:
    """Tidy rows of a trajectory: one per recorded step (mean over instances, with `n_instances` and the
    standard error `<metric>_se`) or, with per_instance=True, one per step and instance (`instance`
    column plus instance_keys[k][b] for each instance b). `keys` are constant columns put first (e.g.
    loss, R, β)."""
    keys = dict(keys or {})
    rows: list[dict[str, Any]] = []
    B = next(iter(traj.metrics.values())).shape[1]
    for r, step in enumerate(traj.steps.tolist()):
        if per_instance:
            for b in range(B):
                row = {**keys, "step": step, "instance": b}
                for k, vals in (instance_keys or {}).items():
                    row[k] = vals[b]
                row.update({m: float(traj.metrics[m][r, b]) for m in metrics})
                rows.append(row)
        else:
            row = {**keys, "step": step, "n_instances": B}
            for m in metrics:
                vals = traj.metrics[m][r]
                row[m] = float(np.mean(vals))
                row[f"{m}_se"] = float(np.std(vals, ddof=1) / math.sqrt(B)) if B > 1 else float("nan")
            rows.append(row)
    return rows


def trajectory_columns(
    keys: Sequence[str],
    *,
    per_instance: bool = False,
    instance_keys: Sequence[str] = (),
    metrics: Sequence[str] = METRIC_COLUMNS,
) -> list[str]:
    """The columns :func:`trajectory_rows` produces, in order."""
    if per_instance:
        return [*keys, "step", "instance", *instance_keys, *metrics]
    return [*keys, "step", "n_instances", *[c for m in metrics for c in (m, f"{m}_se")]]
