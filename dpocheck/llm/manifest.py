"""The one output protocol of every LLM command: may this output be written, resumed or not, and what it holds.

Every long job (``score``, ``reward``, ``sample``, ``onpolicy``, ``train``, ``train-sweep``) records what it was
run on in a manifest, so that a rerun can refuse to mix runs, ``--resume`` can continue one, and readers can tell a
finished output from a partial or failed one. All manifests share one layout (JSON object, 2-space indent, UTF-8,
written atomically):

``format_version``
    :data:`FORMAT_VERSION` of this layout;
``tool``
    the command that wrote it (``score``, ``reward``, ``reward-samples`` (the reward of every sample, a stage of
    ``onpolicy``), ``sample``, ``onpolicy``, ``train``, ``train-sweep``);
``status``
    ``running`` while writing, ``complete`` once the output is whole, ``failed`` when the run stopped on an
    error (with ``failure``: ``reason``, the error's one line, and ``step`` where the command knows one);
``fingerprint``
    what must be equal for ``--resume`` (``model``, ``data`` with its ``sha256``, ``settings``, …), compared key
    by key; ``fingerprint.data.sha256`` is the one place a data hash is read (:func:`data_sha256`);
``counts``
    once complete: how many items the output holds and how many inputs were skipped, by reason;

plus whatever the command adds (``sessions``, ``load``, ``loss``, ``result``, …). A folder output keeps its
manifest in ``DIR/manifest.json`` (``score``, ``train``, ``onpolicy``; ``train-sweep`` in ``DIR/sweep.json``); a file
output ``OUT`` keeps it beside itself in ``OUT.manifest.json`` (:func:`sidecar_path`; ``reward``, ``sample``).

The protocol (:func:`check_output` before anything heavy is loaded, then :func:`open_output`):

* a manifest already there and no ``--resume`` (nor ``--overwrite`` where a command offers it): refused;
* ``--resume`` with a manifest of another command, or whose fingerprint differs: refused, naming the first keys;
* ``--resume`` of a failed run: allowed, and the earlier failure is reported (``OutputRun.previous_failure``);
* output files already there but no manifest: refused (they cannot be checked);
* every refusal is an :class:`~dpocheck.errors.InputError` (exit status 2 in the CLI, one line).

:meth:`OutputRun.guard` marks the manifest ``failed`` with the reason on every error that leaves the block (and on
SIGTERM), so no manifest says ``running`` after its process ended, unless it was killed with SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpocheck._io import write_text_atomic
from dpocheck.errors import InputError

MANIFEST = "manifest.json"  # inside a folder output
MERGED = "scores.jsonl"  # the merged, index-sorted rows of a complete scores directory
SHARD_RE = re.compile(r"^scores-(\d+)-(\d+)\.jsonl$")
FORMAT_VERSION = 2
RUNNING = "running"
COMPLETE = "complete"
FAILED = "failed"


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


def read_manifest_if_any(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest at ``path``, or None when there is no file."""
    p = Path(path)
    return read_manifest(p) if p.is_file() else None


def sidecar_path(out: str | os.PathLike[str]) -> Path:
    """Where the manifest of a file output ``OUT`` lives: ``OUT.manifest.json``."""
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
    """sha256 of the data file an output was made from (``fingerprint.data.sha256``); None when not recorded."""
    fp = (manifest or {}).get("fingerprint")
    data = fp.get("data") if isinstance(fp, dict) else None
    v = data.get("sha256") if isinstance(data, dict) else None
    return v if isinstance(v, str) else None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (the data identity every manifest records)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_identity(path: str | os.PathLike[str], **labels: Any) -> dict[str, Any]:
    """The ``fingerprint.data`` of an input file: absolute path, sha256, then ``labels`` (format, Δr* source, …)."""
    return {"path": os.path.abspath(path), "sha256": sha256_file(path), **labels}


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


# ------------------------------------------------------------------------------------------------ protocol
def check_output(
    manifest_path: str | os.PathLike[str],
    *,
    tool: str,
    resume: bool,
    fingerprint: dict[str, Any] | None = None,
    outputs: Iterable[str | os.PathLike[str]] = (),
    require_run: bool = False,
    where: str | None = None,
    hint: str = "pass --resume to continue it or choose a new output",
    stray_hint: str = "refusing to mix runs: choose a new output",
) -> dict[str, Any] | None:
    """Whether this run may write its output (see the module docstring); the earlier manifest, or None. No writes.

    ``outputs``: the files a run would write, which must not exist without a manifest; ``require_run``:
    ``--resume`` needs an earlier run (else starting afresh is allowed); ``where``: the output as the user named
    it, for messages (default: the manifest's folder or file); ``hint``: what the user can do about an existing
    run (``stray_hint``: about output files without a manifest). ``fingerprint=None`` skips the comparison (a
    caller that checks it later, once the data are read).
    """
    path = Path(manifest_path)
    name = where or str(path.parent if path.name == MANIFEST else path)
    old = read_manifest_if_any(path)
    if old is None:
        stray = [str(p) for p in outputs if Path(p).exists()]
        if stray:
            raise InputError(
                f"{name}: {stray[0]} exists but no manifest says what made it, so it cannot be checked or resumed; "
                f"{stray_hint}"
            )
        if resume and require_run:
            raise InputError(f"--resume: {name} holds no {tool} run (no {path.name}); drop --resume to start one")
        return None
    if not resume:
        status = old.get("status")
        raise InputError(f"{name} already holds a {old.get('tool', tool)} run (status {status!r}); {hint}")
    if old.get("tool") != tool:
        raise InputError(f"--resume: {name} holds a {old.get('tool')!r} run, not a {tool!r} run")
    if old.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"--resume: {name} was written by manifest layout {old.get('format_version')!r}, this is "
            f"{FORMAT_VERSION}; start a new output"
        )
    if fingerprint is not None:
        diffs = differences(old.get("fingerprint", {}), fingerprint)
        if diffs:
            raise InputError(
                f"refusing to resume {name}: it was made with other inputs or settings: " + "; ".join(diffs[:8])
            )
    return old


