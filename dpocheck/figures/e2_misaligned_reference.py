"""E2 — misaligned reference (toy Fig. 2; C3, C4, C8, C10): share of training pairs in U over training.

Setting: :func:`dpocheck.sims.misaligned_reference_batch` — the reference is an early-stopped
Bradley–Terry fit (200 gradient steps, step size 5, from uniform) to preference labels of which a
fraction R is flipped, sharpened by a temperature T (π_ref ∝ exp(z/T); T = 0.1 gives |δ_ref| of tens of
nats, like an LLM's sequence log-probs). Every R uses the same rewards and random keys, so the flipped
sets are nested (common random numbers). The policy is then trained from π_ref on the clean labels (all
pairs, y_w = higher true reward, hard labels) with the mean loss over pairs. We compare DPO, the paper's
CPO margin loss (γ fixed, m = γ(1/π_ref(y_w) + 1/π_ref(y_l))), and the released code's `clip` and
adaptive softplus branches, under gradient descent and Adam, for two β.

The paper reports that DPO stays near 25 % of pairs in U while CPO falls below 5 %. We test that pattern
in every (β, optimizer, R) cell: it "holds" where DPO's final share in U is ≥ 15 % and at least half of
its peak (stuck near a quarter) and CPO's final share is < 5 %.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._plot import pyplot, save_figure
from dpocheck.sims import (
    LossConfig,
    misaligned_reference_batch,
    policy_metrics,
    rlhf_optimum_log_policy,
    train,
)
from dpocheck.sims.tables import trajectory_rows
from dpocheck.theory import get_loss, violation_mask

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

NAME = "e2_misaligned_reference"
TITLE = "Misaligned reference: share of training pairs in U over training (C3, C8, C10)"
CLAIMS = ("C3", "C4", "C8", "C10")
SETTING = {
    "construction": "dpocheck.sims.reference (module docstring): BT fit to labels with share R flipped",
    "n_contexts": 4,
    "n_responses": 6,
    "reward_scale": 1.0,
    "fit_steps": 200,
    "fit_lr": 5.0,
    "rewards": "same seed for every R (nested flipped sets)",
    "labels": "clean (reward order), hard",
    "loss_reduction": "mean over pairs",
    "seed": 0,
}
LOSSES = [  # at the loss registry's defaults
    {"name": "dpo"},
    {"name": "cpo_margin", **get_loss("cpo_margin").defaults},
    {"name": "released_clip"},
    {"name": "released_adaptive", **get_loss("released_adaptive").defaults},
]
SWEEP = {
    "toy": {
        "flip_rates": [0.0, 0.3],
        "temperatures": [0.1],
        "betas": [1.0],
        "optimizers": [{"name": "sgd", "lr": 1.0}],
        "losses": LOSSES,
        "n_instances": 6,
        "steps": 60,
        "record_every": 10,
    },
    "paper": {
        "flip_rates": [0.0, 0.2, 0.3, 0.4],
        "temperatures": [1.0, 0.1],
        "betas": [0.1, 1.0],
        "optimizers": [{"name": "sgd", "lr": 1.0}, {"name": "adam", "lr": 0.01}],
        "losses": LOSSES,
        "n_instances": 48,
        "steps": 1000,
        "record_every": 20,
    },
}
KEYS = ("loss_name", "loss_label", "ref_temperature", "beta", "optimizer", "lr", "flip_rate")
METRICS = ("frac_in_U", "pref_acc", "reward_acc", "dpo_grad_weight", "kl", "expected_reward", "p_w", "loss")
TABLES = {
    "u_share": (*KEYS, "step", "n_instances", *[c for m in METRICS for c in (m, f"{m}_se")]),
    "final": (
        *KEYS,
        "steps",
        "n_instances",
        "frac_in_U",
        "frac_in_U_se",
        "peak_frac_in_U",
        "pref_acc",
        "pref_acc_se",
        "expected_reward",
        "expected_reward_se",
        "kl",
        "realised_flip_rate",
        "share_delta_ref_negative",
        "violation_share",
        "rlhf_optimum_reward",
        "reference_reward",
    ),
    "pattern": (
        "ref_temperature",
        "beta",
        "optimizer",
        "flip_rate",
        "dpo_final_U",
        "dpo_peak_U",
        "cpo_final_U",
        "dpo_stuck_near_quarter",
        "cpo_below_5pct",
        "pattern_holds",
    ),
}


def _loss_config(spec: dict[str, Any]) -> LossConfig:
    return LossConfig(**spec)


def compute(sweep: dict[str, Any], progress: Progress = no_progress) -> dict[str, Rows]:
    """Train every (R, β, optimizer, loss) cell on the same seeded instances per R; tidy tables."""
    s = SETTING
    u_rows: Rows = []
    final_rows: Rows = []
    pattern_rows: Rows = []
    for T, R in [(T, R) for T in sweep["temperatures"] for R in sweep["flip_rates"]]:
        mr = misaligned_reference_batch(
            sweep["n_instances"],
            s["n_contexts"],
            s["n_responses"],
            R,
            1.0,
            seed=s["seed"],
            reward_scale=s["reward_scale"],
            fit_steps=s["fit_steps"],
            fit_lr=s["fit_lr"],
            temperature=T,
        )
        for beta in sweep["betas"]:
            batch = mr.batch.with_beta(beta)
            dref = batch.delta_ref()
            viol = np.asarray(violation_mask(dref, batch.delta_reward(), beta)).mean()
            opt_reward = policy_metrics(batch, rlhf_optimum_log_policy(batch))["expected_reward"].mean()
            ref_reward = policy_metrics(batch, batch.log_pi_ref)["expected_reward"].mean()
            for opt in sweep["optimizers"]:
                finals: dict[str, tuple[float, float]] = {}
                for spec in sweep["losses"]:
                    cfg = _loss_config(spec)
                    traj = train(
                        batch,
                        cfg,
                        sweep["steps"],
                        optimizer=opt["name"],
                        lr=opt["lr"],
                        record_every=sweep["record_every"],
                    )
                    keys = {
                        "loss_name": cfg.name,
                        "loss_label": cfg.describe(),
                        "ref_temperature": float(T),
                        "beta": float(beta),
                        "optimizer": opt["name"],
                        "lr": float(opt["lr"]),
                        "flip_rate": float(R),
                    }
                    u_rows.extend(trajectory_rows(traj, keys, metrics=METRICS))
                    u_mean = traj.metrics["frac_in_U"].mean(axis=1)
                    fu, fu_se = mean_se(traj.final("frac_in_U"))
                    acc, acc_se = mean_se(traj.final("pref_acc"))
                    rew, rew_se = mean_se(traj.final("expected_reward"))
                    final_rows.append(
                        {
                            **keys,
                            "steps": int(sweep["steps"]),
                            "n_instances": batch.n_instances,
                            "frac_in_U": fu,
                            "frac_in_U_se": fu_se,
                            "peak_frac_in_U": float(u_mean.max()),
                            "pref_acc": acc,
                            "pref_acc_se": acc_se,
                            "expected_reward": rew,
                            "expected_reward_se": rew_se,
                            "kl": float(traj.final("kl").mean()),
                            "realised_flip_rate": float(mr.realised_flip_rate.mean()),
                            "share_delta_ref_negative": float((dref < 0).mean()),
                            "violation_share": float(viol),
                            "rlhf_optimum_reward": float(opt_reward),
                            "reference_reward": float(ref_reward),
                        }
                    )
                    finals[cfg.name] = (fu, float(u_mean.max()))
                dpo_final, dpo_peak = finals.get("dpo", (np.nan, np.nan))
                cpo_final = finals.get("cpo_margin", (np.nan, np.nan))[0]
                stuck = bool(dpo_final >= 0.15 and dpo_final >= 0.5 * dpo_peak)
                below = bool(cpo_final < 0.05)
                pattern_rows.append(
                    {
                        "ref_temperature": float(T),
                        "beta": float(beta),
                        "optimizer": opt["name"],
                        "flip_rate": float(R),
                        "dpo_final_U": dpo_final,
                        "dpo_peak_U": dpo_peak,
                        "cpo_final_U": cpo_final,
                        "dpo_stuck_near_quarter": stuck,
                        "cpo_below_5pct": below,
                        "pattern_holds": stuck and below,
                    }
                )
                progress(f"T = {T:g}, R = {R:g}, β = {beta:g}, {opt['name']}: {len(sweep['losses'])} losses")
    return {"u_share": u_rows, "final": final_rows, "pattern": pattern_rows}


def _combos(rows: Rows) -> list[tuple[float, float, str]]:
    out: list[tuple[float, float, str]] = []
    for r in rows:
        c = (r["ref_temperature"], r["beta"], r["optimizer"])
        if c not in out:
            out.append(c)
    return out


_FLIP_STYLES = ["-", "--", "-.", ":", (0, (1, 1))]
_COLUMNS = (  # (what each column of panels shows, its y-label)
    ("share of training pairs in U over steps", "share of pairs in U"),
    ("final preference accuracy against R", "preference accuracy\n(share with δ_θ > 0)"),
    ("final true reward against R", "true reward E_π[r*]"),
)


def _setting_title(T: float, beta: float, opt: str, lr: float) -> str:
    return f"T = {T:g}, β = {beta:g}, {opt} (lr {lr:g})"


def figure(tables: dict[str, Rows]) -> Any:
    """The matplotlib Figure: one row of panels per (T, β, optimizer) setting — share in U over steps per loss
    (colour) and flip rate R (line style), final accuracy and final true reward against R — with one legend for
    the whole figure, every panel titled by its setting and every axis labelled."""
    plt = pyplot()
    u = tables["u_share"]
    final = tables["final"]
    combos = _combos(u)
    flip_rates = unique(u, "flip_rate")
    losses = unique(u, "loss_name")
    fig, axes = plt.subplots(
        len(combos), 3, figsize=(14, 2.6 * len(combos) + 1.6), squeeze=False, sharex="col", layout="constrained"
    )
    for i, (T, beta, opt) in enumerate(combos):
        ax_u, ax_acc, ax_r = axes[i]
        where = {"ref_temperature": T, "beta": beta, "optimizer": opt}
        lr = select(final, **where)[0]["lr"]
        for loss in losses:
            for j, R in enumerate(flip_rates):
                rows = sorted(select(u, **where, loss_name=loss, flip_rate=R), key=lambda r: r["step"])
                if rows:
                    ax_u.plot(
                        column(rows, "step"),
                        column(rows, "frac_in_U"),
                        ls=_FLIP_STYLES[j % len(_FLIP_STYLES)],
                        lw=1.2,
                        color=LOSS_COLORS.get(loss),
                    )
            rows = sorted(select(final, **where, loss_name=loss), key=lambda r: r["flip_rate"])
            for ax, name in ((ax_acc, "pref_acc"), (ax_r, "expected_reward")):
                ax.errorbar(
                    column(rows, "flip_rate"),
                    column(rows, name),
                    yerr=2 * column(rows, f"{name}_se"),
                    marker="o",
                    ms=3,
                    capsize=2,
                    color=LOSS_COLORS.get(loss),
                )
        rows = sorted(select(final, **where, loss_name="dpo"), key=lambda r: r["flip_rate"])
        if rows:
            ax_r.plot(column(rows, "flip_rate"), column(rows, "rlhf_optimum_reward"), "k--", lw=1)
            ax_r.plot(column(rows, "flip_rate"), column(rows, "reference_reward"), "k:", lw=1)
        ax_u.axhline(0.25, color="gray", lw=0.8)
        ax_u.axhline(0.05, color="gray", lw=0.8, ls=":")
        ax_u.set_ylim(bottom=0)
        for ax, (_, ylabel) in zip(axes[i], _COLUMNS, strict=True):
            ax.set_title(_setting_title(T, beta, opt, lr), fontsize=9)
            ax.set_ylabel(ylabel)
    for ax, xlabel in zip(
        axes[-1], ("training step", "flip rate R of the reference's labels", "flip rate R"), strict=True
    ):
        ax.set_xlabel(xlabel)
    fig.legend(*_legend_entries(losses, flip_rates), loc="outside lower center", ncol=4, fontsize=10, frameon=False)
    fig.suptitle(
        f"{TITLE}\ncolumns: " + "; ".join(c for c, _ in _COLUMNS) + ". T: reference temperature, R: share of the "
        "reference's labels flipped; error bars ± 2 s.e.",
        fontsize=11,
    )
    return fig


def _legend_entries(losses: list[str], flip_rates: list[float]) -> tuple[list[Any], list[str]]:
    """Proxy artists for the one figure legend: colour = loss, line style = R, black/gray = reference lines."""
    from matplotlib.lines import Line2D

    handles: list[Any] = [Line2D([], [], color=LOSS_COLORS.get(loss), lw=2.5) for loss in losses]
    labels = [LOSS_LABELS.get(loss, loss) for loss in losses]
    for j, R in enumerate(flip_rates):
        handles.append(Line2D([], [], color="dimgray", ls=_FLIP_STYLES[j % len(_FLIP_STYLES)], lw=1.5))
        labels.append(f"flip rate R = {R:g} (left column)")
    handles += [
        Line2D([], [], color="gray", lw=0.8),
        Line2D([], [], color="gray", lw=0.8, ls=":"),
        Line2D([], [], color="k", ls="--", lw=1),
        Line2D([], [], color="k", ls=":", lw=1),
    ]
    labels += ["25 % in U (paper's DPO level)", "5 % in U (paper's CPO level)", "RLHF optimum π*", "reference π_ref"]
    return handles, labels


def plot(tables: dict[str, Rows], path: Path) -> Path:
    """Draw :func:`figure` from the tables and save it."""
    return save_figure(figure(tables), path)


def headlines(tables: dict[str, Rows]) -> Rows:
    """The E2 pattern verdict per setting and the DPO-vs-CPO U shares at the largest R."""
    pattern = tables["pattern"]
    final = tables["final"]
    positive = [r for r in pattern if r["flip_rate"] > 0]
    holds = [r for r in positive if r["pattern_holds"]]
    stuck = [r for r in positive if r["dpo_stuck_near_quarter"]]
    below = [r for r in positive if r["cpo_below_5pct"]]

    def cell(r: dict[str, Any]) -> str:
        return f"T={r['ref_temperature']:g}/β={r['beta']:g}/{r['optimizer']}/R={r['flip_rate']:g}"

    steps = final[0]["steps"] if final else 0
    setting = (
        f"E2 toy: {SETTING['n_contexts']}×{SETTING['n_responses']} bandits, reference BT-fit to labels "
        f"with R "
        f"flipped at temperature T, {steps} steps, mean loss over pairs, CPO margin γ = {LOSSES[1]['gamma']:g}"
    )
    out = [
        headline(
            "E2/C3",
            setting,
            "settings where the paper's pattern holds",
            f"{len(holds)}/{len(positive)}",
            f"Paper's pattern (DPO stuck near 25 % in U, CPO margin < 5 %) holds in {len(holds)} of "
            f"{len(positive)} (T, β, optimizer, R > 0) settings: "
            f"{', '.join(cell(r) for r in holds) or 'none'}. "
            f"DPO stays ≥ 15 % and ≥ half its peak in {len(stuck)} settings; CPO ends below 5 % in "
            f"{len(below)}.",
        )
    ]
    r_max = max(unique(pattern, "flip_rate"))
    for r in pattern:
        if r["flip_rate"] != r_max:
            continue
        out.append(
            headline(
                "E2/C3/C8",
                f"{setting}; {cell(r)}",
                "final share in U: DPO vs CPO margin",
                {
                    f"{LOSS_LABELS['dpo']}, final share in U": r["dpo_final_U"],
                    f"{LOSS_LABELS['dpo']}, peak share in U": r["dpo_peak_U"],
                    f"{LOSS_LABELS['cpo_margin']}, final share in U": r["cpo_final_U"],
                },
                f"{cell(r)}: share in U after {steps} steps DPO {pct(r['dpo_final_U'])} "
                f"(peak {pct(r['dpo_peak_U'])}), CPO margin {pct(r['cpo_final_U'])}"
                f" → pattern {'holds' if r['pattern_holds'] else 'does not hold'}.",
            )
        )
    for T, beta, opt in _combos(final):
        rows = sorted(
            select(final, ref_temperature=T, beta=beta, optimizer=opt, loss_name="dpo"),
            key=lambda r: r["flip_rate"],
        )
        if len(rows) < 2:
            continue
        rew = column(rows, "expected_reward")
        dec = bool(np.all(np.diff(rew) < 0))
        out.append(
            headline(
                "E2",
                f"{setting}; T = {T:g}, β = {beta:g}, {opt}",
                "DPO's final true reward falls as R grows",
                dec,
                f"T = {T:g}, β = {beta:g}, {opt}: DPO's final true reward over R = "
                f"{', '.join(fmt(r['flip_rate']) for r in rows)} is {', '.join(fmt(v) for v in rew)} "
                f"(monotone decrease: {fmt(dec)}).",
            )
        )
    return out
