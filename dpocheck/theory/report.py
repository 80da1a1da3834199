"""The closed-form report for one tabular bandit: what `dpocheck tabular` prints and writes (C1–C4, C8, C9)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import pairs as P
from .bandit import TabularBandit, misaligned_bandit, policy_delta, rlhf_optimal_log_policy_error
from .ecpoc import ECPOCNotConverged, ecpoc_solve, reward_shift
from .stationary import cpo_approximation_error

DEFAULT_EPSILON = 0.0
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
    delta_ref, delta_reward, delta_opt, violated, u_nonempty, exit_gradient_weight, escape_time (None where it
    overflows float64), log_escape_time, gamma_star_pair), ecpoc (C9: epsilon, log_pi, multipliers, delta,
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


def format_tabular_table(report: dict[str, Any]) -> str:
    """A readable fixed-width table of a :func:`tabular_report` (one line per pair, then the summary)."""
    head = (
        f"{'x':>3} {'w':>3} {'l':>3} {'δ_ref':>9} {'Δr*':>9} {'δ*':>9} {'viol':>5} {'U≠∅':>4} "
        f"{'exit wt':>9} {'escape T':>10} {'γ*_pair':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in report["pairs"]:
        t, log_t = r["escape_time"], r["log_escape_time"]
        if t is not None:
            t_txt = f"{t:10.4g}"
        else:
            t_txt = (f"e^{log_t:.4g}" if log_t is not None else "n/a").rjust(10)
        lines.append(
            f"{r['x']:>3} {r['w']:>3} {r['l']:>3} {_num(r['delta_ref'], '9.4f', 9)} "
            f"{_num(r['delta_reward'], '9.4f', 9)} {_num(r['delta_opt'], '9.4f', 9)} "
            f"{'yes' if r['violated'] else 'no':>5} {'yes' if r['u_nonempty'] else 'no':>4} "
            f"{_num(r['exit_gradient_weight'], '9.4g', 9)} {t_txt} {_num(r['gamma_star_pair'], '9.4g', 9)}"
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
        c = report["cpo"]
        errs = [abs(v) for v in c["approximation_error"] if v is not None]
        n_al = sum(1 for v in c["aligned_exact"] if v)
        lines.append(
            f"CPO objective (C8, γ = {c['gamma']:g}): exact stationary point aligned on {n_al}/{report['n_pairs']} "
            f"pairs; |1/π_ref approximation error| max {max(errs) if errs else float('nan'):.4g}"
        )
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
