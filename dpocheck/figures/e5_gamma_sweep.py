"""E5 — γ sweep (toy Table 5; C8, Thm 4.9, Eq. 27): share of pairs aligned (δ > 0) against γ/γ*.

Setting: Gaussian bandits (:func:`dpocheck.sims.gaussian_batch`, ρ = 0.75, β = 1) with one pair per
context (:func:`dpocheck.sims.one_pair_per_context`), so each pair's δ_θ is a free coordinate of the
tabular policy and the per-pair formulas apply without coupling. γ* is each instance's Eq. 27 value
(dpocheck.theory.gamma_star) and γ = (γ/γ*)·γ* per instance. The paper's Thm 4.9 says γ > γ* avoids U.
We measure the share aligned under five readings of "at convergence":

- paper_formula: the paper's stationary point δ_ref + (Δr* + m)/β
  (dpocheck.theory.cpo_paper_stationary_delta); the threshold holds by construction of γ*.
- bt_population_closed_form: the minimiser of the two-sided Bradley–Terry population loss of the CPO
  margin loss (q = σ(Δr*) labels y_w the winner, 1 − q labels y_l; the margin is symmetric), from
  dpocheck.theory.population_stationary_delta.
- bt_population_trained: gradient descent on that population loss (soft labels) until converged; must
  agree with the closed form (the table reports the largest difference).
- exact_objective: the exact interior stationary point of the CPO objective E_π[r*] − β·KL + γ·Σ_D δ_π
  (dpocheck.theory.cpo_objective_stationary_policy, weighting "sum": one pair per context makes its
  first-order condition exactly the paper's with 1/π_γ in place of 1/π_ref); contexts without an
  interior stationary point (the objective is unbounded for γ > 0) are reported as `share_exists` and
  excluded from `share_aligned`.
- hard_labels_budget: the CPO margin loss on hard labels (each pair once, y_w ≻ y_l) after a fixed step
  budget; this loss has no finite minimiser, so "convergence" is replaced by the budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._plot import pyplot, save_figure
from dpocheck.sims import LossConfig, gaussian_batch, one_pair_per_context, train
from dpocheck.theory import (
    cpo_objective_stationary_policy,
    cpo_paper_stationary_delta,
    gamma_star,
    population_stationary_delta,
)

from .common import (
    Progress,
    Rows,
    column,
    fmt,
    headline,
    mean_se,
    no_progress,
    pct,
    select,
    unique,
)

NAME = "e5_gamma_sweep"
TITLE = "γ sweep: share of pairs aligned against γ/γ* (C8, Thm 4.9)"
CLAIMS = ("C8",)
SETTING = {
    "bandit": "gaussian_batch(misalignment=0.75, ref_scale=2, noise=0.5), one pair per context",
    "beta": 1.0,
    "n_responses": 5,
    "seed": 0,
    "population_training": "sgd lr 2.0 on the soft-label (q = sigma(delta_reward)) loss, mean over pairs",
    "hard_label_training": "sgd lr 2.0, hard labels",
}
READINGS = (
    "paper_formula",
    "bt_population_closed_form",
    "bt_population_trained",
    "exact_objective",
    "hard_labels_budget",
)
SWEEP = {
    "toy": {
        "ratios": [0.0, 0.5, 1.1, 2.0],
        "n_instances": 4,
        "n_contexts": 4,
        "population_steps": 600,
        "budget_steps": 100,
    },
    "paper": {
        "ratios": [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.01, 1.1, 1.5, 2.0, 4.0],
        "n_instances": 40,
        "n_contexts": 8,
        "population_steps": 3000,
        "budget_steps": 500,
    },
}
TABLES = {
    "gamma_sweep": (
        "gamma_ratio",
        "reading",
        "share_aligned",
        "share_aligned_se",
        "share_exists",
        "n_pairs",
        "violation_share",
        "max_abs_diff_vs_closed_form",
        "share_within_1e-3_of_closed_form",
    ),
    "gamma_star": ("instance", "gamma_star", "violation_share"),
}


def _setting(sweep: dict[str, Any]):  # noqa: ANN202 (BanditBatch)
    s = SETTING
    base = gaussian_batch(
        sweep["n_instances"],
        sweep["n_contexts"],
        s["n_responses"],
        s["beta"],
        seed=s["seed"],
        misalignment=0.75,
    )
    return one_pair_per_context(base, seed=s["seed"] + 1)


def compute(sweep: dict[str, Any], progress: Progress = no_progress) -> dict[str, Rows]:
    """Share aligned per (γ/γ*, reading)."""
    batch = _setting(sweep)
    beta = SETTING["beta"]
    dref = batch.delta_ref()
    dr = batch.delta_reward()
    lw, ll = batch.log_pi_ref_pairs()
    B = batch.n_instances
    viol = (beta * dref + dr <= 0).mean(axis=1)
    gstar = np.array([gamma_star(dref[i], dr[i], beta, lw[i], ll[i]) for i in range(B)])
    inv = np.exp(-lw) + np.exp(-ll)  # 1/π_ref(y_w) + 1/π_ref(y_l), finite for these small bandits
    pop_batch = batch.with_bt_population_labels()
    rows: Rows = []
    for ratio in sweep["ratios"]:
        gamma = ratio * gstar
        m = gamma[:, None] * inv
        base = {"gamma_ratio": float(ratio), "n_pairs": int(dref.size), "violation_share": float(viol.mean())}

        def add(
            reading: str,
            aligned: np.ndarray,
            exists: float = 1.0,
            diff: Any = None,
            base: dict[str, Any] = base,
        ) -> None:
            mean, se = mean_se(aligned)
            rows.append(
                {
                    **base,
                    "reading": reading,
                    "share_aligned": mean,
                    "share_aligned_se": se,
                    "share_exists": exists,
                    "max_abs_diff_vs_closed_form": float("nan") if diff is None else float(np.max(diff)),
                    "share_within_1e-3_of_closed_form": float("nan") if diff is None else float(np.mean(diff < 1e-3)),
                }
            )

        add("paper_formula", (cpo_paper_stationary_delta(dref, dr, beta, m) > 0).mean(axis=1))
        pop = population_stationary_delta("cpo_margin", dref, dr, beta, margin=m)
        add("bt_population_closed_form", (pop > 0).mean(axis=1))
        cfg = LossConfig("cpo_margin", gamma=gamma)
        traj = train(
            pop_batch,
            cfg,
            sweep["population_steps"],
            optimizer="sgd",
            lr=2.0,
            record_every=sweep["population_steps"],
        )
        d = traj.final_delta(pop_batch)
        add("bt_population_trained", (d > 0).mean(axis=1), diff=np.abs(d - pop))
        aligned, exists = [], []
        for i in range(B):
            try:
                sol = cpo_objective_stationary_policy(batch.instance(i), float(gamma[i]), weighting="sum")
            except ArithmeticError:  # reported to the lead: float edge in the theory solver; counted as no point
                exists.append(0.0)
                continue
            ok = sol.exists[batch.pairs[i, :, 0]]
            exists.append(float(ok.mean()))
            if ok.any():
                delta = (
                    sol.log_pi[batch.pairs[i, :, 0], batch.pairs[i, :, 1]]
                    - sol.log_pi[batch.pairs[i, :, 0], batch.pairs[i, :, 2]]
                )
                aligned.append(float((delta[ok] > 0).mean()))
        add("exact_objective", np.array(aligned), exists=float(np.mean(exists)))
        traj = train(batch, cfg, sweep["budget_steps"], optimizer="sgd", lr=2.0, record_every=sweep["budget_steps"])
        add("hard_labels_budget", (traj.final_delta(batch) > 0).mean(axis=1))
        progress(f"γ/γ* = {ratio:g}")
    gs_rows = [{"instance": i, "gamma_star": float(gstar[i]), "violation_share": float(viol[i])} for i in range(B)]
    return {"gamma_sweep": rows, "gamma_star": gs_rows}


#: What each reading is, in words (legend and report labels).
READING_LABELS = {
    "paper_formula": "paper's formula δ_ref + (Δr* + m)/β",
    "bt_population_closed_form": "BT population optimum, closed form",
    "bt_population_trained": "BT population optimum, trained by gradient descent",
    "exact_objective": "exact CPO objective (1/π_γ), where an interior point exists",
    "hard_labels_budget": "hard labels, fixed step budget",
}
# Line styles: the trained population optimum coincides with the closed form, so the closed form is a wide pale
# band drawn first and the trained run a thin dashed line with crosses drawn on top of it — both stay visible.
_STYLES = {
    "paper_formula": {"color": "tab:blue", "marker": "o", "ls": "-", "lw": 1.5, "zorder": 3},
    "bt_population_closed_form": {
        "color": "tab:orange",
        "marker": None,
        "ls": "-",
        "lw": 7,
        "alpha": 0.45,
        "zorder": 2,
    },
    "bt_population_trained": {"color": "tab:green", "marker": "x", "ms": 7, "ls": "--", "lw": 1.5, "zorder": 4},
    "exact_objective": {"color": "tab:red", "marker": "^", "ls": "-", "lw": 1.5, "zorder": 3},
    "hard_labels_budget": {"color": "tab:purple", "marker": "v", "ls": ":", "lw": 1.5, "zorder": 3},
}


def figure(tables: dict[str, Rows]) -> Any:
    """The matplotlib Figure: share aligned against γ/γ* per reading, with the Thm 4.9 threshold γ/γ* = 1, and
    where the exact objective has an interior stationary point."""
    plt = pyplot()
    t = tables["gamma_sweep"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained", width_ratios=(1.4, 1))
    ax = axes[0]
    for reading in sorted(unique(t, "reading"), key=lambda r: _STYLES.get(r, {}).get("zorder", 3)):
        rows = sorted(select(t, reading=reading), key=lambda r: r["gamma_ratio"])
        style = {"ms": 5, **_STYLES.get(reading, {"marker": "o"})}
        ax.errorbar(
            column(rows, "gamma_ratio"),
            column(rows, "share_aligned"),
            yerr=2 * np.nan_to_num(column(rows, "share_aligned_se")),
            capsize=2,
            elinewidth=0.8,
            label=READING_LABELS.get(reading, reading),
            **style,
        )
    ax.axvline(1.0, color="k", lw=0.8, ls=":", label="Thm 4.9 threshold γ = γ*")
    ax.set_xlabel("γ / γ*  (per instance)")
    ax.set_ylabel("share of pairs with δ > 0 (± 2 s.e.)")
    ax.set_title("share of pairs aligned, per reading of “at convergence”")
    ax = axes[1]
    rows = sorted(select(t, reading="exact_objective"), key=lambda r: r["gamma_ratio"])
    ax.plot(column(rows, "gamma_ratio"), column(rows, "share_exists"), "^-", color="tab:red")
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("γ / γ*  (per instance)")
    ax.set_ylabel("share of contexts")
    ax.set_title("exact CPO objective: an interior stationary point exists")
    by_label = dict(zip(*reversed(axes[0].get_legend_handles_labels()), strict=True))
    order = [READING_LABELS.get(r, r) for r in READINGS] + [
        lab for lab in by_label if lab not in READING_LABELS.values()
    ]
    labels = [lab for lab in order if lab in by_label]
    fig.legend([by_label[lab] for lab in labels], labels, loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(TITLE)
    return fig


def plot(tables: dict[str, Rows], path: Path) -> Path:
    """Draw :func:`figure` from the tables and save it."""
    return save_figure(figure(tables), path)


def headlines(tables: dict[str, Rows]) -> Rows:
    """Share aligned just above γ* per reading, and where the interior stationary point disappears."""
    t = tables["gamma_sweep"]
    above = [r for r in unique(t, "gamma_ratio") if r > 1.0]
    r1 = min(above) if above else max(unique(t, "gamma_ratio"))
    at = {r["reading"]: r for r in select(t, gamma_ratio=r1)}
    zero = {r["reading"]: r for r in select(t, gamma_ratio=0.0)}
    setting = (
        f"{SETTING['bandit']}, β = {SETTING['beta']}, violation share "
        f"{pct(t[0]['violation_share'])}; γ = ratio·γ* per instance"
    )
    trained = select(t, reading="bt_population_trained")
    diff = np.nanmax(column(trained, "max_abs_diff_vs_closed_form"))
    conv = np.nanmin(column(trained, "share_within_1e-3_of_closed_form"))
    same_share = max(
        abs(a["share_aligned"] - b["share_aligned"])
        for a, b in zip(trained, select(t, reading="bt_population_closed_form"), strict=True)
    )
    parts = ", ".join(f"{READING_LABELS.get(k, k)} {pct(v['share_aligned'])}" for k, v in at.items())
    out = [
        headline(
            "C8/Thm 4.9",
            setting,
            f"share aligned at γ/γ* = {r1:g}",
            {READING_LABELS.get(k, k): v["share_aligned"] for k, v in at.items()},
            f"At γ = {r1:g}·γ* the share of pairs with δ > 0 is: {parts} (at γ = 0, i.e. DPO: "
            f"{pct(zero.get('paper_formula', {}).get('share_aligned', float('nan')))}). Thm 4.9's "
            f"threshold is exact "
            f"only in the paper-formula reading.",
        ),
        headline(
            "C8",
            setting,
            "share of contexts with an interior stationary point (exact objective)",
            {f"at {fmt(r['gamma_ratio'])}·γ*": r["share_exists"] for r in select(t, reading="exact_objective")},
            f"The exact CPO objective has an interior stationary point on "
            f"{pct(at['exact_objective']['share_exists'])} "
            f"of contexts at γ = {r1:g}·γ* (vs {pct(zero['exact_objective']['share_exists'])} at γ = 0): "
            f"beyond γ* the "
            f"objective's stationary point often does not exist (it is unbounded above).",
        )
        if "exact_objective" in at and "exact_objective" in zero
        else headline("C8", setting, "exact objective", None, "exact objective not computed"),
        headline(
            "C8/C5a",
            setting,
            "trained vs closed-form population stationary δ",
            {
                "largest |trained δ − closed-form δ|": float(diff),
                "smallest share of pairs within 1e-3": float(conv),
                "largest difference of the aligned shares": same_share,
            },
            f"Gradient descent on the soft-label population loss reaches the closed-form stationary δ of "
            f"dpocheck.theory.population_stationary_delta within 1e-3 on ≥ {pct(float(conv))} of pairs at "
            f"every γ "
            f"(largest gap {fmt(float(diff))}: where q ≈ 1/2 and m is large the loss is nearly flat and "
            f"descent is "
            f"slow); the aligned shares differ by at most {fmt(same_share)}.",
        ),
    ]
    return out
