"""``dpocheck train-sweep``: run a declared sweep of ``dpocheck train`` runs, then its tidy table and figure.

The sweep ``e2_llm`` (:func:`dpocheck.llm.train.experiment.e2_llm_entries`) is E2 at LLM scale (PAPER §5;
C3, C4, C8): dpo and released_clip (β 0.1, ``sum``), cpo_margin (β 2.5, ``mean``; γ = 0, the released demo's
0.05, γ*/2 and 1.5·γ*), and against likelihood displacement dpop and dpo_nll (β 0.1, ``sum``; PAPER §6) at
corruption ratios R = 0 and 0.4. Layout of ``OUT``::

    runs/<entry>/         one ``dpocheck train`` folder per entry (manifest, metrics, eval/step-N.jsonl, final/)
    sweep.json            the declared entries, the common settings, each γ resolved, per-run status and seconds
    e2_llm.csv            tidy table: one row per run × eval step, recomputed from the eval files only
    e2_llm.png            share in U and ranking accuracy over steps, one column per R
    e2_llm.md             the last eval step of every run as a Markdown table, then the final policies' analysis
    violations/<run>.*    ``dpocheck violations`` of each run's final policy (its last eval file) against its own
                          reference scores: share in U with a bootstrap interval (C3), C2 at the run's β
    displacement*.csv/png likelihood displacement next to U per loss × R across seeds, per run and per step, and
                          the health verdicts (:mod:`~dpocheck.llm.train.displacement_report`, PAPER §6)

γ*-relative entries resolve γ* (Eq. 27, Thm 4.9) from the reference log-probs of a finished run with the same
R and seed (the corrupted reference is the same model: the SFT depends on data, R, seed and its own settings
only), with Δr* = 0 where the data carry none (HH-RLHF), the assumption stated in the table. A finished run
is reused only when its manifest's settings equal what the sweep would run (otherwise the sweep stops naming
the setting); an unfinished one is resumed from its last checkpoint.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from dpocheck._io import write_text_atomic
from dpocheck._plot import pyplot, save_figure
from dpocheck.errors import InputError
from dpocheck.llm.manifest import is_complete, open_output, read_manifest, read_manifest_if_any
from dpocheck.llm.preflight import check_output_path

from .displacement_report import write_displacement_report
from .experiment import (
    Entry,
    e2_llm_entries,
    eval_files,
    finite_number,
    read_eval_rows,
    reference_gamma_star,
    resolve_gamma,
    tidy_rows,
)
from .settings import MANIFEST, TrainSettings

SWEEPS: dict[str, Callable[[int], list[Entry]]] = {"e2_llm": e2_llm_entries}
# the declared size of each sweep (chosen so that one run takes ~4–5 min on 2 CPU cores with SmolLM2-135M)
DECLARED_SIZES: dict[str, dict[str, Any]] = {
    "e2_llm": {
        "limit": 16,
        "max_length": 128,
        "batch_size": 4,
        "epochs": 2.0,
        "lr": 5e-5,
        "eval_every": 4,
        "save_steps": 4,
    }
}
TABLE_FIELDS = (
    "run",
    "loss",
    "beta",
    "gamma",
    "normalize",
    "R",
    "step",
    "n_pairs",
    "share_dref_neg",
    "share_in_u",
    "ranking_accuracy",
    "implicit_reward_accuracy",
    "grad_weight_in_u",
    "gamma_star_dr0",
)
SWEEP_MANIFEST = "sweep.json"
SWEEP_TOOL = "train-sweep"


def entry_settings(entry: Entry, common: TrainSettings, out: Path, gamma: float | None) -> TrainSettings:
    """The ``dpocheck train`` settings of one entry: the common settings plus the entry's loss, β, γ, R, seed."""
    run_dir = out / "runs" / entry.name
    return replace(
        common,
        loss=entry.loss,
        beta=entry.beta,
        gamma=gamma,
        normalize=entry.normalize,
        corrupt_reference=entry.corrupt if entry.corrupt > 0 else None,
        seed=entry.seed,
        out=str(run_dir),
        resume=(run_dir / MANIFEST).is_file(),
    )


def _same_settings(manifest: dict[str, Any], settings: TrainSettings) -> str | None:
    """None when a finished run's manifest has these settings (paths of the run itself aside), else the first
    differing setting."""
    old = dict(run_settings(manifest))
    new = settings.identity()
    for key in sorted(set(old) | set(new)):
        if key == "out":
            continue
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} in the run, {new.get(key)!r} in the sweep"
    return None


def run_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """The settings a ``dpocheck train`` run was made with (its manifest's ``fingerprint.settings``)."""
    return manifest.get("fingerprint", {}).get("settings", {})


