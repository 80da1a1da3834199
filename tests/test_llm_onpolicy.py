"""The on-policy flow (``dpocheck onpolicy``): samples → rewards → best-vs-worst pairs → reference scores →
violations with Δr* from the reward model; batched sampling; resume after a kill. Tiny random models built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dpocheck._io import read_jsonl  # noqa: E402
from dpocheck.errors import InputError  # noqa: E402
from dpocheck.llm.generation.onpolicy import OnPolicySettings, run_onpolicy  # noqa: E402
from dpocheck.llm.generation.reward import load_reward_model, score_texts  # noqa: E402
from dpocheck.llm.generation.sample import SampleSettings, sample_batch, sample_prompt, sample_to_file  # noqa: E402
from dpocheck.llm.manifest import read_manifest, sidecar_path  # noqa: E402
from dpocheck.llm.models import load_model, save_toy_model, toy_llama_config, toy_tokenizer  # noqa: E402
from dpocheck.llm.scoring.render import render_texts  # noqa: E402

PROMPTS = ["Tell me a joke", "What is the capital of France?", "Write a poem", "Say hi", "Count to three"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """(policy folder, reward-model folder): a tiny random Llama and a tiny random one-output Llama classifier."""
    from transformers import LlamaForSequenceClassification

    root = tmp_path_factory.mktemp("models")
    policy = save_toy_model(root / "policy", seed=3)
    tok = toy_tokenizer()
    torch.manual_seed(1)
    cfg = toy_llama_config(len(tok), num_labels=1, pad_token_id=tok.pad_token_id, initializer_range=0.5)
    LlamaForSequenceClassification(cfg).save_pretrained(root / "rm", safe_serialization=True)
    tok.save_pretrained(root / "rm")
    return policy, root / "rm"


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return f


def _settings(models, prompts_file, out, **kw) -> OnPolicySettings:
    base = dict(
        prompts=str(prompts_file),
        reward_model=str(models[1]),
        out=str(out),
        model=str(models[0]),
        k=3,
        seed=2,
        max_new_tokens=6,
        sample_batch_size=2,
        reward_batch_size=4,
        betas=[0.1, 1.0],
        bootstrap=0,
        plot=False,
    )
    base.update(kw)
    return OnPolicySettings(**base)


def test_flow_pairs_best_against_worst_and_violations_use_the_reward_models_gap(models, prompts_file, tmp_path):
    out = tmp_path / "run"
    summary = run_onpolicy(_settings(models, prompts_file, out), show_progress=False)
    assert summary["stopped"] is None and read_manifest(out / "manifest.json")["status"] == "complete"
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == 3 * len(PROMPTS)
    # every sample's reward is the reward model's output on the one renderer's full text
    rewards = {(r["prompt_index"], r["sample_index"]): r for r in read_jsonl(out / "rewards.jsonl")}
    rm, rm_tok, _ = load_reward_model(models[1], dtype="fp32", device="cpu")
    for s in samples[:4]:
        text = render_texts(rm_tok, s["prompt"], s["response"], True)[1]
        value = score_texts(rm, rm_tok, [text], 2048, False)[0][0]
        assert rewards[(s["prompt_index"], s["sample_index"])]["reward"] == pytest.approx(value, abs=1e-5)
    # best vs worst by reward among distinct non-empty samples, with score columns = the rewards
    pairs = read_jsonl(out / "pairs.jsonl")
    for p in pairs:
        cands = {s["response"]: rewards[(s["prompt_index"], s["sample_index"])]["reward"]
                 for s in samples if s["prompt_index"] == p["prompt_index"] and not s["empty"]}  # fmt: skip
        assert p["score_chosen"] == max(cands.values()) and p["score_rejected"] == min(cands.values())
        assert cands[p["chosen"]] == p["score_chosen"] and cands[p["rejected"]] == p["score_rejected"]
    # the reference rows carry Δr* = r(y_w) − r(y_l), and the violation rate uses it (not Δr* = 0)
    scores = read_jsonl(out / "reference" / "scores.jsonl")
    assert len(scores) == len(pairs) >= 3
    for row in scores:
        p = pairs[row["index"]]
        assert row["delta_reward"] == pytest.approx(p["score_chosen"] - p["score_rejected"])
        assert row["reward_source"] == "score_columns" and row["delta_reward"] > 0
    dref = np.array([r["chosen_logp_sum"] - r["rejected_logp_sum"] for r in scores])
    dr = np.array([r["delta_reward"] for r in scores])
    report = json.loads((out / "violations" / "violations-sum.json").read_text())
    assert "score_columns" in json.dumps(report)
    for beta in (0.1, 1.0):
        expected = float(np.mean(beta * dref + dr <= 0))
        got = summary["stages"]["violations"]["violation_rate"]["sum"][str(beta)]
        assert got == pytest.approx(expected)
    assert (out / "violations" / "violations-mean.md").is_file()
    # the sampler is the reference: its scores of the pairs equal the samples' own forward-pass log-probs
    consistency = summary["stages"]["consistency"]
    assert consistency["responses_compared"] > 0 and consistency["max_abs_logp_gap"] <= 1e-4


def test_resume_after_kills_equals_an_uninterrupted_run_and_refuses_other_settings(models, prompts_file, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    uninterrupted = run_onpolicy(_settings(models, prompts_file, whole), show_progress=False)
    first = run_onpolicy(_settings(models, prompts_file, cut), show_progress=False, stop_after=("samples", 1))
    assert first["stopped"] == "samples" and (cut / "samples.jsonl.partial").is_file()
    with pytest.raises(InputError, match="already holds"):
        run_onpolicy(_settings(models, prompts_file, cut), show_progress=False)
    with pytest.raises(InputError, match="settings.k: 3 -> 4"):
        run_onpolicy(_settings(models, prompts_file, cut, k=4), resume=True, show_progress=False)
    second = run_onpolicy(
        _settings(models, prompts_file, cut), resume=True, show_progress=False, stop_after=("rewards", 1)
    )
    assert second["stopped"] == "rewards" and (cut / "rewards.jsonl.partial").is_file()
    assert second["stages"]["samples"]["sampled_now"] == len(PROMPTS) - 2  # the first batch (2 prompts) was kept
    third = run_onpolicy(_settings(models, prompts_file, cut), resume=True, show_progress=False)
    assert third["stages"]["rewards"]["done_before"] == 4  # one reward batch of 4 samples was kept
    for name in ("samples.jsonl", "rewards.jsonl", "pairs.jsonl", "reference/scores.jsonl"):
        assert (cut / name).read_text() == (whole / name).read_text(), name
    # a finished run resumes without sampling or rewarding again
    again = run_onpolicy(_settings(models, prompts_file, cut), resume=True, show_progress=False)
    assert "samples" not in again["stages"] or again["stages"]["samples"] == third["stages"]["samples"]
    assert again["stages"]["violations"] == uninterrupted["stages"]["violations"]


def test_batched_sampling_left_pads_correctly_and_is_reproducible_per_batch_size(models, tmp_path):
    loaded = load_model(models[0], dtype="fp32", device="cpu")
    s2 = SampleSettings(k=2, seed=5, max_new_tokens=5, batch_size=2)
    rows = sample_batch(loaded.model, loaded.tokenizer, PROMPTS[:2], [0, 1], s2)  # prompts of different lengths
    for r in rows:
        # generate's left-padded scores equal the unpadded forward pass (positions and mask right)
        assert r["sampler_logp_sum"] == pytest.approx(r["logp_sum"], abs=1e-4)
    # same batch size: same samples, also across a kill and resume; batch size 1 = per-prompt seeding
    prompts = list(PROMPTS)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    sample_to_file(loaded.model, loaded.tokenizer, prompts, a, s2, show_progress=False)
    info = sample_to_file(loaded.model, loaded.tokenizer, prompts, b, s2, show_progress=False, stop_after_batches=2)
    assert not info["complete"] and not b.exists()
    with open(b.with_name("b.jsonl.partial"), "a") as fh:  # a torn last line, as a kill mid-write leaves
        fh.write('{"prompt_index": 4, "sam')
    sample_to_file(loaded.model, loaded.tokenizer, prompts, b, s2, show_progress=False, resume=True)
    assert a.read_text() == b.read_text()
    assert read_manifest(sidecar_path(b))["fingerprint"]["settings"]["batch_size"] == 2
    s1 = SampleSettings(k=2, seed=5, max_new_tokens=5, batch_size=1)
    one = tmp_path / "one.jsonl"
    sample_to_file(loaded.model, loaded.tokenizer, prompts[:3], one, s1, show_progress=False)
    alone = [r for i in range(3) for r in sample_prompt(loaded.model, loaded.tokenizer, prompts[i], i, s1)]
    assert read_jsonl(one) == alone


def test_cli_onpolicy_runs_resumes_and_refuses_bad_input(models, prompts_file, tmp_path):
    from dpocheck.cli import main

    def args(out, prompts=prompts_file, k="2"):
        return [
            *("onpolicy", "--model", str(models[0]), "--reward-model", str(models[1]), "--prompts", str(prompts)),
            *("--out", str(out), "--k", k, "--max-new-tokens", "4", "--limit", "3", "--bootstrap", "0"),
            *("--beta", "0.1", "--no-plot", "--no-progress", "--threads", "1"),
        ]

    out = tmp_path / "cli"
    assert main(args(out)) == 0
    assert main(args(out)) == 2  # exists: needs --resume
    assert main([*args(out), "--resume"]) == 0
    assert main(args(tmp_path / "x", k="1")) == 2  # a pair needs two samples
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    assert main(args(tmp_path / "y", prompts=bad)) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # refused before anything is written
