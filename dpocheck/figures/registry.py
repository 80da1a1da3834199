"""The experiment registry and runner: declared sweep → tidy tables (CSV) → figure read from the tables
only.

Every experiment module defines NAME, TITLE, CLAIMS, SETTING (plain data), SWEEP ({"toy": ..., "paper":
...}, plain data), TABLES ({table name: declared columns}), compute(sweep, progress) -> {table: rows},
figure(tables) -> a matplotlib Figure drawn from the tables alone, plot(tables, path) (saves that figure)
and headlines(tables) -> rows (each value a scalar or labelled numbers, see common.headline). The runner
writes each table atomically under ``<out>/tables/<experiment>/``, reads the tables back from disk and only
then plots them, so a figure never re-derives a number. A ``_meta.json`` beside the tables records the
sweep's fingerprint: a rerun into the same folder reuses finished experiments (resume after a kill) unless
``force`` is given or the sweep or the experiment's code changed. ``manifest.json`` (figure → tables → the
command that made it) is rewritten after every experiment.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from dpocheck.sims.tables import read_table, table_columns, write_table, write_text_atomic

from .common import Rows

EXPERIMENT_MODULES = (
    "dpocheck.figures.e1_violation_map",
    "dpocheck.figures.e2_misaligned_reference",
    "dpocheck.figures.e3_gradient_vanishing",
    "dpocheck.figures.e4_soft_margin",
    "dpocheck.figures.e5_gamma_sweep",
    "dpocheck.figures.e6_ecpoc",
    "dpocheck.figures.e7_easy_margin",
)
SIZES = ("toy", "paper")
FORMATS = ("png", "pdf")


@dataclass(frozen=True)
class Experiment:
    """One registered experiment (a module following the interface in this module's docstring)."""

    module: ModuleType

    @property
    def name(self) -> str:
        return self.module.NAME

    @property
    def title(self) -> str:
        return self.module.TITLE

    @property
    def claims(self) -> tuple[str, ...]:
        return tuple(self.module.CLAIMS)

    @property
    def tables(self) -> dict[str, tuple[str, ...]]:
        return dict(self.module.TABLES)

    def sweep(self, size: str) -> dict[str, Any]:
        if size not in self.module.SWEEP:
            raise ValueError(f"{self.name}: unknown size {size!r}; choose one of {sorted(self.module.SWEEP)}")
        return self.module.SWEEP[size]

    def fingerprint(self, size: str) -> str:
        """sha256 of the setting, the sweep and the experiment module's source: changes invalidate old
        tables."""
        src = Path(self.module.__file__).read_bytes()
        blob = json.dumps({"setting": self.module.SETTING, "sweep": self.sweep(size)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode() + src).hexdigest()


def experiments() -> list[Experiment]:
    """Every registered experiment, in order."""
    return [Experiment(importlib.import_module(m)) for m in EXPERIMENT_MODULES]


def get_experiment(name: str) -> Experiment:
    """An experiment by full name or unique prefix (e.g. 'e2' or 'e2_misaligned_reference')."""
    exps = experiments()
    exact = [e for e in exps if e.name == name]
    if exact:
        return exact[0]
    matches = [e for e in exps if e.name.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(e.name for e in exps)
    raise ValueError(f"unknown experiment {name!r}" + (" (ambiguous)" if matches else "") + f"; choose from {names}")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_rows(exp: Experiment, tables: dict[str, Rows]) -> None:
    declared = exp.tables
    if set(tables) != set(declared):
        raise ValueError(f"{exp.name}: compute returned tables {sorted(tables)}, declared {sorted(declared)}")
    for tname, rows in tables.items():
        cols = set(declared[tname])
        for i, row in enumerate(rows):
            if set(row) != cols:
                extra = sorted(set(row) - cols)
                missing = sorted(cols - set(row))
                raise ValueError(f"{exp.name}/{tname} row {i}: extra columns {extra}, missing {missing}")


def figures_command(out_dir: Path, name: str, size: str, fmt: str) -> str:
    """The command that regenerates one figure."""
    return f"dpocheck figures --out {out_dir} --only {name} --size {size} --format {fmt}"


def run_experiment(
    exp: Experiment,
    out_dir: str | Path,
    size: str = "paper",
    fmt: str = "png",
    *,
    force: bool = False,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Compute (or reuse) an experiment's tables, plot its figure from the tables on disk, collect
    headlines."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out_dir = Path(out_dir)
    tdir = out_dir / "tables" / exp.name
    meta_path = tdir / "_meta.json"
    paths = {t: tdir / f"{t}.csv" for t in exp.tables}
    fp = exp.fingerprint(size)
    t0 = time.perf_counter()
    reused = False
    if not force and meta_path.exists() and all(p.exists() for p in paths.values()):
        try:
            meta = json.loads(meta_path.read_text())
            reused = meta.get("fingerprint") == fp and meta.get("size") == size
        except (OSError, json.JSONDecodeError):
            reused = False
    if reused:
        log(f"    reusing tables from {tdir} (same sweep; --force recomputes)")
        compute_s = json.loads(meta_path.read_text()).get("compute_seconds", 0.0)
    else:
        tables = exp.module.compute(exp.sweep(size), lambda m: log(f"    {m}"))
        _check_rows(exp, tables)
        for t, rows in tables.items():
            write_table(paths[t], rows, exp.tables[t])
        compute_s = time.perf_counter() - t0
        meta = {"experiment": exp.name, "size": size, "fingerprint": fp, "compute_seconds": compute_s}
        write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    for t, p in paths.items():
        cols = table_columns(p)
        if tuple(cols) != tuple(exp.tables[t]):
            raise ValueError(f"{p}: columns {cols} differ from the declared {list(exp.tables[t])}")
    loaded = {t: read_table(p) for t, p in paths.items()}
    fig_path = exp.module.plot(loaded, out_dir / "figures" / f"{exp.name}.{fmt}")
    heads = exp.module.headlines(loaded)
    write_text_atomic(tdir / "_headlines.json", json.dumps(heads, indent=2, default=str) + "\n")
    return {
        "name": exp.name,
        "title": exp.title,
        "claims": list(exp.claims),
        "figure": str(Path(fig_path).relative_to(out_dir)),
        "tables": {t: str(p.relative_to(out_dir)) for t, p in paths.items()},
        "command": figures_command(out_dir, exp.name, size, fmt),
        "size": size,
        "sweep": exp.sweep(size),
        "compute_seconds": round(float(compute_s), 3),
        "seconds": round(time.perf_counter() - t0, 3),
        "reused": reused,
        "headlines": heads,
    }


def load_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest in out_dir, or an empty one."""
    path = out_dir / "manifest.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    return {"tool": "dpocheck", "figures": {}}


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write manifest.json atomically."""
    path = out_dir / "manifest.json"
    write_text_atomic(path, json.dumps(manifest, indent=2, default=str) + "\n")
    return path


def run_all(
    out_dir: str | Path,
    size: str = "paper",
    fmt: str = "png",
    *,
    only: Sequence[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] = _stderr,
    keep_going: bool = False,
) -> list[dict[str, Any]]:
    """Run the selected experiments (all by default) with progress lines, updating manifest.json after
    each.

    With keep_going=True an experiment that raises is recorded as {"name", "error"} and the rest still
    run.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exps = [get_experiment(n) for n in only] if only else experiments()
    manifest = load_manifest(out_dir)
    manifest.update({"tool": "dpocheck", "size": size, "format": fmt})
    results: list[dict[str, Any]] = []
    for i, exp in enumerate(exps, 1):
        log(f"[{i}/{len(exps)}] {exp.name} ({size}): {exp.title}")
        try:
            res = run_experiment(exp, out_dir, size, fmt, force=force, log=log)
        except Exception as err:  # noqa: BLE001 — recorded and re-raised unless keep_going
            if not keep_going:
                raise
            log(f"    FAILED: {type(err).__name__}: {err}")
            res = {
                "name": exp.name,
                "title": exp.title,
                "claims": list(exp.claims),
                "error": f"{type(err).__name__}: {err}",
            }
            results.append(res)
            manifest["figures"][exp.name] = {k: v for k, v in res.items()}
            write_manifest(out_dir, manifest)
            continue
        log(f"    done in {res['seconds']:.1f} s → {res['figure']}")
        results.append(res)
        manifest["figures"][exp.name] = {k: v for k, v in res.items() if k != "headlines"}
        write_manifest(out_dir, manifest)
    return results