@dataclass
class OutputRun:
    """A manifest being written by this process: update it, then :meth:`complete` or :meth:`fail` it."""

    path: Path
    manifest: dict[str, Any]
    previous: dict[str, Any] | None = None
    write: bool = True  # False on non-main ranks of a distributed run (they only read)
    notes: list[str] = field(default_factory=list)

    @property
    def previous_failure(self) -> str | None:
        """One line about an earlier failed run this one resumes (None when there was none)."""
        if not self.previous or self.previous.get("status") != FAILED:
            return None
        failure = self.previous.get("failure") or {}
        step = f" at step {failure['step']}" if failure.get("step") is not None else ""
        return f"resuming a run that failed{step}: {failure.get('reason', 'no reason recorded')}"

    def save(self) -> None:
        if self.write:
            write_manifest(self.path, self.manifest)

    def update(self, **fields: Any) -> dict[str, Any]:
        """Set top-level keys and rewrite the manifest."""
        self.manifest.update(fields)
        self.save()
        return self.manifest

    def complete(self, counts: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """Mark the output whole (``status: complete``), with its counts and any other keys."""
        self.manifest.pop("failure", None)
        if counts is not None:
            self.manifest["counts"] = counts
        return self.update(status=COMPLETE, **fields)

    def fail(self, reason: str, step: int | None = None) -> dict[str, Any]:
        """Mark the run failed with its reason (one line) and, where known, the step."""
        failure: dict[str, Any] = {"reason": " ".join(str(reason).split())}
        if step is not None:
            failure["step"] = step
        return self.update(status=FAILED, failure=failure)

    @contextmanager
    def guard(self, step: Any = None) -> Iterator[OutputRun]:
        """Mark the run failed with the error's message when an exception leaves the block, then re-raise.

        ``step``: a callable giving the step to record (e.g. the trainer's global step), or None. Inside the block
        (in the main thread) SIGTERM raises :class:`Terminated`, so a run stopped by ``kill`` or a job scheduler is
        recorded as failed too (only SIGKILL leaves ``running`` behind; ``--resume`` continues such a run).
        """
        previous_handler = _raise_on_sigterm()
        try:
            yield self
        except BaseException as err:
            if self.manifest.get("status") == RUNNING:
                reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                try:
                    self.fail(reason, step() if callable(step) else None)
                except OSError:  # the output folder itself is gone or unwritable: nothing more to record
                    pass
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)


class Terminated(SystemExit):
    """SIGTERM inside :meth:`OutputRun.guard`: the process exits with status 128 + 15, the run recorded as failed."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)

    def __str__(self) -> str:
        return "stopped by SIGTERM"


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _raise_on_sigterm() -> Any:
    """Install :func:`_on_sigterm` for SIGTERM (main thread only); the handler it replaces, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        return None


def open_output(
    manifest_path: str | os.PathLike[str],
    fingerprint: dict[str, Any],
    *,
    tool: str,
    resume: bool,
    extra: dict[str, Any] | None = None,
    keep: Iterable[str] = ("sessions",),
    outputs: Iterable[str | os.PathLike[str]] = (),
    require_run: bool = False,
    where: str | None = None,
    hint: str = "pass --resume to continue it or choose a new output",
    stray_hint: str = "refusing to mix runs: choose a new output",
    write: bool = True,
) -> OutputRun:
    """Check (:func:`check_output`) and mark the output ``running``; returns the :class:`OutputRun`.

    A resumed run keeps the earlier manifest's ``keep`` keys (e.g. ``sessions``); ``extra`` adds top-level keys.
    ``write=False`` only checks and builds the manifest (non-main ranks).
    """
    path = Path(manifest_path)
    old = check_output(
        path,
        tool=tool,
        resume=resume,
        fingerprint=fingerprint,
        outputs=outputs,
        require_run=require_run,
        where=where,
        hint=hint,
        stray_hint=stray_hint,
    )
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tool": tool,
        "status": RUNNING,
        "fingerprint": fingerprint,
        **(extra or {}),
    }
    if old is not None:
        manifest.update({k: old[k] for k in keep if k in old})
    run = OutputRun(path, manifest, old, write)
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        run.save()
    return run
