"""E1 — violation map (toy Fig. 1; C1, C2): how often Assumption 3.1 fails, over β and reference
misalignment.

Setting (:func:`dpocheck.sims.gaussian_batch`): r*(x, y) ~ N(0, s²); reference logits κ((1 − 2ρ)·r*/s +
ν·ε); every pair of distinct responses, y_w the one with the higher true reward (so Δr* > 0). A pair
violates C2 iff β·δ_ref + Δr* ≤ 0 (dpocheck.theory.violation_mask).

Closed form [ours]: δ_ref = κ(1 − 2ρ)·Δr*/s + κν·(ε_w − ε_l), so β·δ_ref + Δr* = (1 + βκ(1 − 2ρ)/s)·|U|
+ βκν·V with U ~ N(0, 2s²), V ~ N(0, 2) independent. For independent centred normals, P(c·|U| + d·V ≤ 0)
= θ/π with θ = atan2(|d|·σ_V, c·σ_U), hence violation share = atan2(βκν, s + βκ(1 − 2ρ)) / π. Monte
Carlo on sampled bandits must agree within its standard error (the pairs of a context are dependent, so
we use the between-instance standard error).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._plot import pyplot, save_figure
from dpocheck.sims import gaussian_batch
from dpocheck.theory import delta_opt, violation_mask

from .common import (
    Progress,
    Rows,
    column,
    fmt,
    headline,
    no_progress,
    pct,
    select,
    unique,
)

NAME = "e1_violation_map"
TITLE = "Violation map: share of pairs where π* prefers y_l (C2)"
CLAIMS = ("C1", "C2")
SETTING = {
    "model": "r* ~ N(0, s^2); reference logits kappa*((1-2*rho)*r*/s + nu*eps); all pairs, y_w = higher r*",
    "n_contexts": 4,
    "n_responses": 5,
    "ref_scale_kappa": 2.0,
    "noise_nu": 0.5,
    "reward_scale_s": 1.0,
    "seed": 0,
}
SWEEP = {
    "toy": {
        "betas": [0.1, 1.0, 10.0],
        "misalignments": [0.0, 0.5, 1.0],
        "n_instances": 60,
        "histograms": [{"beta": 1.0, "misalignment": 0.5}, {"beta": 1.0, "misalignment": 0.75}],
        "histogram_instances": 100,
        "bins": 20,
    },
    "paper": {
        "betas": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0],
        "misalignments": [0.0, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0],
        "n_instances": 2000,
        "histograms": [
            {"beta": 0.1, "misalignment": 0.5},
            {"beta": 1.0, "misalignment": 0.5},
            {"beta": 1.0, "misalignment": 0.75},
        ],
        "histogram_instances": 5000,
        "bins": 60,
    },
}
TABLES = {
    "violation_map": (
        "beta",
        "misalignment",
        "closed_form",
        "monte_carlo",
        "monte_carlo_se",
        "z_score",
        "n_pairs",
    ),
    "delta_opt_histogram": (
        "beta",
        "misalignment",
        "bin_left",
        "bin_right",
        "count",
        "violated_bin",
        "share_violated",
        "n_pairs",
    ),
}


def violation_share_closed_form(
    beta: float, misalignment: float, ref_scale: float, noise: float, reward_scale: float = 1.0
) -> float:
    """Expected share of pairs violating C2 in the Gaussian setting (module docstring):
    atan2(βκν, s + βκ(1 − 2ρ)) / π."""
    return math.atan2(beta * ref_scale * noise, reward_scale + beta * ref_scale * (1 - 2 * misalignment)) / math.pi


def _sample(beta: float, rho: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    s = SETTING
    batch = gaussian_batch(
        n,
        s["n_contexts"],
        s["n_responses"],
        beta,
        seed=seed,
        misalignment=rho,
        ref_scale=s["ref_scale_kappa"],
        noise=s["noise_nu"],
        reward_scale=s["reward_scale_s"],
    )
    return batch.delta_ref(), batch.delta_reward()


def compute(sweep: dict[str, Any], progress: Progress = no_progress) -> dict[str, Rows]:
    """Closed form and Monte Carlo violation shares over the (β, ρ) grid, and δ_{π*} histograms."""
    s = SETTING
    rows: Rows = []
    n = sweep["n_instances"]
    for j, rho in enumerate(sweep["misalignments"]):
        # one sample of bandits per ρ; β only enters the check, so every β sees the same bandits
        dref, dr = _sample(1.0, rho, n, s["seed"] + j)
        for beta in sweep["betas"]:
            viol = violation_mask(dref, dr, beta)
            per_instance = viol.mean(axis=1)
            mc = float(per_instance.mean())
            se = float(per_instance.std(ddof=1) / math.sqrt(n))
            cf = violation_share_closed_form(beta, rho, s["ref_scale_kappa"], s["noise_nu"], s["reward_scale_s"])
            rows.append(
                {
                    "beta": float(beta),
                    "misalignment": float(rho),
                    "closed_form": cf,
                    "monte_carlo": mc,
                    "monte_carlo_se": se,
                    "z_score": (mc - cf) / se if se > 0 else (0.0 if mc == cf else math.inf),
                    "n_pairs": int(viol.size),
                }
            )
        progress(f"ρ = {rho:g}: {len(sweep['betas'])} β values")
    hist: Rows = []
    for k, h in enumerate(sweep["histograms"]):
        dref, dr = _sample(h["beta"], h["misalignment"], sweep["histogram_instances"], s["seed"] + 1000 + k)
        d_opt = np.asarray(delta_opt(dref, dr, h["beta"])).ravel()
        share = float(np.mean(np.asarray(violation_mask(dref, dr, h["beta"]))))
        half = float(np.quantile(np.abs(d_opt), 0.995))
        nb = sweep["bins"] // 2
        edges = np.linspace(-half, half, 2 * nb + 1)  # 0 is an edge: bins are wholly violated or not
        counts, _ = np.histogram(np.clip(d_opt, -half, half), bins=edges)
        for i in range(len(counts)):
            hist.append(
                {
                    "beta": float(h["beta"]),
                    "misalignment": float(h["misalignment"]),
                    "bin_left": float(edges[i]),
                    "bin_right": float(edges[i + 1]),
                    "count": int(counts[i]),
                    "violated_bin": bool(edges[i + 1] <= 0),
                    "share_violated": share,
                    "n_pairs": int(d_opt.size),
                }
            )
    progress("histograms of δ_π*")
    return {"violation_map": rows, "delta_opt_histogram": hist}


def figure(tables: dict[str, Rows]) -> Any:
    """The matplotlib Figure. Left: violation share against β per ρ (closed-form lines, Monte Carlo points ± 2
    s.e.); right: histograms of δ_π*, violated bins in red, with one legend below them."""
    plt = pyplot()
    vmap = tables["violation_map"]
    hist = tables["delta_opt_histogram"]
    panels = [(h["beta"], h["misalignment"]) for h in _unique_pairs(hist)]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(4.4 * (1 + len(panels)), 4.2), layout="constrained")
    ax = axes[0]
    cmap = plt.get_cmap("viridis")
    rhos = unique(vmap, "misalignment")
    for i, rho in enumerate(rhos):
        rows = sorted(select(vmap, misalignment=rho), key=lambda r: r["beta"])
        color = cmap(i / max(1, len(rhos) - 1))
        b = column(rows, "beta")
        ax.plot(b, column(rows, "closed_form"), color=color, label=f"ρ = {rho:g}")
        ax.errorbar(
            b,
            column(rows, "monte_carlo"),
            yerr=2 * column(rows, "monte_carlo_se"),
            fmt="o",
            ms=3,
            color=color,
        )
    ax.set_xscale("log")
    ax.set_xlabel("β")
    ax.set_ylabel("share of pairs violating C2")
    ax.set_title("closed form (lines) vs Monte Carlo (points ± 2 s.e.)")
    ax.legend(fontsize=8, title="misalignment", title_fontsize=8, loc="upper left")
    bars = {}
    for ax, (beta, rho) in zip(axes[1:], panels, strict=True):
        rows = select(hist, beta=beta, misalignment=rho)
        left = column(rows, "bin_left")
        width = column(rows, "bin_right") - left
        counts = column(rows, "count")
        viol = np.array([bool(r["violated_bin"]) for r in rows])
        bars["not violated (δ_π* > 0)"] = ax.bar(
            left[~viol], counts[~viol], width=width[~viol], align="edge", color="tab:gray"
        )
        bars["violated (δ_π* ≤ 0): π* prefers y_l"] = ax.bar(
            left[viol], counts[viol], width=width[viol], align="edge", color="tab:red"
        )
        ax.axvline(0.0, color="k", lw=0.8)
        share = rows[0]["share_violated"]
        ax.set_title(f"β = {beta:g}, ρ = {rho:g}: {pct(share)} violated")
        ax.set_xlabel("δ_π* = δ_ref + Δr*/β (end bins hold the tails)")
        ax.set_ylabel(f"number of pairs (of {rows[0]['n_pairs']})")
    if bars:
        fig.legend(list(bars.values()), list(bars), loc="outside lower right", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(TITLE)
    return fig


def plot(tables: dict[str, Rows], path: Path) -> Path:
    """Draw :func:`figure` from the tables and save it."""
    return save_figure(figure(tables), path)


def _unique_pairs(hist: Rows) -> Rows:
    seen: Rows = []
    for r in hist:
        key = {"beta": r["beta"], "misalignment": r["misalignment"]}
        if key not in seen:
            seen.append(key)
    return seen


def headlines(tables: dict[str, Rows]) -> Rows:
    """Agreement of Monte Carlo with the closed form, monotonicity in β, and the histogram shares."""
    vmap = tables["violation_map"]
    z = np.abs(column(vmap, "z_score"))
    gap = np.abs(column(vmap, "monte_carlo") - column(vmap, "closed_form"))
    monotone = all(
        np.all(np.diff(column(sorted(select(vmap, misalignment=r), key=lambda x: x["beta"]), "closed_form")) >= 0)
        for r in unique(vmap, "misalignment")
    )
    setting = f"Gaussian bandits κ={SETTING['ref_scale_kappa']}, ν={SETTING['noise_nu']}, all pairs by true reward"
    out = [
        headline(
            "C2",
            setting,
            "max |Monte Carlo − closed form|",
            float(gap.max()),
            f"Monte Carlo violation shares match the closed form atan2(βκν, s + βκ(1−2ρ))/π within "
            f"{fmt(float(gap.max()))} (max |z| = {fmt(float(z.max()))} over {len(vmap)} (β, ρ) cells).",
        ),
        headline(
            "C2",
            setting,
            "violation share increases with β at every ρ",
            bool(monotone),
            f"Larger β makes violation more frequent at every misalignment ρ: {fmt(bool(monotone))}.",
        ),
    ]
    for h in _unique_pairs(tables["delta_opt_histogram"]):
        rows = select(tables["delta_opt_histogram"], **h)
        out.append(
            headline(
                "C1/C2",
                f"{setting}; β = {h['beta']:g}, ρ = {h['misalignment']:g}",
                "share of pairs with δ_π* ≤ 0",
                rows[0]["share_violated"],
                f"At β = {h['beta']:g}, ρ = {h['misalignment']:g}, π* prefers y_l on "
                f"{pct(rows[0]['share_violated'])} of {rows[0]['n_pairs']} pairs.",
            )
        )
    return out
