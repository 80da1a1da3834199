"""The committed displacement tables of docs/training_results.md recompute from the committed rows.

docs/training_results/displacement/rows/ holds every run's manifest, eval files and reference scores, and
ches_references/ the rescored references (CHES); the summary and per-run CSVs beside them must be exactly what
:func:`dpocheck.llm.train.displacement_report.tables` computes from those files, so every share in the docs can be
recomputed by anyone from the rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpocheck.llm.analysis.displacement import csv_text
from dpocheck.llm.train.displacement_report import RUN_FIELDS, SUMMARY_FIELDS, tables

DEST = Path(__file__).resolve().parents[1] / "docs" / "training_results" / "displacement"


@pytest.mark.skipif(not (DEST / "rows").is_dir(), reason="docs/training_results/displacement/rows is not committed")
def test_committed_tables_recompute_from_the_committed_rows():
    refs = json.loads((DEST / "ches_references.json").read_text())["reference_of_run"]
    ches = {run: DEST / "ches_references" / rid for run, rid in refs.items()}
    t = tables(DEST / "rows", ches)
    assert len(t["runs"]) == len(list((DEST / "rows").iterdir())) >= 24  # every committed run is in the tables
    assert csv_text(t["summary"], SUMMARY_FIELDS) == (DEST / "displacement_summary.csv").read_text()
    assert csv_text(t["runs"], RUN_FIELDS) == (DEST / "displacement_runs.csv").read_text()
