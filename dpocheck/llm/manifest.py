"""The one module that writes and reads run manifests (what was run, on what, and whether it finished).

Every LLM command records its inputs so that ``--resume`` can refuse to mix runs and readers can tell a
finished output from a partial one. All manifests are JSON objects written atomically (2-space indent, UTF-8)
and share two keys: ``status`` (``"running"`` while writing, ``"complete"`` once the output is whole) and,
once complete, ``counts`` (how many items the output holds and how many inputs were skipped).

* **Scores directory** (``dpocheck score``): ``DIR/manifest.json`` with ``fingerprint`` (``format_version``,
  ``model``, ``data`` — path, sha256, format, Δr* source, prompt style —, ``settings``, ``tokenizer``; what must
  match for ``--resume``), ``status``, ``world_size``, ``row_keys``, ``tokenizer_detail``, whatever the caller
  adds (the CLI adds ``load``, ``model_parameters``, ``device``, ``logp_convention``), and once merged
  ``counts`` (``pairs_in``, ``scored``, ``skipped``, truncation, shard and token counts), ``skipped`` (one entry
  per pair skipped by the scorer) and ``sessions`` (one entry per run that wrote into the directory); after
  ``--check-fp32 N``, ``precision_check`` (:mod:`~dpocheck.llm.precision`: N, seed, dtypes, the gap stats).
* **Sidecar of a JSONL output** (``dpocheck reward``, ``dpocheck sample``): ``OUT.manifest.json`` beside ``OUT``
  with the command's identity (model, data) and ``settings``, ``status`` and, when complete, ``counts``.

Readers use :func:`read_manifest`, :func:`is_complete`, :func:`scored_pair_count` and
:func:`data_sha256`, which read exactly the keys written here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from dpocheck._io import write_text_atomic
from dpocheck.errors import InputError

MANIFEST = "manifest.json"  # inside a scores directory
MERGED = "scores.jsonl"  # the merged, index-sorted rows of a complete scores directory
SHARD_RE = re.compile(r"^scores-(\d+)-(\d+)\.jsonl$")
FORMAT_VERSION = 1
RUNNING = "running"
COMPLETE = "complete"


class ManifestError(InputError):
    """A manifest that cannot be read (not JSON, not an object); the message names the file."""


# ------------------------------------------------------------------------------------------- reading, writing
def write_manifest(path: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write a manifest atomically (readers see the old one or the new one, never half)."""
    return write_text_atomic(path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A manifest as a dict; :class:`ManifestError` naming the file when it is not a JSON object."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{p}: not a valid JSON manifest ({err})") from err
    if not isinstance(data, dict):
        raise ManifestError(f"{p}: a manifest must be a JSON object, got {type(data).__name__}")
    return data


def sidecar_path(out: str | os.PathLike[str]) -> Path:
    """Where the manifest of a JSONL output ``OUT`` lives: ``OUT.manifest.json``."""
    p = Path(out)
    return p.with_name(p.name + ".manifest.json")


def is_complete(manifest: dict[str, Any] | None) -> bool:
    """True when the run that wrote the manifest finished (``status == "complete"``)."""
    return bool(manifest) and manifest.get("status") == COMPLETE


