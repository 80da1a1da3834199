"""Tests of dpocheck.llm.analysis and the `dpocheck violations` command on hand-made scores directories.

The reference scores below (summed log-probs; the per-token means use the token counts shown):

=====  ========  ==========  =====  =====  ====  ======  =========  ===========  ======
index  log π(w)  log π(l)    δ_ref  Δr*    |w|   |l|     mean(w)    mean(l)      δ̄_ref
=====  ========  ==========  =====  =====  ====  ======  =========  ===========  ======
0      −10       −12         2      1      5     4       −2         −3           1
1      −14       −10         −4     1      7     2       −2         −5           3
2      −20       −19         −1     0.05   4     19      −5         −1           −4
3      −8        −8.5        0.5    2      4     2       −2         −4.25        2.25
=====  ========  ==========  =====  =====  ====  ======  =========  ===========  ======

C2 margin β·δ_ref + Δr* (violated iff ≤ 0), summed log-probs:
β = 0.1:  1.2, 0.6, −0.05, 2.05 → 1 of 4 violated (25 %);
β = 0.25: 1.5, 0 (boundary: violated), −0.2, 2.125 → 2 of 4 (50 %);
β = 1:    3, −3, −0.95, 2.5 → 2 of 4 (50 %).
Mean log-probs, β = 1: 2, 4, −3.95, 4.25 → 1 of 4 (25 %).
Subsets: indices 0, 1 are "a"; 2, 3 are "b".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dpocheck.llm import analysis as A
from dpocheck.llm.cli.analysis import register  # noqa: F401  (the CLI module must import cheaply)

REF = [
    # index, logp_w, logp_l, Δr*, |w|, |l|, subset
    (0, -10.0, -12.0, 1.0, 5, 4, "a"),
    (1, -14.0, -10.0, 1.0, 7, 2, "a"),
    (2, -20.0, -19.0, 0.05, 4, 19, "b"),
    (3, -8.0, -8.5, 2.0, 4, 2, "b"),
]
# a trained policy: δ_θ = 3, −2, −1.5, 0.25 (so pair 1 is in U: −4 < −2 < 0)
POLICY = [(0, -1.0, -4.0), (1, -3.0, -1.0), (2, -2.5, -1.0), (3, -1.0, -1.25)]


def _row(i, lw, ll, dr=None, nw=1, nl=1, subset=None, **extra):
    return {
        "index": i,
        "chosen_logp_sum": lw,
        "rejected_logp_sum": ll,
        "chosen_logp_mean": lw / nw,
        "rejected_logp_mean": ll / nl,
        "chosen_tokens": nw,
        "rejected_tokens": nl,
        "chosen_truncated": False,
        "rejected_truncated": False,
        "delta_reward": dr,
        "reward_source": None if dr is None else "test",
        "subset": subset,
        **extra,
    }


def _write(d: Path, name: str, rows: list[dict]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / name, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


@pytest.fixture
def ref_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ref"
    rows = [_row(i, lw, ll, dr, nw, nl, s) for i, lw, ll, dr, nw, nl, s in REF]
    _write(d, "scores-0-1.jsonl", rows[2:])  # shards out of order: the reader sorts by index
    _write(d, "scores-0-0.jsonl", rows[:2])
    return d


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policy"
    # scored with the reference's tokenisation: the same token counts (violations refuses any other)
    _write(d, "scores-0-0.jsonl", [_row(i, lw, ll, None, *REF[i][4:6]) for i, lw, ll in POLICY])
    return d


def _by_beta(report):
    return {e.beta: e for e in report.per_beta}


def test_read_scores_sorted(ref_dir):
    t = A.read_scores(ref_dir)
    assert t.index.tolist() == [0, 1, 2, 3] and t.n_duplicates == 0
    assert t.delta("sum").tolist() == [2.0, -4.0, -1.0, 0.5]
    assert t.delta("mean").tolist() == [1.0, 3.0, -4.0, 2.25]
    assert t.subset.tolist() == ["a", "a", "b", "b"]


def test_violation_rates_hand_worked(ref_dir):
    """See the module docstring for the arithmetic."""
    t = A.read_scores(ref_dir)
    rep = A.analyze(t, betas=[0.1, 0.25, 1.0], normalization="sum", n_bootstrap=500, seed=3)
    by = _by_beta(rep)
    assert [by[b].violation_rate.value for b in (0.1, 0.25, 1.0)] == [0.25, 0.5, 0.5]
    assert by[0.25].violation_rate.count == 2 and by[0.25].violation_rate.n == 4
    assert by[0.1].idealized_ranking_accuracy.value == 0.75
    assert rep.at_beta(0.1) is by[0.1]
    v = by[1.0].violation_rate
    assert v.claim.startswith("C2") and v.beta == 1.0 and v.normalization == "sum"
    ref = rep.reference
    assert ref.reference_preference_rate.value == 0.5 and ref.u_nonempty_share.value == 0.5
    sub = by[0.1].violation_rate_by_subset
    assert (sub["a"].value, sub["b"].value) == (0.0, 0.5)
    assert by[1.0].violation_rate_by_subset["a"].value == 0.5
    # δ_{π*} = δ_ref + Δr*/β at β = 1: 3, −3, −0.95, 2.5 → median (−0.95 + 2.5)/2 = 0.775
    assert by[1.0].delta_opt.median == pytest.approx(0.775)
    mean = A.analyze(t, betas=[1.0], normalization="mean", n_bootstrap=0)
    assert mean.per_beta[0].violation_rate.value == 0.25
    assert "perplexity" in mean.normalization_note
    with pytest.raises(KeyError, match="not in the report's grid"):
        rep.at_beta(7.0)


def test_report_json_layout(ref_dir, policy_dir):
    """The typed report's as_dict is the on-disk JSON layout (key order included) that readers rely on."""
    rep = A.analyze(A.read_scores(ref_dir), betas=[1.0], policy=A.read_scores(policy_dir), n_bootstrap=20)
    d = json.loads(A.report_to_json(rep))
    assert list(d) == [
        "tool", "normalization", "normalization_note", "betas", "n_bootstrap", "seed",
        "inputs", "delta_reward", "reference", "policy", "per_beta", "displacement",
    ]  # fmt: skip
    e = d["per_beta"][0]
    assert list(e) == [
        "beta", "normalization", "violation_rate", "idealized_ranking_accuracy", "delta_opt",
        "violation_rate_by_subset", "gamma_star", "violation_rate_with_cpo_margin", "policy",
    ]  # fmt: skip
    assert list(e["violation_rate"]) == ["value", "ci95", "count", "n", "claim", "beta", "normalization"]
    assert list(e["gamma_star"]) == [
        "claim", "beta", "normalization", "n_pairs_needing_margin", "log_gamma_star", "log10_gamma_star",
        "gamma_star", "argmax_index", "note",
    ]  # fmt: skip
    assert e["violation_rate_with_cpo_margin"][0]["gamma"] == A.DEFAULT_GAMMAS[0]
    assert list(d["reference"]["delta_ref"]) == ["n", "mean", "median", "min", "max", "normalization"]
    assert d["policy"]["share_in_u"]["value"] == rep.policy.share_in_u.value == 0.25
    assert d["per_beta"][0]["policy"]["dpo_loss_mean"]["log2"] == math.log(2.0)
    assert A.report_to_json(rep) == A.report_to_json(rep.as_dict())


