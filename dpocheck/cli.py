"""The ``dpocheck`` command line: one sub-command per job.

Each part of the toolkit registers its own sub-commands through a ``register(subparsers)`` function, so this file
only lists the modules. Heavy imports (torch, transformers, matplotlib) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "dpocheck.theory.cli",  # tabular
    "dpocheck.proofs_check.cli",  # proofs
    "dpocheck.sims.cli",  # sim
    "dpocheck.figures.cli",  # figures, demo
    "dpocheck.llm.cli_model",  # score, sample
    "dpocheck.llm.cli_data",  # violations, reward
    "dpocheck.llm.train.cli",  # train
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="dpocheck",
        description="Check when DPO is equivalent to RLHF (arXiv 2605.20834): closed-form theory, proofs, "
        "simulations, figures and LLM-scale measurements.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that part of the toolkit is not present in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    status = args.func(args)
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
