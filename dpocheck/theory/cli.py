"""`dpocheck tabular BANDIT.json [--out RESULT.json]`: the closed-form check for a user's own bandit."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from dpocheck._io import write_json_atomic
from dpocheck.errors import InputError, NumericalError

MAX_ABS_EPSILON = 700.0  # e^ε of the E-CPOC constraint π(y_w) ≥ e^ε·π(y_l) must stay finite


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


def _read_bandit_json(path: str) -> Any:
    """The parsed JSON of `path`, or ValueError naming the file and what is wrong with it."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON (nested too deeply)") from None


def _option(data: dict[str, Any], key: str, override: float | None) -> float | None:
    """gamma / epsilon: the command-line value if given, else the file's; ValueError naming the key if bad."""
    v = data.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
        raise ValueError(f"{key}: must be a number, got {v!r}")
    v = override if override is not None else v
    if v is None:
        return None
    try:
        v = float(v)
    except OverflowError:
        raise ValueError(f"{key}: {v} is beyond float64") from None
    if not math.isfinite(v):
        raise ValueError(f"{key}: must be finite, got {v!r}")
    if key == "gamma" and v < 0:
        raise ValueError(f"gamma: must be >= 0, got {v!r}")
    if key == "epsilon" and abs(v) > MAX_ABS_EPSILON:
        raise ValueError(f"epsilon: |ε| must be <= {MAX_ABS_EPSILON:g} (e^ε must be representable), got {v!r}")
    return v


def run(args: argparse.Namespace) -> int:
    """Run the closed-form report; exit 2 with a message naming the field on bad input, 3 on a numerical failure
    (stated on stderr; nothing is printed as a verdict and no file is written)."""
    from .bandit import TabularBandit
    from .report import default_bandit, format_tabular_table, tabular_report

    try:
        if args.bandit == "-":
            bandit, data = default_bandit(), {}
        else:
            data = _read_bandit_json(args.bandit)
            bandit = TabularBandit.from_json(data, extra_keys=("gamma", "epsilon"))
        gamma = _option(data, "gamma", args.gamma)
        epsilon = _option(data, "epsilon", args.epsilon)
        report = tabular_report(bandit, gamma=gamma, epsilon=epsilon)
    except ArithmeticError as err:  # the central wrapper prints it and exits 3 (bad input: ValueError, exit 2)
        raise NumericalError(f"numerical failure on this bandit: {err}") from err
    if args.out:
        try:
            write_json_atomic(args.out, report)
        except OSError as err:
            raise InputError(f"--out {args.out}: cannot write ({err.strerror or err})") from err
    print(format_tabular_table(report))
    if args.out:
        print(f"\nwrote {args.out}")
    return 0
