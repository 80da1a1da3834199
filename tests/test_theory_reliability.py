"""Reliability of `dpocheck tabular`: no wrong number with exit 0 on extreme but valid bandits, a defined value
or a named refusal where float64 overflows, and no traceback on malformed input (hypothesis fuzz)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy.special import logsumexp

import dpocheck.theory.report as report_mod
from dpocheck.cli import main
from dpocheck.theory import TabularBandit, ecpoc_solve, policy_delta


def _strict_json(path: Path) -> dict:
    def bad(name: str):
        raise AssertionError(f"non-finite JSON constant {name} in {path}")

    return json.loads(path.read_text(), parse_constant=bad)


def _run(tmp_path: Path, data: dict, *extra: str) -> tuple[int, Path]:
    src = tmp_path / "bandit.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "out.json"
    return main(["tabular", str(src), "--out", str(out), *extra]), out


# ---------------------------------------------------------------- a huge reward beside a pair (C1)

HUGE = {"beta": 1.0, "pi_ref": [[0.6, 0.3, 0.1]], "reward": [[0.0, 1e17, 0.5]], "pairs": [[0, 2, 0]]}


def test_huge_reward_in_the_context_keeps_the_pair_values(tmp_path, capsys) -> None:
    """π_ref = (0.6, 0.3, 0.1), r* = (0, 1e17, 0.5), β = 1, pair (w=2, l=0): δ_ref = log(0.1/0.6) = −log 6,
    Δr* = 0.5, so δ* = 0.5 − log 6 ≈ −1.2918 (violated, C2), whatever r*(y=1) is. log π*(0) and log π*(2) are
    both ≈ −1e17 (float64 spacing 16): their difference is 0, and the report must not print it. Both entries are
    flagged imprecise (rounding bound 4·eps·1e17 ≈ 88.8 nats). E-CPOC at ε = 0.1 on this single pair is the closed
    form (C9): δ = max(δ*, ε) = 0.1, λ = β(ε − δ*)/(1 + e^ε)."""
    status, out = _run(tmp_path, HUGE, "--epsilon", "0.1")
    assert status == 0
    text = capsys.readouterr().out
    d_star = 0.5 - math.log(6)
    row = _strict_json(out)["pairs"][0]
    assert row["delta_opt"] == pytest.approx(d_star, rel=1e-15)
    assert row["violated"] is True
    assert "  -1.2918 " in text.splitlines()[2]
    rep = _strict_json(out)
    assert rep["precision"]["log_pi_opt_imprecise"] == [[0, 0], [0, 2]]
    assert rep["precision"]["log_pi_opt_max_abs_error"] == pytest.approx(4 * np.finfo(float).eps * 1e17, rel=1e-6)
    assert "precision: 2 log π* (C1) entries ([0][0], [0][2])" in text
    e = rep["ecpoc"]
    assert e["all_constraints_hold"] is True
    assert e["delta"][0] == pytest.approx(0.1, rel=1e-14)
    assert e["multipliers"][0] == pytest.approx((0.1 - d_star) / (1 + math.exp(0.1)), rel=1e-14)


def test_huge_reward_withholds_the_exact_cpo_delta(tmp_path, capsys) -> None:
    """With γ given, the exact CPO stationary δ of that context would be a difference of ≈ −1e17 entries: it is
    withheld (null, listed in delta_exact_imprecise), while the 1/π_ref approximation δ_ref + (Δr* + m)/β with
    m = γ(1/0.1 + 1/0.6) = 0.05·35/3 stays exact."""
    status, out = _run(tmp_path, HUGE, "--gamma", "0.05")
    assert status == 0
    c = _strict_json(out)["cpo"]
    assert c["delta_exact"] == [None] and c["delta_exact_imprecise"] == [0] and c["aligned_exact"] == [None]
    assert c["delta_approx"][0] == pytest.approx(0.5 - math.log(6) + 0.05 * 35 / 3, rel=1e-14)
    assert "exact CPO δ withheld (n/a) on pairs [0]" in capsys.readouterr().out


# ---------------------------------------------------------------- E-CPOC with log π_ref ≈ −1e4 (C9)


def _far_bandit() -> TabularBandit:
    """Two responses at log π_ref ≈ −1e4, a chain 1 ≻ 3 ≻ {0, 2} (acyclic, hence feasible for every ε)."""
    lp = np.array([[-1.3, -10000.7, -0.3, -10000.7]])
    return TabularBandit(
        lp - logsumexp(lp), [[0.3, -0.2, 0.5, 1.0]], 0.5, [[0, 1, 0], [0, 1, 2], [0, 3, 0], [0, 1, 3], [0, 3, 2]]
    )


def _check_kkt_scaled(b: TabularBandit, sol, epsilon: float, tol: float = 1e-9) -> None:
    """KKT re-derived here (see test_theory_ecpoc.check_kkt), with tolerances relative to |log π| ~ 1e4: δ from
    differences of the solution's log π (spacing 1.8e-12 at 1e4), primal δ ≥ ε, λ ≥ 0, λ·(δ − ε) = 0 and
    stationarity of log π − log π_ref − (r* + Aᵀλ)/β over responses."""
    p, lam, e = b.pairs, sol.multipliers, math.exp(epsilon)
    assert np.all(np.isfinite(lam)) and np.all(lam >= 0)
    shift = np.zeros_like(b.reward)
    np.add.at(shift, (p[:, 0], p[:, 1]), lam)
    np.add.at(shift, (p[:, 0], p[:, 2]), -e * lam)
    # log π = log π_ref + (r* + Aᵀλ)/β − log Z adds terms of size ~1e4 that cancel: its entries are known to a few
    # spacings of that size, so differences of them are too (1e-3·tol·mag ≈ 1e-8 absolute at mag = 1e4).
    mag = 1 + np.abs(b.log_pi_ref).max() + np.abs(b.reward + shift).max() / b.beta
    assert_allclose(logsumexp(sol.log_pi, axis=1), 0.0, atol=1e-12)
    delta = policy_delta(sol.log_pi, p)
    assert_allclose(sol.delta, delta, rtol=0, atol=tol * mag * 1e-3)
    assert np.all(delta >= epsilon - tol * mag * 1e-3)
    assert np.all(sol.delta >= epsilon - tol)
    assert np.all(np.abs(lam * (sol.delta - epsilon)) <= tol * (1 + lam))
    v = sol.log_pi - b.log_pi_ref - (b.reward + shift) / b.beta
    assert np.all(np.ptp(v, axis=1) <= tol * mag * 1e-3)
    assert sol.converged and sol.feasible and sol.primal_residual <= tol


def test_ecpoc_with_far_reference_entries_converges(tmp_path, capsys) -> None:
    """The reported failure: log π_ref ≈ −1e4 made every KKT check fail (the absolute 1e-13 tolerance lies below
    the rounding error of δ ~ 1e4), so a feasible problem was printed as "holds: False". Now KKT holds, δ ≥ ε on
    every pair, and the CLI says True."""
    b = _far_bandit()
    for eps in (0.0, 0.1, 1.0):
        _check_kkt_scaled(b, ecpoc_solve(b, eps), eps)
    status, out = _run(tmp_path, {**b.to_json(), "epsilon": 0.1})
    assert status == 0
    assert "every constraint δ ≥ ε holds: True" in capsys.readouterr().out
    assert min(_strict_json(out)["ecpoc"]["delta"]) >= 0.1 - 1e-9


@st.composite
def far_dag_bandits(draw) -> TabularBandit:
    """1–2 contexts × 2–5 responses; each response's log π_ref is either N(0,1)-ish or −1e4 + O(100); pairs follow a
    hidden ranking (acyclic, so E-CPOC is feasible for every ε)."""
    n_x, n_y = draw(st.integers(1, 2)), draw(st.integers(2, 5))
    near = st.floats(-3.0, 3.0)
    far = st.floats(-1e4 - 100.0, -1e4 + 100.0)
    logits = np.array([[draw(near) if y == 0 else draw(st.one_of(near, far)) for y in range(n_y)] for _ in range(n_x)])
    reward = np.array([[draw(st.floats(-2.0, 2.0)) for _ in range(n_y)] for _ in range(n_x)])
    pairs = []
    for x in range(n_x):
        rank = draw(st.permutations(range(n_y)))
        for i in range(n_y):
            for j in range(i + 1, n_y):
                if draw(st.booleans()):
                    pairs.append((x, rank[i], rank[j]))
    if not pairs:
        pairs = [(0, 0, 1)]
    beta = draw(st.sampled_from([0.05, 0.1, 0.5, 1.0, 5.0]))
    return TabularBandit(logits - logsumexp(logits, axis=1, keepdims=True), reward, beta, pairs)


@given(bandit=far_dag_bandits(), epsilon=st.floats(-1.0, 2.0))
@example(bandit=_far_bandit(), epsilon=0.1)
def test_ecpoc_far_reference_property(bandit, epsilon) -> None:
    """C9 on acyclic bandits with log π_ref entries near −1e4: the solver converges and KKT holds."""
    _check_kkt_scaled(bandit, ecpoc_solve(bandit, epsilon), epsilon)


def test_a_solver_that_did_not_converge_is_no_verdict(tmp_path, capsys, monkeypatch) -> None:
    """Should the solver ever stop above its KKT tolerance, `tabular` exits 3 with the residuals on stderr,
    prints no verdict and writes no file."""
    real = report_mod.ecpoc_solve

    def stalled(bandit, epsilon=0.0, **kw):
        sol = real(bandit, epsilon, **kw)
        return type(sol)(**{**sol.__dict__, "converged": False, "feasible": False, "kkt_residual": 3.4e-2})

    monkeypatch.setattr(report_mod, "ecpoc_solve", stalled)
    status, out = _run(tmp_path, _far_bandit().to_json())
    cap = capsys.readouterr()
    assert status == 3 and cap.out == "" and not out.exists()
    assert cap.err.startswith("dpocheck tabular: error: numerical failure") and "did not converge" in cap.err
    assert "3.40e-02" in cap.err


# ---------------------------------------------------------------- overflow: refuse or null (never a traceback)


def test_reward_beyond_float64_range_over_beta_is_refused(tmp_path, capsys) -> None:
    """r* = (1e308, 0, 0.5) with β = 0.5: r*/β overflows, log π* of that row cannot be represented → exit 2,
    the field named, nothing written."""
    data = {"beta": 0.5, "pi_ref": [[0.6, 0.3, 0.1]], "reward": [[1e308, 0.0, 0.5]], "pairs": [[0, 1, 2]]}
    status, out = _run(tmp_path, data)
    cap = capsys.readouterr()
    assert status == 2 and cap.out == "" and not out.exists()
    assert cap.err.startswith("dpocheck tabular: error: reward: row 0 spans [0, 1e+308]")
    data2 = {**data, "beta": 1.0, "reward": [[1e308, -1e308, 0.5]]}  # Δr* = 2e308 overflows
    assert _run(tmp_path, data2)[0] == 2
    assert "reward: row 0 spans [-1e+308, 1e+308]" in capsys.readouterr().err


def test_overflowing_objective_is_null_and_flagged(tmp_path, capsys) -> None:
    """Two contexts, each r* = (1e308, 0), π_ref = (½, ½), β = 1: every pair value is finite (Δr* = 1e308), but
    the E-CPOC objective Σ_x E_π[r*] − β·KL ≈ 2e308 is not: it is written as null and named in
    `not_representable`, and the JSON is strict."""
    data = {"beta": 1.0, "pi_ref": [[0.5, 0.5], [0.5, 0.5]], "reward": [[1e308, 0.0], [1e308, 0.0]],
            "pairs": [[0, 0, 1], [1, 0, 1]]}  # fmt: skip
    status, out = _run(tmp_path, data)
    assert status == 0
    rep = _strict_json(out)
    assert rep["ecpoc"]["objective"] is None and rep["not_representable"] == ["ecpoc.objective"]
    assert [r["delta_reward"] for r in rep["pairs"]] == [1e308, 1e308]
    assert "beyond float64 (null in the JSON, n/a above): ecpoc.objective" in capsys.readouterr().out


# ---------------------------------------------------------------- fuzz: malformed bandit files

VALID = {"beta": 1.0, "pi_ref": [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], "reward": [[0, 1, 0.5], [1, 0, 0.2]],
         "pairs": [[0, 1, 0], [1, 2, 1]], "gamma": 0.05, "epsilon": 0.1}  # fmt: skip
ODD = st.sampled_from(
    [None, True, "1", "", [], {}, [[]], [[None]], [1, 2], [[1, 2], [3]], math.nan, math.inf, -math.inf, 0, -1,
     1e308, -1e308, 1e-320, 10**400, -(10**400), 2**63, 1e17, -1e4, [[0.5, 0.5]], [[0, 1, 1]], [[0, 0, 1, 2]]]
)  # fmt: skip
KEYS = ["beta", "pi_ref", "log_pi_ref", "reward", "pairs", "gamma", "epsilon", "extra"]


@st.composite
def malformed_bandit_bytes(draw) -> bytes:
    """A bandit file damaged in one to three ways: a key deleted, added or given an odd value, a table entry or a
    pair index replaced, then possibly truncated or given non-UTF-8 bytes."""
    d = json.loads(json.dumps(VALID))
    if draw(st.booleans()):
        d["log_pi_ref"] = [[math.log(v) for v in row] for row in d.pop("pi_ref")]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["delete", "set", "entry", "pair"]))
        key = draw(st.sampled_from(KEYS))
        if kind == "delete":
            d.pop(key, None)
        elif kind == "set":
            d[key] = draw(ODD)
        elif kind == "entry":
            table = draw(st.sampled_from(["pi_ref", "log_pi_ref", "reward"]))
            if isinstance(d.get(table), list) and d[table] and isinstance(d[table][0], list) and d[table][0]:
                d[table][0][draw(st.integers(0, len(d[table][0]) - 1))] = draw(st.one_of(ODD, st.floats()))
        elif isinstance(d.get("pairs"), list) and d["pairs"] and isinstance(d["pairs"][0], list):
            d["pairs"][0][draw(st.integers(0, len(d["pairs"][0]) - 1))] = draw(st.one_of(ODD, st.integers()))
    raw = json.dumps(d).encode()
    damage = draw(st.sampled_from(["none", "none", "truncate", "bytes"]))
    if damage == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif damage == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\x80\x80", b"\xed\xa0\x80"])) + raw[at:]
    return raw


OPTIONS = st.sampled_from(
    [[], ["--gamma", "0"], ["--gamma", "1e308"], ["--epsilon", "-5"], ["--epsilon", "800"], ["--epsilon", "inf"],
     ["--gamma", "nan"], ["--epsilon", "1e-300"]]
)  # fmt: skip


@given(raw=malformed_bandit_bytes(), options=OPTIONS)
@example(raw=json.dumps(VALID).encode(), options=[])
@example(raw=b"", options=[])
@example(raw=b"\xff\xfe{}", options=[])
@example(raw=json.dumps({**VALID, "reward": [[0, 1e308, -1e308], [1, 0, 0.2]]}).encode(), options=[])
@example(raw=json.dumps({**VALID, "beta": 10**400}).encode(), options=[])
@example(raw=json.dumps({**VALID, "pairs": [[0, 1, 2**70]]}).encode(), options=[])
@example(raw=json.dumps({**VALID, "pairs": []}).encode(), options=["--gamma", "0.1"])
@example(raw=b"[" * 100000, options=[])
def test_tabular_fuzz_exit_0_2_or_3_and_no_traceback(tmp_path_factory, raw, options) -> None:
    """Malformed or extreme bandit files: exit 0 (strict JSON written, a table printed), 2 (one line
    `dpocheck tabular: error: …`, nothing written) or 3 (a stated numerical failure, nothing written); any
    exception would fail the test (it is what a traceback is)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    src, out = tmp / "bandit.json", tmp / "out.json"
    src.write_bytes(raw)
    import contextlib
    import io

    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        status = main(["tabular", str(src), "--out", str(out), *options])
    assert status in (0, 2, 3)
    if status == 0:
        _strict_json(out)
        assert "E-CPOC" in std.getvalue() and err.getvalue() == ""
    else:
        assert not out.exists() and std.getvalue() == ""
        lines = err.getvalue().splitlines()
        assert len(lines) == 1, lines
        prefix = "dpocheck tabular: error: " if status == 2 else "dpocheck tabular: error: numerical failure"
        assert lines[0].startswith(prefix), lines
    assert sorted(p.name for p in tmp.iterdir()) == (["bandit.json", "out.json"] if status == 0 else ["bandit.json"])
