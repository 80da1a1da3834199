"""`dpocheck tabular BANDIT.json [--out RESULT.json]`: the closed-form check for a user's own bandit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dpocheck._io import write_json_atomic


def register(subparsers: Any) -> None:
    """Add the `tabular` sub-command."""
    p = subparsers.add_parser(
        "tabular",
        help="closed-form checks (C1–C4, C8, C9) for a tabular bandit given as JSON",
        description="Closed-form check of a tabular bandit. Input JSON keys: beta, pi_ref or log_pi_ref (rows), "
        "reward (rows), pairs ([x, w, l] triples), optional gamma and epsilon. Use '-' for the built-in default.",
    )
    p.add_argument("bandit", help="path to the bandit JSON, or '-' for the built-in default bandit")
    p.add_argument("--out", help="write the full result as JSON here (atomically)")
    p.add_argument("--gamma", type=float, help="CPO γ (overrides the file's gamma)")
    p.add_argument("--epsilon", type=float, help="E-CPOC ε (overrides the file's epsilon)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the closed-form report; exit 2 with a message naming the field on bad input."""
    from .bandit import TabularBandit
    from .report import default_bandit, format_tabular_table, tabular_report

    gamma, epsilon = args.gamma, args.epsilon
    try:
        if args.bandit == "-":
            bandit = default_bandit()
        else:
            try:
                data = json.loads(Path(args.bandit).read_text())
            except FileNotFoundError:
                raise ValueError(f"{args.bandit}: no such file") from None
            except json.JSONDecodeError as err:
                raise ValueError(f"{args.bandit}: not valid JSON ({err})") from None
            bandit = TabularBandit.from_json(data, extra_keys=("gamma", "epsilon"))
            for key in ("gamma", "epsilon"):
                v = data.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise ValueError(f"{key}: must be a number, got {v!r}")
            if gamma is None:
                gamma = data.get("gamma")
            if epsilon is None:
                epsilon = data.get("epsilon")
            if gamma is not None and gamma < 0:
                raise ValueError(f"gamma: must be >= 0, got {gamma!r}")
        report = tabular_report(bandit, gamma=gamma, epsilon=epsilon)
    except ValueError as err:
        print(f"dpocheck tabular: error: {err}", file=sys.stderr)
        return 2
    except (ArithmeticError, OverflowError) as err:
        print(f"dpocheck tabular: numerical failure on this bandit: {err}", file=sys.stderr)
        return 3
    print(format_tabular_table(report))
    if args.out:
        write_json_atomic(args.out, report)
        print(f"\nwrote {args.out}")
    return 0
