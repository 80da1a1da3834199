"""Every way a long job ends leaves its manifest saying so, and resuming a failed run says what happened.

A diverging ``train`` (a learning rate far too large) stops with exit 3 naming the step and ``--lr``; a crash while
the reference is scored marks the run and its reference folder ``failed``; SIGTERM marks a run ``failed``; no
manifest stays ``running``. ``--resume`` of a failed ``score``, ``reward``, ``sample`` or ``train`` prints the
earlier failure. Also: ``train-sweep`` on a folder without runs, ``--data`` given a folder, the GGUF
de-quantisation bar under ``--no-progress`` and the tied output head on ``--resume``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dpocheck.cli import main
from dpocheck.llm.manifest import MANIFEST, read_manifest, sidecar_path, write_manifest
from dpocheck.llm.models import save_toy_model, toy_tokenizer

pytest.importorskip("trl")

REPO = Path(__file__).resolve().parents[1]
RECORDS = [
    {"prompt": f"Question {i}: what is the capital of France?", "chosen": f" Paris {i}.", "rejected": " The dog."}
    for i in range(6)
]


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy") / "toy", seed=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def _train_argv(toy_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(toy_dir), "--data", str(data), "--out", str(out), "--loss", "dpo", "--beta", "0.1",
            "--no-progress", "--threads", "1", *extra]  # fmt: skip


def _error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith(f"dpocheck {command}: error: ")]
    assert len(lines) == 1 and err.strip().endswith(lines[0]) and "Traceback" not in err, err
    return lines[0]


def _statuses(out: Path) -> dict[str, str]:
    return {str(m.relative_to(out)): read_manifest(m)["status"] for m in out.rglob("manifest.json")}


# ------------------------------------------------------------------------------------------------ train
def test_a_diverging_run_fails_naming_the_step_and_lr(toy_dir, data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _train_argv(toy_dir, data, out, "--max-steps", "6", "--eval-every", "2", "--lr", "1e8")
    assert main(argv) == 3  # a numerical failure, not bad input
    line = _error_line(capsys.readouterr().err, "train")
    assert "training diverged at step 2" in line and "--lr 1e+08" in line and "lower --lr" in line
    manifest = read_manifest(out / MANIFEST)
    assert manifest["status"] == "failed" and manifest["failure"]["step"] == 2
    assert "training diverged at step 2" in manifest["failure"]["reason"] and "--lr" in manifest["failure"]["reason"]
    assert set(_statuses(out).values()) == {"complete", "failed"}  # the reference finished, the run failed
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and rows[-1]["grad_norm"] is None  # the diverged step's row is kept
    # --resume says what happened before it goes on (and diverges again, with the same settings)
    assert main([*argv, "--resume"]) == 3
    err = capsys.readouterr().err
    assert "resuming a run that failed at step 2: NumericalError: training diverged at step 2" in err


def test_non_finite_eval_log_probs_stop_the_run_before_the_eval_file(toy_dir, data, tmp_path, capsys):
    """--lr 1e200: the weights are non-finite after step 1 while the logged values may not be yet; the whole-set
    eval finds the policy's log-probs non-finite and stops the run with the divergence error, writing no eval file
    of meaningless rows."""
    out = tmp_path / "run"
    argv = _train_argv(toy_dir, data, out, "--max-steps", "3", "--eval-every", "1", "--lr", "1e200")
    assert main(argv) == 3
    line = _error_line(capsys.readouterr().err, "train")
    assert "training diverged at step 1: the policy's" in line and "logp" in line and "--lr 1e+200" in line
    assert read_manifest(out / MANIFEST)["status"] == "failed"
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["step-0.jsonl"]


def test_non_finite_log_probs_in_the_trainer_name_the_step_and_lr(toy_dir, data, tmp_path, monkeypatch):
    """The trainer's own check (non-finite policy log-probs) becomes the same divergence error."""
    from dpocheck.errors import NumericalError
    from dpocheck.llm.train import trainer as trainer_mod
    from dpocheck.llm.train.run import train
    from dpocheck.llm.train.settings import TrainSettings

    real = trainer_mod.policy_logps
    calls = []

    def poisoned(model, inputs):
        logps = real(model, inputs)
        calls.append(1)
        if len(calls) == 3:  # the third training forward: step 3
            logps["finite"] = logps["finite"] & False
        return logps

    monkeypatch.setattr(trainer_mod, "policy_logps", poisoned)
    out = tmp_path / "run"
    s = TrainSettings(data=str(data), model=str(toy_dir), out=str(out), loss="dpo", beta=0.1, max_steps=4,
                      eval_every=10, lr=1e-3, progress=False, threads=1)  # fmt: skip
    with pytest.raises(NumericalError, match=r"training diverged at step 3: non-finite policy log-probabilities"):
        train(s)
    failure = read_manifest(out / MANIFEST)["failure"]
    assert failure["step"] == 2 and "--lr 0.001" in failure["reason"]  # two steps done, the third diverged


