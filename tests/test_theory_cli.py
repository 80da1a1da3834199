"""Smoke and contract tests of `dpocheck tabular BANDIT.json [--out RESULT.json]`, in-process
through dpocheck.cli.main and once as a real subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpocheck.cli import main
from dpocheck.theory.cli import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bandit.json"
TOP_KEYS = {"beta", "n_pairs", "log_pi_opt", "gamma_star", "violation_rate", "pairs", "ecpoc"}
PAIR_KEYS = {
    "x", "w", "l", "delta_ref", "delta_reward", "delta_opt", "violated", "u_nonempty",
    "exit_gradient_weight", "escape_time", "gamma_star_pair",
}  # fmt: skip
ECPOC_KEYS = {"epsilon", "log_pi", "multipliers", "delta", "all_constraints_hold"}


def _strict_json(path: Path) -> dict:
    """Parse JSON rejecting NaN/Infinity (what allow_nan=False promises)."""

    def bad(name: str):
        raise AssertionError(f"non-finite JSON constant {name} in {path}")

    return json.loads(path.read_text(), parse_constant=bad)


def test_example_bandit_in_process(tmp_path, capsys) -> None:
    """examples/bandit.json (β = 1, γ = 0.05, ε = 0.1) — every pair value worked by hand:
    pair (0,1,0): δ_ref = log(.3/.6) = −log 2, Δr* = 1, δ* = 1 − log 2 ≈ 0.307 > 0 → not violated; U ≠ ∅;
      exit weight σ(−log 2) = 1/3; T = (log 2 + (2 − 1))/2; γ*_pair = 0.
    pair (0,2,0): δ_ref = −log 6, Δr* = 0.5, δ* = 0.5 − log 6 < 0 → violated; exit σ(−log 6) = 1/7;
      T = (log 6 + 5)/2; γ*_pair = (log 6 − 0.5)/(10 + 5/3) = 3(log 6 − 0.5)/35 ≈ 0.110722.
    pair (0,1,2): δ_ref = log 3 > 0: U = ∅, so no exit weight and no escape time (null, "—" in the table),
      not violated.
    pair (1,0,1): δ_ref = log 0.4, Δr* = 1: 0.084 > 0 → not violated; exit 0.4/1.4 = 2/7;
      T = (log 2.5 + 1.5)/2.
    pair (1,2,1): δ_ref = log 0.6, Δr* = 0.2 → −0.311 ≤ 0 violated; exit 0.6/1.6 = 3/8;
      T = (log(5/3) + 2/3)/2;
      γ*_pair = (log(5/3) − 0.2)/(1/0.3 + 1/0.5) = 3(log(5/3) − 0.2)/16 ≈ 0.058283.
    γ* = max = 0.110722; violation rate 2/5."""
    out = tmp_path / "res" / "result.json"
    assert main(["tabular", str(EXAMPLE), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pairs violating C2 (β·δ_ref + Δr* ≤ 0): 2/5 (40.0 %)" in text
    assert "γ* (Eq. 27, max over pairs) = 0.110722" in text
    assert "E-CPOC (C9, ε = 0.1): every constraint δ ≥ ε holds: True" in text
    header, _, *rows = text.splitlines()[:7]
    for words in ("context", "winner", "loser", "violates C2", "U non-empty", "exit gradient weight", "escape time"):
        assert words in header
    assert "exit wt" not in text and "viol " not in header
    empty = rows[2].split()  # pair (0, 1, 2): δ_ref = log 3 ≥ 0
    assert empty[:3] == ["0", "1", "2"] and empty[-3:-1] == ["—", "—"]
    assert all("—" not in r for i, r in enumerate(rows) if i != 2)
    assert "— on 1 pair with δ_ref ≥ 0: U = (δ_ref, 0) is empty (C3)" in text
    assert f"wrote {out}" in text
    rep = _strict_json(out)
    assert TOP_KEYS | {"cpo"} <= set(rep)
    assert rep["beta"] == 1.0 and rep["n_pairs"] == 5 and rep["violation_rate"] == pytest.approx(0.4)
    g1, g4 = 3 * (math.log(6) - 0.5) / 35, 3 * (math.log(5 / 3) - 0.2) / 16
    assert rep["gamma_star"] == pytest.approx(g1, rel=1e-12)
    expected = [
        (0, 1, 0, -math.log(2), 1.0, False, True, 1 / 3, (math.log(2) + 1) / 2, 0.0),
        (0, 2, 0, -math.log(6), 0.5, True, True, 1 / 7, (math.log(6) + 5) / 2, g1),
        (0, 1, 2, math.log(3), 0.5, False, False, None, None, 0.0),
        (1, 0, 1, math.log(0.4), 1.0, False, True, 2 / 7, (math.log(2.5) + 1.5) / 2, 0.0),
        (1, 2, 1, math.log(0.6), 0.2, True, True, 3 / 8, (math.log(5 / 3) + 2 / 3) / 2, g4),
    ]
    assert len(rep["pairs"]) == 5
    for row, (x, w, l, dref, dr, viol, une, exit_w, t, g) in zip(rep["pairs"], expected, strict=True):
        assert PAIR_KEYS <= set(row)
        assert (row["x"], row["w"], row["l"], row["violated"], row["u_nonempty"]) == (x, w, l, viol, une)
        assert row["delta_ref"] == pytest.approx(dref, rel=1e-13)
        assert row["delta_reward"] == pytest.approx(dr, rel=1e-15)
        assert row["delta_opt"] == pytest.approx(dref + dr, rel=1e-12)
        if une:
            assert row["exit_gradient_weight"] == pytest.approx(exit_w, rel=1e-13)
            assert row["escape_time"] == pytest.approx(t, rel=1e-12, abs=0)
        else:  # U = ∅: nothing to exit
            assert row["exit_gradient_weight"] is None and row["escape_time"] is None
            assert row["log_escape_time"] is None
        assert row["gamma_star_pair"] == pytest.approx(g, rel=1e-12, abs=0)
    assert np.allclose(np.exp(np.array(rep["log_pi_opt"])).sum(axis=1), 1.0)
    e = rep["ecpoc"]
    assert ECPOC_KEYS <= set(e) and e["epsilon"] == 0.1 and e["all_constraints_hold"] is True
    assert min(e["delta"]) >= 0.1 - 1e-9 and min(e["multipliers"]) >= 0
    assert rep["cpo"]["gamma"] == 0.05 and len(rep["cpo"]["delta_exact"]) == 5
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # no temporary files left behind


def test_default_bandit_and_overrides(tmp_path, capsys) -> None:
    """'-' runs the built-in default (4 × 5, β = 0.5, 40 pairs); without γ there is no `cpo` block. --gamma
    and --epsilon override the file's values."""
    out = tmp_path / "default.json"
    assert main(["tabular", "-", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "β = 0.5; pairs violating C2" in text and "/40 (" in text
    rep = _strict_json(out)
    assert TOP_KEYS <= set(rep) and "cpo" not in rep
    assert rep["n_pairs"] == 40 and len(rep["pairs"]) == 40 and rep["ecpoc"]["epsilon"] == 0.0
    assert rep["violation_rate"] == pytest.approx(np.mean([p["violated"] for p in rep["pairs"]]))
    assert main(["tabular", "-"]) == 0  # no --out: table only
    assert "E-CPOC" in capsys.readouterr().out
    out2 = tmp_path / "override.json"
    assert main(["tabular", str(EXAMPLE), "--gamma", "0.2", "--epsilon", "0.3", "--out", str(out2)]) == 0
    rep2 = _strict_json(out2)
    assert rep2["cpo"]["gamma"] == 0.2 and rep2["ecpoc"]["epsilon"] == 0.3
    assert min(rep2["ecpoc"]["delta"]) >= 0.3 - 1e-9


def _subprocess(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "dpocheck.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tabular_as_a_subprocess(tmp_path, capsys) -> None:
    """`python -m dpocheck.cli tabular examples/bandit.json --out R` exits 0 and writes the same numbers as
    the in-process run; a bad file exits 2 with the field named on stderr and writes nothing."""
    out = tmp_path / "sub.json"
    proc = _subprocess("tabular", "examples/bandit.json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "pairs violating C2" in proc.stdout
    ref = tmp_path / "inproc.json"
    assert main(["tabular", str(EXAMPLE), "--out", str(ref)]) == 0
    assert _strict_json(out) == _strict_json(ref)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"beta": -1, "pi_ref": [[0.5, 0.5]], "reward": [[0, 1]], "pairs": [[0, 1, 0]]}))
    proc = _subprocess("tabular", str(bad), "--out", str(tmp_path / "never.json"))
    assert proc.returncode == 2
    assert "dpocheck tabular: error: beta" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "never.json").exists()


