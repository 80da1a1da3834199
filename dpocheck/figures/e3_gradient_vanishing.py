"""E3 — gradient vanishing in U (C4, Prop. 3.4): DPO's gradient weight along trajectories and the escape
time.

Setting: one context, two responses, one pair with δ_ref = κ/β < 0 (so U = (δ_ref, 0) is non-empty), a
tabular softmax policy started at π_ref and trained by plain gradient descent on ℓ_DPO. Gradient flow
gives du/dt = 2β·σ(−βu), u = δ_θ − δ_ref, and the closed-form time to leave U is T = (|δ_ref| +
(e^{β|δ_ref|} − 1)/β)/(2β) (dpocheck.theory.escape_time). The simulation uses step size lr = h/β² (so
every cell takes a comparable number of steps per unit of βu) and measures the escape step by linear
interpolation of δ_θ across 0; its flow time is step·lr. The run length (1.2·max T/lr steps) is the only
use of the closed form in the simulation. Gradient descent is Euler's method on the flow, so the error
is O(h).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._plot import pyplot, save_figure
from dpocheck.sims import BanditBatch, LossConfig, batched_log_softmax, gradient_flow_time, train
from dpocheck.theory import dpo_gradient_weight, escape_time, exit_gradient_weight, in_undesirable_space

from .common import Progress, Rows, column, fmt, headline, no_progress, select, unique

NAME = "e3_gradient_vanishing"
TITLE = "Gradient vanishing in U and the escape time (C4)"
CLAIMS = ("C4",)
SETTING = {
    "bandit": "1 context, 2 responses, pair (y_w, y_l) with delta_ref = kappa/beta",
    "optimizer": "sgd (gradient descent = Euler on the gradient flow)",
    "loss": "dpo",
    "lr": "h / beta^2",
    "run_length": "ceil(1.2 * max escape_time / lr) steps",
}
SWEEP = {
    "toy": {"betas": [1.0, 2.0], "kappas": [-1.0, -3.0], "h": 0.05, "records": 60, "rows_per_cell": 30},
    "paper": {
        "betas": [0.5, 1.0, 2.0],
        "kappas": [-0.5, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0],
        "h": 0.01,
        "records": 4000,
        "rows_per_cell": 120,
    },
}
TABLES = {
    "escape_times": (
        "beta",
        "kappa",
        "delta_ref",
        "lr",
        "escape_time_closed",
        "escape_time_sim",
        "rel_error",
        "no_vanishing_time",
        "slowdown",
        "entry_weight",
        "exit_weight",
        "exit_over_entry",
    ),
    "weight_trajectories": (
        "beta",
        "kappa",
        "step",
        "time",
        "time_over_T",
        "delta_policy",
        "weight",
        "weight_over_beta",
        "in_U",
    ),
}


def single_pair_batch(betas: np.ndarray, delta_refs: np.ndarray) -> BanditBatch:
    """One instance per (β, δ_ref): one context, responses (y_w, y_l) with log π_ref =
    log_softmax(±δ_ref/2)."""
    B = len(betas)
    logits = np.stack([delta_refs / 2, -delta_refs / 2], axis=-1)[:, None, :]
    log_ref = batched_log_softmax(logits)
    pairs = np.tile(np.array([[[0, 0, 1]]]), (B, 1, 1))
    return BanditBatch(log_ref, np.zeros_like(log_ref), pairs, betas, None)


def compute(sweep: dict[str, Any], progress: Progress = no_progress) -> dict[str, Rows]:
    """Simulate every (β, κ) cell in one batch; compare escape times with the closed form."""
    grid = [(b, k) for b in sweep["betas"] for k in sweep["kappas"]]
    betas = np.array([g[0] for g in grid], dtype=np.float64)
    kappas = np.array([g[1] for g in grid], dtype=np.float64)
    batch = single_pair_batch(betas, kappas / betas)
    dref = batch.delta_ref()[:, 0]  # exactly the pair's δ_ref as the trainer sees it
    lr = sweep["h"] / betas**2
    t_closed = np.array([float(escape_time(d, b)) for d, b in zip(dref, betas, strict=True)])
    steps = int(math.ceil(1.2 * np.max(t_closed / lr)))
    record_every = max(1, steps // sweep["records"])
    progress(f"{len(grid)} cells, {steps} gradient steps")
    traj = train(batch, LossConfig("dpo"), steps, optimizer="sgd", lr=lr, record_every=record_every, record_deltas=True)
    t_sim = gradient_flow_time(traj, batch.n_pairs)[:, 0]
    esc: Rows = []
    traj_rows: Rows = []
    for i, (beta, kappa) in enumerate(grid):
        entry = float(dpo_gradient_weight(dref[i], dref[i], beta))
        exit_w = float(exit_gradient_weight(dref[i], beta))
        no_vanish = abs(dref[i]) / beta  # time to cross U at the entry speed du/dt = 2·(β/2)
        esc.append(
            {
                "beta": float(beta),
                "kappa": float(kappa),
                "delta_ref": float(dref[i]),
                "lr": float(lr[i]),
                "escape_time_closed": float(t_closed[i]),
                "escape_time_sim": float(t_sim[i]),
                "rel_error": float((t_sim[i] - t_closed[i]) / t_closed[i]),
                "no_vanishing_time": no_vanish,
                "slowdown": float(t_closed[i] / no_vanish),
                "entry_weight": entry,
                "exit_weight": exit_w,
                "exit_over_entry": exit_w / entry,
            }
        )
        d = traj.deltas[:, i, 0]
        w = np.asarray(dpo_gradient_weight(d, dref[i], beta))
        inside = np.asarray(in_undesirable_space(d, dref[i]))
        times = traj.steps * float(lr[i])
        keep = np.flatnonzero(times <= 1.1 * t_closed[i])
        keep = keep[np.unique(np.linspace(0, len(keep) - 1, sweep["rows_per_cell"]).round().astype(int))]
        for r in keep.tolist():
            step = int(traj.steps[r])
            time = float(times[r])
            traj_rows.append(
                {
                    "beta": float(beta),
                    "kappa": float(kappa),
                    "step": int(step),
                    "time": time,
                    "time_over_T": time / t_closed[i],
                    "delta_policy": float(d[r]),
                    "weight": float(w[r]),
                    "weight_over_beta": float(w[r] / beta),
                    "in_U": bool(inside[r]),
                }
            )
    return {"escape_times": esc, "weight_trajectories": traj_rows}


def figure(tables: dict[str, Rows]) -> Any:
    """The matplotlib Figure: weight/β along trajectories; simulated vs closed-form escape time; exit/entry
    weight and slow-down against β·|δ_ref|. Every legend sits below its panel, off the data."""
    plt = pyplot()
    esc = tables["escape_times"]
    tr = tables["weight_trajectories"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), layout="constrained")
    cmap = plt.get_cmap("plasma")
    kappas = sorted(unique(tr, "kappa"), reverse=True)
    beta0 = unique(tr, "beta")[len(unique(tr, "beta")) // 2]
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "fontsize": 8, "frameon": False}
    ax = axes[0]
    for i, k in enumerate(kappas):
        rows = select(tr, beta=beta0, kappa=k)
        ax.plot(
            column(rows, "time_over_T"),
            column(rows, "weight_over_beta"),
            color=cmap(i / max(1, len(kappas) - 1)),
            label=f"β·δ_ref = {k:g}",
        )
    ax.axvline(1.0, color="k", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("time / closed-form escape time T")
    ax.set_ylabel("DPO gradient weight / β")
    ax.set_title(f"β = {beta0:g}: weight falls from 1/2 to σ(β·δ_ref) at the exit (t = T)")
    ax.legend(ncol=4, **below)
    ax = axes[1]
    for b in unique(esc, "beta"):
        rows = select(esc, beta=b)
        ax.plot(column(rows, "escape_time_closed"), column(rows, "escape_time_sim"), "o", ms=4, label=f"β = {b:g}")
    lo = min(column(esc, "escape_time_closed").min(), column(esc, "escape_time_sim").min())
    hi = max(column(esc, "escape_time_closed").max(), column(esc, "escape_time_sim").max())
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.6, label="y = x (agreement)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("closed-form escape time T")
    ax.set_ylabel("simulated escape time (gradient descent)")
    ax.set_title("escape time from U: simulation vs closed form")
    ax.legend(ncol=4, **below)
    ax = axes[2]
    rows = sorted(select(esc, beta=unique(esc, "beta")[0]), key=lambda r: r["kappa"])
    k = column(rows, "kappa")
    ax.plot(-k, column(rows, "exit_over_entry"), "o-", label="exit / entry weight = 2σ(β·δ_ref)")
    ax.plot(-k, column(rows, "slowdown"), "s-", label="T / (|δ_ref|/β)  (slow-down vs no vanishing)")
    ax.set_yscale("log")
    ax.set_xlabel("β·|δ_ref|")
    ax.set_ylabel("ratio (log scale)")
    ax.set_title("relative vanishing grows like e^(β·|δ_ref|)")
    ax.legend(ncol=1, **below)
    fig.suptitle(TITLE)
    return fig


def plot(tables: dict[str, Rows], path: Path) -> Path:
    """Draw :func:`figure` from the tables and save it."""
    return save_figure(figure(tables), path)


def headlines(tables: dict[str, Rows]) -> Rows:
    """Escape-time agreement and the size of the vanishing at the largest β·|δ_ref|."""
    esc = tables["escape_times"]
    err = np.abs(column(esc, "rel_error"))
    worst = min(esc, key=lambda r: r["kappa"])
    setting = "1 context, 2 responses, one pair, gradient descent with lr = h/β²"
    return [
        headline(
            "C4",
            setting,
            "max relative error of simulated vs closed-form escape time",
            float(err.max()),
            f"Simulated escape times from U match T = (|δ_ref| + (e^(β|δ_ref|) − 1)/β)/(2β) within "
            f"{fmt(100 * float(err.max()))} % over {len(esc)} (β, β·δ_ref) cells (h = lr·β² = "
            f"{fmt(esc[0]['lr'] * esc[0]['beta'] ** 2)}).",
        ),
        headline(
            "C4",
            f"{setting}; β = {worst['beta']:g}, β·δ_ref = {worst['kappa']:g}",
            "exit/entry gradient weight and slow-down",
            {
                "exit / entry gradient weight": worst["exit_over_entry"],
                "slow-down T / (|δ_ref|/β)": worst["slowdown"],
            },
            f"At β·δ_ref = {worst['kappa']:g} the DPO gradient weight at the exit of U is "
            f"{fmt(100 * worst['exit_over_entry'])} % of its entry value β/2 (never 0: vanishing is "
            f"relative), and "
            f"escaping takes {fmt(worst['slowdown'])}× as long as at constant entry speed.",
        ),
    ]