def scored_pair_count(manifest: dict[str, Any] | None) -> int | None:
    """Rows a complete scores directory holds (``counts.scored``); None when not recorded."""
    counts = (manifest or {}).get("counts")
    v = counts.get("scored") if isinstance(counts, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def data_sha256(manifest: dict[str, Any] | None) -> str | None:
    """sha256 of the data file an output was made from: ``fingerprint.data.sha256`` (scores directory) or
    ``identity.data.sha256`` (sidecar of ``dpocheck reward``) or ``data.sha256`` (a ``dpocheck train`` run);
    None when not recorded."""
    for key in ("fingerprint", "identity"):
        fp = (manifest or {}).get(key)
        data = fp.get("data") if isinstance(fp, dict) else None
        v = data.get("sha256") if isinstance(data, dict) else None
        if isinstance(v, str):
            return v
    data = (manifest or {}).get("data")
    v = data.get("sha256") if isinstance(data, dict) else None
    return v if isinstance(v, str) else None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (the data identity every manifest records)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts, as ``key: old -> new`` lines."""
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return diffs


# ------------------------------------------------------------------------------------------ scores directory
def tokenizer_info(tokenizer: Any, use_chat_template: bool) -> dict[str, Any]:
    """What a scores manifest records about the tokenizer and the chat template."""
    tpl = getattr(tokenizer, "chat_template", None) if use_chat_template else None
    return {
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "chat_template_used": use_chat_template,
        "chat_template_sha256": hashlib.sha256(tpl.encode()).hexdigest() if isinstance(tpl, str) else None,
        "chat_template": tpl if isinstance(tpl, str) else None,
    }


def scores_fingerprint(
    model_identity: dict[str, Any], data_identity: dict[str, Any], settings: dict[str, Any], tok: dict[str, Any]
) -> dict[str, Any]:
    """The part of a scores manifest that must match for ``--resume`` (model, data, settings, tokenizer)."""
    return {
        "format_version": FORMAT_VERSION,
        "model": model_identity,
        "data": data_identity,
        "settings": settings,
        "tokenizer": {k: v for k, v in tok.items() if k != "chat_template"},
    }


def open_scores_manifest(
    out: Path,
    fingerprint: dict[str, Any],
    *,
    resume: bool,
    world_size: int,
    row_keys: list[str],
    tokenizer_detail: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check ``out`` may take this run (new, or a resume with the same fingerprint) and mark it running.

    Raises FileExistsError for an existing run without ``resume`` or shards without a manifest, and
    :class:`InputError` for a resume whose inputs differ (naming the first differing keys).
    """
    path = out / MANIFEST
    old: dict[str, Any] | None = None
    if path.exists():
        if not resume:
            raise FileExistsError(f"{out} already holds a scoring run; pass --resume or choose a new --out")
        old = read_manifest(path)
        diffs = differences(old.get("fingerprint", {}), fingerprint)
        if diffs:
            raise InputError(
                f"refusing to resume into {out}: its manifest was made with different inputs: " + "; ".join(diffs[:8])
            )
    elif any(SHARD_RE.match(f.name) for f in out.iterdir()):
        raise FileExistsError(f"{out} holds score shards but no {MANIFEST}; refusing to mix runs")
    manifest = {
        "fingerprint": fingerprint,
        "status": RUNNING,
        "world_size": world_size,
        "row_keys": row_keys,
        "tokenizer_detail": tokenizer_detail,
        **(extra or {}),
    }
    if old is not None:
        manifest = {**old, **manifest, "sessions": old.get("sessions", [])}
    write_manifest(path, manifest)
    return manifest


def check_same_fingerprint(out: Path, fingerprint: dict[str, Any], rank: int) -> None:
    """A non-zero rank's check that rank 0 opened ``out`` with the same inputs."""
    old = read_manifest(out / MANIFEST)
    if differences(old.get("fingerprint", {}), fingerprint):
        raise InputError(f"rank {rank}: inputs differ from rank 0's manifest in {out}")


def complete_scores_manifest(
    out: Path, counts: dict[str, Any], skipped: list[dict[str, Any]], session: dict[str, Any]
) -> dict[str, Any]:
    """Mark a merged scores directory complete, with its counts, skipped pairs and this session."""
    manifest = read_manifest(out / MANIFEST)
    manifest.update(
        {
            "status": COMPLETE,
            "counts": counts,
            "skipped": skipped,
            "sessions": [*manifest.get("sessions", []), session],
        }
    )
    write_manifest(out / MANIFEST, manifest)
    return manifest


def record_precision_check(out: Path, check: dict[str, Any]) -> dict[str, Any]:
    """Store the fp32 check of a complete scores directory as its manifest's ``precision_check`` (replacing one)."""
    manifest = read_manifest(out / MANIFEST)
    if not is_complete(manifest):
        raise InputError(f"{out}: the scoring run is not complete; the fp32 check needs the merged scores")
    manifest["precision_check"] = check
    write_manifest(out / MANIFEST, manifest)
    return manifest