GOOD = {"beta": 1.0, "pi_ref": [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], "reward": [[0, 1, 0.5], [1, 0, 0.2]],
        "pairs": [[0, 1, 0], [1, 2, 1]]}  # fmt: skip


def _bad(**changes) -> str:
    d = json.loads(json.dumps(GOOD))
    d.update(changes)
    return json.dumps(d)


@pytest.mark.parametrize(
    ("text", "extra", "message"),
    [
        (_bad(foo=1), [], "unknown key(s) ['foo']"),
        (_bad(pi_ref=[[0.6, 0.4], [0.2, 0.5, 0.3]]), [], "pi_ref: ragged rows"),
        (_bad(reward=[[0, 1, 0.5], [1, 0]]), [], "reward: ragged rows"),
        (_bad(pi_ref=[[1.2, -0.3, 0.1], [0.2, 0.5, 0.3]]), [], "pi_ref: entry [0][1] is negative"),
        (_bad(pi_ref=[[0.6, 0.3, 0.2], [0.2, 0.5, 0.3]]), [], "pi_ref: row 0 sums to"),
        (_bad(beta=0), [], "beta: must be finite and > 0"),
        (_bad(beta=-0.1), [], "beta: must be finite and > 0"),
        (_bad(beta="1"), [], "beta: must be a number"),
        (_bad(pairs=[[0, 1, 7]]), [], "pairs[0]: index l=7 out of range [0, 3)"),
        (_bad(pairs=[[0, 1, 0], [2, 1, 0]]), [], "pairs[1]: index x=2 out of range [0, 2)"),
        (_bad(pairs=[[0, 1, 1]]), [], "pairs[0]: w and l are the same response"),
        (_bad(pairs=[[0, 1]]), [], "pairs: must be a list of [x, w, l] integer triples"),
        (_bad(reward=None), [], "reward: must be a non-empty list of rows"),
        (_bad(gamma="big"), [], "gamma: must be a number"),
        (_bad(gamma=-1), [], "gamma: must be >= 0"),
        (_bad(epsilon=True), [], "epsilon: must be a number"),
        (
            _bad().replace('"reward": [[0, 1, 0.5]', '"reward": [[0, NaN, 0.5]'),
            [],
            "reward: entry [0][1] is not finite",
        ),
        ('{"beta": 1.0, "pi_ref": [[0.5, 0.5]', [], "not valid JSON"),
        ("[1, 2, 3]", [], "top level must be a JSON object"),
        (_bad(), ["--epsilon", "nan"], "epsilon"),
        (_bad(), ["--gamma", "-2"], "gamma: must be >= 0"),
    ],
)
def test_bad_input_exits_2_names_the_field_and_writes_nothing(tmp_path, capsys, text, extra, message) -> None:
    """Bad input: exit status 2, `dpocheck tabular: error: …` naming the field on stderr, no table on stdout
    and no output file (nothing half-written)."""
    src = tmp_path / "bandit.json"
    src.write_text(text)
    out = tmp_path / "out.json"
    assert main(["tabular", str(src), "--out", str(out), *extra]) == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("dpocheck tabular: error: ") and message in cap.err, cap.err
    assert cap.out == ""
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bandit.json"]


