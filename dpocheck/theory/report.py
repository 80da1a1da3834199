"""The closed-form report for one tabular bandit: what `dpocheck tabular` prints and writes (C1–C4, C8, C9)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import pairs as P
from .bandit import TabularBandit, misaligned_bandit
from .ecpoc import ecpoc_solve
from .stationary import cpo_approximation_error

DEFAULT_EPSILON = 0.0


def default_bandit() -> TabularBandit:
    """The built-in default: 4 contexts × 5 responses, β = 0.5, reference misaligned (ρ = 0.7), all 40 pairs
    oriented by the true reward (seed 0). About half its pairs violate C2."""
    return misaligned_bandit(4, 5, beta=0.5, misalignment=0.7, seed=0)


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def tabular_report(bandit: TabularBandit, gamma: float | None = None, epsilon: float | None = None) -> dict[str, Any]:
    """Every closed-form quantity of PAPER.md for `bandit`, as a JSON-ready dict.

    Keys: beta, log_pi_opt (rows, C1), gamma_star (Eq. 27), violation_rate (C2), pairs (per pair: x, w, l,
    delta_ref, delta_reward, delta_opt, violated, u_nonempty, exit_gradient_weight, escape_time (None where it
    overflows float64), log_escape_time, gamma_star_pair), ecpoc (C9: epsilon, log_pi, multipliers, delta,
    all_constraints_hold, KKT residuals) and, when gamma is given, cpo (C8: exact stationary δ of the CPO objective,
    the 1/π_ref approximation and its error per pair).
    """
    beta = bandit.beta
    dref = bandit.delta_ref()
    dr = bandit.delta_reward()
    dopt = bandit.delta_opt()
    lw, ll = bandit.log_pi_ref_pairs()
    violated = P.violation_mask(dref, dr, beta)
    nonempty = P.undesirable_space_nonempty(dref)
    exit_w = P.exit_gradient_weight(dref, beta)
    log_t = P.log_escape_time(dref, beta)
    with np.errstate(over="ignore"):
        t = np.exp(log_t)
    g_pair = np.exp(P.log_gamma_star_pair(dref, dr, beta, lw, ll))
    eps = DEFAULT_EPSILON if epsilon is None else float(epsilon)
    sol = ecpoc_solve(bandit, eps)
    rows = []
    for i, (x, w, l) in enumerate(bandit.pairs.tolist()):
        rows.append(
            {
                "x": x,
                "w": w,
                "l": l,
                "delta_ref": float(dref[i]),
                "delta_reward": float(dr[i]),
                "delta_opt": float(dopt[i]),
                "violated": bool(violated[i]),
                "u_nonempty": bool(nonempty[i]),
                "exit_gradient_weight": float(exit_w[i]),
                "escape_time": _finite_or_none(float(t[i])),
                "log_escape_time": _finite_or_none(float(log_t[i])),
                "gamma_star_pair": float(g_pair[i]),
            }
        )
    out: dict[str, Any] = {
        "beta": beta,
        "n_pairs": bandit.n_pairs,
        "log_pi_opt": bandit.log_pi_opt().tolist(),
        "gamma_star": float(g_pair.max()) if len(g_pair) else 0.0,
        "violation_rate": float(violated.mean()) if len(violated) else 0.0,
        "pairs": rows,
        "ecpoc": {
            "epsilon": eps,
            "log_pi": sol.log_pi.tolist(),
            "multipliers": [_finite_or_none(float(v)) for v in sol.multipliers],
            "cyclic_contexts": list(sol.cyclic_contexts),
            "delta": sol.delta.tolist(),
            "all_constraints_hold": bool(sol.feasible),
            "primal_residual": sol.primal_residual,
            "complementarity": sol.complementarity,
            "stationarity": sol.stationarity,
            "objective": sol.objective,
        },
    }
    if gamma is not None:
        err = cpo_approximation_error(bandit, float(gamma))
        out["cpo"] = {
            "gamma": float(gamma),
            "gamma_over_gamma_star": float(gamma) / out["gamma_star"] if out["gamma_star"] > 0 else None,
            "interior_stationary_point_exists": [bool(v) for v in err["exists"]],
            "delta_exact": [_finite_or_none(float(v)) for v in err["delta_exact"]],
            "delta_approx": [_finite_or_none(float(v)) for v in err["delta_approx"]],
            "approximation_error": [_finite_or_none(float(v)) for v in err["error"]],
            "aligned_exact": [bool(v > 0) for v in np.nan_to_num(err["delta_exact"], nan=-np.inf)],
        }
    return out


def format_tabular_table(report: dict[str, Any]) -> str:
    """A readable fixed-width table of a :func:`tabular_report` (one line per pair, then the summary)."""
    head = (
        f"{'x':>3} {'w':>3} {'l':>3} {'δ_ref':>9} {'Δr*':>9} {'δ*':>9} {'viol':>5} {'U≠∅':>4} "
        f"{'exit wt':>9} {'escape T':>10} {'γ*_pair':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in report["pairs"]:
        t = r["escape_time"]
        t_txt = f"{t:10.4g}" if t is not None else f"e^{r['log_escape_time']:.4g}".rjust(10)
        lines.append(
            f"{r['x']:>3} {r['w']:>3} {r['l']:>3} {r['delta_ref']:9.4f} {r['delta_reward']:9.4f} "
            f"{r['delta_opt']:9.4f} {'yes' if r['violated'] else 'no':>5} {'yes' if r['u_nonempty'] else 'no':>4} "
            f"{r['exit_gradient_weight']:9.4g} {t_txt} {r['gamma_star_pair']:9.4g}"
        )
    e = report["ecpoc"]
    n_viol = sum(r["violated"] for r in report["pairs"])
    lines += [
        "",
        f"β = {report['beta']:g}; pairs violating C2 (β·δ_ref + Δr* ≤ 0): {n_viol}/{report['n_pairs']} "
        f"({100 * report['violation_rate']:.1f} %)",
        f"γ* (Eq. 27, max over pairs) = {report['gamma_star']:.6g}",
        f"E-CPOC (C9, ε = {e['epsilon']:g}): every constraint δ ≥ ε holds: {e['all_constraints_hold']} "
        f"(primal residual {e['primal_residual']:.2e}, complementarity {e['complementarity']:.2e}, "
        f"stationarity {e['stationarity']:.2e})",
    ]
    if e["cyclic_contexts"]:
        lines.append(
            f"  contexts {e['cyclic_contexts']} contain a preference cycle: no full-support policy has δ ≥ ε > 0 "
            "on all their pairs"
        )
    if "cpo" in report:
        c = report["cpo"]
        errs = [abs(v) for v in c["approximation_error"] if v is not None]
        n_al = sum(c["aligned_exact"])
        lines.append(
            f"CPO objective (C8, γ = {c['gamma']:g}): exact stationary point aligned on {n_al}/{report['n_pairs']} "
            f"pairs; |1/π_ref approximation error| max {max(errs) if errs else float('nan'):.4g}"
        )
    return "\n".join(lines)