def test_gamma_star_in_log_space(ref_dir):
    """β = 1: violated pairs 1 (need 3) and 2 (need 0.95); 1/π_ref(y_w) + 1/π_ref(y_l) = e^14 + e^10 and
    e^20 + e^19, so log γ*_1 = log 3 − (14 + log(1 + e^−4)) = −12.937… beats log γ*_2 = log 0.95 − (20 +
    log(1 + e^−1)) = −20.36…: γ* is pair 1's. A margin with γ ≤ γ*_pair leaves the pair violated."""
    t = A.read_scores(ref_dir)
    e = A.analyze(t, betas=[1.0], gammas=[1e-9, 1e-6], n_bootstrap=0).per_beta[0]
    gs = e.gamma_star
    expect = math.log(3.0) - (14.0 + math.log1p(math.exp(-4.0)))
    assert gs.log_gamma_star == pytest.approx(expect, abs=1e-12)
    assert gs.log10_gamma_star == pytest.approx(expect / math.log(10.0), abs=1e-12)
    assert gs.gamma_star == pytest.approx(math.exp(expect), rel=1e-12)
    assert gs.argmax_index == 1 and gs.n_pairs_needing_margin == 2
    # γ = 1e-9 (log −20.7): above γ*_2 (−20.36)? no, −20.7 < −20.36 so pair 2 stays violated; pair 1 too.
    # γ = 1e-6 (log −13.8): pair 2 fixed (−13.8 > −20.36), pair 1 still violated (−13.8 < −12.94).
    still = {x.tag("gamma"): x.value for x in e.violation_rate_with_cpo_margin}
    assert still == {1e-9: 0.5, 1e-6: 0.25}
    # log margin per unit γ: smallest at pair 3, logaddexp(8, 8.5) = 8.5 + log(1 + e^-0.5); largest at pair 2,
    # logaddexp(20, 19) = 20 + log(1 + e^-1)
    lm = A.analyze(t, betas=[1.0], n_bootstrap=0).reference.log_margin_per_unit_gamma
    assert lm.min == pytest.approx(8.5 + math.log1p(math.exp(-0.5)), abs=1e-12)
    assert lm.max == pytest.approx(20.0 + math.log1p(math.exp(-1.0)), abs=1e-12)