def test_missing_file_and_bad_default_options(tmp_path, capsys) -> None:
    """A missing file and a negative --gamma on the default bandit exit 2 naming the problem; a missing
    argument is an argparse usage error (exit 2)."""
    assert main(["tabular", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["tabular", "-", "--gamma", "-1", "--out", str(tmp_path / "o.json")]) == 2
    assert "gamma" in capsys.readouterr().err and not (tmp_path / "o.json").exists()
    with pytest.raises(SystemExit) as err:
        main(["tabular"])
    assert err.value.code == 2


def test_extreme_log_probs_with_gamma_do_not_crash(tmp_path, capsys) -> None:
    """log π_ref = (0, −1000) is valid (full support in log space). With --gamma 0 the report must still be
    written as finite JSON (or the command must exit 2 with a message) — never a traceback with exit 1."""
    src = tmp_path / "extreme.json"
    src.write_text(
        json.dumps({"beta": 0.1, "log_pi_ref": [[0.0, -1000.0]], "reward": [[0.0, 1.0]], "pairs": [[0, 1, 0]]})
    )
    out = tmp_path / "out.json"
    status = main(["tabular", str(src), "--gamma", "0", "--out", str(out)])
    if status == 0:
        _strict_json(out)
    else:
        assert status == 2 and not out.exists()


def test_extreme_log_probs_without_gamma(tmp_path, capsys) -> None:
    """log π_ref = (0, −1000), β = 0.1, r* = (0, 1), pair (w=1, l=0): δ_ref = −1000, Δr* = 1, δ* = −990 →
    violated; T = e^{100}·… overflows nothing here (β·a = 100), exit weight 0.1·σ(−100) ≈ 3.72e-45; JSON is
    finite."""
    src = tmp_path / "extreme.json"
    src.write_text(
        json.dumps({"beta": 0.1, "log_pi_ref": [[0.0, -1000.0]], "reward": [[0.0, 1.0]], "pairs": [[0, 1, 0]]})
    )
    out = tmp_path / "out.json"
    assert main(["tabular", str(src), "--out", str(out)]) == 0
    row = _strict_json(out)["pairs"][0]
    assert row["violated"] is True and row["delta_opt"] == pytest.approx(-990.0, rel=1e-15)
    assert row["exit_gradient_weight"] == pytest.approx(0.1 / (1 + math.exp(100)), rel=1e-12)
    assert row["escape_time"] == pytest.approx((1000 + math.expm1(100) / 0.1) / 0.2, rel=1e-12)


def test_write_json_atomic_never_leaves_half_files(tmp_path) -> None:
    """write_json_atomic creates parent folders and replaces the target in one step; if serialisation fails
    (NaN with allow_nan=False) it raises and leaves the previous file untouched and no temporary file."""
    target = tmp_path / "a" / "b.json"
    write_json_atomic(target, {"x": [1.5, 2]})
    assert json.loads(target.read_text()) == {"x": [1.5, 2]}
    with pytest.raises(ValueError):
        write_json_atomic(target, {"x": float("nan")})
    assert json.loads(target.read_text()) == {"x": [1.5, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_cpo_lines_say_what_was_counted_and_why(capsys) -> None:
    """Default bandit at γ = 1.1·γ*: the CPO lines separate contexts without an interior stationary point from
    pairs that are not aligned, give the 1/π_ref approximation's and π*'s counts (each recounted here from the
    JSON report), and a 'why' line naming the proofs claims; below γ* (the example file, γ = 0.05) there is no
    'why' line."""
    from dpocheck.theory import gamma_star
    from dpocheck.theory.report import (
        CPO_EXPLAINING_CLAIMS,
        cpo_summary_lines,
        default_bandit,
        format_tabular_table,
        tabular_report,
    )

    bandit = default_bandit()
    lw, ll = bandit.log_pi_ref_pairs()
    gstar = gamma_star(bandit.delta_ref(), bandit.delta_reward(), bandit.beta, lw, ll)
    rep = tabular_report(bandit, 1.1 * gstar, 0.0)
    c, n = rep["cpo"], rep["n_pairs"]
    n_point = sum(c["interior_stationary_point_exists"])
    n_exact = sum(bool(v) for v in c["aligned_exact"])
    n_approx = sum(v > 0 for v in c["delta_approx"])
    n_opt = sum(p["delta_opt"] > 0 for p in rep["pairs"])
    lines = cpo_summary_lines(rep)
    text = "\n".join(lines)
    assert f"({n_point}/{n} pairs), aligned (δ > 0) on {n_exact} of those {n_point} pairs" in text
    assert f"aligned on {n_approx}/{n} pairs" in text and f"optimum): aligned on {n_opt}/{n} pairs" in text
    assert "1.1·γ*" in lines[0]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("why:"))
    why = " ".join(ln.strip() for ln in lines[start:])
    assert all(cid in why for cid in CPO_EXPLAINING_CLAIMS) and max(len(ln) for ln in lines[start:]) <= 120
    assert ("no interior stationary point exists" in why) == (n_point < n)
    assert text in format_tabular_table(rep)
    assert main(["tabular", str(EXAMPLE)]) == 0
    assert "why:" not in capsys.readouterr().out
