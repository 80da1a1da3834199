"""Reports of a proofs run: a JSON document (every number), a Markdown appendix and a plain-text table."""

from __future__ import annotations

import json
import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .core import VERDICTS, ClaimResult, jsonable

PAPER = "Yang et al., Conditional Equivalence of DPO and RLHF (arXiv 2605.20834, ICML 2026)"
SCHEMA = "dpocheck.proofs/1"


def summary(results: Sequence[ClaimResult]) -> dict[str, Any]:
    """Counts per verdict, regressions and total time."""
    counts = Counter(r.verdict for r in results)
    return {
        "n_claims": len(results),
        "verdicts": {v: counts.get(v, 0) for v in VERDICTS},
        "regressions": [r.id for r in results if r.regression],
        "seconds": round(sum(r.seconds for r in results), 3),
    }


def results_to_json(
    results: Sequence[ClaimResult], *, complete: bool = True, fingerprint: str | None = None
) -> dict[str, Any]:
    """A JSON-ready document: run metadata, the summary and one object per claim with every number.

    complete: False for the partial report written after each claim of a run still in progress; fingerprint: the
    source fingerprint (:func:`dpocheck.proofs_check.core.source_fingerprint`) that `--resume` checks.
    """
    profiles = sorted({r.profile for r in results})
    return jsonable(
        {
            "schema": SCHEMA,
            "tool": "dpocheck proofs",
            "paper": PAPER,
            "profile": profiles[0] if len(profiles) == 1 else profiles,
            "complete": complete,
            "fingerprint": fingerprint,
            "summary": summary(results),
            "claims": [r.to_dict() for r in results],
        }
    )


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _json_block(obj: Any, limit: int = 4000) -> str:
    text = json.dumps(jsonable(obj), indent=1, ensure_ascii=False)
    if len(text) > limit:
        text = text[:limit] + "\n… (truncated; the JSON report has every number)"
    return "```json\n" + text + "\n```"


def claim_anchor(claim_id: str) -> str:
    """The HTML anchor of a claim's section in the Markdown reports (letters, digits and '-' only), e.g.
    'C8.thm4.9-exact' → 'claim-C8-thm4-9-exact'; link to it with ``[text](#claim-…)``."""
    return "claim-" + re.sub(r"[^A-Za-z0-9-]+", "-", claim_id).strip("-")