def test_policy_equal_reference_gives_log2_and_empty_U(ref_dir):
    """π_θ = π_ref ⇒ δ_θ = δ_ref on every pair: ℓ_DPO = softplus(0) = log 2 exactly, none in U, weight β/2."""
    t = A.read_scores(ref_dir)
    rep = A.analyze(t, betas=[0.1, 1.0], policy=t, n_bootstrap=100)
    assert rep.policy.share_in_u.value == 0.0
    assert rep.policy.implicit_reward_accuracy.value == 0.0
    assert rep.policy.ranking_accuracy.value == 0.5
    for e in rep.per_beta:
        assert e.policy.dpo_loss_mean == math.log(2.0)
        w = e.policy.dpo_gradient_weight
        assert w.min == w.max == e.beta / 2 == w.at_reference


def test_policy_metrics_hand_worked(ref_dir, policy_dir):
    """δ_θ = 3, −2, −1.5, 0.25 against δ_ref = 2, −4, −1, 0.5:
    in U (δ_ref < δ_θ < 0): only pair 1 → 1/4; δ_θ > 0: pairs 0, 3 → 1/2; δ_θ > δ_ref: pairs 0, 1 → 1/2.
    β = 1: mean ℓ_DPO = mean softplus(δ_ref − δ_θ) = (softplus(−1) + softplus(−2) + softplus(0.5) +
    softplus(0.25)) / 4; weight on pair 1 (in U) = σ(−4 + 2) = σ(−2); exit weight there = σ(β·δ_ref) =
    σ(−4)."""
    rep = A.analyze(A.read_scores(ref_dir), betas=[1.0], policy=A.read_scores(policy_dir), n_bootstrap=0)
    p = rep.policy
    assert (p.share_in_u.value, p.ranking_accuracy.value) == (0.25, 0.5)
    assert p.implicit_reward_accuracy.value == 0.5 and p.n_joined == 4
    e = rep.per_beta[0].policy

    def sp(x):
        return math.log1p(math.exp(x))

    assert e.dpo_loss_mean == pytest.approx((sp(-1) + sp(-2) + sp(0.5) + sp(0.25)) / 4, abs=1e-14)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert e.dpo_gradient_weight_in_u.mean == pytest.approx(sig(-2.0), abs=1e-15)
    assert e.exit_gradient_weight_in_u.mean == pytest.approx(sig(-4.0), abs=1e-15)