def _is_complete(run_dir: Path) -> bool:
    return is_complete(read_manifest_if_any(run_dir / MANIFEST))


def _gamma_star_for(entry: Entry, out: Path, done: list[Entry]) -> tuple[float, str]:
    """γ* (Eq. 27, Δr* = 0 where unknown) of the reference of ``entry``'s R and seed, from a finished run."""
    for other in done:
        if other.corrupt == entry.corrupt and other.seed == entry.seed:
            step0 = out / "runs" / other.name / "eval" / "step-0.jsonl"
            if step0.is_file():
                g = reference_gamma_star(read_eval_rows(step0, entry.normalize), entry.beta, entry.normalize)
                return g, str(step0.relative_to(out))
    raise InputError(
        f"entry {entry.name}: γ = {entry.gamma} needs γ* of the R = {entry.corrupt:g} reference, and no finished "
        "run of that R is in the sweep yet (include one, e.g. the dpo entry of that R, in --only)"
    )


def select(entries: list[Entry], only: list[str] | None) -> list[Entry]:
    """The entries named in ``only`` (all when None); an unknown name is an InputError listing the known ones."""
    if not only:
        return entries
    names = {e.name for e in entries}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise InputError(f"--only: unknown entr{'y' if len(unknown) == 1 else 'ies'} {unknown}; known: {sorted(names)}")
    return [e for e in entries if e.name in set(only)]


def run_sweep(
    sweep: str,
    common: TrainSettings,
    out: str | Path,
    *,
    only: list[str] | None = None,
    keep_checkpoints: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) every selected entry of a declared sweep, then write its table, figure and summary.

    ``common`` carries the model, data and training sizes shared by every run (its loss fields are replaced per
    entry). Returns the sweep manifest (also written to ``OUT/sweep.json`` after every run, through the output
    protocol of :mod:`dpocheck.llm.manifest`).
    """
    if sweep not in SWEEPS:
        raise InputError(f"--sweep: unknown sweep {sweep!r}; declared: {sorted(SWEEPS)}")
    out = check_output_path(Path(out).absolute(), directory=True)
    entries = SWEEPS[sweep](common.seed)
    chosen = select(entries, only)
    common_settings = {k: v for k, v in asdict(common).items() if k not in ("out", "resume", "progress")}
    # a sweep folder is always continued: finished runs are reused (when their settings are equal), others resumed
    run = open_output(
        out / SWEEP_MANIFEST,
        {"sweep": sweep},
        tool=SWEEP_TOOL,
        resume=True,
        extra={"common": common_settings, "entries": {}},
        keep=("entries",),
        outputs=sorted(out.iterdir())[:1] if out.is_dir() else (),
        where=f"--out {out}",
        stray_hint=f"it holds no sweep ({SWEEP_MANIFEST}): choose a new folder",
    )
    with run.guard():
        done: list[Entry] = [e for e in entries if _is_complete(out / "runs" / e.name)]
        for k, entry in enumerate(chosen, 1):
            record = _run_entry(entry, common, out, done, keep_checkpoints, f"[{k}/{len(chosen)}]", log)
            run.update(entries={**run.manifest["entries"], entry.name: record})
        write_report(out)
        run.complete({"runs": len(run.manifest["entries"])})
    return run.manifest


def _run_entry(
    entry: Entry,
    common: TrainSettings,
    out: Path,
    done: list[Entry],
    keep_checkpoints: bool,
    tag: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train (or reuse, or resume) one entry's run; its record for ``sweep.json``."""
    from .run import train

    record: dict[str, Any] = {"loss": entry.loss, "beta": entry.beta, "normalize": entry.normalize}
    record.update({"R": entry.corrupt, "seed": entry.seed, "gamma_declared": entry.gamma})
    gamma: float | None
    if isinstance(entry.gamma, str):
        g_star, source = _gamma_star_for(entry, out, done)
        gamma = resolve_gamma(entry.gamma, g_star)
        record.update({"gamma_star_dr0": g_star, "gamma_star_source": source})
    else:
        gamma = resolve_gamma(entry.gamma, math.nan)
    record["gamma"] = gamma
    settings = entry_settings(entry, common, out, gamma)
    run_dir = Path(settings.out)
    if _is_complete(run_dir):
        diff = _same_settings(read_manifest(run_dir / MANIFEST), settings)
        if diff is not None:
            raise InputError(f"{run_dir} is a finished run with other settings ({diff}); use another --out")
        log(f"{tag} {entry.name}: finished earlier, reused")
        record["status"] = "complete"
    else:
        log(f"{tag} {entry.name}: {'resuming' if settings.resume else 'training'}")
        t0 = time.perf_counter()
        train(settings)
        record.update({"status": "complete", "seconds": round(time.perf_counter() - t0, 1)})
        if entry not in done:
            done.append(entry)
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a finished run needs none to resume
    return record


