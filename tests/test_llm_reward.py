"""Tests of dpocheck.llm.generation.reward and `dpocheck reward`, with a tiny random reward model built in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from dpocheck.errors import InputError  # noqa: E402
from dpocheck.llm.generation.reward import (  # noqa: E402
    RewardSettings,
    load_reward_model,
    reward_file,
    score_texts,
)
from dpocheck.llm.manifest import read_manifest, sidecar_path  # noqa: E402
from dpocheck.llm.scoring.render import render_texts  # noqa: E402

WORDS = "hi yo no yes a b c the cat dog sure ok Human Assistant : ? ! . ,".split()
N_POSITIONS = 32


def _tokenizer(chat_template: str | None = None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    if chat_template:
        fast.chat_template = chat_template
    return fast, len(vocab)


def _build(path: Path, num_labels: int = 1, chat_template: str | None = None) -> Path:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok, n_vocab = _tokenizer(chat_template)
    cfg = GPT2Config(
        vocab_size=n_vocab,
        n_positions=N_POSITIONS,
        n_embd=16,
        n_layer=1,
        n_head=2,
        num_labels=num_labels,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    GPT2ForSequenceClassification(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("rm") / "tiny-rm")


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    long = " ".join(["the cat"] * 30)  # 60 tokens > N_POSITIONS: truncated from the left
    recs = [
        {"prompt": "hi", "chosen": " yo", "rejected": " no", "subset": "s"},
        {"prompt": "hi", "chosen": " sure ok", "rejected": " no no no"},
        {"prompt": "the cat ?", "chosen": " a b c", "rejected": " dog"},
        {"prompt": "hi", "chosen": "", "rejected": " no"},  # empty response: skipped and counted
        {"prompt": long, "chosen": " yes", "rejected": " no !"},
        {"prompt": "dog", "chosen": " ok .", "rejected": " ok ,"},
    ]
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return f


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_rewards_match_unbatched_forward(rm_dir, data_file, tmp_path):
    """Each reward equals the model's own output on that text alone (no padding); Δr* = r_w − r_l."""
    out = tmp_path / "rw.jsonl"
    run = reward_file(rm_dir, data_file, out, RewardSettings(batch_size=3), show_progress=False)
    assert run.n_pairs == 5 and run.n_scored_now == 5 and "empty_response: 1" in run.load_summary
    rows = _rows(out)
    assert [r["index"] for r in rows] == [0, 1, 2, 4, 5]
    model, tok, _ = load_reward_model(rm_dir)
    recs = [json.loads(x) for x in data_file.read_text().splitlines()]
    for r in rows:
        rec = recs[r["index"]]
        for side in ("chosen", "rejected"):
            ids = tok(rec["prompt"] + rec[side])["input_ids"][-N_POSITIONS:]
            with torch.inference_mode():
                alone = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
            assert r[f"reward_{side}"] == pytest.approx(alone, abs=1e-5)
        assert r["delta_reward"] == r["reward_chosen"] - r["reward_rejected"]
        assert r["reward_source"] == "reward_model:tiny-rm"
        assert r["chosen_truncated"] == (r["index"] == 4) == r["rejected_truncated"]
    assert rows[0]["subset"] == "s"
    manifest = read_manifest(sidecar_path(out))
    assert manifest["status"] == "complete" and manifest["counts"] == {"pairs": 5}
    assert not out.with_name("rw.jsonl.partial").exists()


def test_killed_and_resumed_run_equals_uninterrupted(rm_dir, data_file, tmp_path):
    """Stop after one batch, tear the partial file's last line, resume: the output is byte-identical."""
    settings = RewardSettings(batch_size=2)
    full = tmp_path / "full.jsonl"
    reward_file(rm_dir, data_file, full, settings, show_progress=False)
    out = tmp_path / "killed.jsonl"
    first = reward_file(rm_dir, data_file, out, settings, show_progress=False, stop_after_batches=1)
    assert first.n_scored_now == 2 and not out.exists()
    partial = out.with_name("killed.jsonl.partial")
    with open(partial, "a") as fh:
        fh.write('{"index": 5, "reward_ch')  # a torn write
    with pytest.raises(InputError, match="already holds a reward run .* --overwrite to replace it"):
        reward_file(rm_dir, data_file, out, settings, show_progress=False)
    with pytest.raises(ValueError, match="refusing to resume"):
        reward_file(rm_dir, data_file, out, RewardSettings(batch_size=3), resume=True, show_progress=False)
    second = reward_file(rm_dir, data_file, out, settings, resume=True, show_progress=False)
    assert (second.n_done_before, second.n_scored_now) == (2, 3)
    assert out.read_bytes() == full.read_bytes()
    again = reward_file(rm_dir, data_file, out, settings, resume=True, show_progress=False)
    assert again.n_scored_now == 0 and out.read_bytes() == full.read_bytes()


