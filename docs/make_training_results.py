"""Tidy table, figure and Markdown summary of a set of `dpocheck train` runs (E2 at LLM scale, PAPER §5).

Every number is recomputed here from the runs' own files — the per-pair ``eval/step-<N>.jsonl`` (policy and
reference log-probs of every training pair) and ``manifest.json`` (loss, β, γ, convention, corruption) — with the
theory functions (C3 U membership, C4 gradient weight, C8 γ*). Usage::

    python docs/make_training_results.py RUNS_DIR OUT_DIR

writes (through the declared sweep's :func:`dpocheck.llm.train.experiment.tidy_rows`) ``OUT_DIR/e2_llm.csv``
(one row per run × eval step), ``OUT_DIR/e2_llm.png`` (share in U and ranking accuracy
over steps, one panel column per corruption ratio R) and prints a Markdown table of the last step of every run.
γ* (Thm 4.9) is computed from the run's reference log-probs in the run's convention with Δr* = 0 for every pair
(HH-RLHF has no Δr*; Δr* = 0 is the assumption that needs the smallest margin to be violated, see the docs).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from dpocheck.llm.train.experiment import read_eval, reference_gamma_star, tidy_rows

FIELDS = (
    "run",
    "loss",
    "beta",
    "gamma",
    "normalize",
    "R",
    "step",
    "n_pairs",
    "share_dref_neg",
    "share_in_u",
    "ranking_accuracy",
    "trl_accuracy",
    "grad_weight_in_u",
    "gamma_star_dr0",
)


def run_table(run: Path) -> list[dict]:
    """One tidy row per eval step of one `dpocheck train` folder (the sweep's own :func:`tidy_rows`)."""
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    loss = manifest["loss"]
    conv, beta = loss["convention"], float(manifest["settings"]["beta"])
    settings = {
        "loss": loss["name"],
        "beta": beta,
        "gamma": loss["params"].get("gamma", ""),
        "normalize": conv,
        "R": (manifest.get("corruption") or {}).get("share_R", 0.0),
    }
    step0 = sorted((run / "eval").glob("step-*.jsonl"), key=lambda p: int(p.stem.split("-")[1]))[0]
    try:
        g_star = reference_gamma_star(read_eval(step0), beta, conv)
    except OverflowError:
        g_star = math.inf
    return [{**row, "gamma_star_dr0": g_star} for row in tidy_rows(run, run.name, settings)]


def plot(rows: list[dict], path: Path) -> None:
    """Share in U (top) and ranking accuracy (bottom) over steps; one column per R; drawn from the table only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = sorted({r["R"] for r in rows})
    fig, axes = plt.subplots(2, len(rs), figsize=(5 * len(rs), 7), squeeze=False, sharex=True)
    for j, share_r in enumerate(rs):
        for run in sorted({r["run"] for r in rows if r["R"] == share_r}):
            pts = sorted((r["step"], r["share_in_u"], r["ranking_accuracy"]) for r in rows if r["run"] == run)
            steps = [p[0] for p in pts]
            axes[0][j].plot(steps, [p[1] for p in pts], marker="o", label=run)
            axes[1][j].plot(steps, [p[2] for p in pts], marker="o", label=run)
        axes[0][j].set_title(f"R = {share_r}")
        axes[0][j].set_ylabel("share of training pairs in U (C3)")
        axes[1][j].set_ylabel("ranking accuracy (δ_θ > 0)")
        axes[1][j].set_xlabel("optimizer step")
        axes[0][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> int:
    runs_dir, out_dir = Path(argv[0]), Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in sorted(p for p in runs_dir.iterdir() if (p / "manifest.json").is_file()):
        rows.extend(run_table(run))
    with open(out_dir / "e2_llm.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    plot(rows, out_dir / "e2_llm.png")
    print("| run | R | step | δ_ref<0 | in U | rank acc | TRL acc | grad w in U | γ* (Δr*=0) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in sorted({r["run"] for r in rows}):
        run_rows = [r for r in rows if r["run"] == run]
        first, last = run_rows[0], run_rows[-1]
        gw = last["grad_weight_in_u"]
        gws = f"{gw:.3g}" if math.isfinite(gw) else "—"
        print(
            f"| {run} | {last['R']} | {first['step']}→{last['step']} | {first['share_dref_neg']:.3f} | "
            f"{first['share_in_u']:.3f}→{last['share_in_u']:.3f} | {first['ranking_accuracy']:.3f}→"
            f"{last['ranking_accuracy']:.3f} | {last['trl_accuracy']:.3f} | {gws} | {first['gamma_star_dr0']:.4g} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
