"""File containers: JSONL, JSON and Parquet, optionally gzip-compressed; one raw record at a time.

Record numbers are 0-based positions of the records in the file (JSONL: the non-blank lines; JSON: the list
items; Parquet: the rows). Only JSON and Parquet are parsed; nothing is unpickled.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dpocheck.errors import InputError

from .fields import RecordError


def open_bytes(path: Path) -> tuple[io.BufferedIOBase, bool]:
    """Open a file for binary reading, transparently un-gzipping it (detected by its magic bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb"), True  # type: ignore[return-value]
    return open(path, "rb"), False


def container_of(path: Path) -> str:
    """``jsonl``, ``json`` or ``parquet`` from the file name (``.gz`` is ignored), else by sniffing."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, kind in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
        (".parquet", "parquet"),
    ):
        if name.endswith(suffix):
            return kind
    fh, _ = open_bytes(path)
    with fh:
        head = fh.read(4096)
    if head[:4] == b"PAR1":
        return "parquet"
    text = head.lstrip()
    if text.startswith(b"["):
        return "json"
    return "jsonl"


RawRecord = tuple[int, "int | None", Any]  # (record number, line number or None, parsed object or RecordError)


def _lines(fh: io.BufferedIOBase, path: Path) -> Iterator[bytes]:
    """The file's lines; a cut or corrupt gzip stream is an InputError naming the file and the last good line."""
    n = 0
    try:
        for raw in fh:
            n += 1
            yield raw
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise InputError(f"{path}: the compressed data is cut or corrupt after line {n} ({err})") from err


def _iter_jsonl(path: Path) -> Iterator[RawRecord]:
    fh, _ = open_bytes(path)
    with fh:
        record = 0
        for line_no, raw in enumerate(_lines(fh, path), start=1):
            if not raw.strip():
                continue
            try:
                obj: Any = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                obj = RecordError(record, None, f"is not valid UTF-8 ({err.reason})", "invalid_utf8", line_no)
            except json.JSONDecodeError as err:
                cut = "" if raw.endswith(b"\n") else ", the file's last line is cut"
                obj = RecordError(record, None, f"is not valid JSON ({err.msg}{cut})", "invalid_json", line_no)
            except (ValueError, RecursionError) as err:  # an integer too long to convert, nesting too deep
                why = f"cannot be read as JSON ({type(err).__name__})"
                obj = RecordError(record, None, why, "invalid_json", line_no)
            yield record, line_no, obj
            record += 1


def _iter_json(path: Path) -> Iterator[RawRecord]:
    fh, _ = open_bytes(path)
    with fh:
        try:
            data = json.loads(fh.read().decode("utf-8"))
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise InputError(f"{path}: the compressed data is cut or corrupt ({err})") from err
        except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, a number too long, nesting too deep
            raise InputError(f"{path}: not a valid JSON document ({type(err).__name__}: {err})") from err
    if isinstance(data, dict):
        lists = [k for k in ("data", "records", "rows", "examples") if isinstance(data.get(k), list)]
        if not lists:
            raise InputError(
                f"{path}: top-level JSON must be a list of records or an object with a 'data' list; "
                f"got an object with keys {sorted(data)[:10]}"
            )
        data = data[lists[0]]
    if not isinstance(data, list):
        raise InputError(f"{path}: top-level JSON must be a list of records, got {type(data).__name__}")
    for i, obj in enumerate(data):
        yield i, None, obj


def _iter_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    record = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for obj in batch.to_pylist():
            yield record, None, obj
            record += 1


def iter_raw_records(path: str | os.PathLike[str], container: str = "auto") -> Iterator[RawRecord]:
    """Yield ``(record number, line number or None, object)`` per record of a JSON/JSONL(.gz)/Parquet file.

    A JSONL line that is not valid JSON yields a :class:`RecordError` in place of the object.
    """
    p = Path(path)
    kind = container_of(p) if container == "auto" else container
    readers = {"jsonl": _iter_jsonl, "json": _iter_json, "parquet": _iter_parquet}
    if kind not in readers:
        raise InputError(f"unknown container {container!r}; expected one of {sorted(readers)} or 'auto'")
    yield from readers[kind](p)
