"""Likelihood displacement next to U in ``dpocheck violations`` (PAPER §6; Razin et al. 2024), on hand-made scores.

Four pairs, one per cell of U × displacement (summed log-probs; 5 chosen and 4 rejected tokens each):

=====  ==============  ==============  ======  =====  ====  ====  =========  =========
index  π_ref (w, l)    π_θ (w, l)      δ_ref   δ_θ    Δ_w   Δ_l   in U       displaced
=====  ==============  ==============  ======  =====  ====  ====  =========  =========
0      −10, −8         −11, −10        −2      −1     −1    −2    yes        yes
1      −10, −8         −9, −8          −2      −1     +1    0     yes        no
2      −10, −11        −11, −14        1       3      −1    −3    no         yes
3      −10, −11        −9, −12         1       3      +1    −1    no         no
=====  ==============  ==============  ======  =====  ====  ====  =========  =========

Both fell: pairs 0 and 2 (½); displaced while δ_θ > 0: pair 2 (¼); displaced while δ_θ > δ_ref: 0 and 2 (½; then
Δ_l < Δ_w < 0). Per token the chosen shifts are ∓0.2, so the mean drop is 0: healthy. The reference's CHES
(sum form) is 4, 1, 3, 2: Spearman ρ with Δ_w = (−1, 1, −1, 1) is −4/√20 (ranks 4, 1, 3, 2 and 1.5, 3.5, 1.5, 3.5).
"""

from __future__ import annotations

import json
import math
from itertools import groupby
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dpocheck.llm import analysis as A
from dpocheck.llm.analysis.displacement import health_verdict, pair_table

REF = [(0, -10.0, -8.0), (1, -10.0, -8.0), (2, -10.0, -11.0), (3, -10.0, -11.0)]
POL = [(0, -11.0, -10.0), (1, -9.0, -8.0), (2, -11.0, -14.0), (3, -9.0, -12.0)]
CHES = [4.0, 1.0, 3.0, 2.0]


def _row(i, lw, ll, **extra):
    return {
        "index": i,
        "chosen_logp_sum": lw,
        "rejected_logp_sum": ll,
        "chosen_logp_mean": lw / 5,
        "rejected_logp_mean": ll / 4,
        "chosen_tokens": 5,
        "rejected_tokens": 4,
        **extra,
    }


