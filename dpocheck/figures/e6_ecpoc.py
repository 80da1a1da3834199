"""E6 — E-CPOC against CPO and DPO (C5a, C8, C9): constraint satisfaction, true reward and KL at
convergence.

The paper has no experiment on E-CPOC (maximise E_π[r*] − β·KL(π‖π_ref) subject to δ_π ≥ ε on every
pair); this is the first. Setting: the E2 construction (dpocheck.sims.misaligned_reference_batch, R =
0.3, T = 1), β = 1, all pairs of each context. Methods, each evaluated for every ε of the sweep:

- rlhf_optimum: π* (dpocheck.theory.rlhf_optimal_log_policy, C1).
- dpo_population: gradient descent on DPO's Bradley–Terry population loss (soft labels q = σ(Δr*)); by
  C5a its minimiser is π* (the table reports max |δ − δ_π*|).
- cpo_margin_population: the same for the CPO margin loss (γ fixed).
- dpo_hard / cpo_margin_hard / released_clip_hard: hard labels (each pair once, y_w ≻ y_l) after a step
  budget — the practical setting; these losses have no finite minimiser.
- ecpoc: the exact E-CPOC optimum (dpocheck.theory.ecpoc_solve) for that ε.

Metrics (mean over instances ± s.e.): share of pairs with δ ≥ ε (constraint satisfaction, tolerance
1e-9), share with δ > 0 (strict: with ε = 0 E-CPOC's active pairs sit at δ = 0 and are not counted),
expected true reward, KL(π‖π_ref) and the RLHF objective E[r*] − β·KL (all means over contexts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._plot import pyplot, save_figure
from dpocheck.sims import (
    LossConfig,
    ecpoc_log_policy,
    gather_pairs,
    kl_divergence,
    misaligned_reference_batch,
    rlhf_optimum_log_policy,
    train,
)
from dpocheck.theory import get_loss

from .common import (
    LOSS_COLORS,
    LOSS_LABELS,
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

NAME = "e6_ecpoc"
TITLE = "E-CPOC vs CPO vs DPO at convergence (C5a, C8, C9)"
CLAIMS = ("C5", "C8", "C9")
SETTING = {
    "construction": "misaligned_reference_batch(R=0.3, T=1), 4 contexts x 6 responses, all pairs",
    "flip_rate": 0.3,
    "beta": 1.0,
    "cpo_gamma": get_loss("cpo_margin").defaults["gamma"],
    "population_training": "sgd lr 20, soft labels q = sigma(delta_reward), mean over pairs",
    "hard_training": "sgd lr 1, hard labels, mean over pairs",
    "seed": 0,
}
SWEEP = {
    "toy": {"epsilons": [0.0, 0.5], "n_instances": 3, "population_steps": 300, "hard_steps": 100},
    "paper": {"epsilons": [0.0, 0.5, 1.0], "n_instances": 24, "population_steps": 2000, "hard_steps": 1000},
}
METHODS = (
    "rlhf_optimum",
    "dpo_population",
    "cpo_margin_population",
    "dpo_hard",
    "cpo_margin_hard",
    "released_clip_hard",
    "ecpoc",
)
_HOW = {"_population": "population optimum", "_hard": "hard labels, step budget"}


def method_label(method: str) -> str:
    """A method of the table in words: the loss registry's label plus how it was run (e.g. 'DPO, hard labels,
    step budget')."""
    for suffix, how in _HOW.items():
        if method.endswith(suffix):
            base = method[: -len(suffix)]
            return f"{LOSS_LABELS.get(base, base)}, {how}"
    return LOSS_LABELS.get(method, method)


TABLES = {
    "methods": (
        "method",
        "epsilon",
        "constraint_satisfied",
        "constraint_satisfied_se",
        "aligned",
        "aligned_se",
        "expected_reward",
        "expected_reward_se",
        "kl",
        "kl_se",
        "objective",
        "objective_se",
        "all_constraints_share",
        "n_instances",
    ),
    "checks": ("check", "value", "meaning"),
}


