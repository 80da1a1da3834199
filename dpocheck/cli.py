"""The ``dpocheck`` command line: one sub-command per job.

Each part of the toolkit registers its own sub-commands through a ``register(subparsers)`` function, so this file
only lists the modules. Heavy imports (torch, transformers, matplotlib) happen inside the command functions.

One error policy for every sub-command (see :mod:`dpocheck.errors`): bad input — an :class:`~dpocheck.errors.InputError`
or any ``ValueError``/``OSError`` a command lets through — prints one line ``dpocheck COMMAND: error: …`` and exits
with status 2; a :class:`~dpocheck.errors.NumericalError` (or other ``ArithmeticError``) exits with status 3. No
traceback unless ``--debug`` is given (before or after the sub-command).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from .errors import EXIT_INPUT, EXIT_NUMERICAL

COMMAND_MODULES = (
    "dpocheck.theory.cli",  # tabular
    "dpocheck.proofs_check.cli",  # proofs
    "dpocheck.sims.cli",  # sim
    "dpocheck.figures.cli",  # figures, demo
    "dpocheck.llm.cli.score",  # score, sample
    "dpocheck.llm.cli.analysis",  # violations, reward
    "dpocheck.llm.cli.onpolicy",  # onpolicy
    "dpocheck.llm.cli.train",  # train
)

_DEBUG_HELP = "show the full traceback of an error instead of one line"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="dpocheck",
        description="Check when DPO is equivalent to RLHF (arXiv 2605.20834): closed-form theory, proofs, "
        "simulations, figures and LLM-scale measurements.",
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that part of the toolkit is not present in this checkout
            raise
        module.register(sub)
    for sub_parser in sub.choices.values():
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser


def error_status(err: BaseException) -> int | None:
    """The exit status the error policy gives ``err``, or None for an error that is a bug (shown as a traceback)."""
    if isinstance(err, ArithmeticError):  # NumericalError, OverflowError, FloatingPointError, ZeroDivisionError
        return EXIT_NUMERICAL
    if isinstance(err, (ValueError, OSError, json.JSONDecodeError, UnicodeError, RecursionError)):
        return EXIT_INPUT  # InputError and every reader's error derive from ValueError
    return None


def error_line(command: str | None, err: BaseException) -> str:
    """The one line printed for ``err``: ``dpocheck COMMAND: error: message`` (the message collapsed onto one line)."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    prefix = f"dpocheck {command}" if command else "dpocheck"
    return f"{prefix}: error: {' '.join(text.split())}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INPUT
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print(f"dpocheck {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        code = error_status(err)
        if code is None or getattr(args, "debug", False):
            raise
        print(error_line(args.command, err), file=sys.stderr)
        return code
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
