"""Every experiment at toy size (registry test), the figures CLI, resumption, and closed forms used by the figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from matplotlib import image as mpimg

from dpocheck.cli import main
from dpocheck.figures import experiments, get_experiment, run_all, run_experiment
from dpocheck.figures.e1_violation_map import violation_share_closed_form
from dpocheck.sims import read_table, table_columns


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """All experiments at toy size into one folder (shared by the tests below)."""
    out = tmp_path_factory.mktemp("figures_toy")
    results = run_all(out, "toy", "png", log=lambda _: None)
    return out, results


def test_registry_lists_seven_experiments_with_declared_sweeps() -> None:
    """E1–E7 are registered, each with a toy and a paper sweep (plain JSON data) and declared table columns."""
    exps = experiments()
    assert [e.name[:2] for e in exps] == ["e1", "e2", "e3", "e4", "e5", "e6", "e7"]
    for e in exps:
        for size in ("toy", "paper"):
            json.dumps(e.sweep(size))  # plain data
            json.dumps(e.module.SETTING)
        assert e.tables and all(len(cols) == len(set(cols)) for cols in e.tables.values())
        assert e.claims
    assert get_experiment("e3").name == "e3_gradient_vanishing"
    with pytest.raises(ValueError, match="unknown experiment"):
        get_experiment("e9")


def test_every_experiment_runs_at_toy_size(toy_run) -> None:
    """Files exist, PNGs decode to non-empty images, tables have exactly the declared columns and at least one row,
    headlines name a claim and a setting, and the manifest maps figure → tables → command."""
    out, results = toy_run
    assert len(results) == 7
    manifest = json.loads((out / "manifest.json").read_text())
    for res in results:
        exp = get_experiment(res["name"])
        img = mpimg.imread(out / res["figure"])
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert float(np.std(img)) > 0  # not a blank canvas
        for t, rel in res["tables"].items():
            assert table_columns(out / rel) == list(exp.tables[t])
            assert read_table(out / rel)
        assert res["headlines"]
        for h in res["headlines"]:
            assert h["claim"] and h["setting"] and h["text"]
        entry = manifest["figures"][res["name"]]
        assert entry["figure"] == res["figure"] and entry["tables"] == res["tables"]
        assert entry["command"].startswith(f"dpocheck figures --out {out} --only {res['name']} --size toy")


def test_rerun_reuses_finished_tables(toy_run) -> None:
    """A second run into the same folder reuses the tables (resume after a kill); --force recomputes them and, the
    computation being seeded, writes byte-identical tables."""
    out, _ = toy_run
    exp = get_experiment("e4")
    path = out / "tables" / exp.name / "soft_margin.csv"
    before = path.read_bytes()
    res = run_experiment(exp, out, "toy", "png", log=lambda _: None)
    assert res["reused"] is True
    res = run_experiment(exp, out, "toy", "png", force=True, log=lambda _: None)
    assert res["reused"] is False
    assert path.read_bytes() == before


def test_e1_monte_carlo_agrees_with_closed_form(toy_run) -> None:
    """Monte Carlo violation shares lie within 4.5 between-instance standard errors of the closed form (C2)."""
    out, _ = toy_run
    rows = read_table(out / "tables" / "e1_violation_map" / "violation_map.csv")
    assert all(abs(r["z_score"]) < 4.5 for r in rows)


def test_violation_share_closed_form_hand_worked() -> None:
    """atan2(βκν, s + βκ(1 − 2ρ))/π with κ = 2, ν = 0.5, s = 1: ρ = 0.5, β = 1 gives atan2(1, 1)/π = 1/4;
    ρ = 0.75, β = 1 gives atan2(1, 0)/π = 1/2; ν = 0 gives 0 (no noise, aligned); β → 0 gives 0."""
    assert violation_share_closed_form(1.0, 0.5, 2.0, 0.5) == pytest.approx(0.25, abs=1e-15)
    assert violation_share_closed_form(1.0, 0.75, 2.0, 0.5) == pytest.approx(0.5, abs=1e-15)
    assert violation_share_closed_form(1.0, 0.25, 2.0, 0.0) == 0.0
    assert violation_share_closed_form(1e-12, 1.0, 2.0, 0.5) < 1e-11


def test_e3_escape_times_within_tolerance(toy_run) -> None:
    """Toy E3 (h = 0.05): simulated escape times within 2 % of the closed form (Euler error O(h))."""
    out, _ = toy_run
    rows = read_table(out / "tables" / "e3_gradient_vanishing" / "escape_times.csv")
    assert all(abs(r["rel_error"]) < 0.02 for r in rows)
    for r in rows:  # exit/entry weight = 2σ(β·δ_ref)
        assert r["exit_over_entry"] == pytest.approx(2 / (1 + math.exp(-r["kappa"])), rel=1e-9)


def test_e4_gap_within_band(toy_run) -> None:
    """C7: 0 ≤ ℓ/β − hinge ≤ (log 2)/β on the toy grid (up to 1e-12)."""
    out, _ = toy_run
    rows = read_table(out / "tables" / "e4_soft_margin" / "soft_margin.csv")
    assert all(-1e-12 <= r["gap"] <= r["bound"] + 1e-12 for r in rows)


def test_e2_pattern_table_is_consistent(toy_run) -> None:
    """The pattern verdict is the conjunction of its two parts, recomputed from the same row."""
    out, _ = toy_run
    for r in read_table(out / "tables" / "e2_misaligned_reference" / "pattern.csv"):
        stuck = r["dpo_final_U"] >= 0.15 and r["dpo_final_U"] >= 0.5 * r["dpo_peak_U"]
        assert r["dpo_stuck_near_quarter"] == int(stuck)
        assert r["cpo_below_5pct"] == int(r["cpo_final_U"] < 0.05)
        assert r["pattern_holds"] == int(stuck and r["cpo_final_U"] < 0.05)


def test_e7_easy_margin_lowers_every_target(toy_run) -> None:
    """C10: the released `easy` margin is negative (mean log-probs are < 0), so its target is below δ_ref on every
    pair, while the paper's margin raises it."""
    out, _ = toy_run
    rows = read_table(out / "tables" / "e7_easy_margin" / "targets.csv")
    easy = [r for r in rows if r["loss_name"] == "released_easy"]
    cpo = [r for r in rows if r["loss_name"] == "cpo_margin"]
    assert easy and all(r["target_minus_delta_ref"] < 0 for r in easy)
    assert cpo and all(r["target_minus_delta_ref"] > 0 for r in cpo)