def test_bootstrap_ci_seeded_and_contains_estimate():
    """2,000 resamples of a 0/1 sample with mean 0.3 (n = 1,000): the interval holds 0.3, has about the
    normal-approximation width 2·1.96·√(0.3·0.7/1000) = 0.0568, and is reproducible from its seed."""
    x = np.zeros(1000)
    x[:300] = 1.0
    lo, hi = A.bootstrap_mean_ci(x, 2000, seed=7)
    assert lo < 0.3 < hi
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.3 * 0.7 / 1000), rel=0.15)
    assert A.bootstrap_mean_ci(x, 2000, seed=7) == (lo, hi)
    y = np.arange(40.0) ** 1.5  # continuous values: another seed gives another interval
    assert A.bootstrap_mean_ci(y, 500, seed=8) != A.bootstrap_mean_ci(y, 500, seed=9)
    assert A.bootstrap_mean_ci(y, 500, seed=8) == A.bootstrap_mean_ci(y, 500, seed=8)
    assert A.bootstrap_mean_ci(np.ones(5), 100) == (1.0, 1.0)
    assert all(math.isnan(v) for v in A.bootstrap_mean_ci([], 100))


def test_report_ci_contains_point_estimates(ref_dir):
    rep = A.analyze(A.read_scores(ref_dir), betas=[0.25], n_bootstrap=300, seed=1)
    v = rep.per_beta[0].violation_rate
    assert v.ci95[0] <= v.value <= v.ci95[1]
    assert rep == A.analyze(A.read_scores(ref_dir), betas=[0.25], n_bootstrap=300, seed=1)
    # the idealized ranking accuracy is the mirrored share: 1 − rate, interval and count mirrored
    acc = rep.per_beta[0].idealized_ranking_accuracy
    assert acc.value == 1 - v.value and acc.ci95 == (1 - v.ci95[1], 1 - v.ci95[0]) and acc.count == v.n - v.count


def test_no_delta_reward_is_never_invented(tmp_path):
    """Rows without Δr*: the violation rate is absent (None with a note); Δr*-free numbers are still there."""
    d = tmp_path / "s"
    _write(d, "scores-0-0.jsonl", [_row(i, lw, ll) for i, lw, ll, *_ in REF])
    t = A.read_scores(d)
    dr = A.resolve_delta_reward(t)
    assert dr.values is None and "none" in dr.label
    rep = A.analyze(t, betas=[0.1], delta_reward=dr, n_bootstrap=0)
    e = rep.per_beta[0]
    assert e.violation_rate is None and "--assume-delta-reward" in e.unavailable_note
    v = rep.as_dict()["per_beta"][0]["violation_rate"]
    assert v["value"] is None and "--assume-delta-reward" in v["note"]
    assert e.gamma_star is None and "gamma_star" not in rep.as_dict()["per_beta"][0]
    assert rep.reference.u_nonempty_share.value == 0.5
    md = A.render_markdown(rep)
    assert "not computed" in md and "ASSUMED" not in md
    # a user-chosen constant is labelled as such: Δr* = 0.5, β = 0.1: margins 0.7, 0.1, 0.4, 0.55 → none
    # violated; β = 1: 2.5, −3.5, −0.5, 1 → 2 of 4
    assumed = A.resolve_delta_reward(t, assume=0.5)
    rep = A.analyze(t, betas=[0.1, 1.0], delta_reward=assumed, n_bootstrap=0)
    assert [e.violation_rate.value for e in rep.per_beta] == [0.0, 0.5]
    assert "ASSUMED" in rep.per_beta[1].violation_rate.tag("delta_reward")
    assert "ASSUMED" in rep.as_dict()["per_beta"][1]["violation_rate"]["delta_reward"]
    assert "ASSUMED" in A.render_markdown(rep)


