"""E4 — soft-margin ranking (C7, Prop. 5.1): ℓ_DPO/β against the hinge max(0, δ_ref − δ_θ).

Setting: a grid of policy margins δ_θ for a reference that prefers y_l (δ_ref < 0, so the hinge's target
is negative: DPO is satisfied inside U as β → ∞) and one that prefers y_w. For finite β, 0 ≤ ℓ_DPO/β −
max(0, δ_ref − δ_θ) ≤ (log 2)/β, with equality at δ_θ = δ_ref. Every number comes from dpocheck.theory
(dpo_loss, hinge_loss, soft_margin_gap); this experiment only tabulates and plots them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._plot import pyplot, save_figure
from dpocheck.theory import dpo_loss, hinge_loss, soft_margin_gap

from .common import Progress, Rows, column, fmt, headline, no_progress, select, unique

NAME = "e4_soft_margin"
TITLE = "Soft-margin ranking: ℓ_DPO/β → hinge max(0, δ_ref − δ_θ) with a (log 2)/β band (C7)"
CLAIMS = ("C7",)
SETTING = {"quantity": "loss/beta and hinge over a grid of delta_policy", "grid": "uniform"}
SWEEP = {
    "toy": {"betas": [0.5, 5.0], "delta_refs": [-1.0], "delta_min": -4.0, "delta_max": 3.0, "n_grid": 29},
    "paper": {
        "betas": [0.25, 0.5, 1.0, 2.0, 5.0, 20.0],
        "delta_refs": [-1.0, 1.0],
        "delta_min": -5.0,
        "delta_max": 4.0,
        "n_grid": 361,
    },
}
TABLES = {
    "soft_margin": (
        "beta",
        "delta_ref",
        "delta_policy",
        "loss_over_beta",
        "hinge",
        "gap",
        "bound",
        "gap_over_bound",
    )
}


def compute(sweep: dict[str, Any], progress: Progress = no_progress) -> dict[str, Rows]:
    """ℓ/β, hinge, their gap and the (log 2)/β bound on the grid, per (β, δ_ref)."""
    grid = np.linspace(sweep["delta_min"], sweep["delta_max"], sweep["n_grid"])
    rows: Rows = []
    for dref in sweep["delta_refs"]:
        grid_d = np.union1d(grid, [dref])  # include δ_θ = δ_ref, where the gap equals the bound
        for beta in sweep["betas"]:
            lossb = np.asarray(dpo_loss(grid_d, dref, beta).loss) / beta
            hinge = np.asarray(hinge_loss(grid_d, dref).loss)
            gap = np.asarray(soft_margin_gap(grid_d, dref, beta))
            bound = math.log(2.0) / beta
            for d, lb, h, g in zip(grid_d, lossb, hinge, gap, strict=True):
                rows.append(
                    {
                        "beta": float(beta),
                        "delta_ref": float(dref),
                        "delta_policy": float(d),
                        "loss_over_beta": float(lb),
                        "hinge": float(h),
                        "gap": float(g),
                        "bound": bound,
                        "gap_over_bound": float(g / bound),
                    }
                )
        progress(f"δ_ref = {dref:g}: {len(sweep['betas'])} β values")
    return {"soft_margin": rows}


def figure(tables: dict[str, Rows]) -> Any:
    """The matplotlib Figure: one panel per δ_ref with ℓ/β curves per β over the hinge and the [hinge, hinge +
    (log 2)/β] band shaded, then the gap relative to the band; one legend for the whole figure."""
    plt = pyplot()
    t = tables["soft_margin"]
    drefs = unique(t, "delta_ref")
    fig, axes = plt.subplots(
        1, len(drefs) + 1, figsize=(4.8 * (len(drefs) + 1), 4.4), squeeze=False, layout="constrained"
    )
    axes = axes[0]
    cmap = plt.get_cmap("viridis")
    betas = unique(t, "beta")
    for ax, dref in zip(axes, drefs, strict=False):
        for i, beta in enumerate(betas):
            rows = sorted(select(t, beta=beta, delta_ref=dref), key=lambda r: r["delta_policy"])
            x = column(rows, "delta_policy")
            h = column(rows, "hinge")
            color = cmap(i / max(1, len(betas) - 1))
            ax.fill_between(x, h, h + column(rows, "bound"), color=color, alpha=0.12)
            ax.plot(x, column(rows, "loss_over_beta"), color=color, label=f"β = {beta:g}")
        ax.plot(x, h, "k--", lw=1.0, zorder=5, label="hinge max(0, δ_ref − δ_θ)")
        ax.axvline(dref, color="gray", lw=0.6, ls=":", label="δ_θ = δ_ref")
        ax.axvline(0.0, color="gray", lw=0.6, label="δ_θ = 0")
        ax.set_xlabel("δ_θ")
        ax.set_ylabel("ℓ_DPO / β")
        ax.set_title(f"δ_ref = {dref:g}" + (" (target inside U)" if dref < 0 else ""))
    ax = axes[-1]
    for i, beta in enumerate(betas):
        rows = sorted(select(t, beta=beta, delta_ref=drefs[0]), key=lambda r: r["delta_policy"])
        ax.plot(column(rows, "delta_policy"), column(rows, "gap_over_bound"), color=cmap(i / max(1, len(betas) - 1)))
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xlabel("δ_θ")
    ax.set_ylabel("(ℓ/β − hinge) / ((log 2)/β)")
    ax.set_title(f"gap within the band (δ_ref = {drefs[0]:g}; 1 = the bound)")
    from matplotlib.patches import Patch

    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Patch(color="gray", alpha=0.25))
    labels.append("band [hinge, hinge + (log 2)/β] (colour = β)")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=9, frameon=False)
    fig.suptitle(TITLE)
    return fig


def plot(tables: dict[str, Rows], path: Path) -> Path:
    """Draw :func:`figure` from the tables and save it."""
    return save_figure(figure(tables), path)


def headlines(tables: dict[str, Rows]) -> Rows:
    """The bound holds on the whole grid and is attained at δ_θ = δ_ref."""
    t = tables["soft_margin"]
    ratio = column(t, "gap_over_bound")
    gap = column(t, "gap")
    at_ref = [r for r in t if r["delta_policy"] == r["delta_ref"]]
    attained = max(abs(r["gap_over_bound"] - 1.0) for r in at_ref) if at_ref else math.nan
    betas = unique(t, "beta")
    return [
        headline(
            "C7",
            f"δ_θ grid, β ∈ {{{', '.join(fmt(b) for b in betas)}}}, δ_ref ∈ "
            f"{{{', '.join(fmt(d) for d in unique(t, 'delta_ref'))}}}",
            "min gap, max gap/bound",
            {"min gap ℓ_DPO/β − hinge": float(gap.min()), "max gap / ((log 2)/β)": float(ratio.max())},
            f"0 ≤ ℓ_DPO/β − hinge ≤ (log 2)/β on all {len(t)} grid points up to float64 rounding (min gap "
            f"{fmt(float(gap.min()))}, "
            f"max gap/bound {fmt(float(ratio.max()), 6)}); at δ_θ = δ_ref the gap equals (log 2)/β to "
            f"{fmt(attained)}.",
        )
    ]