def compute(sweep: dict[str, Any], progress: Progress = no_progress) -> dict[str, Rows]:
    """Final policies of every method, then their metrics per ε."""
    s = SETTING
    beta = s["beta"]
    mr = misaligned_reference_batch(sweep["n_instances"], 4, 6, s["flip_rate"], beta, seed=s["seed"])
    batch = mr.batch
    pop = batch.with_bt_population_labels()
    policies: dict[str, np.ndarray] = {"rlhf_optimum": rlhf_optimum_log_policy(batch)}
    for name, cfg in (
        ("dpo", LossConfig("dpo")),
        ("cpo_margin", LossConfig("cpo_margin", gamma=s["cpo_gamma"])),
    ):
        steps = sweep["population_steps"]
        policies[f"{name}_population"] = train(pop, cfg, steps, optimizer="sgd", lr=20.0, record_every=steps).log_pi
    progress("population-trained policies")
    for name, cfg in (
        ("dpo", LossConfig("dpo")),
        ("cpo_margin", LossConfig("cpo_margin", gamma=s["cpo_gamma"])),
        ("released_clip", LossConfig("released_clip")),
    ):
        steps = sweep["hard_steps"]
        policies[f"{name}_hard"] = train(batch, cfg, steps, optimizer="sgd", lr=1.0, record_every=steps).log_pi
    progress("hard-label policies")

    def delta(log_pi: np.ndarray) -> np.ndarray:
        lw, ll = gather_pairs(log_pi, batch.pairs)
        return lw - ll

    d_opt = delta(policies["rlhf_optimum"])
    checks: Rows = [
        {
            "check": "dpo_population_vs_rlhf_optimum_max_abs_delta",
            "value": float(np.max(np.abs(delta(policies["dpo_population"]) - d_opt))),
            "meaning": "C5a: DPO's BT population minimiser is π* (max |δ_DPO − δ_π*| over pairs)",
        },
        {
            "check": "violation_share",
            "value": float((d_opt <= 0).mean()),
            "meaning": "C2: share of pairs where π* prefers y_l (δ_π* ≤ 0)",
        },
    ]
    rows: Rows = []
    for eps in sweep["epsilons"]:
        log_pi_e, feasible = ecpoc_log_policy(batch, eps)
        checks.append(
            {
                "check": f"ecpoc_feasible_share_eps_{eps:g}",
                "value": float(np.mean(feasible)),
                "meaning": f"C9: share of instances whose exact E-CPOC solution satisfies every δ ≥ {eps:g}",
            }
        )
        for method in METHODS:
            log_pi = log_pi_e if method == "ecpoc" else policies[method]
            d = delta(log_pi)
            kl = kl_divergence(log_pi, batch.log_pi_ref)
            reward = np.sum(np.exp(log_pi) * batch.reward, axis=-1).mean(axis=-1)
            sat = (d >= eps - 1e-9).mean(axis=1)
            row: dict[str, Any] = {"method": method, "epsilon": float(eps), "n_instances": batch.n_instances}
            for key, vals in (
                ("constraint_satisfied", sat),
                ("aligned", (d > 0).mean(axis=1)),
                ("expected_reward", reward),
                ("kl", kl),
                ("objective", reward - beta * kl),
            ):
                row[key], row[f"{key}_se"] = mean_se(vals)
            row["all_constraints_share"] = float(np.mean(sat == 1.0))
            rows.append(row)
        progress(f"ε = {eps:g}")
    return {"methods": rows, "checks": checks}


def figure(tables: dict[str, Rows]) -> Any:
    """The matplotlib Figure: grouped bars per ε — constraint satisfaction, true reward, KL, objective — with
    one legend naming each method in words."""
    plt = pyplot()
    t = tables["methods"]
    eps_values = unique(t, "epsilon")
    methods = unique(t, "method")
    metrics = [
        ("constraint_satisfied", "share of pairs with δ ≥ ε"),
        ("expected_reward", "true reward E_π[r*]"),
        ("kl", "KL(π‖π_ref)"),
        ("objective", "RLHF objective E[r*] − β·KL"),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 4.6), layout="constrained")
    width = 0.8 / len(methods)
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for j, m in enumerate(methods):
            rows = sorted(select(t, method=m), key=lambda r: r["epsilon"])
            x = np.array([eps_values.index(r["epsilon"]) for r in rows]) + (j - (len(methods) - 1) / 2) * width
            base = m.replace("_population", "").replace("_hard", "")
            ax.bar(
                x,
                column(rows, metric),
                width=width,
                yerr=2 * np.nan_to_num(column(rows, f"{metric}_se")),
                color=LOSS_COLORS.get(base, "gray"),
                hatch="//" if m.endswith("_hard") else None,
                edgecolor="white" if m.endswith("_hard") else None,
                error_kw={"elinewidth": 0.8},
                label=method_label(m),
            )
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_xticks(np.arange(len(eps_values)))
        ax.set_xticklabels([f"ε = {e:g}" for e in eps_values])
        ax.set_xlabel("constraint level ε")
        ax.set_ylabel(label)
        ax.set_title(label)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(f"{TITLE} — mean over instances ± 2 s.e.; hatched: hard labels after a step budget")
    return fig


def plot(tables: dict[str, Rows], path: Path) -> Path:
    """Draw :func:`figure` from the tables and save it."""
    return save_figure(figure(tables), path)


def headlines(tables: dict[str, Rows]) -> Rows:
    """Constraint satisfaction and reward/KL of E-CPOC against DPO and CPO at ε = 0; the C5a check."""
    t = tables["methods"]
    checks = {r["check"]: r for r in tables["checks"]}
    e0 = min(unique(t, "epsilon"))
    at = {r["method"]: r for r in select(t, epsilon=e0)}
    setting = f"{SETTING['construction']}, β = {SETTING['beta']}, CPO γ = {SETTING['cpo_gamma']}, ε = {e0:g}"
    parts = "; ".join(
        f"{method_label(m)}: {pct(r['constraint_satisfied'])} satisfied, reward {fmt(r['expected_reward'])}, "
        f"KL {fmt(r['kl'])}"
        for m, r in at.items()
    )
    return [
        headline(
            "C9",
            setting,
            "constraint satisfaction, reward and KL per method",
            {
                method_label(m): {
                    f"share with δ ≥ {e0:g}": r["constraint_satisfied"],
                    "true reward": r["expected_reward"],
                    "KL": r["kl"],
                }
                for m, r in at.items()
            },
            f"E-CPOC satisfies δ ≥ {e0:g} on {pct(at['ecpoc']['constraint_satisfied'])} of pairs (π*: "
            f"{pct(at['rlhf_optimum']['constraint_satisfied'])}) at RLHF objective "
            f"{fmt(at['ecpoc']['objective'])} vs "
            f"π*'s {fmt(at['rlhf_optimum']['objective'])}. All methods — {parts}.",
        ),
        headline(
            "C5a",
            setting,
            "max |δ_DPO-population − δ_π*|",
            checks["dpo_population_vs_rlhf_optimum_max_abs_delta"]["value"],
            f"DPO trained on the Bradley–Terry population reproduces π* (max |δ − δ_π*| = "
            f"{fmt(checks['dpo_population_vs_rlhf_optimum_max_abs_delta']['value'])}), including its "
            f"{pct(checks['violation_share']['value'])} of pairs where π* prefers y_l (C2).",
        ),
    ]
