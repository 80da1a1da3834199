"""Reporting of a ``dpocheck violations`` result: Markdown tables, strict JSON and the toy Fig. 1 (C1, C2, C3)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck._plot import pyplot, save_figure
from dpocheck.theory import delta_opt, undesirable_space_nonempty, violation_mask

from .result_types import Share, ViolationsReport
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
    lines.append("")
    return "\n".join(lines)


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
