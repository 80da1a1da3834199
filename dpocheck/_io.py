"""Atomic file writes shared by every command (readers see the old file or the complete new one, never half), and
the one JSONL reader and writer."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Let `writer` write a temporary file beside `path`, fsync it, then rename it over `path`; returns the path.

    The temporary file is named ".NAME.tmp-*" (leftovers are found by name) and removed if `writer` fails.
    The final file gets mode 0o666 minus the process umask (mkstemp's 0o600 would hide results from others).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _current_umask() -> int:
    """The process umask (reading it requires setting it; restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8, newlines as given) atomically to `path`; returns the path."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return write_atomic(path, write)


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int = 1) -> Path:
    """Strict JSON (no NaN/inf) written atomically, with a trailing newline."""
    return write_text_atomic(path, json.dumps(data, indent=indent, allow_nan=False, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------------------ JSONL
def jsonl_text(rows: Iterable[Any]) -> str:
    """Rows as JSONL text: one strict-JSON object a line (UTF-8 kept, no NaN/inf), each ending with a newline."""
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows)


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[Any]) -> Path:
    """Write rows as JSONL (:func:`jsonl_text`) atomically to ``path``; returns the path."""
    return write_text_atomic(path, jsonl_text(rows))


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """The rows of a JSONL file (blank lines ignored); a line that is not JSON raises ``json.JSONDecodeError``."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_partial_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Rows of an interrupted run's append-only JSONL (``OUT.partial``): a torn last line (unterminated or not
    JSON) is cut off the file, so appending can go on; everything after it is dropped too."""
    rows: list[Any] = []
    good = 0
    with open(path, "rb") as fh:
        data = fh.read()
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # torn last line
        line = data[pos:nl]
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
        pos = nl + 1
        good = pos
    if good != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return rows
