"""`dpocheck sim` end to end, the tidy tables it writes, and their bit-for-bit reproducibility."""

from __future__ import annotations

import math

import pytest

from dpocheck.cli import main
from dpocheck.sims import METRIC_COLUMNS, read_table, table_columns
from dpocheck.sims.tables import table_to_csv, trajectory_columns


def run_sim(tmp_path, name: str, *extra: str) -> tuple[int, str]:
    out = tmp_path / name
    status = main(
        ["sim", "--steps", "30", "--instances", "3", "--contexts", "2", "--responses", "4", "--out", str(out), *extra]
    )
    return status, str(out)


def test_sim_dpo_writes_a_tidy_table(tmp_path, capsys) -> None:
    """`dpocheck sim --loss dpo` writes one row per recorded step (0, 10, 20, 30) with every metric and its s.e."""
    status, out = run_sim(tmp_path, "dpo.csv", "--loss", "dpo", "--record-every", "10")
    assert status == 0
    rows = read_table(out)
    keys = ["loss_name", "optimizer", "beta", "seed", "loss_label", "lr"]
    assert table_columns(out) == trajectory_columns(keys)
    assert [r["step"] for r in rows] == [0, 10, 20, 30]
    assert rows[0]["frac_in_U"] == 0.0 and rows[0]["kl"] == pytest.approx(0.0, abs=1e-12)
    assert rows[-1]["loss"] < rows[0]["loss"]  # gradient descent lowers the mean DPO loss
    assert "table written to" in capsys.readouterr().out


def test_sim_is_reproducible_and_seed_sensitive(tmp_path) -> None:
    """Two runs with the same seed write byte-identical CSV files; another seed writes a different one."""
    args = ("--loss", "cpo_margin", "--optimizer", "adam", "--gamma", "0.05")
    _, a = run_sim(tmp_path, "a.csv", *args, "--seed", "3")
    _, b = run_sim(tmp_path, "b.csv", *args, "--seed", "3")
    _, c = run_sim(tmp_path, "c.csv", *args, "--seed", "4")
    assert open(a, "rb").read() == open(b, "rb").read()
    assert open(a, "rb").read() != open(c, "rb").read()


@pytest.mark.parametrize("loss", ["rlhf_optimum", "ecpoc"])
def test_sim_reference_points(tmp_path, loss: str) -> None:
    """The exact reference points give one row with NaN loss; E-CPOC with ε = 0.5 puts δ ≥ 0.5 > 0 on every pair.
    (With ε = 0 the active pairs sit exactly at δ = 0, which `pref_acc` (δ > 0) does not count.)"""
    status, out = run_sim(tmp_path, f"{loss}.csv", "--loss", loss, "--epsilon", "0.5")
    assert status == 0
    (row,) = read_table(out)
    assert math.isnan(row["loss"])
    if loss == "ecpoc":
        assert row["pref_acc"] == 1.0


def test_sim_per_instance_and_population_labels(tmp_path) -> None:
    """--per-instance writes one row per (step, instance); population labels and the gaussian setting run too."""
    status, out = run_sim(
        tmp_path,
        "pi.csv",
        "--per-instance",
        "--labels",
        "population",
        "--reference",
        "gaussian",
        "--record-every",
        "30",
    )
    assert status == 0
    rows = read_table(out)
    assert len(rows) == 2 * 3 and {r["instance"] for r in rows} == {0, 1, 2}
    assert set(METRIC_COLUMNS) <= set(rows[0])


def test_sim_bad_arguments_exit_2(tmp_path, capsys) -> None:
    """β ≤ 0 and a flip rate outside [0, 1] end with exit status 2 and a message, not a traceback."""
    assert run_sim(tmp_path, "x.csv", "--beta", "0")[0] == 2
    assert "beta" in capsys.readouterr().err
    assert run_sim(tmp_path, "y.csv", "--flip-rate", "2")[0] == 2
    assert "flip_rate" in capsys.readouterr().err


def test_table_writer_rejects_missing_columns() -> None:
    """A row lacking a declared column is an error naming it, never a silently empty cell."""
    with pytest.raises(KeyError, match="lacks column"):
        table_to_csv([{"a": 1}], ["a", "b"])
    assert table_to_csv([{"a": 0.1, "b": True}], ["a", "b"]) == "a,b\n0.1,1\n"
