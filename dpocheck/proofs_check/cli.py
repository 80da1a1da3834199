"""`dpocheck proofs`: check every claim of the paper and report a verdict per claim.

Exit status 0 when every claim matches its registered expected verdict, 1 on any regression, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dpocheck._io import write_text_atomic
from dpocheck.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `proofs` sub-command."""
    p = subparsers.add_parser(
        "proofs",
        help="check the paper's claims (C1–C10): proved / verified / fails as stated / not checkable",
        description="Check every claim of PAPER.md (C1–C10) symbolically (sympy) and numerically (hypothesis "
        "searches over valid bandits and pairs); print a table, optionally write JSON and Markdown reports. "
        "Exit status 1 when a verdict differs from the registered expected one (a regression).",
    )
    p.add_argument("--json", metavar="PATH", type=Path, help="write the JSON report (every number) here")
    p.add_argument("--markdown", metavar="PATH", type=Path, help="write the Markdown report (an appendix) here")
    p.add_argument(
        "--profile",
        choices=("fast", "thorough"),
        default="fast",
        help="fast (default, < 60 s on 2 cores) or thorough (many more hypothesis examples)",
    )
    p.add_argument(
        "--only",
        metavar="ID",
        nargs="+",
        help="check only these claims (an id such as C4.escape-time, or a prefix such as C4)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --json: reuse the claims already in that report (written after every claim) when its profile and "
        "source fingerprint match, and check only the rest",
    )
    p.add_argument("--list", action="store_true", help="list the registered claims and exit")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run_proofs)


def _load_resumable(path: Path, profile: str, fingerprint: str) -> dict[str, object]:
    """Results saved in a previous (possibly interrupted) run's JSON report, if it matches profile and sources."""
    from .core import ClaimResult

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        print(f"dpocheck proofs: --resume: cannot read {path} ({err}); starting afresh", file=sys.stderr)
        return {}
    if doc.get("profile") != profile or doc.get("fingerprint") != fingerprint:
        print(
            f"dpocheck proofs: --resume: {path} was written by another profile or other sources; starting afresh",
            file=sys.stderr,
        )
        return {}
    out = {}
    for item in doc.get("claims", []):
        try:
            r = ClaimResult.from_dict(item)
        except (ValueError, TypeError, KeyError) as err:
            print(f"dpocheck proofs: --resume: skipping a saved claim ({err})", file=sys.stderr)
            continue
        out[r.id] = r
    return out


def run_proofs(args: argparse.Namespace) -> int:
    """Handler of `dpocheck proofs`."""
    from .core import source_fingerprint
    from .registry import CLAIMS, run_claims, select_claims
    from .report import results_table, results_to_json, results_to_markdown

    if args.list:
        for c in CLAIMS:
            print(f"{c.id:<28} {c.paper_ref:<40} expected: {c.expected}")
        return 0
    if args.resume and not args.json:
        raise InputError("--resume needs --json PATH (the report it resumes from)")
    selected = select_claims(args.only)  # an unknown claim id is a ValueError: exit 2 through the CLI wrapper
    fingerprint = source_fingerprint()
    done = _load_resumable(args.json, args.profile, fingerprint) if args.resume and args.json.exists() else {}
    done = {k: v for k, v in done.items() if k in {c.id for c in selected}}
    if done and not args.quiet:
        print(f"resuming: {len(done)} claim(s) taken from {args.json}", file=sys.stderr)
    order = [c.id for c in selected]

    def ordered() -> list:
        return [done[i] for i in order if i in done]

    def progress(i: int, total: int, result) -> None:  # noqa: ANN001
        done[result.id] = result
        if args.json:  # partial report after every claim: a killed run loses at most one claim
            doc = results_to_json(ordered(), complete=False, fingerprint=fingerprint)
            write_text_atomic(args.json, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False))
        if not args.quiet:
            flag = "  REGRESSION" if result.regression else ""
            print(f"[{i}/{total}] {result.id}: {result.verdict} ({result.seconds:.1f} s){flag}", file=sys.stderr)

    todo = [i for i in order if i not in done]
    if todo:
        run_claims(args.profile, todo, progress)
    results = ordered()
    print(results_table(results))
    if args.json:
        doc = results_to_json(results, complete=True, fingerprint=fingerprint)
        write_text_atomic(args.json, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False))
        print(f"JSON report: {args.json}", file=sys.stderr)
    if args.markdown:
        write_text_atomic(args.markdown, results_to_markdown(results))
        print(f"Markdown report: {args.markdown}", file=sys.stderr)
    return 1 if any(r.regression for r in results) else 0
