"""The closed-form report for one tabular bandit: what `dpocheck tabular` prints and writes (C1–C4, C8, C9)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from . import pairs as P
from .bandit import TabularBandit, misaligned_bandit, policy_delta, rlhf_optimal_log_policy_error
from .ecpoc import ECPOCNotConverged, ecpoc_solve, reward_shift
from .stationary import cpo_approximation_error

DEFAULT_EPSILON = 0.0
#: The proofs claims that explain the CPO line of the table: Thm 4.9's γ > γ* guarantee holds for the 1/π_ref
#: approximation, not at the exact stationary point (1/π_γ), and the CPO objective is unbounded above for γ > 0.
CPO_EXPLAINING_CLAIMS = ("C8.thm4.9-exact", "C8.unbounded")
NO_EXIT = "—"  # table entry for the exit weight and escape time of a pair whose U is empty
LOG_PROB_ABS_TOL = 1e-6  # a log-prob entry whose rounding error may exceed this many nats is flagged imprecise


def default_bandit() -> TabularBandit:
    """The built-in default: 4 contexts × 5 responses, β = 0.5, reference misaligned (ρ = 0.7), all 40 pairs
    oriented by the true reward (seed 0). About half its pairs violate C2."""
    return misaligned_bandit(4, 5, beta=0.5, misalignment=0.7, seed=0)


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def require_representable(bandit: TabularBandit) -> None:
    """Raise ValueError naming the field when a pair verdict (C1, C2) of `bandit` is beyond float64.

    log π* of a row needs (max r* − min r*)/β finite; each pair needs Δr*, δ* = δ_ref + Δr*/β and
    β·δ_ref + Δr* finite (rewards near 1e308, or near 1e300 with a small β, overflow them).
    """
    r, beta = bandit.reward, bandit.beta
    with np.errstate(over="ignore", invalid="ignore"):
        span = (r.max(axis=1) - r.min(axis=1)) / beta
        dref, dr = policy_delta(bandit.log_pi_ref, bandit.pairs), policy_delta(r, bandit.pairs)
        checks = (("β·δ_ref + Δr*", beta * dref + dr), ("δ* = δ_ref + Δr*/β", dref + dr / beta))
    if not np.all(np.isfinite(span)):
        x = int(np.argmax(~np.isfinite(span)))
        raise ValueError(
            f"reward: row {x} spans [{r[x].min():.6g}, {r[x].max():.6g}]; (max − min)/β overflows float64 at "
            f"β = {beta:g}, so log π* (C1) of that row cannot be represented; rescale the rewards"
        )
    for name, v in checks:
        if not np.all(np.isfinite(v)):
            i = int(np.argmax(~np.isfinite(v)))
            x, w, l = bandit.pairs[i].tolist()
            raise ValueError(
                f"pairs[{i}]: {name} overflows float64 (reward[{x}][{w}] = {r[x, w]:.6g}, reward[{x}][{l}] = "
                f"{r[x, l]:.6g}, β = {beta:g}); rescale the rewards"
            )


def _json_safe(value: Any, path: str, flagged: list[str]) -> Any:
    """`value` with every non-finite float replaced by None, the JSON path of each appended to `flagged`."""
    if isinstance(value, dict):
        return {k: _json_safe(v, f"{path}.{k}" if path else k, flagged) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v, f"{path}[{i}]", flagged) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        flagged.append(path)
        return None
    return value


def _entries(mask: np.ndarray) -> list[list[int]]:
    return [[int(x), int(y)] for x, y in np.argwhere(mask)]


def tabular_report(bandit: TabularBandit, gamma: float | None = None, epsilon: float | None = None) -> dict[str, Any]:
    """Every closed-form quantity of PAPER.md for `bandit`, as a JSON-ready dict.

    Keys: beta, log_pi_opt (rows, C1), gamma_star (Eq. 27), violation_rate (C2), pairs (per pair: x, w, l,
    delta_ref, delta_reward, delta_opt, violated, u_nonempty, exit_gradient_weight and escape_time (None where U
    is empty — δ_ref ≥ 0, nothing to exit — and escape_time also where it overflows float64), log_escape_time,
    gamma_star_pair), ecpoc (C9: epsilon, log_pi, multipliers, delta,
    all_constraints_hold, KKT residuals) and, when gamma is given, cpo (C8: exact stationary δ of the CPO objective,
    the 1/π_ref approximation and its error per pair).

    Pair values come from the identities of PAPER.md (δ* = δ_ref + Δr*/β, C1), never from differences of
    normalised log π* entries. `precision` lists the log π* and E-CPOC log π entries whose float64 rounding error
    may exceed LOG_PROB_ABS_TOL nats (such entries hold no usable digits of the ratios they encode; the CPO exact
    δ of pairs in those contexts is then None and listed too); `not_representable` lists the JSON paths of values
    beyond float64, written as None. Raises ValueError (bad input) when a pair verdict itself overflows (see
    :func:`require_representable`) and ECPOCNotConverged when the E-CPOC solver misses its KKT tolerance.
    """
    require_representable(bandit)
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
    if not sol.converged:
        raise ECPOCNotConverged(
            f"the E-CPOC solver (C9, ε = {eps:g}) did not converge: worst KKT residual {sol.kkt_residual:.2e} "
            f"(relative; primal {sol.primal_residual:.2e}, complementarity {sol.complementarity:.2e}); "
            "no verdict on whether the constraints hold"
        )
    err_opt = rlhf_optimal_log_policy_error(bandit.log_pi_ref, bandit.reward, beta)
    shift = reward_shift(bandit.pairs, sol.multipliers, eps, bandit.reward.shape)
    err_ecpoc = rlhf_optimal_log_policy_error(bandit.log_pi_ref, bandit.reward + shift, beta)
    imprecise_opt = err_opt > LOG_PROB_ABS_TOL
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
                # U = ∅ (δ_ref ≥ 0): there is no exit, so neither an exit weight nor an escape time (C3, C4)
                "exit_gradient_weight": float(exit_w[i]) if nonempty[i] else None,
                "escape_time": _finite_or_none(float(t[i])) if nonempty[i] else None,
                "log_escape_time": _finite_or_none(float(log_t[i])) if nonempty[i] else None,
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
        "precision": {
            "log_prob_abs_tolerance": LOG_PROB_ABS_TOL,
            "log_pi_opt_max_abs_error": float(err_opt.max()),
            "log_pi_opt_imprecise": _entries(imprecise_opt),
            "ecpoc_log_pi_max_abs_error": float(err_ecpoc.max()),
            "ecpoc_log_pi_imprecise": _entries(err_ecpoc > LOG_PROB_ABS_TOL),
        },
    }
    if gamma is not None:
        err = cpo_approximation_error(bandit, float(gamma))
        # The exact CPO stationary point is solved on r* + β·log π_ref, the magnitudes of log π*: where those
        # entries are imprecise its δ is a difference of imprecise entries, so it is withheld (None) and listed.
        bad_ctx = imprecise_opt.any(axis=1)[bandit.pairs[:, 0]] if bandit.n_pairs else np.zeros(0, dtype=bool)
        d_exact = np.where(bad_ctx, np.nan, err["delta_exact"])
        a_err = np.where(bad_ctx, np.nan, err["error"])
        out["cpo"] = {
            "gamma": float(gamma),
            "gamma_over_gamma_star": float(gamma) / out["gamma_star"] if out["gamma_star"] > 0 else None,
            "interior_stationary_point_exists": [bool(v) for v in err["exists"]],
            "delta_exact": [_finite_or_none(float(v)) for v in d_exact],
            "delta_approx": [_finite_or_none(float(v)) for v in err["delta_approx"]],
            "approximation_error": [_finite_or_none(float(v)) for v in a_err],
            "aligned_exact": [
                None if b else bool(v > 0) for v, b in zip(np.nan_to_num(d_exact, nan=-np.inf), bad_ctx, strict=True)
            ],
            "delta_exact_imprecise": [int(i) for i in np.flatnonzero(bad_ctx)],
        }
    flagged: list[str] = []
    out = _json_safe(out, "", flagged)
    out["not_representable"] = flagged
    return out


def _num(v: float | None, spec: str, width: int) -> str:
    """`v` formatted with `spec` ('e' form once fixed-point would exceed 1e6), or 'n/a' (a value beyond float64,
    null in the JSON), right-aligned."""
    if v is None:
        return "n/a".rjust(width)
    if spec.endswith("f") and abs(v) >= 1e6:
        spec = spec.split(".")[0] + ".3e"
    return format(v, spec).rjust(width)


def _cells(entries: list[list[int]], limit: int = 4) -> str:
    shown = ", ".join(f"[{x}][{y}]" for x, y in entries[:limit])
    return shown + (f", … ({len(entries)} in all)" if len(entries) > limit else "")


#: Column headers of the per-pair table, in words (what each column is; the claim it belongs to).
PAIR_COLUMNS = (
    ("context", 7),
    ("winner", 6),
    ("loser", 5),
    ("δ_ref", 9),
    ("Δr*", 9),
    ("δ* (C1)", 9),
    ("violates C2", 11),
    ("U non-empty", 11),
    ("exit gradient weight", 20),
    ("escape time", 11),
    ("γ* of pair", 10),
)


def cpo_counts(report: dict[str, Any]) -> dict[str, Any]:
    """What the CPO lines of the table state, counted from the report's `cpo` block (C8): contexts and pairs where
    the exact CPO objective has an interior stationary point, pairs aligned (δ > 0) there, pairs aligned under the
    1/π_ref approximation δ_ref + (Δr* + m)/β and under π* (γ = 0: DPO's population optimum, C5a), and pairs
    whose effective γ/n_x (a context's n_x pairs each weigh 1/n_x) is at most their own γ*_pair (Eq. 27)."""
    c = report["cpo"]
    pairs = report["pairs"]
    exists = c["interior_stationary_point_exists"]
    n_x = Counter(p["x"] for p in pairs)
    return {
        "gamma": c["gamma"],
        "gamma_over_gamma_star": c.get("gamma_over_gamma_star"),
        "n_pairs": report["n_pairs"],
        "n_contexts": len(n_x),
        "contexts_with_point": sorted({p["x"] for p, e in zip(pairs, exists, strict=True) if e}),
        "n_pairs_with_point": sum(bool(e) for e in exists),
        "n_aligned_exact": sum(1 for v in c["aligned_exact"] if v),
        "n_aligned_approx": sum(1 for v in c["delta_approx"] if v is not None and v > 0),
        "n_aligned_rlhf": sum(1 for p in pairs if p["delta_opt"] > 0),
        "n_effective_gamma_at_most_pair_threshold": sum(
            1 for p in pairs if p["gamma_star_pair"] > 0 and c["gamma"] / n_x[p["x"]] <= p["gamma_star_pair"]
        ),
        "max_abs_approximation_error": max(
            (abs(v) for v in c["approximation_error"] if v is not None), default=float("nan")
        ),
    }


def cpo_summary_lines(report: dict[str, Any]) -> list[str]:
    """The CPO lines of the table: what was counted (:func:`cpo_counts`) and, when γ > γ* and the exact stationary
    point is not aligned on every pair, why — naming the proofs claims that show it (CPO_EXPLAINING_CLAIMS)."""
    k = cpo_counts(report)
    ratio = k["gamma_over_gamma_star"]
    gamma_txt = f"γ = {k['gamma']:.4g}" + (f" = {ratio:.3g}·γ*" if ratio is not None else "")
    n, n_point, n_below = k["n_pairs"], k["n_pairs_with_point"], k["n_effective_gamma_at_most_pair_threshold"]
    lines = [
        f"CPO objective (C8), {gamma_txt}; a context's n_x pairs each weigh 1/n_x (effective γ/n_x per pair):",
        f"  exact interior stationary point (1/π_γ): exists in {len(k['contexts_with_point'])}/{k['n_contexts']} "
        f"contexts ({n_point}/{n} pairs), aligned (δ > 0) on {k['n_aligned_exact']} of those {n_point} pairs",
        f"  1/π_ref approximation δ_ref + (Δr* + m)/β: aligned on {k['n_aligned_approx']}/{n} pairs"
        + (f" ({n_below} pair{'' if n_below == 1 else 's'} with γ/n_x ≤ γ*_pair)" if n_below else ""),
        f"    largest |approximate δ − exact δ|: {k['max_abs_approximation_error']:.4g}",
        f"  π* (γ = 0, DPO's population optimum): aligned on {k['n_aligned_rlhf']}/{n} pairs",
    ]
    if ratio is None or ratio <= 1 or k["n_aligned_exact"] == n:
        return lines  # below the threshold, or nothing to explain
    why = ["  why: Thm 4.9's γ > γ* ⇒ δ > 0 is derived for the 1/π_ref approximation, not for the exact objective:"]
    if n_point < n:
        why += [
            "       the CPO objective is unbounded above for γ > 0, so in some contexts no interior stationary point "
            "exists",
            "       (their pairs count as not aligned), and where one exists its margin γ(1/π_γ(y_w) + 1/π_γ(y_l)) can",
        ]
    else:
        why += ["       at the exact stationary point the margin γ(1/π_γ(y_w) + 1/π_γ(y_l)) can"]
    why += [
        f"       fall short of the approximate one — see the proofs claims {' and '.join(CPO_EXPLAINING_CLAIMS)}",
        "       (`dpocheck proofs --only C8`).",
    ]
    return lines + why


def format_tabular_table(report: dict[str, Any]) -> str:
    """A readable fixed-width table of a :func:`tabular_report` (one line per pair, then the summary).

    Pairs whose U is empty (δ_ref ≥ 0) show NO_EXIT for the exit gradient weight and the escape time, with a
    footnote under the table."""
    widths = [w for _, w in PAIR_COLUMNS]
    head = " ".join(name.rjust(w) for name, w in PAIR_COLUMNS)
    lines = [head, "-" * len(head)]
    n_empty = 0
    for r in report["pairs"]:
        if not r["u_nonempty"]:
            n_empty += 1
            w_txt, t_txt = NO_EXIT.rjust(widths[8]), NO_EXIT.rjust(widths[9])
        else:
            w_txt = _num(r["exit_gradient_weight"], f"{widths[8]}.4g", widths[8])
            t, log_t = r["escape_time"], r["log_escape_time"]
            if t is not None:
                t_txt = f"{t:{widths[9]}.4g}"
            else:
                t_txt = (f"e^{log_t:.4g}" if log_t is not None else "n/a").rjust(widths[9])
        cells = [
            f"{r['x']:>{widths[0]}}",
            f"{r['w']:>{widths[1]}}",
            f"{r['l']:>{widths[2]}}",
            _num(r["delta_ref"], "9.4f", widths[3]),
            _num(r["delta_reward"], "9.4f", widths[4]),
            _num(r["delta_opt"], "9.4f", widths[5]),
            f"{'yes' if r['violated'] else 'no':>{widths[6]}}",
            f"{'yes' if r['u_nonempty'] else 'no':>{widths[7]}}",
            w_txt,
            t_txt,
            _num(r["gamma_star_pair"], f"{widths[10]}.4g", widths[10]),
        ]
        lines.append(" ".join(cells))
    if n_empty:
        lines.append(
            f"{NO_EXIT} on {n_empty} pair{'' if n_empty == 1 else 's'} with δ_ref ≥ 0: U = (δ_ref, 0) is empty "
            "(C3), so there is no exit of U and no escape time (C4)."
        )
    e = report["ecpoc"]
    n_viol = sum(r["violated"] for r in report["pairs"])
    lines += [
        "",
        f"β = {report['beta']:g}; pairs violating C2 (β·δ_ref + Δr* ≤ 0): {n_viol}/{report['n_pairs']} "
        f"({100 * report['violation_rate']:.1f} %)",
        f"γ* (Eq. 27, max over pairs) = {_num(report['gamma_star'], '.6g', 0)}",
        f"E-CPOC (C9, ε = {e['epsilon']:g}): every constraint δ ≥ ε holds: {e['all_constraints_hold']} "
        f"(primal residual {_num(e['primal_residual'], '.2e', 0)}, complementarity "
        f"{_num(e['complementarity'], '.2e', 0)}, stationarity {_num(e['stationarity'], '.2e', 0)})",
    ]
    if e["cyclic_contexts"]:
        lines.append(
            f"  contexts {e['cyclic_contexts']} contain a preference cycle: no full-support policy has δ ≥ ε > 0 "
            "on all their pairs"
        )
    if "cpo" in report:
        lines += cpo_summary_lines(report)
        c = report["cpo"]
        if c.get("delta_exact_imprecise"):
            lines.append(
                f"  exact CPO δ withheld (n/a) on pairs {c['delta_exact_imprecise'][:8]}: their contexts' log π "
                "entries are not representable to the tolerance below"
            )
    prec = report.get("precision", {})
    for key, name in (("log_pi_opt", "log π* (C1)"), ("ecpoc_log_pi", "E-CPOC log π (C9)")):
        bad = prec.get(f"{key}_imprecise")
        if bad:
            lines.append(
                f"precision: {len(bad)} {name} entr{'y' if len(bad) == 1 else 'ies'} ({_cells(bad)}) carry a "
                f"float64 rounding error up to {prec[f'{key}_max_abs_error']:.3g} nats (> "
                f"{prec['log_prob_abs_tolerance']:g}): not representable to that precision. Pair values above use "
                "δ* = δ_ref + Δr*/β (C1), never differences of those entries."
            )
    if report.get("not_representable"):
        paths = report["not_representable"]
        more = f", … ({len(paths)} in all)" if len(paths) > 6 else ""
        lines.append(f"beyond float64 (null in the JSON, n/a above): {', '.join(paths[:6])}{more}")
    return "\n".join(lines)
