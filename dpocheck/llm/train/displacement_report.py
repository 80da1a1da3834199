"""The displacement part of a sweep report: U and likelihood displacement per loss × R across seeds (PAPER §6).

Which loss keeps pairs out of U (C3), and which keeps the chosen response's likelihood from falling (likelihood
displacement, Razin et al. 2024)? From the finished runs under ``OUT/runs`` (their eval files alone, via
:mod:`~dpocheck.llm.train.trajectories`) this writes, into ``OUT`` (or ``dest``):

* ``displacement.csv`` — tidy, one row per run × eval step (:data:`~dpocheck.llm.train.trajectories.STEP_FIELDS`);
* ``displacement_runs.csv`` — one row per run: its last step, health verdict and the transitions of U and of
  displacement across eval steps;
* ``displacement_summary.csv`` — per loss × R, for each quantity of :data:`SUMMARY_METRICS` (at the last step, or
  ``ever``: at some eval step, displacement being often transient): the
  mean over seeds with a Student-t 95 % interval (n = seeds; what varies between runs), and the pooled-pair
  value with a percentile bootstrap interval over every (pair, seed) (treats them as independent: pair
  sampling noise only, no seed-to-seed spread);
* ``displacement_ches.csv`` — per run whose reference carries CHES: Spearman ρ of step-0 CHES with what training
  did (:func:`~dpocheck.llm.train.trajectories.ches_predictions`);
* ``displacement.png`` (shares over steps per loss, one column per R, seeds thin, their mean thick),
  ``displacement_cells.png`` (U × displaced at the last step per run) and ``ches.png`` (the references' CHES by the
  sign of δ_ref), all drawn from the tables only.

CHES comes from a scores folder whose rows carry it: given per run (a reference rescored by ``dpocheck score``, for
runs made before CHES was written), else the run's own ``reference/``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._io import write_text_atomic
from dpocheck._plot import pyplot, save_figure
from dpocheck.llm.analysis.displacement import EPISODE_PATTERNS, csv_text, pair_table, vocab_size_of
from dpocheck.llm.analysis.stats import bootstrap_mean_ci, t_interval
from dpocheck.llm.manifest import MANIFEST, is_complete, read_manifest_if_any

from .trajectories import (
    STEP_FIELDS,
    ches_predictions,
    pair_flags,
    read_steps,
    run_convention,
    run_health,
    step_rows,
    transitions,
)

RUN_RE = re.compile(r"^(?P<label>.+)_R(?P<R>[0-9.]+)_s(?P<seed>\d+)$")
#: the last-step quantities compared across losses: per-pair flags (shares) or per-pair values (means)
SUMMARY_METRICS = {
    "share_in_u": "in_u",
    "share_ever_in_u": "ever_in_u",
    "share_displaced": "displaced",
    "share_ever_displaced": "ever_displaced",
    "share_both_fell": "both_fell",
    "share_displaced_while_ranked_correct": "displaced_while_ranked_correct",
    "chosen_logp_shift_mean": "chosen_logp_shift_mean",
}
RUN_FIELDS = (
    "run",
    "label",
    "R",
    "seed",
    "convention",
    "beta",
    *STEP_FIELDS,
    *(f"u_{p}" for p in EPISODE_PATTERNS),
    *(f"displaced_{p}" for p in EPISODE_PATTERNS),
    "share_ever_in_u",
    "share_ever_displaced",
    "chosen_logp_drop_per_token",
)
SUMMARY_FIELDS = (
    "label",
    "convention",
    "beta",
    "R",
    "metric",
    "n_seeds",
    "seeds",
    "seed_mean",
    "seed_t95_lo",
    "seed_t95_hi",
    "n_pair_runs",
    "pooled",
    "pooled_boot95_lo",
    "pooled_boot95_hi",
)
CHES_FIELDS = ("run", "label", "R", "seed", "x", "y", "spearman_rho", "ci95_lo", "ci95_hi", "n")


def finished_runs(runs: Path) -> list[Path]:
    """The finished ``dpocheck train`` runs in the folder ``runs`` (a sweep's ``OUT/runs``) that have eval files."""
    if not runs.is_dir():
        return []
    return sorted(
        p for p in runs.iterdir() if is_complete(read_manifest_if_any(p / MANIFEST)) and (p / "eval").is_dir()
    )


def run_key(run: Path) -> dict[str, Any]:
    """``label`` (the entry without R and seed, e.g. ``dpo``, ``cpo_margin_g1.5gstar``), ``R`` and ``seed``."""
    m = RUN_RE.match(run.name)
    if m is None:
        return {"label": run.name, "R": math.nan, "seed": -1}
    return {"label": m["label"], "R": float(m["R"]), "seed": int(m["seed"])}


def ches_reference(run: Path, ches: Path | Mapping[str, Path] | None) -> Any:
    """The scores (a ScoreTable) carrying CHES for ``run``'s reference, or None: ``ches[run name]`` (a mapping) or
    ``ches/<run name>`` (a folder) when given and scored with CHES, else the run's own ``reference/``."""
    from dpocheck.llm.analysis.scores import read_scores

    given = ches.get(run.name) if isinstance(ches, Mapping) else None if ches is None else ches / run.name
    for d in ([Path(given)] if given is not None else []) + [run / "reference"]:
        if (d / MANIFEST).is_file():
            table = read_scores(d)
            if np.isfinite(table.ches_sum).any():
                return table
    return None


def _last_step_pairs(run: Path, conv: str) -> dict[str, np.ndarray]:
    step, _, pol, ref = read_steps(run)[-1]
    t = pair_table(pol, ref, conv)
    return {k: v[t["finite"]] for k, v in t.items()}


def tables(runs_dir: Path, ches: Path | Mapping[str, Path] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The four tidy tables of the module docstring (``steps``, ``runs``, ``summary``, ``ches``) as row lists."""
    steps: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    ches_rows: list[dict[str, Any]] = []
    pooled: dict[tuple[str, float], dict[str, Any]] = {}
    for run in finished_runs(runs_dir):
        key, conv = run_key(run), run_convention(run)
        beta = (read_manifest_if_any(run / MANIFEST) or {}).get("fingerprint", {}).get("settings", {}).get("beta")
        head = {"run": run.name, **key, "convention": conv, "beta": beta}
        per_step = step_rows(run, conv)
        steps += [{**head, **r} for r in per_step]
        trans = transitions(run, conv)
        ever = {f"ever_{k}": f.any(axis=1) for k, f in pair_flags(run, conv)[2].items()}
        health = run_health(run, vocab_size_of(read_manifest_if_any(run / "reference" / MANIFEST)))
        runs.append(
            {
                **head,
                **per_step[-1],
                **{f"u_{p}": trans["in_u"][p] for p in EPISODE_PATTERNS},
                **{f"displaced_{p}": trans["displaced"][p] for p in EPISODE_PATTERNS},
                **{f"share_{k}": float(v.mean()) if v.size else float("nan") for k, v in ever.items()},
                "chosen_logp_drop_per_token": health.get("chosen_logp_drop_per_token"),
            }
        )
        group = pooled.setdefault((key["label"], key["R"]), {"runs": [], "pairs": []})
        group["runs"].append(runs[-1])
        group["pairs"].append({**_last_step_pairs(run, conv), **ever})
        reference = ches_reference(run, ches)
        if reference is not None:
            for c in ches_predictions(run, reference, conv, n_bootstrap=2000):
                lo, hi = c.ci95 if c.ci95 else (None, None)
                ches_rows.append(
                    {**head, "x": c.x, "y": c.y, "spearman_rho": c.value, "ci95_lo": lo, "ci95_hi": hi, "n": c.n}
                )
    summary = [row for (label, r), g in sorted(pooled.items()) for row in _summary_rows(label, r, g)]
    return {"steps": steps, "runs": runs, "summary": summary, "ches": ches_rows}


def _summary_rows(label: str, share_r: float, group: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for k, (metric, column) in enumerate(SUMMARY_METRICS.items()):
        per_seed = [r[metric] for r in group["runs"]]
        mean, ci, n = t_interval(per_seed)
        values = np.concatenate([np.asarray(p[column], dtype=np.float64) for p in group["pairs"]])
        lo, hi = bootstrap_mean_ci(values, 2000, seed=[k, int(10 * share_r)])
        rows.append(
            {
                "label": label,
                "convention": group["runs"][0]["convention"],
                "beta": group["runs"][0]["beta"],
                "R": share_r,
                "metric": metric,
                "n_seeds": n,
                "seeds": " ".join(str(r["seed"]) for r in group["runs"]),
                "seed_mean": mean,
                "seed_t95_lo": None if ci is None else ci[0],
                "seed_t95_hi": None if ci is None else ci[1],
                "n_pair_runs": int(values.size),
                "pooled": float(values.mean()) if values.size else None,
                "pooled_boot95_lo": lo,
                "pooled_boot95_hi": hi,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ Markdown
def _pct(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.1f}"


def _num(x: Any, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}"


def _cell(row: Mapping[str, Any], scale: Any, share: bool = False) -> str:
    """Seed mean [t-interval] (a share's interval clipped to [0, 1]); pooled value [bootstrap interval]."""
    seed = f"{scale(row['seed_mean'])}"
    if row["seed_t95_lo"] is not None:
        lo, hi = row["seed_t95_lo"], row["seed_t95_hi"]
        if share:
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        seed += f" [{scale(lo)}, {scale(hi)}]"
    return f"{seed}; pooled {scale(row['pooled'])} [{scale(row['pooled_boot95_lo'])}, {scale(row['pooled_boot95_hi'])}]"


def markdown(t: Mapping[str, list[dict[str, Any]]]) -> dict[str, str]:
    """The ``summary`` (loss × R), ``runs`` and ``ches`` (empty without CHES) tables as Markdown, from the tidy
    tables only."""
    parts = {}
    by = {(r["label"], r["R"], r["metric"]): r for r in t["summary"]}
    groups = sorted({(r["label"], r["R"]) for r in t["summary"]}, key=lambda g: (g[1], g[0]))
    lines = [
        "Whole training set. Each cell: mean over seeds [Student-t 95 % interval over seeds, clipped to [0, 100] for "
        "shares]; pooled over every "
        "(pair, seed) [percentile bootstrap 95 %, 2,000 resamples]. Shares in %; Δ̄_w in nats per token. "
        "'At some step': at any eval step, step 0 included.",
        "",
    ]
    tables_md = (
        (
            "Which loss keeps pairs out of U (C3)?",
            ("share_in_u", "share_ever_in_u"),
            ("in U, last step", "in U at some step"),
        ),
        (
            "Which loss keeps the chosen response's likelihood from falling?",
            tuple(m for m in SUMMARY_METRICS if m not in ("share_in_u", "share_ever_in_u")),
            (
                "displaced, last step",
                "displaced at some step",
                "both fell, last step",
                "displaced while δ_θ > 0, last step",
                "mean Δ̄_w, last step",
            ),
        ),
    )
    for title, metrics, heads in tables_md:
        lines += [
            title,
            "",
            "| loss | δ, β | R | seeds | " + " | ".join(heads) + " |",
            "|---|---|---|---|" + "---|" * len(heads),
        ]
        for label, share_r in groups:
            cells = [by[(label, share_r, m)] for m in metrics]
            shares = [m.startswith("share_") for m in metrics]
            scales = [_pct if sh else (lambda x: _num(x, 3)) for sh in shares]
            lines.append(
                f"| {label} | {cells[0]['convention']}, {_num(cells[0]['beta'])} | {share_r:g} | {cells[0]['seeds']} | "
                + " | ".join(_cell(c, sc, sh) for c, sc, sh in zip(cells, scales, shares, strict=True))
                + " |"
            )
        lines.append("")
    parts["summary"] = "\n".join(lines) + "\n"
    lines = [
        "Per run (last step; transitions over every eval step: never / entered and left / entered and stuck / left "
        "and re-entered):",
        "",
        "| run | step | in U % | displaced % | both fell % | Δ̄_w | health | U transitions | displaced transitions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in t["runs"]:
        u = " / ".join(str(r[f"u_{p}"]) for p in EPISODE_PATTERNS)
        d = " / ".join(str(r[f"displaced_{p}"]) for p in EPISODE_PATTERNS)
        lines.append(
            f"| {r['run']} | {r['step']} | {_pct(r['share_in_u'])} | {_pct(r['share_displaced'])} | "
            f"{_pct(r['share_both_fell'])} | {_num(r['chosen_logp_shift_mean'])} | {r['health']} | {u} | {d} |"
        )
    parts["runs"] = "\n".join(lines) + "\n"
    lines = []
    if t["ches"]:
        lines += [
            "Does the reference's CHES predict what training did? Spearman ρ over pairs [percentile bootstrap 95 %], "
            "per-token-mean CHES (Razin et al. 2024 expect ρ < 0 with Δ_w and ρ > 0 with displacement):",
            "",
            "| run | " + " | ".join(sorted({c["y"] for c in t["ches"]})) + " |",
            "|---|" + "---|" * len({c["y"] for c in t["ches"]}),
        ]
        ys = sorted({c["y"] for c in t["ches"]})
        for run in sorted({c["run"] for c in t["ches"]}):
            got = {c["y"]: c for c in t["ches"] if c["run"] == run and c["x"].startswith("step-0 ches_mean")}
            lines.append(f"| {run} | " + " | ".join(_rho(got.get(y)) for y in ys) + " |")
    parts["ches"] = "\n".join(lines) + "\n" if lines else ""
    return parts


def _rho(c: Mapping[str, Any] | None) -> str:
    if c is None or c["spearman_rho"] is None:
        return "—"
    ci = "" if c["ci95_lo"] is None else f" [{c['ci95_lo']:.2f}, {c['ci95_hi']:.2f}]"
    return f"{c['spearman_rho']:.2f}{ci}"


# ------------------------------------------------------------------------------------------------ figures
def plot_steps(steps: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Shares in U, displaced and both fell over steps; a column per R, a colour per loss; seeds thin, mean thick."""
    plt = pyplot()
    rs = sorted({r["R"] for r in steps})
    labels = sorted({r["label"] for r in steps})
    colors = {lab: f"C{k}" for k, lab in enumerate(labels)}
    panels = (("share_in_u", "in U (C3)"), ("share_displaced", "displaced (Δ_w < 0)"), ("share_both_fell", "both fell"))
    fig, axes = plt.subplots(len(panels), max(1, len(rs)), figsize=(5 * max(1, len(rs)), 9), squeeze=False)
    for j, share_r in enumerate(rs):
        for i, (key, name) in enumerate(panels):
            ax = axes[i][j]
            for lab in labels:
                rows = [r for r in steps if r["R"] == share_r and r["label"] == lab]
                for run in sorted({r["run"] for r in rows}):
                    pts = sorted((r["step"], r[key]) for r in rows if r["run"] == run)
                    ax.plot(*zip(*pts, strict=True), color=colors[lab], lw=0.7, alpha=0.35)
                grid = sorted({r["step"] for r in rows})
                if grid:
                    mean = [np.mean([r[key] for r in rows if r["step"] == s]) for s in grid]
                    ax.plot(grid, mean, color=colors[lab], lw=2.2, marker="o", ms=3, label=lab)
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel(f"share {name}")
            if i == 0:
                ax.set_title(f"R = {share_r:g}")
                ax.legend(fontsize=7)
        axes[-1][j].set_xlabel("optimizer step")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, tight=False)


def plot_cells(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """U × displaced at the last step, one stacked bar per run (the four cells sum to one)."""
    plt = pyplot()
    cells = (
        ("share_in_u_and_displaced", "in U, displaced", "tab:red"),
        ("share_in_u_not_displaced", "in U, not displaced", "tab:orange"),
        ("share_displaced_not_in_u", "displaced, not in U", "tab:purple"),
        ("share_neither", "neither", "0.8"),
    )
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(runs)), 4.6))
    bottom = np.zeros(len(runs))
    for key, name, color in cells:
        v = np.array([r[key] for r in runs], dtype=np.float64)
        ax.bar(range(len(runs)), v, bottom=bottom, color=color, label=name)
        bottom += v
    ax.set_xticks(range(len(runs)), [r["run"] for r in runs], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("share of training pairs at the last step")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, tight=False)


def plot_ches(points: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The references' per-token-mean CHES by the sign of δ_ref (tidy points: reference, ches_mean, delta_ref)."""
    plt = pyplot()
    refs = sorted({p["reference"] for p in points})
    fig, axes = plt.subplots(1, max(1, len(refs)), figsize=(4.2 * max(1, len(refs)), 3.4), squeeze=False)
    for ax, ref in zip(axes[0], refs, strict=False):
        sel = [p for p in points if p["reference"] == ref]
        values = np.array([p["ches_mean"] for p in sel], dtype=np.float64)
        lo, hi = np.quantile(values, [0.02, 0.98]) if values.size else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
        for neg, color, name in ((False, "0.35", "per-token δ_ref ≥ 0"), (True, "tab:red", "per-token δ_ref < 0")):
            x = np.clip([p["ches_mean"] for p in sel if (p["delta_ref"] < 0) == neg], edges[0], edges[-1])
            ax.hist(x, bins=edges, histtype="step", lw=1.6, color=color, label=f"{name} ({x.size})")
        ax.set_title(f"{ref} (tails clipped into the edge bins)", fontsize=8)
        ax.set_xlabel("CHES (per-token means)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("pairs")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, tight=False)


def ches_points(runs_dir: Path, ches: Path | Mapping[str, Path] | None) -> list[dict[str, Any]]:
    """Tidy rows (reference, index, ches_sum, ches_mean, delta_ref per token) of each distinct
    reference (one per R and seed; runs sharing a reference are listed once, by their first run's key)."""
    rows, seen = [], set()
    for run in finished_runs(runs_dir):
        table = ches_reference(run, ches)
        if table is None:
            continue
        key = run_key(run)
        name = f"R = {key['R']:g}" + (f", seed {key['seed']}" if key["R"] > 0 else "")
        if name in seen:
            continue
        seen.add(name)
        d = table.delta("mean")  # one split for every loss sharing the reference: per-token, like the CHES drawn
        rows += [
            {"reference": name, "index": int(i), "ches_sum": float(s), "ches_mean": float(m), "delta_ref": float(x)}
            for i, s, m, x in zip(table.index, table.ches_sum, table.ches_mean, d, strict=True)
        ]
    return rows


def write_displacement_report(
    runs_dir: Path, dest: Path, ches: Path | Mapping[str, Path] | None = None
) -> tuple[list[Path], dict[str, str]]:
    """Write the tables and figures of the module docstring into ``dest`` from the finished runs in ``runs_dir``;
    (files, the Markdown parts of :func:`markdown`)."""
    t = tables(runs_dir, ches)
    if not t["runs"]:
        return [], {"summary": "No finished run with eval files.\n", "runs": "", "ches": ""}
    written = [
        write_text_atomic(dest / "displacement.csv", csv_text(t["steps"], (*RUN_FIELDS[:6], *STEP_FIELDS))),
        write_text_atomic(dest / "displacement_runs.csv", csv_text(t["runs"], RUN_FIELDS)),
        write_text_atomic(dest / "displacement_summary.csv", csv_text(t["summary"], SUMMARY_FIELDS)),
        plot_steps(t["steps"], dest / "displacement.png"),
        plot_cells(t["runs"], dest / "displacement_cells.png"),
    ]
    if t["ches"]:
        written.append(write_text_atomic(dest / "displacement_ches.csv", csv_text(t["ches"], CHES_FIELDS)))
        points = ches_points(runs_dir, ches)
        written.append(write_text_atomic(dest / "ches.csv", csv_text(points, tuple(points[0]))))
        written.append(plot_ches(points, dest / "ches.png"))
    return written, markdown(t)
