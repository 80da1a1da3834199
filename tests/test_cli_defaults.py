"""Commands run with their documented defaults: no ``--model`` means the default model (SmolLM2 GGUF).

The default model is swapped for a tiny random Llama here (``dpocheck.llm.models.default_model_path``), so the
test exercises the argument checks and the default-model path of ``score`` and ``sample`` at toy cost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpocheck.cli import main
from dpocheck.llm import models
from dpocheck.llm.models import save_toy_model


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy") / "model", seed=2)


@pytest.fixture
def default_is_toy(toy, monkeypatch) -> Path:
    monkeypatch.setattr(models, "default_model_path", lambda: toy)
    return toy


def test_score_without_model_uses_the_default(default_is_toy, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "Hi?", "chosen": " yes.", "rejected": " no!"}) + "\n")
    out = tmp_path / "s"
    assert main(["score", "--data", str(data), "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    rows = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["chosen_logp_sum"] < 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert str(default_is_toy) in json.dumps(manifest)


def test_sample_without_model_uses_the_default(default_is_toy, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi?"}) + "\n")
    out = tmp_path / "s.jsonl"
    argv = ["sample", "--prompts", str(prompts), "--out", str(out), "--k", "1", "--max-new-tokens", "3"]
    assert main([*argv, "--no-progress", "--seed", "0"]) == 0
    assert len(out.read_text().splitlines()) == 1
