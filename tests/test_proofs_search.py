"""Unit tests of the proofs checker's building blocks: the hypothesis search, the sympy comparison and the
independent torch reference of the released losses (hand-worked values)."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from hypothesis import strategies as st

from dpocheck import theory as th
from dpocheck.proofs_check import released_reference as rr
from dpocheck.proofs_check.core import jsonable
from dpocheck.proofs_check.search import rel_err, search
from dpocheck.proofs_check.strategies import reals
from dpocheck.proofs_check.symbolic import compare, limit_check, sign_check


def test_search_reports_cases_and_largest_error():
    """|sin x − x| ≤ x³/6 ≤ 1/6 on [0, 1]: no counterexample; the largest error is the largest seen."""
    res = search(
        "sin vs x",
        st.fixed_dictionaries({"x": reals(0.0, 1.0)}),
        lambda ex: abs(math.sin(ex["x"]) - ex["x"]),
        max_examples=40,
        tolerance=0.2,
    )
    assert res.passed and res.n_cases == 40 and res.n_skipped == 0
    assert 0.0 <= res.max_error <= 1 / 6 + 1e-12
    assert "no counterexample in 40 cases" in res.summary()


def test_search_shrinks_to_a_minimal_counterexample():
    """x² < 50 fails first at x = √50 ≈ 7.07; hypothesis shrinks towards the simplest failing float (≤ 8)."""
    res = search(
        "square",
        st.fixed_dictionaries({"x": reals(0.0, 1000.0)}),
        lambda ex: max(0.0, ex["x"] ** 2 - 50.0),
        max_examples=200,
        tolerance=0.0,
    )
    assert not res.passed
    x = res.counterexample["x"]
    assert 50.0 < x * x and x <= 8.0
    assert res.counterexample_error == pytest.approx(x * x - 50.0)


def test_search_pinned_examples_run_first_and_skips_are_counted():
    calls = []

    def prop(ex):
        calls.append(ex["x"])
        return None if ex["x"] < 0 else 0.0

    res = search(
        "pins",
        st.fixed_dictionaries({"x": reals(-1.0, 1.0)}),
        prop,
        max_examples=20,
        tolerance=0.5,
        pinned=[{"x": 0.25}, {"x": -0.5}],
    )
    assert calls[:2] == [0.25, -0.5]
    assert res.n_cases + res.n_skipped == len(calls) and res.n_skipped >= 1


def test_search_treats_nan_as_a_failure():
    res = search("nan", st.just({"x": 1.0}), lambda ex: float("nan"), max_examples=1, tolerance=1.0)
    assert not res.passed and res.counterexample_error == math.inf


def test_compare_proves_and_refutes():
    b = sp.Symbol("beta", positive=True)
    x = sp.Symbol("x", real=True)
    ok = compare(
        "softplus derivative",
        sp.diff(sp.log(1 + sp.exp(b * x)), x),
        b / (1 + sp.exp(-b * x)),
        {b: (0.1, 10.0), x: (-5.0, 5.0)},
    )
    assert ok.equal is True
    bad = compare("wrong", b * x, x, {b: (0.1, 10.0), x: (-5.0, 5.0)}, examples=50)
    assert bad.equal is False and bad.counterexample["beta"] != 1.0 and bad.counterexample["x"] != 0.0
    assert sign_check("e^x", sp.exp(x), "positive").equal is True
    assert sign_check("−e^x", -sp.exp(x), "positive").equal is False
    assert limit_check("1/b", 1 / b, b, sp.oo, sp.Integer(0)).equal is True
    assert limit_check("1/b wrong", 1 / b, b, sp.oo, sp.Integer(1)).equal is False


def test_jsonable_makes_strict_json():
    import json

    import numpy as np

    doc = jsonable({"a": np.float64(1.5), "b": np.array([1, 2]), "c": math.inf, "d": (np.nan, -math.inf)})
    assert doc == {"a": 1.5, "b": [1, 2], "c": "inf", "d": ["nan", "-inf"]}
    json.dumps(doc, allow_nan=False)


def test_rel_err():
    assert rel_err([1.0, 100.0], [1.0, 101.0]) == pytest.approx(1 / 101)
    assert rel_err([0.5], [0.0]) == 0.5  # absolute below 1
    assert rel_err([math.inf], [math.inf]) == 0.0 and rel_err([math.inf], [1.0]) == math.inf


# --------------------------------------------------------------------------- released reference (hand-worked)
def _t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_released_easy_branch_hand_worked():
    """Demo config β = 2.5, γ = 0.05, ℓ̄_ref = (−1.2, −1.4), policy = reference (δ_θ = δ_ref):
    a = 0.05·(1/(−1.2) + 1/(−1.4)) = 0.05·(−0.833333 − 0.714286) = −0.0773810;
    argument β·δ_θ − (β·δ_ref + a) = −a = 0.0773810; loss = softplus(−0.0773810) = log(1 + e^{−0.077381})
    = log(1.925537) = 0.655205."""
    loss, a = rr.easy_branch(_t(-1.2), _t(-1.4), _t(-1.2), _t(-1.4), 2.5, 0.05)
    assert float(a) == pytest.approx(0.05 * (1 / -1.2 + 1 / -1.4), rel=1e-15)
    assert float(a) == pytest.approx(-0.0773809524, rel=1e-9)
    assert float(loss) == pytest.approx(math.log1p(math.exp(0.05 * (1 / -1.2 + 1 / -1.4))), rel=1e-14)
    assert float(loss) == pytest.approx(0.655205, abs=5e-7)
    ours = th.released_easy_loss(_t(0.2), _t(0.2), 2.5, _t(-1.2), _t(-1.4), 0.05).loss
    assert float(ours) == pytest.approx(float(loss), rel=1e-14)


def test_released_clip_and_adaptive_hand_worked():
    """clip, β = 1: δ_ref = −1.2 − (−1.4) = 0.2 > 0 kept; δ_θ = −1.0 − (−1.5) = 0.5;
    loss = softplus(−(0.5 − 0.2)) = log(1 + e^{−0.3}) = 0.554355.
    adaptive, β = 1, γ = 0.5, τ = 2, α = 1: a = ½·log(1 + e^{2(0.5 − 0.2)}) = ½·log(2.822119) = 0.518744;
    argument 0.5 − 0.2 − 0.518744 = −0.218744; loss = softplus(0.218744) = log(1 + 1.244513) = 0.808488.
    clip with δ_ref < 0 clamps to 0: δ_ref = −1.2 − (−0.4) = −0.8 → loss = softplus(−0.5) = 0.474077."""
    pw, pl, rw, rl = _t(-1.0), _t(-1.5), _t(-1.2), _t(-1.4)
    assert float(rr.clip_branch(pw, pl, rw, rl, 1.0)) == pytest.approx(math.log1p(math.exp(-0.3)), rel=1e-14)
    assert float(rr.clip_branch(pw, pl, rw, rl, 1.0)) == pytest.approx(0.554355, abs=5e-7)
    assert float(rr.clip_branch(pw, pl, rw, _t(-0.4), 1.0)) == pytest.approx(0.474077, abs=5e-7)
    loss, a = rr.adaptive_branch(pw, pl, rw, rl, 1.0, 0.5, 2.0, 1.0)
    assert float(a) == pytest.approx(0.5 * math.log1p(math.exp(0.6)), rel=1e-14)
    assert float(a) == pytest.approx(0.518744, abs=5e-7)
    assert float(loss) == pytest.approx(0.808488, abs=5e-7)
    ours = th.released_adaptive_loss(_t(0.5), _t(0.2), 1.0, 0.5, 2.0, 1.0).loss
    assert float(ours) == pytest.approx(float(loss), rel=1e-14)


def test_released_frac_in_u():
    """Pairs: δ_θ = −0.5 ∈ (δ_ref = −1, 0) → in U; δ_θ = 0.5 → not; δ_θ = −2 < δ_ref = −1 → not. Share 1/3."""
    frac = rr.frac_in_u(_t(-1.5, -1.0, -3.0), _t(-1.0, -1.5, -1.0), _t(-2.0, -2.0, -2.0), _t(-1.0, -1.0, -1.0))
    assert float(frac) == pytest.approx(1 / 3)


def test_naive_adaptive_margin_overflows_where_theory_does_not():
    """The released log(1 + exp(·)) overflows for τ(γ − δ_ref) > ~709 in float64; the theory layer stays finite."""
    _, a = rr.adaptive_branch(_t(0.0), _t(0.0), _t(-400.0), _t(0.0), 1.0, 0.5, 2.0, 1.0)
    assert math.isinf(float(a))
    assert math.isfinite(float(th.released_adaptive_margin(-400.0, 0.5, 2.0)))


def test_tangent_negative_definite():
    """Two coordinates: v = (t, −t) gives t²(d₁ + d₂). d = (1, −2): −1 < 0 → definite (1/1 − 1/2 = 0.5 > 0);
    d = (2, −1): +1 → not (1/2 − 1 = −0.5). Two non-negative entries are never definite; all negative always are;
    the criterion survives a 1e17 entry (an eigen-decomposition of the projected matrix does not)."""
    from dpocheck.proofs_check.claims import tangent_negative_definite

    assert tangent_negative_definite([1.0, -2.0]) and not tangent_negative_definite([2.0, -1.0])
    assert not tangent_negative_definite([1.0, 1.0, -5.0]) and tangent_negative_definite([-1.0, -3.0, -0.1])
    assert tangent_negative_definite([-74.9, -0.244, -0.244, -5.7e16])
    assert tangent_negative_definite([0.1, -0.5, -0.5, -1e17]) and not tangent_negative_definite(
        [0.3, -0.5, -0.5, -1e17]
    )