def test_batch_composition_does_not_change_rewards(rm_dir):
    model, tok, _ = load_reward_model(rm_dir)
    texts = ["hi yo", "the cat sat on a dog ?", "ok", "a b c a b c a b c"]
    together, _ = score_texts(model, tok, texts, 64, True)
    for t, v in zip(texts, together, strict=True):
        alone, _ = score_texts(model, tok, [t], 64, True)
        assert alone[0] == pytest.approx(v, abs=1e-5)


def test_chat_template_text(tmp_path):
    """The reward model reads the scorer's full text: with a chat template an HH prompt becomes its turns, the
    response loses its leading space and the trailing whitespace after the last turn is dropped."""
    tpl = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
    tok, _ = _tokenizer(tpl)
    hh = "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: ok ?\n\nAssistant:"
    assert render_texts(tok, hh, " sure", True)[1] == "<user> hi\n<assistant> yo\n<user> ok ?\n<assistant> sure"
    assert render_texts(tok, "hi", " sure", True)[1] == "<user> hi\n<assistant>  sure"
    assert render_texts(tok, hh, " sure", False)[1] == hh + " sure"
    msgs = [{"role": "user", "content": "hi"}]
    assert render_texts(tok, msgs, "yo", False)[1] == "\n\nHuman: hi\n\nAssistant: yo"


def test_reward_model_must_have_one_output(tmp_path):
    bad = _build(tmp_path / "two", num_labels=2)
    with pytest.raises(ValueError, match="num_labels=1"):
        load_reward_model(bad)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_reward_model(tmp_path)


def test_cli_reward_then_violations(rm_dir, data_file, tmp_path, capsys):
    """`dpocheck reward` end to end, then its file as the Δr* source of `dpocheck violations`."""
    from dpocheck.cli import main

    out = tmp_path / "rw.jsonl"
    assert (
        main(
            [
                "reward",
                "--reward-model",
                str(rm_dir),
                "--data",
                str(data_file),
                "--out",
                str(out),
                "--batch-size",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = _rows(out)
    assert len(rows) == 5
    assert (
        main(
            [
                "reward",
                "--reward-model",
                str(rm_dir),
                "--data",
                str(data_file),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "--overwrite to replace it" in capsys.readouterr().err
    scores = tmp_path / "scores"
    scores.mkdir()
    with open(scores / "scores-0-0.jsonl", "w") as fh:
        for r in rows:
            fh.write(
                json.dumps(
                    {
                        "index": r["index"],
                        "chosen_logp_sum": -3.0,
                        "rejected_logp_sum": -3.0,
                        "chosen_logp_mean": -1.0,
                        "rejected_logp_mean": -1.0,
                    }
                )
                + "\n"
            )
    vout = tmp_path / "v"
    assert (
        main(
            [
                "violations",
                "--scores",
                str(scores),
                "--delta-reward",
                str(out),
                "--beta",
                "1",
                "--out",
                str(vout),
                "--bootstrap",
                "50",
                "--quiet",
                "--no-plot",
            ]
        )
        == 0
    )
    rep = json.loads((vout / "violations-sum.json").read_text())
    assert "rw.jsonl" in rep["delta_reward"]["source"]
    # δ_ref = 0 on every pair, so at β = 1 a pair is violated iff its Δr* ≤ 0
    expect = sum(r["delta_reward"] <= 0 for r in rows) / len(rows)
    assert rep["per_beta"][0]["violation_rate"]["value"] == pytest.approx(expect)
