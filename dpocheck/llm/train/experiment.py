"""Declared sweep ``e2_llm``: E2 (share in U under DPO vs cpo_margin) at LLM scale (PAPER §5; C3, C4, C8).

Entries are run settings (loss, β, γ, normalize, R, seed). cpo_margin's γ values γ*/2 and 1.5·γ* are
resolved after the (corrupted) reference exists: γ* is Eq. 27 (Thm 4.9, C8) on the reference scores of
the step-0 eval file, with Δr* = 0 where the data carry none. :func:`tidy_rows` recomputes the table from
the eval files only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpocheck.errors import InputError
from dpocheck.llm.train.metrics import preference_metrics
from dpocheck.theory.pairs import gamma_star


@dataclass(frozen=True)
class Entry:
    """One run of the sweep; ``gamma`` is a number or a symbolic ``"gstar/2"`` / ``"1.5gstar"``."""

    loss: str
    beta: float
    normalize: str
    corrupt: float
    gamma: float | str | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        g = "" if self.gamma is None else f"_g{self.gamma}".replace("/", "div")
        return f"{self.loss}{g}_R{self.corrupt:g}_s{self.seed}"


def e2_llm_entries(seed: int = 0) -> list[Entry]:
    """The declared E2-at-LLM-scale settings: dpo and released_clip (β 0.1 sum), cpo_margin (β 2.5 mean), and the
    fixes users reach for against likelihood displacement (PAPER §6): dpop (DPO-Positive, Pal et al. 2024, λ = 50)
    and dpo_nll (RPO, Pang et al. 2024, α = 1), at dpo's β 0.1 on summed log-probs, with the registry's defaults."""
    out: list[Entry] = []
    for r in (0.0, 0.4):
        out.append(Entry("dpo", 0.1, "sum", r, seed=seed))
        out.append(Entry("released_clip", 0.1, "sum", r, seed=seed))
        for g in (0.0, 0.05, "gstar/2", "1.5gstar"):
            out.append(Entry("cpo_margin", 2.5, "mean", r, g, seed))
        out.append(Entry("dpop", 0.1, "sum", r, seed=seed))
        out.append(Entry("dpo_nll", 0.1, "sum", r, seed=seed))
    return out


def eval_files(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``eval/step-N.jsonl`` of a ``dpocheck train`` folder, in step order."""
    found = ((re.fullmatch(r"step-(\d+)", p.stem), p) for p in (run_dir / "eval").glob("step-*.jsonl"))
    return sorted((int(m.group(1)), p) for m, p in found if m)


def finite_number(v: Any) -> bool:
    """A JSON number that is a finite float64 (not a bool, not an integer beyond float64's range)."""
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    except OverflowError:
        return False


def read_eval_rows(path: Path, convention: str) -> list[dict[str, Any]]:
    """The rows of an eval file, each with finite ``delta_theta``, ``delta_ref`` and reference log-probs in
    ``convention`` (``delta_reward`` finite or null); anything else is an InputError naming file, line and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    needed = ("delta_theta", "delta_ref", f"ref_chosen_logp_{convention}", f"ref_rejected_logp_{convention}")
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise InputError(f"{path} line {n}: not valid JSON (a cut or damaged file?)") from None
        if not isinstance(row, dict):
            raise InputError(f"{path} line {n}: an eval row must be a JSON object")
        for key in needed:
            if not finite_number(row.get(key)):
                raise InputError(f"{path} line {n}: field '{key}' must be a finite number, got {row.get(key)!r}")
        dr = row.get("delta_reward")
        if dr is not None and not finite_number(dr):
            raise InputError(f"{path} line {n}: field 'delta_reward' must be a finite number or null, got {dr!r}")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no eval rows")
    return rows


def reference_gamma_star(eval_rows: list[dict[str, Any]], beta: float, convention: str) -> float:
    """γ* (Eq. 27, C8) from the reference log-probs in eval rows; Δr* = 0 where unknown."""
    lw = np.array([r[f"ref_chosen_logp_{convention}"] for r in eval_rows], dtype=np.float64)
    ll = np.array([r[f"ref_rejected_logp_{convention}"] for r in eval_rows], dtype=np.float64)
    dr = np.array([0.0 if r.get("delta_reward") is None else r["delta_reward"] for r in eval_rows])
    return gamma_star(lw - ll, dr, beta, lw, ll)


def resolve_gamma(gamma: float | str | None, gstar: float) -> float | None:
    """Numeric γ of an entry given the reference's γ*."""
    if gamma == "gstar/2":
        return gstar / 2
    if gamma == "1.5gstar":
        return 1.5 * gstar
    return None if gamma is None else float(gamma)


def tidy_rows(run_dir: Path, run: str, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per eval step of a run folder, recomputed from ``eval/step-N.jsonl`` (C3, C4)."""
    rows = []
    conv, beta = settings["normalize"], float(settings["beta"])
    for step, p in eval_files(run_dir):
        ev = read_eval_rows(p, conv)
        d = np.array([r["delta_theta"] for r in ev])
        dref = np.array([r["delta_ref"] for r in ev])
        m = preference_metrics(d, dref, beta, None, conv)
        rows.append(
            {
                "run": run,
                **settings,
                "step": step,
                "share_in_u": m[f"share_in_u/{conv}"],
                "ranking_accuracy": m[f"ranking_accuracy/{conv}"],
                "implicit_reward_accuracy": m[f"implicit_reward_accuracy/{conv}"],
                "share_dref_neg": float((dref < 0).mean()),
                "grad_weight_in_u": m.get(f"grad_weight_in_u/{conv}", float("nan")),
                "n_pairs": len(ev),
            }
        )
    return rows