def _clauses(text: str) -> list[str]:
    """`text` split at its clause boundaries ('; ' outside brackets and quotes); the evidence strings of the
    checks are clauses joined by '; '."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch == ";" and depth == 0 and text[i + 1 : i + 2] == " ":
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return [c for c in out if c]


def evidence_summary(evidence: str, limit: int = 200) -> tuple[str, int]:
    """The leading whole clauses of `evidence` that fit in `limit` characters (always at least the first
    clause, never a clause cut in the middle), and how many clauses were left out."""
    clauses = _clauses(evidence)
    if not clauses:
        return "", 0
    kept = [clauses[0]]
    for c in clauses[1:]:
        if len("; ".join([*kept, c])) > limit:
            break
        kept.append(c)
    return "; ".join(kept), len(clauses) - len(kept)


def verdict_table_markdown(results: Sequence[ClaimResult], *, limit: int = 200) -> str:
    """The verdict table: one row per claim, its id linking to the claim's section (:func:`claim_anchor`), the
    evidence's leading whole clauses and, where clauses were left out, a link to the full evidence."""
    lines = [
        "| id | reference | verdict | corrected statement's verdict | evidence (summary) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        corr = r.corrected["verdict"] if r.corrected else ""
        verdict = f"**{r.verdict}**" + (" ⚠ regression" if r.regression else "")
        summary_text, left_out = evidence_summary(r.evidence, limit)
        anchor = claim_anchor(r.id)
        if left_out:
            more = "clause" if left_out == 1 else "clauses"
            summary_text += f"; … ({left_out} more {more}: [full evidence](#{anchor}))"
        lines.append(
            f"| [{r.id}](#{anchor}) | {_md_escape(r.paper_ref)} | {verdict} | {corr} | {_md_escape(summary_text)} |"
        )
    return "\n".join(lines)


def claim_sections_markdown(results: Sequence[ClaimResult], *, details: bool = True, level: int = 2) -> str:
    """One section per claim (heading `level`, an anchor from :func:`claim_anchor` above it): the paper's
    statement, the reading checked, the verdict with its full evidence, the corrected statement with its own
    verdict where the claim fails or cannot be checked, and (details=True) the numbers."""
    lines: list[str] = []
    for r in results:
        lines += [
            "",
            f'<a id="{claim_anchor(r.id)}"></a>',
            "",
            f"{'#' * level} {r.id} — {r.paper_ref}",
            "",
            f"*Statement.* {r.statement}",
            "",
            f"*Reading checked.* {r.reading}",
            "",
            f"*Verdict.* **{r.verdict}**"
            + (f" (expected: {r.expected})" if r.expected else "")
            + (" — **REGRESSION**" if r.regression else ""),
            "",
            f"*Evidence.* {r.evidence}",
        ]
        if r.methods:
            lines += ["", f"*Methods.* {', '.join(r.methods)}; {r.seconds:.2f} s."]
        if r.corrected:
            c = r.corrected
            lines += [
                "",
                f"*Corrected statement.* {c['statement']}",
                "",
                f"*Its reading.* {c['reading']} — **{c['verdict']}**: {c['evidence']}",
            ]
        if details:
            lines += ["", "<details><summary>numbers</summary>", "", _json_block(r.details), "", "</details>"]
    return "\n".join(lines).lstrip("\n")


def results_to_markdown(results: Sequence[ClaimResult], *, details: bool = True) -> str:
    """A Markdown report for a paper's appendix: summary table, then one section per claim.

    The table (:func:`verdict_table_markdown`) gives each claim's evidence as whole clauses with a link to its
    section; each section (:func:`claim_sections_markdown`) gives the paper's statement, the reading checked,
    the verdict with its full evidence, the corrected statement with its own verdict where the claim fails or
    cannot be checked, and (details=True) the numbers.
    """
    s = summary(results)
    lines = [
        "# Claim-by-claim verification of the paper's theory",
        "",
        f"Paper: {PAPER}. Checked by `dpocheck proofs` (profile: {', '.join(sorted({r.profile for r in results}))}).",
        "Verdicts: **proved** (sympy derivation, confirmed numerically), **verified** (numerical search, no "
        "counterexample), **fails as stated** (with a counterexample and the corrected statement), **not checkable** "
        "(with the reason and a weaker statement that is checked instead).",
        "",
        "Summary: "
        + ", ".join(f"{n} {v}" for v, n in s["verdicts"].items() if n)
        + (f"; regressions: {', '.join(s['regressions'])}" if s["regressions"] else "; no regressions")
        + f"; {s['seconds']:.1f} s.",
        "",
        verdict_table_markdown(results),
        "",
        claim_sections_markdown(results, details=details),
    ]
    return "\n".join(lines) + "\n"


def results_table(results: Sequence[ClaimResult], *, width: int = 160) -> str:
    """A plain-text table for stdout: id, reference, verdict (+ corrected verdict), one-line evidence."""
    rows = []
    for r in results:
        verdict = r.verdict + (f" → {r.corrected['verdict']}" if r.corrected else "")
        if r.regression:
            verdict += " [REGRESSION]"
        rows.append((r.id, r.paper_ref, verdict, r.evidence))
    headers = ("id", "reference", "verdict (→ corrected)", "evidence")
    w_id = max(len(headers[0]), *(len(r[0]) for r in rows)) if rows else len(headers[0])
    w_ref = min(34, max(len(headers[1]), *(len(r[1]) for r in rows))) if rows else len(headers[1])
    w_v = max(len(headers[2]), *(len(r[2]) for r in rows)) if rows else len(headers[2])
    w_ev = max(30, width - w_id - w_ref - w_v - 6)
    out = [
        f"{headers[0]:<{w_id}}  {headers[1]:<{w_ref}}  {headers[2]:<{w_v}}  {headers[3]}",
        "-" * min(width, w_id + w_ref + w_v + 6 + w_ev),
    ]
    for rid, ref, verdict, ev in rows:
        ref = ref if len(ref) <= w_ref else ref[: w_ref - 1] + "…"
        ev = textwrap.shorten(ev, w_ev, placeholder="…")
        out.append(f"{rid:<{w_id}}  {ref:<{w_ref}}  {verdict:<{w_v}}  {ev}")
    s = summary(results)
    out.append("-" * min(width, w_id + w_ref + w_v + 6 + w_ev))
    out.append(
        ", ".join(f"{n} {v}" for v, n in s["verdicts"].items() if n)
        + (f"; REGRESSIONS: {', '.join(s['regressions'])}" if s["regressions"] else "; no regressions")
        + f"; {s['seconds']:.1f} s"
    )
    return "\n".join(out)
