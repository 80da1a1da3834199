"""E7 — the paper's CPO margin against the released code's `easy` margin (C8, C10): targets and outcomes.

In a tabular bandit every response has one token, so the per-token mean log-prob ℓ̄_ref(y) of the released
code is log π_ref(y) and 1/π̄_ref = 1/π_ref. The paper's margin m = γ(1/π_ref(y_w) + 1/π_ref(y_l)) > 0
raises the target of the logistic loss above δ_ref; the released `easy` margin a = γ(1/ℓ̄_ref(y_w) +
1/ℓ̄_ref(y_l)) < 0 lowers it. Effective targets (where the sigmoid's argument is 0) come from
dpocheck.theory.effective_target. Setting: the E2 construction (R = 0.3, T = 1), two configurations: the
released defaults (β = 0.1, γ = 0.5) and the released demo config (β = 2.5, γ = 0.05). Outcomes: training
with hard labels for a budget (what practice does) and the two-sided Bradley–Terry population stationary
point of each loss on free pairs (dpocheck.theory.population_stationary_delta).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._plot import pyplot, save_figure
from dpocheck.sims import LossConfig, misaligned_reference_batch, train
from dpocheck.theory import (
    RELEASED_DEFAULTS,
    RELEASED_DEMO,
    effective_target,
    get_loss,
    log_cpo_margin,
    population_stationary_delta,
)

from .common import (
    LOSS_COLORS,
    LOSS_LABELS,
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

NAME = "e7_easy_margin"
TITLE = "Paper's CPO margin vs the released `easy` margin: effective targets and outcomes (C8, C10)"
CLAIMS = ("C8", "C10")
SETTING = {
    "construction": "misaligned_reference_batch(R=0.3, T=1), 4 contexts x 6 responses, all pairs",
    "flip_rate": 0.3,
    "mean_logp_convention": "per-token mean = log pi_ref (one-token responses)",
    "hard_training": "sgd lr 1, hard labels, mean over pairs",
    "seed": 0,
}
CONFIGS = [
    {"label": "released defaults", "beta": RELEASED_DEFAULTS["beta"], "gamma": RELEASED_DEFAULTS["gamma"]},
    {"label": "released demo config", "beta": RELEASED_DEMO["beta"], "gamma": RELEASED_DEMO["gamma"]},
]
LOSSES = ("dpo", "cpo_margin", "released_easy", "released_clip", "released_adaptive")
SWEEP = {
    "toy": {"configs": CONFIGS, "losses": list(LOSSES), "n_instances": 3, "hard_steps": 60},
    "paper": {"configs": CONFIGS, "losses": list(LOSSES), "n_instances": 24, "hard_steps": 1000},
}
TABLES = {
    "targets": (
        "config",
        "beta",
        "gamma",
        "loss_name",
        "instance",
        "pair",
        "delta_ref",
        "target",
        "target_minus_delta_ref",
    ),
    "outcomes": (
        "config",
        "beta",
        "gamma",
        "loss_name",
        "share_target_positive",
        "share_target_below_delta_ref",
        "mean_target_minus_delta_ref",
        "hard_frac_in_U",
        "hard_pref_acc",
        "hard_expected_reward",
        "hard_kl",
        "population_share_aligned",
    ),
}


def _params(loss: str, gamma: float, lw: np.ndarray, ll: np.ndarray) -> dict[str, Any]:
    if loss == "cpo_margin":
        return {"log_margin": log_cpo_margin(lw, ll, gamma)}
    if loss == "released_easy":
        return {"mean_logp_ref_w": lw, "mean_logp_ref_l": ll, "gamma": gamma}
    if loss == "released_adaptive":
        return {**get_loss("released_adaptive").defaults, "gamma": gamma}
    return {}


def compute(sweep: dict[str, Any], progress: Progress = no_progress) -> dict[str, Rows]:
    """Effective targets per pair and the outcome of training with each loss, per configuration."""
    s = SETTING
    mr = misaligned_reference_batch(sweep["n_instances"], 4, 6, s["flip_rate"], 1.0, seed=s["seed"])
    targets: Rows = []
    outcomes: Rows = []
    for cfg in sweep["configs"]:
        beta, gamma = cfg["beta"], cfg["gamma"]
        batch = mr.batch.with_beta(beta)
        dref = batch.delta_ref()
        dr = batch.delta_reward()
        lw, ll = batch.log_pi_ref_pairs()
        for loss in sweep["losses"]:
            params = _params(loss, gamma, lw, ll)
            target = np.asarray(effective_target(loss, dref, beta, **params))
            for b in range(batch.n_instances):
                for i in range(batch.n_pairs):
                    targets.append(
                        {
                            "config": cfg["label"],
                            "beta": beta,
                            "gamma": gamma,
                            "loss_name": loss,
                            "instance": b,
                            "pair": i,
                            "delta_ref": float(dref[b, i]),
                            "target": float(target[b, i]),
                            "target_minus_delta_ref": float(target[b, i] - dref[b, i]),
                        }
                    )
            lc = LossConfig(loss, gamma=gamma if "gamma" in get_loss(loss).params else None)
            traj = train(batch, lc, sweep["hard_steps"], optimizer="sgd", lr=1.0, record_every=sweep["hard_steps"])
            pop = population_stationary_delta(loss, dref, dr, beta, **params)
            outcomes.append(
                {
                    "config": cfg["label"],
                    "beta": beta,
                    "gamma": gamma,
                    "loss_name": loss,
                    "share_target_positive": float((target > 0).mean()),
                    # relative tolerance 1e-12: rounding in β·max(δ_ref, 0)/β must not count as "below"
                    "share_target_below_delta_ref": float(
                        (target < dref - 1e-12 * np.maximum(1.0, np.abs(dref))).mean()
                    ),
                    "mean_target_minus_delta_ref": float((target - dref).mean()),
                    "hard_frac_in_U": float(traj.final("frac_in_U").mean()),
                    "hard_pref_acc": float(traj.final("pref_acc").mean()),
                    "hard_expected_reward": float(traj.final("expected_reward").mean()),
                    "hard_kl": float(traj.final("kl").mean()),
                    "population_share_aligned": float((np.asarray(pop) > 0).mean()),
                }
            )
        progress(f"{cfg['label']} (β = {beta:g}, γ = {gamma:g})")
    return {"targets": targets, "outcomes": outcomes}


def figure(tables: dict[str, Rows]) -> Any:
    """The matplotlib Figure: per configuration, the effective target against δ_ref per loss; then the share in U
    after hard-label training, each bar labelled with its value; one legend for the losses."""
    plt = pyplot()
    tg = tables["targets"]
    out = tables["outcomes"]
    configs = unique(tg, "config")
    losses = unique(tg, "loss_name")
    fig, axes = plt.subplots(1, len(configs) + 1, figsize=(5.0 * (len(configs) + 1), 4.6), layout="constrained")
    for ax, cfg in zip(axes, configs, strict=False):
        rows = select(tg, config=cfg)
        for loss in losses:
            r = select(rows, loss_name=loss)
            ax.plot(column(r, "delta_ref"), column(r, "target"), ".", ms=2.5, color=LOSS_COLORS.get(loss))
        lim = np.nanpercentile(np.abs(column(rows, "delta_ref")), 99)
        ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.5)
        ax.axhline(0, color="gray", lw=0.5)
        ax.axvline(0, color="gray", lw=0.5)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlim(-lim, lim)
        ax.set_xlabel("δ_ref (axis ends at the 99th percentile of |δ_ref|)")
        ax.set_ylabel("effective target δ_θ (symlog)")
        ax.set_title(f"{cfg} (β = {rows[0]['beta']:g}, γ = {rows[0]['gamma']:g})")
    ax = axes[-1]
    width = 0.8 / len(losses)
    for j, loss in enumerate(losses):
        rows = select(out, loss_name=loss)
        x = np.array([configs.index(r["config"]) for r in rows]) + (j - (len(losses) - 1) / 2) * width
        bars = ax.bar(x, column(rows, "hard_frac_in_U"), width=width, color=LOSS_COLORS.get(loss))
        ax.bar_label(bars, labels=[pct(r["hard_frac_in_U"]) for r in rows], fontsize=7, rotation=90, padding=2)
    ax.margins(y=0.25)
    ax.set_xticks(np.arange(len(configs)))
    ax.set_xticklabels(configs)
    ax.set_xlabel("configuration of the released code")
    ax.set_ylabel("share of pairs in U")
    ax.set_title("share of pairs in U after hard-label training")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="s", ms=8, color=LOSS_COLORS.get(loss)) for loss in losses]
    handles.append(Line2D([], [], color="k", lw=0.5))
    labels = [LOSS_LABELS.get(loss, loss) for loss in losses] + ["target = δ_ref (no margin)"]
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(TITLE)
    return fig


def plot(tables: dict[str, Rows], path: Path) -> Path:
    """Draw :func:`figure` from the tables and save it."""
    return save_figure(figure(tables), path)


def headlines(tables: dict[str, Rows]) -> Rows:
    """Sign of the easy margin and where each loss leaves the policy."""
    out = tables["outcomes"]
    rows = []
    for cfg in unique(out, "config"):
        by = {r["loss_name"]: r for r in select(out, config=cfg)}
        if "released_easy" not in by or "cpo_margin" not in by:
            continue
        e, c, d = by["released_easy"], by["cpo_margin"], by.get("dpo")
        setting = f"{SETTING['construction']}; {cfg} β = {e['beta']:g}, γ = {e['gamma']:g}; one-token responses"
        rows.append(
            headline(
                "C10",
                setting,
                "easy vs paper margin: share of targets below δ_ref; final share in U",
                {
                    LOSS_LABELS["released_easy"]: {
                        "share of targets below δ_ref": e["share_target_below_delta_ref"],
                        "final share in U": e["hard_frac_in_U"],
                    },
                    LOSS_LABELS["cpo_margin"]: {
                        "share of targets below δ_ref": c["share_target_below_delta_ref"],
                        "final share in U": c["hard_frac_in_U"],
                    },
                    **({LOSS_LABELS["dpo"]: {"final share in U": d["hard_frac_in_U"]}} if d else {}),
                },
                f"{cfg} (β = {e['beta']:g}, γ = {e['gamma']:g}): the released `easy` target lies below "
                f"δ_ref on "
                f"{pct(e['share_target_below_delta_ref'])} of pairs (mean shift "
                f"{fmt(e['mean_target_minus_delta_ref'])}), "
                f"the paper's margin above it on {pct(1 - c['share_target_below_delta_ref'])} (mean shift "
                f"{fmt(c['mean_target_minus_delta_ref'])}). After the hard-label step budget the share in "
                f"U is "
                f"easy {pct(e['hard_frac_in_U'])}, paper margin {pct(c['hard_frac_in_U'])}"
                + (f", DPO {pct(d['hard_frac_in_U'])}" if d else "")
                + f"; population stationary points aligned: easy {pct(e['population_share_aligned'])}, "
                f"paper margin "
                f"{pct(c['population_share_aligned'])}.",
            )
        )
    return rows
