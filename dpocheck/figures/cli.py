"""`dpocheck figures` (regenerate every figure from its declared experiment) and `dpocheck demo` (the main
job).

Heavy imports (numpy experiments, matplotlib) happen inside the handlers.
"""

from __future__ import annotations

import argparse
from typing import Any

SIZES = ("toy", "paper")
FORMATS = ("png", "pdf")


def register(subparsers: Any) -> None:
    """Add the `figures` and `demo` sub-commands."""
    p = subparsers.add_parser(
        "figures",
        help="regenerate every figure: declared sweep → tidy tables → plot (writes manifest.json)",
        description="Run the experiments E1–E7 and plot each from its tables. Finished "
        "experiments in OUT are reused when their sweep and code are unchanged (resume "
        "after a kill); --force recomputes.",
    )
    p.add_argument("--out", default="dpocheck-figures", help="output folder (default: dpocheck-figures)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="experiment names or unique prefixes (e.g. e2)")
    p.add_argument("--format", choices=FORMATS, default="png", help="figure format (default png)")
    p.add_argument("--size", choices=SIZES, default="paper", help="sweep size: toy (seconds) or paper (default)")
    p.add_argument("--force", action="store_true", help="recompute tables even if finished ones exist")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.set_defaults(func=run_figures)

    d = subparsers.add_parser(
        "demo",
        help="the main job: proofs, tabular report, every experiment and figure, report.md",
        description="Run the proofs (fast profile), the closed-form tabular report, every experiment "
        "at a size that finishes in a few minutes on 2 cores, every figure, and write "
        "report.md. Exit status 1 on a proofs regression, 2 when a part is missing or "
        "failed.",
    )
    d.add_argument("--out", default="dpocheck-demo", help="output folder (default: dpocheck-demo)")
    d.add_argument(
        "--size", choices=SIZES, default="paper", help="experiment size (default paper; toy for a smoke run)"
    )
    d.add_argument("--format", choices=FORMATS, default="png", help="figure format (default png)")
    d.add_argument("--force", action="store_true", help="recompute experiment tables even if finished ones exist")
    d.add_argument("--claims", nargs="+", metavar="ID", help="check only these proofs claims (quick runs)")
    d.set_defaults(func=run_demo_command)


def run_figures(args: argparse.Namespace) -> int:
    """Handler of `dpocheck figures`."""
    from .registry import experiments, run_all

    if args.list:
        for exp in experiments():
            print(f"{exp.name:28s} {', '.join(exp.claims):18s} {exp.title}")
        return 0
    results = run_all(args.out, args.size, args.format, only=args.only, force=args.force)
    for res in results:
        for h in res["headlines"]:
            print(f"[{res['name']}] {h['claim']}: {h['text']}")
    print(f"Figures and tables in {args.out}; manifest: {args.out}/manifest.json")
    return 0


def run_demo_command(args: argparse.Namespace) -> int:
    """Handler of `dpocheck demo`."""
    from .demo import run_demo

    return run_demo(args.out, args.size, args.format, force=args.force, claims=args.claims)
