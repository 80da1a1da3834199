"""Reporting of a ``dpocheck violations`` result: Markdown tables, strict JSON, the toy Fig. 1 (C1, C2, C3) and the
displacement figure (PAPER §6)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._plot import pyplot, save_figure
from dpocheck.theory import delta_opt, undesirable_space_nonempty, violation_mask

from .displacement import u_by_displacement_masks
from .result_types import ChesResult, DisplacementResult, Share, ViolationsReport
from .scores import DeltaReward, ScoreTable


# ------------------------------------------------------------------------------------------------- outputs
def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


def format_share(share: Share | None) -> str:
    """A share as ``12.5 % [6.2, 18.8]`` (its bootstrap interval when there is one), ``—`` when undefined."""
    if share is None or share.value is None:
        return "—"
    s = f"{100 * share.value:.1f} %"
    if share.ci95:
        lo, hi = share.ci95
        s += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return s


def join_summary(report: ViolationsReport) -> list[str]:
    """Joined / unjoined counts of the joins behind a report (Δr* file, policy scores), one line each."""
    lines = []
    dr = report.delta_reward
    if dr.available and "joined on index" in dr.source:
        lines.append(
            f"Δr* join: {dr.n_with} of {report.inputs.n_pairs} scored pairs joined, {dr.n_without} without Δr*"
        )
    if report.policy is not None:
        p = report.policy
        lines.append(
            f"policy join: {p.n_joined} pairs joined, {p.n_reference_only} reference-only, "
            f"{p.n_policy_only} policy-only (left out)"
        )
    return lines


def precision_check_lines(manifest: dict[str, Any] | None) -> list[str]:
    """The scorer's recorded fp32 check (``dpocheck score --check-fp32 N``) as one line; none when not recorded."""
    rec = (manifest or {}).get("precision_check")
    if not isinstance(rec, dict) or not isinstance(rec.get("gap"), dict):
        return []
    parts = []
    for key, g in rec["gap"].items():
        if isinstance(g, dict):
            parts.append(
                f"{key} max {_fmt(g.get('max_abs'), 3)} / median {_fmt(g.get('median_abs'), 3)} / "
                f"p90 {_fmt(g.get('p90_abs'), 3)}"
            )
    return [
        f"precision: {rec.get('dtype_scored')} scores vs an fp32 rescore of {rec.get('n_checked')} random pairs "
        f"(seed {rec.get('seed')}, same weights), |Δ| in nats: " + "; ".join(parts)
    ]


