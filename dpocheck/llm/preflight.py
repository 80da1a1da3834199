"""Checks that run before any model is loaded: the model path holds a model, the output path can be written.

A long job should fail in its first second, not after minutes of loading weights, when the cause is a typo in a
path (C2, C3, C8 runs over whole data sets). Every failure is an :class:`~dpocheck.errors.InputError` naming
the argument and the path, so the CLI prints one line and exits with status 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dpocheck.errors import InputError

_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")


def check_model_path(path: str | os.PathLike[str] | None, option: str = "--model") -> Path:
    """The model path to load (the default SmolLM2 GGUF when ``path`` is None), checked to hold a model.

    A file must be GGUF (its first 4 bytes ``GGUF``); a folder must hold a ``config.json`` that is a JSON object
    and at least one weights file (safetensors or ``.bin``, possibly sharded with an index).
    """
    if path is None:
        from .models import default_model_path

        return default_model_path()
    p = Path(path)
    if not p.exists():
        raise InputError(f"{option} {p}: no such file or directory")
    if p.is_file():
        with p.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise InputError(f"{option} {p}: not a GGUF file (no 'GGUF' magic) nor a Hugging Face model folder")
        return p
    if not p.is_dir():
        raise InputError(f"{option} {p}: neither a file nor a folder")
    config = p / "config.json"
    if not config.is_file():
        raise InputError(f"{option} {p}: no config.json, so not a Hugging Face model folder")
    try:
        obj = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{option} {config}: not valid JSON ({err})") from err
    if not isinstance(obj, dict):
        raise InputError(f"{option} {config}: must be a JSON object, got {type(obj).__name__}")
    if not any(any(p.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise InputError(f"{option} {p}: no weights file (*.safetensors or *.bin) in the folder")
    return p


def check_output_path(path: str | os.PathLike[str], *, directory: bool, option: str = "--out") -> Path:
    """Check that ``path`` (a folder when ``directory``, else a file) can be created or written.

    Refuses a path under a regular file, a folder given where a file is wanted (and the reverse), and a path
    whose nearest existing parent is not writable by this user.
    """
    p = Path(path)
    if p.exists():
        if directory and not p.is_dir():
            raise InputError(f"{option} {p}: exists and is not a folder")
        if not directory and p.is_dir():
            raise InputError(f"{option} {p}: is a folder, expected a file path")
    anchor = p if (directory and p.is_dir()) else p.parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise InputError(f"{option} {p}: {anchor} is a regular file, not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise InputError(f"{option} {p}: {anchor} is not writable")
    return p