def test_a_crash_while_scoring_the_reference_leaves_failed_everywhere(toy_dir, data, tmp_path, capsys, monkeypatch):
    from dpocheck.llm.scoring import runner

    def boom(*a, **k):
        raise RuntimeError("the accelerator fell over")

    monkeypatch.setattr(runner, "score_batch", boom)
    out = tmp_path / "run"
    from dpocheck.llm.cli.train import settings_from_args  # noqa: F401  (the CLI module imports)
    from dpocheck.llm.train.run import train
    from dpocheck.llm.train.settings import TrainSettings

    s = TrainSettings(data=str(data), model=str(toy_dir), out=str(out), loss="dpo", beta=0.1, max_steps=1,
                      progress=False, threads=1)  # fmt: skip
    with pytest.raises(RuntimeError, match="fell over"):
        train(s)
    assert _statuses(out) == {"manifest.json": "failed", "reference/manifest.json": "failed"}
    for m in ("manifest.json", "reference/manifest.json"):
        assert read_manifest(out / m)["failure"]["reason"] == "RuntimeError: the accelerator fell over"
    monkeypatch.undo()
    assert main([*_train_argv(toy_dir, data, out, "--max-steps", "1"), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resuming a run that failed: RuntimeError: the accelerator fell over" in err
    assert set(_statuses(out).values()) == {"complete"}


def test_sigterm_marks_the_run_failed(tmp_path):
    script = (
        "import os, signal, sys, time\n"
        "from dpocheck.llm.manifest import open_output\n"
        "run = open_output(sys.argv[1], {'data': {}}, tool='score', resume=False)\n"
        "with run.guard():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / MANIFEST)], env=env, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    manifest = read_manifest(tmp_path / MANIFEST)
    assert manifest["status"] == "failed" and manifest["failure"]["reason"] == "Terminated: stopped by SIGTERM"


# ---------------------------------------------------------------------- --resume of a failed run says so
def _mark_failed(manifest_path: Path, reason: str) -> None:
    m = read_manifest(manifest_path)
    m.update(status="failed", failure={"reason": reason})
    write_manifest(manifest_path, m)


def test_resume_of_a_failed_score_sample_or_reward_says_what_happened(toy_dir, data, tmp_path, capsys):
    out = tmp_path / "scores"
    score = ["score", "--model", str(toy_dir), "--data", str(data), "--out", str(out), "--no-progress"]
    assert main(score) == 0
    _mark_failed(out / MANIFEST, "RuntimeError: out of memory")
    assert main([*score, "--resume"]) == 0
    assert "resuming a run that failed: RuntimeError: out of memory" in capsys.readouterr().err

    samples = tmp_path / "s.jsonl"
    sample = ["sample", "--model", str(toy_dir), "--prompts", str(data), "--out", str(samples), "--no-progress"]
    sample += ["--k", "1", "--max-new-tokens", "2", "--limit", "2"]
    assert main(sample) == 0
    _mark_failed(sidecar_path(samples), "RuntimeError: disk full")
    assert main([*sample, "--resume"]) == 0
    assert "dpocheck sample: resuming a run that failed: RuntimeError: disk full" in capsys.readouterr().err


def test_resume_of_a_failed_reward_says_what_happened(data, tmp_path, capsys):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = toy_tokenizer(chat_template=None)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=8, n_layer=1, n_head=2, num_labels=1)
    cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    torch.manual_seed(0)
    rm = tmp_path / "rm"
    GPT2ForSequenceClassification(cfg).save_pretrained(rm, safe_serialization=True)
    tok.save_pretrained(rm)
    out = tmp_path / "r.jsonl"
    reward = ["reward", "--reward-model", str(rm), "--data", str(data), "--out", str(out), "--no-progress"]
    assert main(reward) == 0
    _mark_failed(sidecar_path(out), "RuntimeError: killed")
    assert main([*reward, "--resume"]) == 0
    assert "dpocheck reward: resuming a run that failed: RuntimeError: killed" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- train-sweep
@pytest.mark.parametrize("state", ["missing", "empty", "unfinished"])
def test_report_only_without_runs_is_one_line(tmp_path, capsys, state):
    out = tmp_path / "sweep"
    if state != "missing":
        out.mkdir()
    if state == "unfinished":
        (out / "runs" / "dpo_R0_s0").mkdir(parents=True)
        write_manifest(out / "runs" / "dpo_R0_s0" / MANIFEST, {"tool": "train", "status": "running"})
    assert main(["train-sweep", "--report-only", "--out", str(out)]) == 2
    line = _error_line(capsys.readouterr().err, "train-sweep")
    what = "no finished runs" if state == "unfinished" else "no runs"
    assert f"{what} in {out} yet" in line and "Errno" not in line


def test_list_needs_no_out(capsys):
    assert main(["train-sweep", "--list"]) == 0
    assert "dpo_R0_s0" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "train-sweep", "score"])