def _write(d: Path, rows: list[dict]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "scores-0-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    ref = [_row(i, w, lo, ches_sum=c, ches_mean=c / 20) for (i, w, lo), c in zip(REF, CHES, strict=True)]
    return _write(tmp_path / "ref", ref), _write(tmp_path / "pol", [_row(*p) for p in POL])


def _logps(rows):
    return {
        "chosen_logp_sum": np.array([r[1] for r in rows]),
        "rejected_logp_sum": np.array([r[2] for r in rows]),
        "chosen_logp_mean": np.array([r[1] / 5 for r in rows]),
        "rejected_logp_mean": np.array([r[2] / 4 for r in rows]),
    }


def test_pair_table_by_hand():
    t = pair_table(_logps(POL), _logps(REF), "sum")
    assert t["chosen_logp_shift_sum"].tolist() == [-1.0, 1.0, -1.0, 1.0]
    assert t["rejected_logp_shift_sum"].tolist() == [-2.0, 0.0, -3.0, -1.0]
    assert t["chosen_logp_shift_mean"] == pytest.approx([-0.2, 0.2, -0.2, 0.2], abs=1e-15)
    assert t["delta_ref"].tolist() == [-2.0, -2.0, 1.0, 1.0] and t["delta_theta"].tolist() == [-1.0, -1.0, 3.0, 3.0]
    assert t["in_u"].tolist() == [True, True, False, False]
    assert t["displaced"].tolist() == [True, False, True, False]
    assert t["both_fell"].tolist() == [True, False, True, False]
    assert t["displaced_while_ranked_correct"].tolist() == [False, False, True, False]
    assert t["displaced_while_implicit_correct"].tolist() == [True, False, True, False]
    assert not t["degenerate"].any()
    # δ_θ − δ_ref = Δ_w − Δ_l on every pair (PAPER §6)
    assert (t["delta_theta"] - t["delta_ref"]).tolist() == (
        t["chosen_logp_shift_sum"] - t["rejected_logp_shift_sum"]
    ).tolist()


def test_non_finite_and_collapsed_pairs_are_marked_degenerate():
    pol = _logps(POL)
    pol["chosen_logp_sum"][1] = np.nan
    pol["chosen_logp_mean"][3] = -2.0 - 2.5  # reference −2 per token: a 2.5-nat fall (the mean decides)
    t = pair_table(pol, _logps(REF), "sum")
    assert t["finite"].tolist() == [True, False, True, True]
    assert t["degenerate"].tolist() == [False, True, False, True]
    assert not t["in_u"][1] and not t["displaced"][1]  # nothing is claimed of a non-finite pair


def test_displacement_result_by_hand(dirs):
    ref, pol = (A.read_scores(d) for d in dirs)
    rep = A.analyze(ref, betas=[0.1], policy=pol, n_bootstrap=200)
    d = rep.displacement
    assert d.n_pairs == 4 and d.normalization == "sum"
    assert (d.share_displaced.value, d.share_both_fell.value) == (0.5, 0.5)
    assert d.share_displaced_while_ranked_correct.value == 0.25
    assert d.share_displaced_while_implicit_correct.value == 0.5
    assert {k: s.value for k, s in d.u_by_displacement.items()} == {
        "in_u_and_displaced": 0.25,
        "in_u_not_displaced": 0.25,
        "displaced_not_in_u": 0.25,
        "neither": 0.25,
    }
    assert d.chosen_logp_shift["sum"].mean == 0.0 and d.rejected_logp_shift["sum"].mean == -1.5
    assert d.health.verdict == "healthy" and d.health.chosen_logp_drop_per_token == pytest.approx(0.0, abs=1e-15)
    rho = {(c.x, c.y): c.value for c in d.ches_predicts}
    assert rho[("ches_sum (reference)", "chosen_logp_shift_sum")] == pytest.approx(-4 / math.sqrt(20), rel=1e-12)
    assert rho[("ches_mean (reference)", "in_u")] == pytest.approx(0.0, abs=1e-15)  # CHES 4, 1 in U; 3, 2 not
    assert rep.reference.ches.n_with_ches == 4 and rep.reference.ches.ches["sum"].median == 2.5
    assert rep.reference.ches.by_delta_ref_sign["sum"]["delta_ref<0"].median == 2.5  # pairs 0, 1: CHES 4, 1
    j = json.loads(A.report_to_json(rep))
    assert list(j["displacement"]) == [
        "normalization", "n_pairs", "chosen_logp_shift", "rejected_logp_shift", "share_displaced", "share_both_fell",
        "share_displaced_while_ranked_correct", "share_displaced_while_implicit_correct", "u_by_displacement",
        "ches_predicts", "health",
    ]  # fmt: skip
    assert j["displacement"]["health"]["verdict"] == "healthy" and "ches" in j["reference"]
    md = A.render_markdown(rep)
    assert "## Likelihood displacement next to U" in md and "CHES of the reference" in md and "health: healthy" in md


def test_reference_without_ches_reports_none(dirs, tmp_path):
    ref = _write(tmp_path / "plain", [_row(*r) for r in REF])
    rep = A.analyze(A.read_scores(ref), betas=[0.1], policy=A.read_scores(dirs[1]), n_bootstrap=0)
    assert rep.reference.ches is None and rep.displacement.ches_predicts == ()
    assert np.isnan(A.read_scores(ref).ches_sum).all()
    assert "CHES (PAPER §6): not in these reference rows; `dpocheck score` writes it" in A.render_markdown(rep)


def test_bad_ches_value_names_the_field(tmp_path):
    d = _write(tmp_path / "bad", [_row(0, -1.0, -2.0, ches_sum="high")])
    with pytest.raises(A.ScoresError, match=r"scores-0-0.jsonl line 1: field 'ches_sum' must be a finite number"):
        A.read_scores(d)


# ------------------------------------------------------------------------------------------- health
@pytest.mark.parametrize(
    "drop,verdict",
    [
        (0.0, "healthy"),
        (-3.0, "healthy"),
        (0.5, "healthy"),
        (0.51, "degraded"),
        (2.0, "degraded"),
        (2.01, "degenerate"),
    ],
)
def test_health_thresholds_by_hand(drop, verdict):
    """Per-token chosen log-prob of the reference −2; the policy's −2 − drop on every pair; the boundaries (0.5 and
    2 nats exactly) belong to the milder verdict ('more than … nats')."""
    ref = np.full(4, -2.0)
    h = health_verdict(ref - drop, ref, vocab_size=49152)
    assert h.verdict == verdict and h.chosen_logp_drop_per_token == pytest.approx(drop, abs=1e-12)
    assert h.uniform_logp_per_token == pytest.approx(-math.log(49152)) and h.line().startswith(f"health: {verdict}")


def test_health_non_finite_or_empty_is_degenerate():
    h = health_verdict([-2.0, np.nan], [-2.0, -2.0])
    assert h.verdict == "degenerate" and h.n_non_finite == 1 and "1 of 2 pairs have a non-finite" in h.reasons[0]
    assert health_verdict([], []).verdict == "degenerate"
    assert health_verdict([np.inf * -1], [-2.0]).reasons == ("no pair has finite log-probs",)


# ------------------------------------------------------------------------------------------- transitions
def test_episode_patterns_by_hand():
    flags = np.array(
        [
            [0, 0, 0, 0],  # never in U
            [0, 1, 0, 0],  # entered and left
            [0, 0, 1, 1],  # entered and stuck
            [0, 1, 0, 1],  # left and re-entered (in at the end)
            [1, 0, 1, 0],  # left and re-entered (out at the end)
            [1, 1, 1, 1],  # one stretch to the end
        ],
        dtype=bool,
    )
    assert A.episode_patterns(flags).tolist() == [
        "never",
        "entered_and_left",
        "entered_and_stuck",
        "left_and_reentered",
        "left_and_reentered",
        "entered_and_stuck",
    ]


@given(arrays(bool, st.tuples(st.integers(1, 6), st.integers(1, 6))))
@example(np.zeros((1, 1), dtype=bool))
@example(np.ones((1, 1), dtype=bool))
def test_episode_patterns_partition_the_pairs(flags):
    got = A.episode_patterns(flags)
    for row, label in zip(flags, got, strict=True):
        stretches = sum(1 for value, _ in groupby(row) if value)
        want = (
            "never"
            if stretches == 0
            else "left_and_reentered"
            if stretches > 1
            else "entered_and_stuck"
            if row[-1]
            else "entered_and_left"
        )
        assert label == want


# ------------------------------------------------------------------------------------------- statistics
def test_spearman_matches_scipy_and_is_seeded():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, 40).astype(float)  # ties
    y = x + rng.normal(size=40)
    rho, ci, n = A.spearman_ci(x, y, 500, seed=1)
    assert rho == pytest.approx(spearmanr(x, y).statistic, rel=1e-12) and n == 40
    assert ci[0] < rho < ci[1] and A.spearman_ci(x, y, 500, seed=1) == (rho, ci, n)
    assert A.spearman_ci(np.ones(5), np.arange(5.0)) == (None, None, 5)  # a constant variable has no ranking
    assert A.spearman_ci([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])[2] == 2  # only the finite pairs count


