"""The one output protocol (dpocheck.llm.manifest) and the one context rule (dpocheck.llm.scoring.settings).

Every long job writes the same manifest layout; an existing run is refused without ``--resume``, a resume with
other inputs is refused naming the key, files without a manifest are refused, a failed run says why (and a
resume reports it); ``--max-length 0`` means the model's context in every command.
"""

from __future__ import annotations

import json

import pytest

from dpocheck.errors import InputError
from dpocheck.llm import manifest as M
from dpocheck.llm.scoring.settings import cap_max_length, context_length

FP = {"model": {"path": "m"}, "data": {"path": "d.jsonl", "sha256": "a" * 64}, "settings": {"lr": 0.1}}


def test_a_new_output_is_marked_running_with_the_one_layout(tmp_path):
    run = M.open_output(tmp_path / "out" / M.MANIFEST, FP, tool="score", resume=False, extra={"sessions": []})
    on_disk = M.read_manifest(tmp_path / "out" / M.MANIFEST)
    assert on_disk == run.manifest
    assert list(on_disk)[:4] == ["format_version", "tool", "status", "fingerprint"]
    assert (on_disk["format_version"], on_disk["tool"], on_disk["status"]) == (M.FORMAT_VERSION, "score", "running")
    assert M.data_sha256(on_disk) == "a" * 64 and not M.is_complete(on_disk)
    run.complete({"scored": 3}, sessions=[{"seconds": 1.0}])
    done = M.read_manifest(tmp_path / "out" / M.MANIFEST)
    assert done["status"] == "complete" and done["counts"] == {"scored": 3} and M.scored_pair_count(done) == 3


def test_an_existing_run_needs_resume_and_the_same_fingerprint(tmp_path):
    path = tmp_path / M.MANIFEST
    M.open_output(path, FP, tool="train", resume=False).complete()
    with pytest.raises(InputError, match=r"already holds a train run \(status 'complete'\); pass --resume"):
        M.open_output(path, FP, tool="train", resume=False)
    other = {**FP, "settings": {"lr": 0.2}}
    with pytest.raises(InputError, match=r"refusing to resume .*settings\.lr: 0\.1 -> 0\.2"):
        M.open_output(path, other, tool="train", resume=True)
    with pytest.raises(InputError, match="holds a 'train' run, not a 'score' run"):
        M.open_output(path, FP, tool="score", resume=True)
    resumed = M.open_output(path, FP, tool="train", resume=True, extra={"note": 1})
    assert resumed.manifest["status"] == "running" and resumed.previous["status"] == "complete"


def test_an_earlier_layout_is_not_resumed(tmp_path):
    path = tmp_path / M.MANIFEST
    M.write_manifest(path, {"status": "complete", "tool": "score", "fingerprint": FP, "format_version": 1})
    with pytest.raises(InputError, match="manifest layout 1"):
        M.open_output(path, FP, tool="score", resume=True)


def test_outputs_without_a_manifest_are_refused(tmp_path):
    stray = tmp_path / "rows.jsonl"
    stray.write_text("{}\n")
    with pytest.raises(InputError, match="no manifest says what made it.*choose a new output"):
        M.check_output(M.sidecar_path(stray), tool="sample", resume=False, outputs=[stray])
    with pytest.raises(InputError, match="--resume: .* holds no train run"):
        M.check_output(tmp_path / "new" / M.MANIFEST, tool="train", resume=True, require_run=True)
    assert M.check_output(tmp_path / "new" / M.MANIFEST, tool="score", resume=True) is None  # nothing to resume


def test_a_failure_is_recorded_with_its_reason_and_step_and_reported_on_resume(tmp_path):
    path = tmp_path / M.MANIFEST
    run = M.open_output(path, FP, tool="train", resume=False)
    with pytest.raises(FloatingPointError), run.guard(step=lambda: 7):
        raise FloatingPointError("non-finite loss\nat step 7")
    failed = M.read_manifest(path)
    assert failed["status"] == "failed"
    assert failed["failure"] == {"reason": "FloatingPointError: non-finite loss at step 7", "step": 7}
    again = M.open_output(path, FP, tool="train", resume=True)
    assert (
        again.previous_failure == "resuming a run that failed at step 7: FloatingPointError: non-finite loss at step 7"
    )
    again.complete()
    assert "failure" not in M.read_manifest(path) and M.is_complete(M.read_manifest(path))


def test_guard_leaves_a_finished_run_alone(tmp_path):
    run = M.open_output(tmp_path / M.MANIFEST, FP, tool="score", resume=False)
    with pytest.raises(KeyError), run.guard():
        run.complete()
        raise KeyError("after completion")
    assert M.read_manifest(tmp_path / M.MANIFEST)["status"] == "complete"


def test_data_identity_is_path_hash_and_labels(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"a": 1}\n')
    ident = M.data_identity(f, format="trl")
    assert ident == {"path": str(f.resolve()), "sha256": M.sha256_file(f), "format": "trl"}
    assert json.loads(json.dumps(ident)) == ident


# ------------------------------------------------------------------------------------------ the context rule
class _Config:
    def __init__(self, n: int | None):
        self.max_position_embeddings = n


class _Tokenizer:
    def __init__(self, n: int):
        self.model_max_length = n


@pytest.mark.parametrize(
    ("requested", "context", "expected", "noted"),
    [
        (0, 8192, 8192, "0: the model's context, 8192 tokens"),
        (None, 8192, 8192, "the model's context"),
        (20_000, 8192, 8192, "20000 is capped at the model's context of 8192 tokens"),
        (512, 8192, 512, None),
        (8192, 8192, 8192, None),
        (0, None, None, None),  # neither a budget nor a context: no limit
        (64, None, 64, None),
    ],
)
def test_max_length_zero_means_the_context_everywhere(requested, context, expected, noted):
    used, note = cap_max_length(requested, context)
    assert used == expected
    assert (note is None) if noted is None else (noted in note)


@pytest.mark.parametrize("bad", [-1, 1])
def test_max_length_out_of_range(bad):
    with pytest.raises(InputError, match="--max-length"):
        cap_max_length(bad, 8192)


def test_context_length_takes_the_smaller_real_limit():
    assert context_length(_Config(8192), _Tokenizer(4096)) == 4096
    assert context_length(_Config(2048), _Tokenizer(int(1e30))) == 2048  # a tokenizer without a limit says 1e30
    assert context_length(_Config(None)) is None