def test_data_given_a_folder_says_so(toy_dir, tmp_path, capsys, command):
    argv = {
        "train": _train_argv(toy_dir, tmp_path, tmp_path / "run"),
        "train-sweep": ["train-sweep", "--model", str(toy_dir), "--data", str(tmp_path), "--out", str(tmp_path / "s")],
        "score": ["score", "--model", str(toy_dir), "--data", str(tmp_path), "--out", str(tmp_path / "o")],
    }[command]
    assert main(argv) == 2
    line = _error_line(capsys.readouterr().err, command)
    assert f"{tmp_path} is a folder, not a preference data file" in line and "not found" not in line


# -------------------------------------------------------------------------------- quiet loading, tied head
def test_resume_explains_the_tied_output_head(toy_dir, data, tmp_path, capfd):
    """The toy models tie their output head to the input embeddings, as SmolLM2 does."""
    from transformers import TrainerCallback

    from dpocheck.llm.train.run import train
    from dpocheck.llm.train.settings import TrainSettings

    class Stop(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.global_step == 3 and logs and "loss" in logs:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    s = TrainSettings(data=str(data), model=str(toy_dir), out=str(out), loss="dpo", beta=0.1, max_steps=4,
                      save_steps=2, eval_every=2, progress=False, threads=1)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        train(s, callbacks=[Stop()])
    assert read_manifest(out / MANIFEST)["failure"] == {"reason": "KeyboardInterrupt", "step": 3}
    capfd.readouterr()
    assert main([*_train_argv(toy_dir, data, out, "--max-steps", "4", "--save-steps", "2", "--eval-every", "2"),
                 "--resume"]) == 0  # fmt: skip
    err = capfd.readouterr().err
    assert "resuming from" in err and "checkpoint-2" in err
    assert "resuming: lm_head.weight is not stored in the checkpoint because it is tied" in err
    assert "There were missing keys" not in err
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # --no-progress silenced the bars for the run only


@pytest.mark.slow
@pytest.mark.llm
def test_no_progress_silences_the_gguf_dequantisation_bar(data, tmp_path, capfd, monkeypatch):
    """SmolLM2's GGUF is de-quantised on load: with --no-progress, no bar (train stops right after loading)."""
    from dpocheck.llm import models

    try:
        models.default_model_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    from dpocheck.llm.train import trainer as trainer_mod

    class Loaded(Exception):
        pass

    def stop(model):
        raise Loaded

    monkeypatch.setattr(trainer_mod, "trainable_model", stop)
    from dpocheck.llm.train.run import train
    from dpocheck.llm.train.settings import TrainSettings

    s = TrainSettings(data=str(data), out=str(tmp_path / "run"), loss="dpo", beta=0.1, max_steps=1, max_length=32,
                      progress=False, threads=1)  # fmt: skip
    with pytest.raises(Loaded):
        train(s)
    err = capfd.readouterr().err
    assert "%|" not in err and "GGUF" not in err, err[-2000:]