def render_markdown(report: ViolationsReport) -> str:
    """The report as Markdown tables; every table names its claim, β and normalisation."""
    norm = report.normalization
    inp = report.inputs
    ref = report.reference
    lines = [
        f"# DPO–RLHF equivalence check on {inp.n_pairs} scored pairs ({norm} log-probs)",
        "",
        f"- scores: `{inp.scores}` ({len(inp.shards)} shard(s), "
        f"{inp.n_duplicate_rows_dropped} duplicate rows dropped, {inp.index_gaps} index gaps, "
        f"{inp.n_truncated_pairs} pairs with a truncated response)",
        f"- normalisation `{norm}`: {report.normalization_note}",
        f"- Δr* source: {report.delta_reward.source}",
        f"- 95 % intervals: percentile bootstrap, {report.n_bootstrap} resamples, seed {report.seed}",
    ]
    for w in inp.warnings:
        lines.append(f"- WARNING: {w}")
    lines += [f"- {line}" for line in join_summary(report)]
    lines += [f"- {line}" for line in precision_check_lines(inp.manifest)]
    if report.delta_reward.available and report.delta_reward.note:
        lines.append(f"- {report.delta_reward.note}")
    lm = ref.log_margin_per_unit_gamma
    lines += [
        "",
        f"## Reference model (β-independent, {norm})",
        "",
        "| quantity | claim | value [95 % CI] |",
        "|---|---|---|",
        f"| reference preference rate (δ_ref > 0) | {ref.reference_preference_rate.claim} | "
        f"{format_share(ref.reference_preference_rate)} |",
        f"| U non-empty (δ_ref < 0) | {ref.u_nonempty_share.claim} | {format_share(ref.u_nonempty_share)} |",
        f"| median δ_ref | PAPER §1 | {_fmt(ref.delta_ref.median)} |",
        f"| median log(1/π_ref(y_w) + 1/π_ref(y_l)) | {lm.claim} | {_fmt(lm.median)} ({lm.note}) |",
        "",
    ]
    if ref.ches is not None:
        lines += ches_lines(ref.ches)
    else:
        lines += [
            "CHES (PAPER §6): not in these reference rows; `dpocheck score` writes it per pair (rescore the "
            "reference to add it).",
            "",
        ]
    first = report.per_beta[0]
    if report.delta_reward.available:
        label = " (ASSUMED constant Δr*)" if report.delta_reward.assumed else ""
        margins = first.violation_rate_with_cpo_margin
        lines += [
            f"## Violation of the implicit assumption (C2, Eq. 11){label}, {norm} log-probs",
            "",
            "| β | violation rate (C2) [95 % CI] | idealized ranking accuracy (1 − rate) | violated / n | "
            "log10 γ* (C8, Eq. 27) |" + "".join(f" still violated with γ = {g.tag('gamma'):g} (C8) |" for g in margins),
            "|---|---|---|---|---|" + "---|" * len(margins),
        ]
        for e in report.per_beta:
            v = e.violation_rate
            assert v is not None and e.gamma_star is not None
            lines.append(
                f"| {e.beta:g} | {format_share(v)} | {format_share(e.idealized_ranking_accuracy)} | "
                f"{v.count} / {v.n} | "
                f"{_fmt(e.gamma_star.log10_gamma_star)} |"
                + "".join(f" {format_share(g)} |" for g in e.violation_rate_with_cpo_margin)
            )
        if first.violation_rate_by_subset:
            names = list(first.violation_rate_by_subset)
            lines += [
                "",
                f"### Violation rate (C2) by subset, {norm} log-probs",
                "",
                "| β | " + " | ".join(f"{n} (n={first.violation_rate_by_subset[n].n})" for n in names) + " |",
                "|---|" + "---|" * len(names),
            ]
            for e in report.per_beta:
                by = e.violation_rate_by_subset or {}
                lines.append(f"| {e.beta:g} | " + " | ".join(format_share(by[n]) for n in names) + " |")
    else:
        lines += [
            "## Violation rate (C2): not computed",
            "",
            f"No reward gap Δr*: {report.delta_reward.source}. Reported above is what needs no Δr*.",
        ]
    if report.policy is not None:
        p = report.policy
        lines += [
            "",
            f"## Trained policy vs reference ({norm} log-probs, {p.n_joined} joined pairs)",
            "",
            "| quantity | claim | value [95 % CI] |",
            "|---|---|---|",
            f"| share in U (δ_ref < δ_θ < 0) | {p.share_in_u.claim} | {format_share(p.share_in_u)} |",
            f"| preference accuracy (δ_θ > 0) | {p.ranking_accuracy.claim} | {format_share(p.ranking_accuracy)} |",
            f"| implicit-reward accuracy (δ_θ > δ_ref) | {p.implicit_reward_accuracy.claim} | "
            f"{format_share(p.implicit_reward_accuracy)} |",
            "",
            "| β | mean DPO loss (log 2 at π_ref) | mean DPO gradient weight (C4; β/2 at π_ref) | "
            "mean weight in U | mean exit weight in U (C4) |",
            "|---|---|---|---|---|",
        ]
        for e in report.per_beta:
            q = e.policy
            assert q is not None
            lines.append(
                f"| {e.beta:g} | {_fmt(q.dpo_loss_mean)} | "
                f"{_fmt(q.dpo_gradient_weight.mean)} "
                f"(β/2 = {_fmt(e.beta / 2)}) | {_fmt(q.dpo_gradient_weight_in_u.mean)} | "
                f"{_fmt(q.exit_gradient_weight_in_u.mean)} |"
            )
    if report.displacement is not None:
        lines += displacement_lines(report.displacement)
    lines.append("")
    return "\n".join(lines)


def ches_lines(ches: ChesResult) -> list[str]:
    """CHES of the reference (PAPER §6): median per form, overall and by the sign of δ_ref, as a Markdown table."""
    lines = [
        f"### CHES of the reference (Razin et al. 2024; {ches.n_with_ches} pairs)",
        "",
        "| form | median CHES | median, δ_ref < 0 (U non-empty) | median, δ_ref ≥ 0 | max |",
        "|---|---|---|---|---|",
    ]
    for form, summary in ches.ches.items():
        split = ches.by_delta_ref_sign[form]
        lines.append(
            f"| {form} | {_fmt(summary.median)} | {_fmt(split['delta_ref<0'].median)} "
            f"(n={split['delta_ref<0'].n}) | {_fmt(split['delta_ref>=0'].median)} (n={split['delta_ref>=0'].n}) | "
            f"{_fmt(summary.max)} |"
        )
    return [*lines, ""]


