"""Every option of every command says what it does, no ``--help`` shows a path of this machine, and ``--only``
takes names separated by spaces wherever it appears."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from dpocheck.cli import build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = sorted(_subparsers())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help(command):
    sub = _subparsers()[command]
    missing = [
        a.option_strings[0]
        for a in sub._actions
        if a.option_strings and a.help in (None, "") and a.help != argparse.SUPPRESS
    ]
    assert not missing, f"dpocheck {command}: options without help: {missing}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_path_of_this_machine(command):
    text = _subparsers()[command].format_help()
    here = Path(__file__).resolve().parents[1]
    for path in {str(here), str(here.parent), os.path.expanduser("~")}:
        assert path not in text, f"dpocheck {command} --help shows {path}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if "--only" in _subparsers()[c].format_help()])
def test_only_takes_space_separated_names(command):
    action = next(a for a in _subparsers()[command]._actions if "--only" in a.option_strings)
    assert action.nargs == "+", f"dpocheck {command} --only: one form everywhere (names separated by spaces)"
