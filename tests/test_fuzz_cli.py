"""Fuzz: malformed records and arguments for every reader and every model-side sub-command.

Each test feeds damaged input (missing/extra fields, wrong types, NaN/inf, empty strings, huge numbers, non-UTF-8
bytes, lone surrogates, cut files) and checks the contract of the CLI wrapper: exit 0 or 2 only (3 for stated
numerical failures: tabular's, a diverging ``train``), no traceback (an exception escaping ``main`` fails the test),
no silent drop (scored + skipped = records read) and no output file on failure (``train``: no manifest left
``running``). ``train`` runs on a toy model; ``violations`` reads a train run's eval file against damaged
reference scores (NaN/inf, bad bytes, other tokenisation settings); ``train-sweep --report-only`` tabulates a
damaged sweep folder. Few examples under the default ``fast`` profile, more under ``ci``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dpocheck.cli import main
from dpocheck.errors import InputError
from dpocheck.llm.data.load import load_pairs
from dpocheck.llm.manifest import MANIFEST, read_manifest, sidecar_path
from dpocheck.llm.models import save_toy_model

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
READER_EXAMPLES = 200 if CI else 40
CLI_EXAMPLES = 60 if CI else 8
CLI = settings(max_examples=CLI_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])

ODD = st.sampled_from(
    [
        None,
        True,
        0,
        1,
        -1,
        1.5,
        math.nan,
        math.inf,
        -math.inf,
        1e308,
        10**400,
        "",
        "   ",
        "\n\t",
        "x",
        [],
        {},
        [{"role": "user"}],
        [{"role": "user", "content": 3}],
        [{"role": "user", "content": "hi"}],
        {"a": 1},
        "Hi \ud800",
        " \udfff",
        [{"role": "user", "content": "x\ud800"}],
    ]
)  # fmt: skip  (the last three: lone surrogates, valid JSON ("\ud800") but not valid Unicode text)
TEXT = st.text(alphabet="ab .!?\n", min_size=1, max_size=12)


@st.composite
def record(draw, fmt: str) -> dict:
    """A valid record of ``fmt``, then damaged in zero to two fields."""
    q, a, b = draw(TEXT), draw(TEXT), draw(TEXT)
    if fmt == "trl":
        rec: dict = {"prompt": q, "chosen": " " + a, "rejected": " " + b}
    elif fmt == "hh":
        rec = {"chosen": f"\n\nHuman: {q}\n\nAssistant: {a}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {b}"}
    else:
        rec = {"instruction": q, "output_1": a, "output_2": b, "preference": draw(st.floats(1, 2))}
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["delete", "set", "extra"]))
        key = draw(st.sampled_from(sorted(rec) + ["delta_reward", "score_chosen", "p_chosen"]))
        if kind == "delete":
            rec.pop(key, None)
        elif kind == "set":
            rec[key] = draw(ODD)
        else:
            rec[f"extra_{key}"] = draw(ODD)
    return rec


@st.composite
def jsonl_bytes(draw, fmt: str, max_records: int = 5) -> bytes:
    """A JSONL file of damaged records, then possibly a blank line, bad bytes, a huge number or a cut end."""
    lines = [json.dumps(r).encode() for r in draw(st.lists(record(fmt), min_size=0, max_size=max_records))]
    for _ in range(draw(st.integers(0, 2))):
        damage = draw(st.sampled_from(["blank", "bytes", "huge", "not_json"]))
        at = draw(st.integers(0, len(lines)))
        if damage == "blank":
            lines.insert(at, b"   ")
        elif damage == "bytes" and lines:
            i = min(at, len(lines) - 1)
            cut = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:cut] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + lines[i][cut:]
        elif damage == "huge":
            lines.insert(at, b'{"prompt": 1' + b"0" * 5000 + b"}")
        elif damage == "not_json":
            lines.insert(at, draw(st.sampled_from([b"[", b"{]", b"nan", b"[1, 2]", b'"text"', b"[" * 5000])))
    raw = b"".join(ln + b"\n" for ln in lines)
    if raw and draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    return raw


def _records_in(raw: bytes) -> int:
    return sum(1 for ln in raw.split(b"\n") if ln.strip())


def _run(argv: list[str]) -> tuple[int, str, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def _check_failure(status: int, err: str, command: str) -> None:
    assert status in (0, 2), (status, err)
    assert "Traceback" not in err
    if status == 2:
        errors = [ln for ln in err.splitlines() if ln.startswith(f"dpocheck {command}: error: ")]
        assert len(errors) == 1 and err.strip().endswith(errors[0]), err


# ------------------------------------------------------------------------------------------------ readers
@pytest.mark.parametrize("fmt", ["trl", "hh", "alpacaeval"])
@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_reader_accounts_for_every_record(tmp_path_factory, fmt, container):
    @settings(max_examples=READER_EXAMPLES)
    @given(raw=jsonl_bytes(fmt))
    def run(raw: bytes) -> None:
        path = tmp_path_factory.mktemp("r") / f"d.{container}"
        if container == "json":
            good = [ln for ln in raw.split(b"\n") if ln.strip()]
            raw = b"[" + b",".join(good) + b"]" if all(_is_json(ln) for ln in good) else b"[" + raw
        path.write_bytes(raw)
        for fmt_arg in ("auto", fmt):
            try:
                res = load_pairs(path, fmt_arg)
            except InputError as e:
                assert str(path) in str(e) or "format" in str(e) or "q_clip" in str(e), str(e)
            else:
                n = _records_in(raw) if container == "jsonl" else len(json.loads(raw))
                assert res.n_records == n == len(res.pairs) + res.n_skipped
                assert all(p.chosen.strip() and p.rejected.strip() for p in res.pairs)
            try:
                strict = load_pairs(path, fmt_arg, on_error="raise")
            except InputError:
                pass
            else:
                assert strict.n_skipped == 0

    run()


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


# ------------------------------------------------------------------------------------------------ commands
@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy") / "toy")


SCORE_ARGS = st.lists(
    st.sampled_from(
        [["--max-length", "0"], ["--max-length", "2"], ["--max-length", "12"], ["--max-length", "-1"],
         ["--batch-tokens", "1"], ["--batch-tokens", "60"], ["--batch-tokens", "0"], ["--on-error", "raise"],
         ["--limit", "0"], ["--limit", "2"], ["--limit", "-1"], ["--format", "trl"], ["--format", "hh"],
         ["--format", "alpacaeval"], ["--format", "bogus"], ["--prefix-mode", "cache"],
         ["--prefix-mode", "none"], ["--shard-pairs", "1"], ["--delta-reward-source", "probability"],
         ["--delta-reward-source", "soft_preference"], ["--delta-reward-source", "bogus"]]
    ),
    max_size=3,
)  # fmt: skip


@CLI
@given(fmt=st.sampled_from(["trl", "hh", "alpacaeval"]), data=st.data(), extra=SCORE_ARGS)
@example(fmt="trl", data=None, extra=[])
def test_score_fuzz(tmp_path_factory, toy_dir, fmt, data, extra):
    raw = data.draw(jsonl_bytes(fmt, max_records=4)) if data is not None else b'{"prompt": "a", "chosen": " b"}\n'
    tmp = tmp_path_factory.mktemp("s")
    (tmp / "d.jsonl").write_bytes(raw)
    out = tmp / "out"
    argv = ["score", "--model", str(toy_dir), "--data", str(tmp / "d.jsonl"), "--out", str(out), "--no-progress"]
    status, std, err = _run(argv + [a for pair in extra for a in pair])
    _check_failure(status, err, "score")
    if status == 2:
        assert not (out / "scores.jsonl").exists()
        return
    counts = read_manifest(out / MANIFEST)["counts"]
    limit = next((int(v) for k, v in extra if k == "--limit"), None)
    n = _records_in(raw) if limit is None else min(limit, _records_in(raw))
    assert counts["records_read"] == n == counts["scored"] + sum(counts["skipped_by_reason"].values())
    rows = (out / "scores.jsonl").read_text().splitlines()
    assert len(rows) == counts["scored"] and json.loads(std)["scored"] == counts["scored"]


PROMPT_LINES = st.lists(
    st.one_of(
        st.builds(lambda t: json.dumps({"prompt": t}).encode(), TEXT),
        st.builds(lambda v: json.dumps({"prompt": v}).encode(), ODD),
        st.sampled_from([b'{"text": "a"}', b"\xff\xfe", b"[", b'{"prompt": "cut', b'"x"']),
    ),
    max_size=3,
)
SAMPLE_ARGS = st.lists(
    st.sampled_from(
        [["--k", "0"], ["--k", "-1"], ["--k", "2"], ["--temperature", "0"], ["--temperature", "nan"],
         ["--temperature", "inf"], ["--temperature", "0.7"], ["--top-p", "1.5"], ["--top-p", "nan"],
         ["--top-p", "0.5"], ["--top-k", "-1"], ["--top-k", "3"], ["--max-new-tokens", "0"], ["--limit", "-1"],
         ["--limit", "1"]]
    ),
    max_size=3,
)  # fmt: skip


@CLI
@given(lines=PROMPT_LINES, extra=SAMPLE_ARGS)
def test_sample_fuzz(tmp_path_factory, toy_dir, lines, extra):
    tmp = tmp_path_factory.mktemp("p")
    (tmp / "p.jsonl").write_bytes(b"".join(ln + b"\n" for ln in lines))
    out = tmp / "s.jsonl"
    argv = ["sample", "--model", str(toy_dir), "--prompts", str(tmp / "p.jsonl"), "--out", str(out)]
    status, std, err = _run(
        argv + ["--no-progress", "--max-new-tokens", "3", "--k", "1"] + [a for p in extra for a in p]
    )
    _check_failure(status, err, "sample")
    if status == 2:
        assert not out.exists()
        return
    info = json.loads(std)
    k = int(dict([("--k", "1"), *map(tuple, extra)])["--k"])  # the last --k given wins
    n_prompts = sum(1 for ln in lines if ln.strip())
    limit = dict(map(tuple, extra)).get("--limit")
    assert info["prompts"] == (n_prompts if limit is None else min(int(limit), n_prompts))
    assert info["samples"] == info["prompts"] * k
    assert len(out.read_text().splitlines()) == info["samples"]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    """A one-output GPT-2 reward model with a word-level tokenizer (any text tokenises)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[EOS]", *"a b . ! ? Human Assistant :".split()]
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    cfg = GPT2Config(vocab_size=len(words), n_positions=32, n_embd=8, n_layer=1, n_head=2, num_labels=1)
    cfg.pad_token_id = 0
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rm") / "rm"
    GPT2ForSequenceClassification(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@CLI
@given(fmt=st.sampled_from(["trl", "hh", "alpacaeval"]), data=st.data(), on_error=st.sampled_from(["skip", "raise"]))
def test_reward_fuzz(tmp_path_factory, rm_dir, fmt, data, on_error):
    raw = data.draw(jsonl_bytes(fmt, max_records=4))
    tmp = tmp_path_factory.mktemp("w")
    (tmp / "d.jsonl").write_bytes(raw)
    out = tmp / "r.jsonl"
    argv = ["reward", "--reward-model", str(rm_dir), "--data", str(tmp / "d.jsonl"), "--out", str(out)]
    status, _, err = _run(argv + ["--no-progress", "--on-error", on_error])
    _check_failure(status, err, "reward")
    if status == 2:
        assert not out.exists()
        return
    rows = out.read_text().splitlines()
    skipped = read_manifest(sidecar_path(out))["load"]["skipped"]
    assert len(rows) + sum(skipped.values()) == _records_in(raw)


BANDIT = {"beta": 1.0, "pi_ref": [[0.6, 0.4], [0.5, 0.5]], "reward": [[0, 1], [1, 0]], "pairs": [[0, 1, 0]]}


@settings(max_examples=READER_EXAMPLES)
@given(
    key=st.sampled_from(["beta", "pi_ref", "reward", "pairs", "gamma", "epsilon", "extra"]),
    value=ODD,
    cut=st.booleans(),
)
def test_tabular_fuzz(tmp_path_factory, key, value, cut):
    raw = json.dumps({**BANDIT, key: value}).encode()
    tmp = tmp_path_factory.mktemp("t")
    (tmp / "b.json").write_bytes(raw[: len(raw) // 2] if cut else raw)
    status, _, err = _run(["tabular", str(tmp / "b.json"), "--out", str(tmp / "o.json")])
    assert status in (0, 2, 3) and "Traceback" not in err
    assert (tmp / "o.json").exists() == (status == 0)


# ------------------------------------------------------------------------------------------------ train
TRAIN_ARGS = st.lists(
    st.sampled_from(
        [["--max-length", "0"], ["--max-length", "2"], ["--max-length", "8"], ["--max-length", "-1"],
         ["--on-error", "raise"], ["--limit", "0"], ["--limit", "2"], ["--limit", "-1"], ["--lr", "1e8"],
         ["--lr", "nan"], ["--lr", "0"], ["--batch-size", "0"], ["--beta", "0"], ["--beta", "inf"],
         ["--format", "hh"], ["--format", "alpacaeval"], ["--batch-tokens", "8"], ["--normalize", "mean"]]
    ),
    max_size=2,
)  # fmt: skip
GOOD_PAIRS = b"".join(
    json.dumps({"prompt": f"Question {i}?", "chosen": f" Answer {i}.", "rejected": " No."}).encode() + b"\n"
    for i in range(2)
)


@CLI
@given(data=st.data(), extra=TRAIN_ARGS)
@example(data=None, extra=[])
@example(data=None, extra=[["--lr", "1e8"]])
def test_train_fuzz(tmp_path_factory, toy_dir, data, extra):
    """Two good pairs, then damaged records (skipped and counted by default: ``--on-error skip``)."""
    pytest.importorskip("trl")
    raw = GOOD_PAIRS + (data.draw(jsonl_bytes("trl", max_records=3)) if data is not None else b"")
    tmp = tmp_path_factory.mktemp("t")
    (tmp / "d.jsonl").write_bytes(raw)
    out = tmp / "run"
    argv = ["train", "--model", str(toy_dir), "--data", str(tmp / "d.jsonl"), "--out", str(out), "--loss", "dpo"]
    argv += ["--beta", "0.1", "--max-steps", "3", "--eval-every", "1", "--no-progress", "--threads", "1"]
    status, std, err = _run(argv + ["--on-error", "skip"] + [a for pair in extra for a in pair])
    assert status in (0, 2, 3), (status, err)
    assert "Traceback" not in err
    if data is None:  # the explicit examples: two good pairs train, or diverge with a huge learning rate
        assert status == (3 if extra else 0), err
    if status != 0:
        errors = [ln for ln in err.splitlines() if ln.startswith("dpocheck train: error: ")]
        assert len(errors) == 1 and err.strip().endswith(errors[0]), err
        if status == 3:
            assert "diverged at step" in errors[0] and "--lr" in errors[0]
        manifests = list(out.rglob(MANIFEST)) if out.exists() else []
        assert all(read_manifest(m)["status"] != "running" for m in manifests)  # nothing left "running"
        if "no pair to train on" in err:
            assert not out.exists()  # refused before anything was written
        return
    manifest = read_manifest(out / MANIFEST)
    counts = manifest["counts"]
    limit = next((int(v) for k, v in extra if k == "--limit"), None)
    n = _records_in(raw) if limit is None else min(limit, _records_in(raw))
    assert manifest["status"] == "complete" and counts["records_read"] == n
    assert counts["pairs"] + sum(counts["skipped_by_reason"].values()) == n
    assert len((out / "eval" / "step-3.jsonl").read_text().splitlines()) == counts["pairs"]
    assert json.loads(std)["steps"] == 3


# ------------------------------------------------------------------------------- violations on eval files
@pytest.fixture(scope="module")
def train_run(tmp_path_factory, toy_dir) -> Path:
    """A one-step train run on four pairs (its reference scores, eval files and manifest)."""
    pytest.importorskip("trl")
    tmp = tmp_path_factory.mktemp("run")
    records = [{"prompt": f"Question {i}?", "chosen": f" Answer {i}.", "rejected": " No.", "score_chosen": 1.0 + i,
                "score_rejected": 0.5, "subset": "s"} for i in range(4)]  # fmt: skip
    (tmp / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["train", "--model", str(toy_dir), "--data", str(tmp / "d.jsonl"), "--out", str(tmp / "run"), "--loss"]
    argv += ["dpo", "--beta", "0.1", "--max-steps", "1", "--eval-every", "1", "--no-progress", "--threads", "1"]
    assert _run(argv)[0] == 0
    return tmp / "run"


ROW_FIELDS = ["index", "chosen_logp_sum", "rejected_logp_mean", "chosen_tokens", "rejected_truncated",
              "delta_reward", "subset", "delta_theta"]  # fmt: skip
ROW_VALUES = st.one_of(ODD, st.sampled_from([-1e9, 7, 2**63, "NaN"]))


@st.composite
def damaged_rows(draw, raw: bytes) -> bytes:
    """Score or eval rows with zero to two fields set to odd values, or bad bytes, or a cut end."""
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    for _ in range(draw(st.integers(0, 2))):
        row = draw(st.sampled_from(rows))
        row[draw(st.sampled_from(ROW_FIELDS))] = draw(ROW_VALUES)
    out = b"".join(json.dumps(r).encode() + b"\n" for r in rows)  # NaN/inf become the NaN/Infinity tokens
    damage = draw(st.sampled_from(["none", "none", "bytes", "cut"]))
    if damage == "bytes":
        at = draw(st.integers(0, len(out) - 1))
        out = out[:at] + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80"])) + out[at:]
    elif damage == "cut":
        out = out[: draw(st.integers(1, len(out) - 1))]
    return out


MANIFEST_DAMAGE = st.sampled_from(
    [None, ("max_length", 8), ("max_length", None), ("vocab_size", 7), ("chat_template_used", False),
     ("sha256", "0" * 64), ("not_json", None), ("status", "running")]
)  # fmt: skip


@CLI
@given(data=st.data(), side=st.sampled_from(["policy", "reference"]), manifest_damage=MANIFEST_DAMAGE)
@example(data=None, side="policy", manifest_damage=("max_length", 8))
def test_violations_fuzz_on_eval_files(tmp_path_factory, train_run, data, side, manifest_damage):
    import shutil

    tmp = tmp_path_factory.mktemp("v")
    run = tmp / "run"
    shutil.copytree(train_run, run, ignore=shutil.ignore_patterns("checkpoints", "final"))
    ref_dir, eval_file = run / "reference", run / "eval" / "step-1.jsonl"
    target = eval_file if side == "policy" else ref_dir / "scores.jsonl"
    if data is not None:
        target.write_bytes(data.draw(damaged_rows(target.read_bytes())))
    mpath = run / MANIFEST if side == "policy" else ref_dir / MANIFEST
    if manifest_damage is not None:
        key, value = manifest_damage
        m = read_manifest(mpath)
        if key == "not_json":
            mpath.write_bytes(mpath.read_bytes()[:40])
        elif key == "max_length":
            m["max_length_used" if side == "policy" else "fingerprint"] = (
                value if side == "policy" else {**m["fingerprint"], "settings": {**m["fingerprint"]["settings"],
                                                                                 "max_length": value}}
            )  # fmt: skip
            mpath.write_text(json.dumps(m))
        elif key == "sha256":
            m["fingerprint"]["data"]["sha256"] = value
            mpath.write_text(json.dumps(m))
        elif key == "status":
            m["status"] = value
            mpath.write_text(json.dumps(m))
        else:
            tok = m["tokenizer"] if side == "policy" else m["fingerprint"]["tokenizer"]
            tok[key] = value
            mpath.write_text(json.dumps(m))
    out = tmp / "out"
    argv = ["violations", "--scores", str(ref_dir), "--policy-scores", str(eval_file), "--out", str(out)]
    status, _, err = _run(argv + ["--beta", "0.1", "--bootstrap", "0", "--quiet", "--no-plot"])
    _check_failure(status, err, "violations")
    if status == 2:
        assert not out.exists()
        return
    report = json.loads((out / "violations-sum.json").read_text())
    assert report["policy"]["n_joined"] >= 1


# ----------------------------------------------------------------------------- train-sweep --report-only
@CLI
@given(
    data=st.data(),
    what=st.sampled_from(["eval", "reference", "manifest_key", "manifest_bytes", "beta", "nothing"]),
)
def test_sweep_report_only_fuzz(tmp_path_factory, train_run, data, what):
    import shutil

    out = tmp_path_factory.mktemp("sweep")
    run = out / "runs" / "dpo_R0_s0"
    shutil.copytree(train_run, run, ignore=shutil.ignore_patterns("checkpoints", "final"))
    if what == "eval":
        for f in sorted((run / "eval").glob("step-*.jsonl"))[: data.draw(st.integers(1, 2))]:
            f.write_bytes(data.draw(damaged_rows(f.read_bytes())))
    elif what == "reference":
        f = run / "reference" / "scores.jsonl"
        f.write_bytes(data.draw(damaged_rows(f.read_bytes())))
    elif what in ("manifest_key", "beta"):
        m = read_manifest(run / MANIFEST)
        if what == "beta":
            m["fingerprint"]["settings"]["beta"] = data.draw(ODD)
        else:
            m.pop(data.draw(st.sampled_from(["loss", "fingerprint", "corruption"])), None)
        (run / MANIFEST).write_text(json.dumps(m))
    elif what == "manifest_bytes":
        raw = (run / MANIFEST).read_bytes()
        (run / MANIFEST).write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))] + b"\xff")
    status, _, err = _run(["train-sweep", "--report-only", "--out", str(out)])
    assert status in (0, 2, 3), (status, err)
    assert "Traceback" not in err
    if status == 0:
        assert (out / "e2_llm.csv").is_file() and (out / "e2_llm.md").is_file()
    else:
        errors = [ln for ln in err.splitlines() if ln.startswith("dpocheck train-sweep: error: ")]
        assert len(errors) == 1 and err.strip().endswith(errors[0]), err
