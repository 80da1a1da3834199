"""The declared e2_llm sweep: entries, γ* resolution and the tidy table from eval files (C3, C4, C8)."""

from __future__ import annotations

import json
import math

import pytest

from dpocheck.llm.train.experiment import e2_llm_entries, reference_gamma_star, resolve_gamma, tidy_rows
from dpocheck.theory.pairs import gamma_star


def _row(i: int, d: float, dref: float, lw: float, ll: float) -> dict:
    return {
        "index": i,
        "delta_theta": d,
        "delta_ref": dref,
        "ref_chosen_logp_sum": lw,
        "ref_rejected_logp_sum": ll,
        "delta_reward": None,
    }


def test_entries_cover_the_declared_grid() -> None:
    names = [e.name for e in e2_llm_entries()]
    assert len(names) == len(set(names)) == 16
    assert sum(e.loss == "cpo_margin" for e in e2_llm_entries()) == 8
    assert sum(e.loss in ("dpop", "dpo_nll") for e in e2_llm_entries()) == 4


def test_resolve_gamma() -> None:
    assert resolve_gamma("gstar/2", 0.3) == pytest.approx(0.15)
    assert resolve_gamma("1.5gstar", 0.3) == pytest.approx(0.45)
    assert resolve_gamma(0.05, 0.3) == 0.05
    assert resolve_gamma(None, 0.3) is None


def test_tidy_rows_hand_worked(tmp_path) -> None:
    ev = tmp_path / "eval"
    ev.mkdir()
    # pair 0: δ=-1, δ_ref=-2 → in U (δ<0 and δ>δ_ref); pair 1: δ=1, δ_ref=0.5 → not in U; pair 2: δ=-1, δ_ref=1.
    rows = [_row(0, -1.0, -2.0, -3.0, -1.0), _row(1, 1.0, 0.5, -1.0, -1.5), _row(2, -1.0, 1.0, -1.0, -2.0)]
    (ev / "step-4.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ev / "step-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    out = tidy_rows(tmp_path, "r", {"loss": "dpo", "beta": 0.1, "normalize": "sum"})
    assert [r["step"] for r in out] == [0, 4]
    last = out[1]
    assert last["share_in_u"] == pytest.approx(1 / 3)
    assert last["ranking_accuracy"] == pytest.approx(1 / 3)
    assert last["implicit_reward_accuracy"] == pytest.approx(2 / 3)
    assert last["share_dref_neg"] == pytest.approx(1 / 3)
    # DPO gradient weight β·σ(β(δ_ref−δ)) on the one pair in U: 0.1·σ(−0.1).
    assert last["grad_weight_in_u"] == pytest.approx(0.1 / (1 + math.exp(0.1)))
    assert last["n_pairs"] == 3


def test_reference_gamma_star_matches_theory() -> None:
    rows = [_row(0, 0, -2.0, -3.0, -1.0), _row(1, 0, 0.5, -1.0, -1.5)]
    g = reference_gamma_star(rows, 2.5, "sum")
    # only pair 0 violates: [−β·δ_ref]_+ / (1/π_w + 1/π_l) = 5 / (e^3 + e^1)
    assert g == pytest.approx(5 / (math.exp(3) + math.exp(1)))
    assert g == pytest.approx(gamma_star([-2.0, 0.5], [0.0, 0.0], 2.5, [-3.0, -1.0], [-1.0, -1.5]))