def displacement_lines(d: DisplacementResult) -> list[str]:
    """The displacement section of a report (PAPER §6): health, shares, shifts, U × displaced, CHES → displacement."""
    h = d.health
    lines = [
        "",
        f"## Likelihood displacement next to U (PAPER §6, Razin et al. 2024; δ {d.normalization}, {d.n_pairs} pairs)",
        "",
        f"- **{h.line()}**",
        *[f"- {r}" for r in h.reasons],
        "",
        "| quantity | claim | value [95 % CI] |",
        "|---|---|---|",
    ]
    for label, share in (
        ("chosen response displaced (Δ_w < 0)", d.share_displaced),
        ("both responses fell (Δ_w < 0, Δ_l < 0)", d.share_both_fell),
        ("displaced while ranked right (δ_θ > 0)", d.share_displaced_while_ranked_correct),
        ("displaced while δ_θ > δ_ref (TRL-correct)", d.share_displaced_while_implicit_correct),
    ):
        lines.append(f"| {label} | {share.claim} | {format_share(share)} |")
    lines += [
        "",
        "| shift Δ = log π_θ − log π_ref | sum: median | sum: mean | per-token mean: median | per-token mean: mean |",
        "|---|---|---|---|---|",
    ]
    for label, shifts in (("chosen, Δ_w", d.chosen_logp_shift), ("rejected, Δ_l", d.rejected_logp_shift)):
        s, m = shifts["sum"], shifts["mean"]
        lines.append(f"| {label} | {_fmt(s.median)} | {_fmt(s.mean)} | {_fmt(m.median)} | {_fmt(m.mean)} |")
    cells = d.u_by_displacement
    lines += [
        "",
        "U × displacement (share of pairs in each cell, 95 % CI):",
        "",
        "| | displaced (Δ_w < 0) | not displaced |",
        "|---|---|---|",
        f"| in U (δ_ref < δ_θ < 0) | {format_share(cells['in_u_and_displaced'])} | "
        f"{format_share(cells['in_u_not_displaced'])} |",
        f"| not in U | {format_share(cells['displaced_not_in_u'])} | {format_share(cells['neither'])} |",
    ]
    if d.ches_predicts:
        lines += ["", "| predictor | target | Spearman ρ [95 % CI] | n |", "|---|---|---|---|"]
        for c in d.ches_predicts:
            ci = "" if c.ci95 is None else f" [{c.ci95[0]:.3f}, {c.ci95[1]:.3f}]"
            lines.append(f"| {c.x} | {c.y} | {_fmt(c.value, 3)}{ci} | {c.n} |")
    return lines


def plot_displacement(
    pairs: Sequence[dict[str, Any]], path: str | Path, convention: str = "mean", title: str = ""
) -> Path:
    """Per pair (the tidy rows of :func:`~dpocheck.llm.analysis.displacement.pair_rows`): Δ_w against Δ_l coloured
    by U (the identity δ_θ − δ_ref = Δ_w − Δ_l makes the diagonal the log-2 line of the DPO loss), the U ×
    displaced table, and the reference's CHES split by the sign of δ_ref (where the rows carry CHES). The shifts are
    drawn in ``convention``, the one U and δ were computed in."""
    plt = pyplot()
    w, lo = f"chosen_logp_shift_{convention}", f"rejected_logp_shift_{convention}"
    ok = [r for r in pairs if r[w] is not None and r[lo] is not None]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0))
    ax = axes[0]
    for in_u, color, label in ((False, "0.55", "not in U"), (True, "tab:red", "in U (C3)")):
        sel = [r for r in ok if bool(r["in_u"]) == in_u]
        ax.scatter(
            [r[lo] for r in sel],
            [r[w] for r in sel],
            s=10,
            color=color,
            label=f"{label} ({len(sel)})",
        )
    lim = max([1e-3] + [abs(r[k]) for r in ok for k in (w, lo)])
    ax.axhline(0.0, color="k", lw=0.8)
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.6, ls="--", label="Δ_w = Δ_l (δ_θ = δ_ref)")
    unit = "per token" if convention == "mean" else "summed"
    ax.set_xlabel(f"Δ_l {unit} (rejected)")
    ax.set_ylabel(f"Δ_w {unit} (chosen); below 0: displaced")
    ax.legend(fontsize=7)
    ax = axes[1]
    cells = u_by_displacement_masks([bool(r["in_u"]) for r in ok], [bool(r["displaced"]) for r in ok])
    share = {k: float(m.mean()) if m.size else 0.0 for k, m in cells.items()}
    grid = np.array(
        [[share["in_u_and_displaced"], share["in_u_not_displaced"]], [share["displaced_not_in_u"], share["neither"]]]
    )
    ax.imshow(grid, cmap="Reds", vmin=0.0, vmax=1.0)
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{100 * v:.1f} %", ha="center", va="center", fontsize=10)
    ax.set_xticks([0, 1], ["displaced", "not displaced"])
    ax.set_yticks([0, 1], ["in U", "not in U"])
    ax.set_title(f"U × displacement ({len(ok)} pairs)", fontsize=9)
    ax = axes[2]
    with_ches = [r for r in ok if r.get("ches_mean") is not None]
    if with_ches:
        for neg, color, label in ((False, "0.55", "δ_ref ≥ 0"), (True, "tab:red", "δ_ref < 0 (U non-empty)")):
            ax.hist(
                [r["ches_mean"] for r in with_ches if (r["delta_ref"] < 0) == neg],
                bins=30,
                color=color,
                alpha=0.7,
                label=label,
            )
        ax.set_xlabel("CHES of the reference (per-token means)")
        ax.set_ylabel("pairs")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no CHES in the reference rows", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle(title or "Likelihood displacement next to U (PAPER §6; Razin et al. 2024)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, tight=False)