# --------------------------------------------------------------------------------------------------- report
def run_spec(run: Path) -> dict[str, Any]:
    """A finished run's loss, β, γ, convention and R from its manifest; an InputError naming the field when one
    is missing or malformed (a damaged manifest)."""
    where = run / MANIFEST
    manifest = read_manifest(where)
    loss = manifest.get("loss")
    if (
        not isinstance(loss, dict)
        or not isinstance(loss.get("name"), str)
        or loss.get("convention") not in ("sum", "mean")
    ):
        raise InputError(f"{where}: field 'loss' must name the loss and its convention (sum or mean), got {loss!r}")
    beta = run_settings(manifest).get("beta") if isinstance(manifest.get("fingerprint"), dict) else None
    if not (finite_number(beta) and beta > 0):
        raise InputError(f"{where}: field 'fingerprint.settings.beta' must be a finite number > 0, got {beta!r}")
    params = loss.get("params") if isinstance(loss.get("params"), dict) else {}
    corruption = manifest.get("corruption") if isinstance(manifest.get("corruption"), dict) else {}
    return {
        "loss": loss["name"],
        "beta": float(beta),
        "gamma": params.get("gamma", ""),
        "normalize": loss["convention"],
        "R": corruption.get("share_R", 0.0),
    }


def run_table(run: Path) -> list[dict[str, Any]]:
    """One tidy row per eval step of one ``dpocheck train`` folder, recomputed from its eval files (C3, C4, C8).

    γ* (Thm 4.9) comes from the run's reference log-probs in the run's convention with Δr* = 0 for every pair.
    """
    settings = run_spec(run)
    conv, beta = settings["normalize"], settings["beta"]
    steps = eval_files(run)
    if not steps:
        return []
    try:
        g_star = reference_gamma_star(read_eval_rows(steps[0][1], conv), beta, conv)
    except OverflowError:
        g_star = math.inf
    return [{**row, "gamma_star_dr0": g_star} for row in tidy_rows(run, run.name, settings)]


def finished_runs(out: Path) -> list[Path]:
    """The finished ``dpocheck train`` folders under ``OUT/runs``; an InputError when there is none yet."""
    runs = out / "runs"
    found = sorted(p for p in runs.iterdir() if p.is_dir() and _is_complete(p)) if runs.is_dir() else []
    if not found:
        what = "no finished runs" if runs.is_dir() and any(runs.iterdir()) else "no runs"
        raise InputError(
            f"{what} in {out} yet: `dpocheck train-sweep --out {out}` runs them (--report-only only tabulates "
            "finished runs)"
        )
    return found


