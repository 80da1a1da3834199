"""Tests of dpocheck.llm.generation.sample and the ``dpocheck sample`` command (tiny random models built in code)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

from dpocheck.errors import InputError
from dpocheck.llm.data.types import PreferencePair
from dpocheck.llm.generation.sample import SampleSettings, form_pairs, read_prompts, sample_prompt
from dpocheck.llm.models import save_toy_model, toy_llama_config, toy_tokenizer
from dpocheck.llm.scoring.runner import score_pairs
from dpocheck.llm.scoring.settings import ScoreSettings

TOL = 1e-4


class EosBiasedLlama(LlamaForCausalLM):
    """A toy Llama whose end-of-sequence logit gets +bias everywhere, so samples do finish (the bias is part of
    the model: generate and the scoring forward pass both see it)."""

    eos_bias = 4.0

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits[..., self.config.eos_token_id] += self.eos_bias
        return out


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    cfg = toy_llama_config(
        len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=0.5,
    )
    cfg._attn_implementation = "sdpa"
    return EosBiasedLlama(cfg).eval()


def _independent_logp(model, ids: list[int], start: int) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


def _prompt_ids(tok, prompt: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def test_sampling_is_seeded_and_reproducible(tok, model):
    s = SampleSettings(k=4, seed=7, max_new_tokens=10)
    a = sample_prompt(model, tok, "Tell me about the sea", 3, s)
    b = sample_prompt(model, tok, "Tell me about the sea", 3, s)
    assert a == b
    c = sample_prompt(model, tok, "Tell me about the sea", 3, SampleSettings(k=4, seed=8, max_new_tokens=10))
    assert [r["response_token_ids"] for r in c] != [r["response_token_ids"] for r in a]
    assert [r["sample_index"] for r in a] == [0, 1, 2, 3] and all(r["prompt_index"] == 3 for r in a)


def test_model_logp_is_a_forward_pass_and_equals_sampler_logp_at_temperature_one(tok, model):
    rows = sample_prompt(model, tok, "Tell me a joke", 0, SampleSettings(k=4, seed=1, max_new_tokens=12))
    p_ids = _prompt_ids(tok, "Tell me a joke")
    for r in rows:
        ids = r["response_token_ids"]
        assert r["tokens"] == len(ids) >= 1 and r["sampler_is_model"]
        assert abs(r["logp_sum"] - _independent_logp(model, p_ids + ids, len(p_ids))) <= TOL
        assert abs(r["sampler_logp_sum"] - r["logp_sum"]) <= TOL
        assert r["logp_mean"] == pytest.approx(r["logp_sum"] / r["tokens"])
    warped = sample_prompt(
        model, tok, "Tell me a joke", 0, SampleSettings(k=4, seed=1, max_new_tokens=12, temperature=0.5, top_k=20)
    )
    assert not warped[0]["sampler_is_model"]
    # a sharper, truncated sampler puts more mass on what it drew than the model does
    assert all(r["sampler_logp_sum"] > r["logp_sum"] + 1e-3 for r in warped)


def test_finished_samples_end_with_eos_and_rescore_identically(tok, model):
    rows = sample_prompt(model, tok, "Say hi", 0, SampleSettings(k=8, seed=2, max_new_tokens=16))
    finished = [r for r in rows if r["finished"]]
    assert finished, "the EOS-biased toy model should stop within 16 tokens"
    for r in finished:
        assert r["response_token_ids"][-1] == tok.eos_token_id and "<|im_end|>" not in r["response"]
    # a finished sample that re-tokenises to its own ids scores the same through `dpocheck score`'s code
    again = [r for r in finished if r["retokenizes"] and not r["empty"]]
    assert again, "some finished sample should round-trip through the tokenizer"
    for r in again:
        pair = PreferencePair(0, "Say hi", r["response"], r["response"] + " x")
        row = score_pairs(model, tok, [pair], ScoreSettings(chat_template="auto"))[0][0]
        assert abs(row["chosen_logp_sum"] - r["logp_sum"]) <= TOL and row["chosen_tokens"] == r["tokens"]


def _sample_rows(rewards: list[list[float]], responses: list[list[str]]) -> list[dict]:
    rows = []
    for i, (rs, texts) in enumerate(zip(rewards, responses, strict=True)):
        for j, (rw, text) in enumerate(zip(rs, texts, strict=True)):
            rows.append(
                {
                    "prompt_index": i,
                    "sample_index": j,
                    "prompt": f"p{i}",
                    "response": text,
                    "empty": not text.strip(),
                    "reward": rw,
                }
            )
    return rows


def test_form_pairs_all_and_best_worst(tmp_path):
    """Prompt 0: 4 samples (rewards 1, 3, 2, 3) → all pairs C(4,2) = 6 minus one reward tie (3 vs 3) = 5;
    best-worst: sample 1 (reward 3, lowest index among the best) vs sample 0 (reward 1). Prompt 1: an empty
    sample and a duplicate text leave 2 candidates → 1 pair."""
    from dpocheck.llm.data.load import load_pairs

    samples = tmp_path / "samples.jsonl"
    rows = _sample_rows([[1, 3, 2, 3], [0.5, 0.1, 9, 0.2]], [["a", "b", "c", "d"], ["x", "", "x", "y"]])
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = form_pairs(samples, tmp_path / "all.jsonl", mode="all", reward_field="reward")
    assert info["pairs"] == 6 and info["skipped"] == {"empty": 1, "duplicate_response": 1, "reward_tie": 1}
    info = form_pairs(samples, tmp_path / "bw.jsonl", mode="best-worst", reward_field="reward")
    recs = [json.loads(line) for line in (tmp_path / "bw.jsonl").read_text().splitlines()]
    assert [(r["chosen"], r["rejected"]) for r in recs] == [("b", "a"), ("x", "y")]
    loaded = load_pairs(tmp_path / "bw.jsonl")
    assert [p.delta_reward for p in loaded.pairs] == pytest.approx([2.0, 0.3])
    unlabelled = form_pairs(samples, tmp_path / "u.jsonl", mode="all")
    assert unlabelled["pairs"] == 7 and unlabelled["skipped"]["reward_tie"] == 0
    with pytest.raises(ValueError, match="best-worst"):
        form_pairs(samples, tmp_path / "x.jsonl", mode="best-worst")


def test_read_prompts_formats_and_errors(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\nsecond\n")
    assert read_prompts(txt) == ["first", "second"]
    js = tmp_path / "p.jsonl"
    js.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}]}) + "\n" + json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"record 1: field 'prompt' is missing"):
        read_prompts(js)
    assert read_prompts(js, limit=1) == [[{"role": "user", "content": "hi"}]]


def test_cli_sample_smoke_resume_and_pairs(tmp_path):
    from dpocheck.cli import main

    model_dir = save_toy_model(tmp_path / "m", seed=4)
    prompts2 = tmp_path / "p2.jsonl"
    prompts3 = tmp_path / "p3.jsonl"
    texts = ["Tell me a joke", "What is the capital of France?", "Write a poem"]
    prompts2.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts[:2]))
    prompts3.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    args = [
        "sample",
        "--model",
        str(model_dir),
        "--k",
        "3",
        "--seed",
        "5",
        "--max-new-tokens",
        "6",
        "--threads",
        "1",
        "--no-progress",
    ]
    part = tmp_path / "part.jsonl"
    full = tmp_path / "full.jsonl"
    assert main([*args, "--prompts", str(prompts2), "--out", str(part)]) == 0
    with pytest.raises(InputError, match="--resume"):  # the error itself, shown with --debug
        main([*args, "--prompts", str(prompts3), "--out", str(part), "--debug"])
    assert main([*args, "--prompts", str(prompts3), "--out", str(part)]) == 2  # the CLI's one-line exit 2
    assert (
        main(
            [
                *args,
                "--prompts",
                str(prompts3),
                "--out",
                str(part),
                "--resume",
                "--pairs-out",
                str(tmp_path / "pairs.jsonl"),
            ]
        )
        == 0
    )
    assert main([*args, "--prompts", str(prompts3), "--out", str(full)]) == 0
    a = [json.loads(x) for x in part.read_text().splitlines()]
    b = [json.loads(x) for x in full.read_text().splitlines()]
    assert len(a) == 9 and a == b  # resumed = uninterrupted (per-prompt seeding)
    pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(not p["labelled"] for p in pairs)
    with pytest.raises(ValueError, match="refusing to resume .* settings.seed: 5 -> 6"):
        main([*args, "--seed", "6", "--prompts", str(prompts3), "--out", str(part), "--resume", "--debug"])