def test_t_interval_by_hand():
    """1, 2, 3: mean 2, s = 1, t_{0.975, 2} = 4.302652729749464, half-width 4.3027/√3 = 2.48414."""
    mean, (lo, hi), n = A.t_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and hi - mean == pytest.approx(4.302652729749464 / math.sqrt(3), rel=1e-12)
    assert mean - lo == pytest.approx(hi - mean) and A.t_interval([0.5]) == (0.5, None, 1)


# ------------------------------------------------------------------------------------------- the command
def test_cli_writes_the_pair_table_figure_and_health(dirs, tmp_path, capsys):
    from dpocheck.cli import main

    out = tmp_path / "out"
    argv = ["violations", "--scores", str(dirs[0]), "--policy-scores", str(dirs[1]), "--out", str(out)]
    assert main([*argv, "--beta", "0.1", "--bootstrap", "50", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "dpocheck violations (sum): health: healthy" in err
    lines = (out / "pairs-sum.csv").read_text().splitlines()
    assert lines[0].split(",")[:4] == ["index", "delta_ref", "delta_theta", "chosen_logp_shift_sum"]
    assert len(lines) == 5 and lines[1].startswith("0,-2.0,-1.0,-1.0,")
    assert (out / "displacement-sum.png").read_bytes()[:4] == b"\x89PNG"