def sweep_rows(out: Path) -> list[dict[str, Any]]:
    """The tidy rows of every finished run under ``OUT/runs``."""
    rows: list[dict[str, Any]] = []
    for run in finished_runs(out):
        rows.extend(run_table(run))
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Share in U (top) and ranking accuracy (bottom) over steps; one column per R; drawn from the table only."""
    plt = pyplot()

    rs = sorted({r["R"] for r in rows})
    fig, axes = plt.subplots(2, max(1, len(rs)), figsize=(5 * max(1, len(rs)), 7), squeeze=False, sharex=True)
    for j, share_r in enumerate(rs):
        for k, run in enumerate(sorted({r["run"] for r in rows if r["R"] == share_r})):
            pts = sorted((r["step"], r["share_in_u"], r["ranking_accuracy"]) for r in rows if r["run"] == run)
            loss = next(r["loss"] for r in rows if r["run"] == run)
            # overlapping curves stay visible: a wide pale line for dpo, dashed for the released loss, markers
            style = {"dpo": ("-", 4.0, 0.45), "released_clip": ("--", 1.8, 0.9)}.get(loss, (":", 1.5, 0.9))
            kw = {"ls": style[0], "lw": style[1], "alpha": style[2], "marker": "osD^vx*"[k % 7], "label": run}
            steps = [p[0] for p in pts]
            axes[0][j].plot(steps, [p[1] for p in pts], **kw)
            axes[1][j].plot(steps, [p[2] for p in pts], **kw)
        axes[0][j].set_title(f"R = {share_r}")
        axes[0][j].set_ylabel("share of training pairs in U (C3)")
        axes[1][j].set_ylabel("ranking accuracy (δ_θ > 0)")
        axes[1][j].set_xlabel("optimizer step")
        axes[0][j].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120, tight=False)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """First → last eval step of every run (shares over the whole training set), from the tidy rows."""
    lines = [
        "| run | R | step | δ_ref<0 | in U (C3) | ranking acc | TRL acc | grad w in U (C4) | γ* (Δr*=0, C8) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted({r["run"] for r in rows}):
        run_rows = sorted((r for r in rows if r["run"] == run), key=lambda r: r["step"])
        first, last = run_rows[0], run_rows[-1]
        gw = last["grad_weight_in_u"]
        gws = f"{gw:.3g}" if math.isfinite(gw) else "—"
        lines.append(
            f"| {run} | {last['R']} | {first['step']}→{last['step']} | {first['share_dref_neg']:.3f} | "
            f"{first['share_in_u']:.3f}→{last['share_in_u']:.3f} | {first['ranking_accuracy']:.3f}→"
            f"{last['ranking_accuracy']:.3f} | {last['implicit_reward_accuracy']:.3f} | {gws} | "
            f"{first['gamma_star_dr0']:.4g} |"
        )
    return "\n".join(lines) + "\n"


def final_policy_report(run: Path, n_bootstrap: int = 1000) -> Any:
    """The violations analysis (:func:`dpocheck.llm.analysis.results.analyze`) of a run's final policy — its last
    ``eval/step-N.jsonl`` — against the run's reference scores, at the run's β and convention.

    Δr*: from the data where the rows carry it, else the stated assumption Δr* = 0 (HH-RLHF has none).
    """
    from dpocheck.llm.analysis.results import analyze
    from dpocheck.llm.analysis.scores import read_scores, resolve_delta_reward

    spec = run_spec(run)
    conv, beta = spec["normalize"], spec["beta"]
    steps = eval_files(run)
    ref = read_scores(run / "reference")
    dr = resolve_delta_reward(ref)
    if dr.values is None:
        dr = resolve_delta_reward(ref, assume=0.0)
    policy = read_scores(steps[-1][1])
    return analyze(ref, betas=[beta], normalization=conv, delta_reward=dr, policy=policy, n_bootstrap=n_bootstrap)


def write_final_reports(out: Path) -> tuple[list[Path], str]:
    """``OUT/violations/<run>.json`` and ``.md`` per finished run, and a Markdown table of their headline numbers."""
    from dpocheck.llm.analysis.report import format_share, render_markdown, report_to_json

    written: list[Path] = []
    lines = [
        "| run | pairs | share in U (C3) [95 % CI] | δ_θ > 0 [95 % CI] | δ_θ > δ_ref (TRL) | C2 violation at β, "
        "Δr* = 0 [95 % CI] | mean DPO loss at β |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in [p for p in finished_runs(out) if (p / "reference").is_dir()]:
        rep = final_policy_report(run)
        written.append(write_text_atomic(out / "violations" / f"{run.name}.json", report_to_json(rep)))
        written.append(write_text_atomic(out / "violations" / f"{run.name}.md", render_markdown(rep)))
        p, e = rep.policy, rep.per_beta[0]
        lines.append(
            f"| {run.name} | {p.n_joined} | {format_share(p.share_in_u)} | {format_share(p.ranking_accuracy)} "
            f"| {format_share(p.implicit_reward_accuracy)} | {format_share(e.violation_rate)} "
            f"| {e.policy.dpo_loss_mean:.4g} |"
        )
    return written, "\n".join(lines) + "\n"


def write_report(out: Path, name: str = "e2_llm") -> list[Path]:
    """``OUT/<name>.csv``, ``.png``, ``.md`` and ``OUT/violations/`` from the finished runs under ``OUT/runs``."""
    rows = sweep_rows(out)
    if not rows:
        raise InputError(f"{out / 'runs'}: no finished run with eval files to tabulate")
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TABLE_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    written = [write_text_atomic(out / f"{name}.csv", buf.getvalue())]
    written.append(plot(rows, out / f"{name}.png"))
    final, final_table = write_final_reports(out)
    disp_written, disp_md = write_displacement_report(out / "runs", out)  # likelihood displacement next to U (PAPER §6)
    md = (
        "## Share in U over training (whole training set, first → last eval)\n\n"
        + markdown_table(rows)
        + "\n## Final policies: `dpocheck violations` against each run's reference (bootstrap 1,000, seed 0)\n\n"
        + final_table
        + "\n## Likelihood displacement next to U (PAPER §6; Razin et al. 2024)\n\n"
        + "\n".join(part for part in disp_md.values() if part)
    )
    written.append(write_text_atomic(out / f"{name}.md", md))
    return written + final + disp_written