def test_figures_cli_only_one_as_pdf(tmp_path, capsys) -> None:
    """`dpocheck figures --only e4 --format pdf --size toy` writes the PDF, its table and a manifest entry."""
    status = main(["figures", "--out", str(tmp_path), "--only", "e4", "--format", "pdf", "--size", "toy"])
    assert status == 0
    assert (tmp_path / "figures" / "e4_soft_margin.pdf").read_bytes().startswith(b"%PDF")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert list(manifest["figures"]) == ["e4_soft_margin"]
    assert "C7" in capsys.readouterr().out


def test_figures_cli_list_and_bad_name(tmp_path, capsys) -> None:
    """--list prints the registry; an unknown --only name exits 2 with a message."""
    assert main(["figures", "--list"]) == 0
    assert "e5_gamma_sweep" in capsys.readouterr().out
    assert main(["figures", "--out", str(tmp_path), "--only", "nope", "--size", "toy"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def _tables(out, exp):
    """An experiment's tables as the runner reads them back from disk."""
    return {t: read_table(out / "tables" / exp.name / f"{t}.csv") for t in exp.tables}


def _data_line(container):
    """The data line of an errorbar container (its first artist)."""
    return container.lines[0]


def test_e5_closed_form_and_trained_lines_are_both_visible(toy_run) -> None:
    """The trained population optimum lies on the closed form, so the two need different styles: the closed form
    is a wide band drawn first, the trained run a thinner dashed line with markers drawn on top; the one figure
    legend names both."""
    out, _ = toy_run
    exp = get_experiment("e5")
    fig = exp.module.figure(_tables(out, exp))
    ax = fig.axes[0]
    by_label = {c.get_label(): c for c in ax.containers}
    labels = exp.module.READING_LABELS
    closed = _data_line(by_label[labels["bt_population_closed_form"]])
    trained = _data_line(by_label[labels["bt_population_trained"]])
    assert np.allclose(closed.get_ydata(), trained.get_ydata())  # same data: only the style can separate them
    assert closed.get_visible() and trained.get_visible()
    assert (closed.get_linestyle(), closed.get_marker()) != (trained.get_linestyle(), trained.get_marker())
    assert closed.get_linewidth() >= 3 * trained.get_linewidth()
    assert closed.get_zorder() < trained.get_zorder()
    assert len(fig.legends) == 1 and all(a.get_legend() is None for a in fig.axes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels["bt_population_closed_form"] in legend and labels["bt_population_trained"] in legend
    fig.clf()


def test_e2_has_one_readable_legend_and_labelled_axes(toy_run) -> None:
    """E2's grid of panels: one legend for the whole figure (font ≥ 9 pt) and none on the panels; every panel
    titled by its setting (T, β, optimizer) and y-labelled; the bottom row x-labelled."""
    out, _ = toy_run
    exp = get_experiment("e2")
    fig = exp.module.figure(_tables(out, exp))
    grid = np.array(fig.axes).reshape(-1, 3)
    assert len(fig.legends) == 1 and all(a.get_legend() is None for a in fig.axes)
    texts = fig.legends[0].get_texts()
    assert min(t.get_fontsize() for t in texts) >= 9
    assert {"DPO", "RLHF optimum π*"} <= {t.get_text() for t in texts}
    for ax in fig.axes:
        assert ax.get_ylabel()
        assert all(k in ax.get_title() for k in ("T = ", "β = ", "sgd"))
    assert all(ax.get_xlabel() for ax in grid[-1])
    fig.clf()


def test_every_figure_draws_from_the_tables_with_titled_labelled_axes(toy_run) -> None:
    """Every experiment's `figure` builds from the tables on disk; each axes has a title and both axis labels,
    except where a panel shares its x-axis with the labelled panel below it."""
    out, _ = toy_run
    for exp in experiments():
        fig = exp.module.figure(_tables(out, exp))
        for ax in fig.axes:
            assert ax.get_title() and ax.get_ylabel(), (exp.name, ax.get_title())
            shared = [o for o in ax.get_shared_x_axes().get_siblings(ax) if o is not ax]
            assert ax.get_xlabel() or any(o.get_xlabel() for o in shared), (exp.name, ax.get_title())
        fig.clf()
