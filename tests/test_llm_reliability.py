"""Reliability of shared writers used by score/sample/reward."""

from __future__ import annotations

import os
import stat

from dpocheck._io import write_text_atomic


def test_write_atomic_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = write_text_atomic(tmp_path / "a.txt", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert out.read_text() == "x\n"


def test_write_atomic_respects_strict_umask(tmp_path):
    old = os.umask(0o077)
    try:
        out = write_text_atomic(tmp_path / "b.txt", "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