def test_delta_reward_file_joined_on_index(ref_dir, tmp_path):
    """A reward file (index, delta_reward) overrides the rows; a pair it lacks is left out and counted.
    Δr* = 0.5 for indices 0, 1, 2 at β = 0.25: margins 1, −0.5, 0.25 → 1 of 3 violated."""
    f = tmp_path / "rw.jsonl"
    f.write_text("".join(json.dumps({"index": i, "delta_reward": 0.5}) + "\n" for i in (0, 1, 2, 99)))
    t = A.read_scores(ref_dir)
    dr = A.resolve_delta_reward(t, delta_reward_file=f)
    assert dr.n_missing == 1 and "rw.jsonl" in dr.label
    rep = A.analyze(t, betas=[0.25], delta_reward=dr, n_bootstrap=0)
    assert rep.per_beta[0].violation_rate.value == pytest.approx(1 / 3)
    assert rep.delta_reward.n_without == 1 and "1 pairs have no Δr*" in rep.delta_reward.note
    assert A.join_summary(rep) == ["Δr* join: 3 of 4 scored pairs joined, 1 without Δr*"]
    with pytest.raises(ValueError, match="not both"):
        A.resolve_delta_reward(t, delta_reward_file=f, assume=1.0)


def test_duplicates_missing_rows_and_merged_file(ref_dir):
    """An identical repeated row is dropped and counted; a conflicting one is an error; a complete run's
    merged scores.jsonl is read instead of its shards; a manifest count that disagrees is reported."""
    rows = [json.loads(x) for x in (ref_dir / "scores-0-0.jsonl").read_text().splitlines()]
    _write(ref_dir, "scores-0-2.jsonl", rows[:1])
    t = A.read_scores(ref_dir)
    assert len(t) == 4 and t.n_duplicates == 1
    (ref_dir / "manifest.json").write_text(json.dumps({"status": "complete", "counts": {"scored": 5}}))
    all_rows = [_row(i, lw, ll, dr, nw, nl, s) for i, lw, ll, dr, nw, nl, s in REF]
    _write(ref_dir, "scores.jsonl", all_rows)
    t = A.read_scores(ref_dir)
    assert t.shards == ["scores.jsonl"] and t.n_duplicates == 0
    assert any("expects 5 scored pairs" in w for w in t.warnings)
    (ref_dir / "manifest.json").write_text(json.dumps({"status": "running"}))
    t = A.read_scores(ref_dir)
    assert "scores.jsonl" not in t.shards and any("not complete" in w for w in t.warnings)
    _write(ref_dir, "scores-0-3.jsonl", [{**rows[0], "chosen_logp_sum": -1.0}])
    with pytest.raises(A.ScoresError, match="index 0 already seen"):
        A.read_scores(ref_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chosen_logp_sum": float("nan")}, "line 1: field 'chosen_logp_sum' must be a finite number"),
        ({"rejected_logp_mean": 0.5}, "must be <= 0"),
        ({"index": -1}, "field 'index' must be a non-negative integer"),
        ({"chosen_tokens": 0}, "field 'chosen_tokens' must be a positive integer"),
        ({"delta_reward": "big"}, "field 'delta_reward' must be a finite number or null"),
    ],
)
def test_bad_rows_name_shard_line_and_field(tmp_path, change, message):
    d = tmp_path / "bad"
    _write(d, "scores-0-0.jsonl", [{**_row(0, -1.0, -2.0), **change}])
    with pytest.raises(A.ScoresError, match=message) as info:
        A.read_scores(d)
    assert "scores-0-0.jsonl line 1" in str(info.value)