def plot_fig1(
    reference: ScoreTable,
    delta_reward: DeltaReward,
    betas: Sequence[float],
    normalization: str,
    path: str | Path,
) -> Path:
    """Toy Fig. 1: per β, a histogram of δ_{π*} = δ_ref + Δr*/β with the violated share (δ_{π*} ≤ 0) shaded.

    Without Δr*, a single histogram of δ_ref with the share where U is non-empty (δ_ref < 0, C3) shaded.
    """
    plt = pyplot()

    d_ref = reference.delta(normalization)
    if delta_reward.values is None:
        panels = [(None, d_ref, np.asarray(undesirable_space_nonempty(d_ref)))]
    else:
        have = ~np.isnan(delta_reward.values)
        panels = []
        for beta in betas:
            d_opt = np.asarray(delta_opt(d_ref[have], delta_reward.values[have], beta))
            panels.append((beta, d_opt, np.asarray(violation_mask(d_ref[have], delta_reward.values[have], beta))))
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    for ax, (beta, x, bad) in zip(axes.ravel(), panels, strict=False):
        lo, hi = np.quantile(x, [0.005, 0.995]) if x.size else (-1.0, 1.0)
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        width = (hi - lo) / 60 if hi > lo else 1.0
        edges = width * np.arange(math.floor(lo / width), math.ceil(hi / width) + 1)
        xc = np.clip(x, edges[0], edges[-1])
        ax.hist(xc[~bad], bins=edges, color="0.6", label="holds")
        ax.hist(xc[bad], bins=edges, color="tab:red", alpha=0.8, label="violated" if beta else "U non-empty")
        ax.axvline(0.0, color="k", lw=0.8)
        share = 100.0 * float(bad.mean()) if bad.size else float("nan")
        if beta is None:
            ax.set_title(f"δ_ref ({normalization}); δ_ref < 0: {share:.1f} % (C3)", fontsize=9)
            ax.set_xlabel("δ_ref = log π_ref(y_w) − log π_ref(y_l)")
        else:
            ax.set_title(f"β = {beta:g} ({normalization}): violated {share:.1f} % (C2)", fontsize=9)
            ax.set_xlabel("δ_π* = δ_ref + Δr*/β")
        ax.set_ylabel("pairs")
        ax.legend(fontsize=7)
    suffix = " — ASSUMED constant Δr*" if delta_reward.assumed else ""
    fig.suptitle(f"Toy Fig. 1: implicit assumption of DPO (C1/C2){suffix}; tails clipped into edge bins", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, tight=False)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def report_to_json(report: ViolationsReport | dict[str, Any]) -> str:
    """JSON text of a report (its :meth:`~ViolationsReport.as_dict`); NaN/inf become null (strict JSON)."""
    if isinstance(report, ViolationsReport):
        report = report.as_dict()

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(report), indent=2, ensure_ascii=False, default=_json_default) + "\n"