def test_missing_inputs(tmp_path):
    with pytest.raises(A.ScoresError, match="not found"):
        A.read_scores(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(A.ScoresError, match="no \\*.jsonl"):
        A.read_scores(tmp_path / "empty")
    _write(tmp_path / "m", "scores-0-0.jsonl", [{"index": 0, "chosen_logp_sum": -1.0}])
    with pytest.raises(A.ScoresError, match="field 'rejected_logp_sum' is missing"):
        A.read_scores(tmp_path / "m")


def test_cli_violations_end_to_end(ref_dir, policy_dir, tmp_path, capsys):
    from dpocheck.cli import main

    out = tmp_path / "out"
    rc = main(
        [
            "violations",
            "--scores",
            str(ref_dir),
            "--policy-scores",
            str(policy_dir),
            "--beta",
            "0.1,0.25,1",
            "--normalize",
            "both",
            "--out",
            str(out),
            "--bootstrap",
            "200",
            "--seed",
            "5",
        ]
    )
    assert rc == 0
    md = capsys.readouterr().out
    assert "Violation of the implicit assumption (C2" in md and "share in U" in md
    for norm in ("sum", "mean"):
        rep = json.loads((out / f"violations-{norm}.json").read_text())
        assert rep["normalization"] == norm and rep["betas"] == [0.1, 0.25, 1.0]
        assert (out / f"violations-{norm}.md").read_text().startswith("# DPO–RLHF")
        assert (out / f"fig1-{norm}.png").read_bytes()[:4] == b"\x89PNG"
    rep = json.loads((out / "violations-sum.json").read_text())
    assert [e["violation_rate"]["value"] for e in rep["per_beta"]] == [0.25, 0.5, 0.5]
    assert rep["policy"]["share_in_u"]["value"] == 0.25
    # assumed constant and the no-Δr* path also run; bad input gives exit status 2 and a message
    assert (
        main(
            [
                "violations",
                "--scores",
                str(ref_dir),
                "--assume-delta-reward",
                "0.5",
                "--out",
                str(tmp_path / "o2"),
                "--bootstrap",
                "50",
                "--quiet",
                "--no-plot",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "violations",
                "--scores",
                str(ref_dir),
                "--ignore-row-delta-reward",
                "--out",
                str(tmp_path / "o3"),
                "--bootstrap",
                "50",
                "--quiet",
            ]
        )
        == 0
    )
    assert (tmp_path / "o3" / "fig1-sum.png").exists()
    assert main(["violations", "--scores", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "error" in capsys.readouterr().err


# --------------------------------------------------------------------------- manifests written, then read back
def _manifest(d: Path, sha: str, scored: int | None = None, status: str = "complete") -> None:
    """A scores manifest made by the writer functions `dpocheck score` uses."""
    from dpocheck.llm import manifest as M
    from dpocheck.llm.scoring.runner import open_scores_output, scores_fingerprint

    fresh = d.with_name(d.name + "-manifest")  # the scorer opens its manifest before any shard exists
    fp = scores_fingerprint({"path": "m"}, {"path": "data.jsonl", "sha256": sha}, {}, {})
    run = open_scores_output(fresh, fp, resume=False, world_size=1, tokenizer_detail={})
    if status == "complete":
        run.complete({"scored": scored}, skipped=[])
    (fresh / M.MANIFEST).replace(d / M.MANIFEST)


def test_manifest_keys_written_are_read_back(ref_dir):
    from dpocheck.llm import manifest as M

    _manifest(ref_dir, "a" * 64, scored=6)
    t = A.read_scores(ref_dir)
    assert M.data_sha256(t.manifest) == "a" * 64
    assert M.scored_pair_count(t.manifest) == 6 and M.is_complete(t.manifest)
    assert any("expects 6 scored pairs but the shards hold 4 rows" in w for w in t.warnings)
    # one layout: every manifest (a reward sidecar too) records its data under fingerprint.data
    assert M.data_sha256({"fingerprint": {"data": {"path": "x", "sha256": "b" * 64}}}) == "b" * 64
    assert M.data_sha256({"identity": {"data": {"path": "x", "sha256": "b" * 64}}}) is None


def test_running_manifest_flagged(ref_dir):
    _manifest(ref_dir, "a" * 64, status="running")
    assert any("not complete (status 'running')" in w for w in A.read_scores(ref_dir).warnings)


def _violations(*argv: str) -> int:
    from dpocheck.cli import main

    return main(["violations", "--quiet", "--no-plot", "--bootstrap", "20", *argv])


def test_join_refused_when_data_differs(ref_dir, policy_dir, tmp_path, capsys):
    _manifest(ref_dir, "a" * 64, scored=4)
    _manifest(policy_dir, "b" * 64, scored=4)
    out = tmp_path / "o"
    assert _violations("--scores", str(ref_dir), "--policy-scores", str(policy_dir), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dpocheck violations: error: data mismatch")
    assert str(ref_dir) in err[0] and str(policy_dir) in err[0] and "a" * 64 in err[0] and "b" * 64 in err[0]
    assert not out.exists()
    rc = _violations(
        "--scores", str(ref_dir), "--policy-scores", str(policy_dir), "--out", str(out), "--allow-data-mismatch"
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "policy join: 4 pairs joined, 0 reference-only, 0 policy-only" in err
    rep = json.loads((out / "violations-sum.json").read_text())
    assert any("joined anyway: --allow-data-mismatch" in w for w in rep["inputs"]["warnings"])
    md = (out / "violations-sum.md").read_text()
    assert "WARNING: data mismatch" in md and "policy join: 4 pairs joined" in md


def test_delta_reward_join_refused_when_data_differs(ref_dir, tmp_path, capsys):
    from dpocheck.llm import manifest as M

    _manifest(ref_dir, "a" * 64, scored=4)
    f = tmp_path / "dr.jsonl"
    f.write_text("".join(json.dumps({"index": i, "delta_reward": 0.5}) + "\n" for i in (0, 1, 2)))
    M.write_manifest(M.sidecar_path(f), {"fingerprint": {"data": {"path": "y", "sha256": "c" * 64}}})
    assert _violations("--scores", str(ref_dir), "--delta-reward", str(f), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "data mismatch" in err and str(f) in err and "c" * 64 in err
    M.write_manifest(M.sidecar_path(f), {"fingerprint": {"data": {"path": "y", "sha256": "a" * 64}}})
    assert _violations("--scores", str(ref_dir), "--delta-reward", str(f), "--out", str(tmp_path / "o")) == 0
    assert "Δr* join: 3 of 4 scored pairs joined, 1 without Δr*" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bootstrap", "-5"], "must be >= 0"),
        (["--beta", "0.1,,1"], "empty entry"),
        (["--beta", "1,1"], "duplicate value(s) 1"),
        (["--gamma", "0.5,0.5"], "duplicate value(s) 0.5"),
    ],
)
def test_violations_bad_arguments(ref_dir, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        _violations("--scores", str(ref_dir), "--out", str(tmp_path / "o"), *argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bootstrap_zero_means_no_intervals(ref_dir, tmp_path):
    out = tmp_path / "o"
    assert _violations("--scores", str(ref_dir), "--out", str(out), "--bootstrap", "0") == 0
    rep = json.loads((out / "violations-sum.json").read_text())
    assert rep["n_bootstrap"] == 0 and rep["per_beta"][0]["violation_rate"]["ci95"] is None


def test_scores_given_a_file(ref_dir, tmp_path, capsys):
    _manifest(ref_dir, "a" * 64, scored=4)
    shard = ref_dir / "scores-0-0.jsonl"
    assert _violations("--scores", str(shard), "--out", str(tmp_path / "o")) == 0
    assert f"{shard} is a file; read the scores directory that holds it" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "violations-sum.json").read_text())["inputs"]["n_pairs"] == 4
    lone = tmp_path / "lone.jsonl"
    lone.write_text("{}\n")
    assert _violations("--scores", str(lone), "--out", str(tmp_path / "o2")) == 2
    err = capsys.readouterr().err
    assert "is a file, not a scores directory" in err and "not found" not in err
