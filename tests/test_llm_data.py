"""Tests of dpocheck.llm.data.load: the real shared datasets, every record format, and the awkward cases."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dpocheck.llm.data.fields import RecordError, logit_clipped
from dpocheck.llm.data.hh import HH_ASSISTANT, hh_prompt_to_messages, hh_split
from dpocheck.llm.data.load import default_data_dir, detect_format, load_pairs

DATA = default_data_dir()
HH = DATA / "hh-rlhf-harmless-base-test.jsonl.gz"
ALPACA = DATA / "alpacaeval-gpt4turbo-annotations.jsonl.gz"


def _need(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"shared preference data not found at {path}")


def _jsonl(path: Path, records: list, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _raw(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# ------------------------------------------------------------------------------------------------- real data
def test_default_data_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("DPOCHECK_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("DPOCHECK_DATA_DIR")
    assert default_data_dir() == Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_real_hh_rlhf_loads_completely():
    """2,312 records; 9 skipped with a counted reason, 2,303 pairs, and the split is lossless.

    Skipped: 4 records whose chosen final response is a single space (empty_response: 86, 516, 925,
    1103) and 5 whose two transcripts differ before the last Assistant turn (prefix_mismatch: 1254,
    1688, 1950, 1952, 2036).
    """
    _need(HH)
    res = load_pairs(HH)
    raw = _raw(HH)
    assert res.n_records == len(raw) == 2312
    assert res.format == "hh" and res.container == "jsonl+gz"
    assert res.skipped == {"empty_response": 4, "prefix_mismatch": 5}
    assert len(res.pairs) == 2303 == res.n_records - res.n_skipped
    kept = {p.index for p in res.pairs}
    assert set(range(2312)) - kept == {86, 516, 925, 1103, 1254, 1688, 1950, 1952, 2036}
    assert "record 86 (line 87): field 'chosen'" in res.examples["empty_response"][0]
    for p in res.pairs:
        assert isinstance(p.prompt, str) and p.prompt.endswith(HH_ASSISTANT)
        assert p.prompt + p.chosen == raw[p.index]["chosen"]
        assert p.prompt + p.rejected == raw[p.index]["rejected"]
        assert p.chosen.startswith(" ") and p.rejected.startswith(" ")  # leading space kept with the response
        assert p.delta_reward is None and p.reward_source is None  # human labels only: no Δr*
    assert res.delta_reward_sources == {"none": 2303}


def test_real_alpacaeval_loads_completely_and_is_oriented():
    """2,413 records; 10 identical-output pairs (the 10 exact ties at 1.5) and 2 empty outputs skipped.

    Orientation: y_w = output_2 iff q = preference − 1 > 1/2; Δr* = logit(max(q, 1 − q)) clipped at
    q_clip = 1e-3, so 0 < Δr* ≤ log 999.
    """
    _need(ALPACA)
    res = load_pairs(ALPACA)
    raw = _raw(ALPACA)
    assert res.n_records == 2413 and res.format == "alpacaeval"
    assert res.skipped == {"identical_responses": 10, "empty_response": 2}
    assert len(res.pairs) == 2401
    assert res.delta_reward_sources == {"soft_preference_logit": 2401}
    n_second = 0
    for p in res.pairs:
        r = raw[p.index]
        q = r["preference"] - 1.0
        second = q > 0.5
        n_second += second
        assert (p.chosen, p.rejected) == ((r["output_2"], r["output_1"]) if second else (r["output_1"], r["output_2"]))
        assert p.meta["generator_chosen"] == (r["generator_2"] if second else r["generator_1"])
        assert p.preference_prob == pytest.approx(max(q, 1 - q), abs=1e-15)
        assert 0.0 < p.delta_reward <= math.log(999.0) + 1e-12
        assert p.subset == r["dataset"] and p.prompt == r["instruction"]
    assert n_second == 46
    subsets = {p.subset for p in res.pairs}
    assert subsets == {"selfinstruct", "oasst", "koala", "helpful_base", "vicuna"}


def test_real_alpacaeval_hand_worked_records():
    """Record 195: preference 1.6370307714 → q = 0.6370307714 > 1/2 → y_w = output_2 (alpaca-7b), Δr* =
    log(0.6370307714 / 0.3629692286) = log 1.75505448… = 0.5625 (= 9/16: the judge's logit, to 1e-7).
    Record 34: preference 1.4610167793 → q = 0.461 < 1/2 → y_w = output_1 (gpt4_1106_preview), q_w =
    0.5389832207, Δr* = log(0.5389832207 / 0.4610167793) = 0.15625 (= 5/32).
    Record 0: preference 1.0000001827 → q_w = 0.9999998173, clipped to 0.999 → Δr* = log 999 =
    6.906754778648554.
    """
    _need(ALPACA)
    pairs = {p.index: p for p in load_pairs(ALPACA, limit=200).pairs}
    p195, p34, p0 = pairs[195], pairs[34], pairs[0]
    assert p195.meta["chosen_field"] == "output_2" and p195.meta["generator_chosen"] == "alpaca-7b"
    assert p195.delta_reward == pytest.approx(0.5625, abs=1e-6)
    assert p34.meta["chosen_field"] == "output_1" and p34.meta["generator_chosen"] == "gpt4_1106_preview"
    assert p34.delta_reward == pytest.approx(0.15625, abs=1e-6)
    assert p0.delta_reward == pytest.approx(6.906754778648554, abs=1e-12) and p0.meta["q_clipped"]
    # a looser clip lowers the cap: q_w clipped to 0.9 → Δr* = log 9
    assert load_pairs(ALPACA, limit=1, q_clip=0.1).pairs[0].delta_reward == pytest.approx(math.log(9.0))
    # delta_reward_source="none" keeps the orientation but drops Δr*
    p = load_pairs(ALPACA, limit=200, delta_reward_source="none").pairs
    assert all(x.delta_reward is None for x in p) and {x.index: x for x in p}[195].chosen == p195.chosen


def test_real_hh_chat_style():
    """prompt_style="chat": HH turns become alternating user/assistant messages; responses lose one space."""
    _need(HH)
    res = load_pairs(HH, prompt_style="chat", limit=50)
    text = {p.index: p for p in load_pairs(HH, limit=50).pairs}
    for p in res.pairs:
        roles = [m["role"] for m in p.prompt]
        assert roles[0] == "user" and roles[-1] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False))
        assert p.chosen == text[p.index].chosen[1:]


# ------------------------------------------------------------------------------------------------- synthetic
def test_hh_split_hand_example():
    """Transcript "\\n\\nHuman: hi\\n\\nAssistant: yo" splits at the last Assistant turn; the space stays."""
    prompt, c, r = hh_split("\n\nHuman: hi\n\nAssistant: yo", "\n\nHuman: hi\n\nAssistant: no")
    assert (prompt, c, r) == ("\n\nHuman: hi\n\nAssistant:", " yo", " no")
    assert hh_prompt_to_messages(prompt) == [{"role": "user", "content": "hi"}]


_words = st.text(alphabet="abc .!?\n", min_size=1, max_size=12).filter(lambda s: "\n\n" not in s)


@given(turns=st.lists(_words, min_size=1, max_size=4), a=_words, b=_words)
@example(turns=["x"], a=" y", b="z")
def test_hh_split_is_lossless(turns, a, b):
    """For any dialogue, prompt + response reproduces both transcripts exactly."""
    dialogue = "".join(f"\n\nHuman: {t}\n\nAssistant: {t}" for t in turns) + "\n\nHuman: q\n\nAssistant:"
    prompt, c, r = hh_split(dialogue + a, dialogue + b)
    assert prompt == dialogue and prompt + c == dialogue + a and prompt + r == dialogue + b


@given(q=st.floats(0.0, 1.0), clip=st.floats(1e-9, 0.49))
@example(q=0.5, clip=1e-3)
@example(q=0.0, clip=1e-3)
@example(q=1.0, clip=1e-3)
def test_logit_clipped_antisymmetric_and_bounded(q, clip):
    """logit is odd about q = 1/2 and the clip bounds |Δr*| by log((1 − c)/c); logit(1/2) = 0.

    1 − q carries a rounding error of up to 2^-53, i.e. a relative error 2^-53 / min(q, 1 − q) in the tail
    probability, hence the tolerance.
    """
    v = logit_clipped(q, clip)
    tol = 1e-12 + 2.0**-52 / max(min(q, 1.0 - q), clip)
    assert v == pytest.approx(-logit_clipped(1.0 - q, clip), abs=tol)
    assert abs(v) <= math.log((1.0 - clip) / clip) + 1e-9
    if q == 0.5:
        assert v == 0.0


def test_trl_strings_and_reward_columns(tmp_path):
    """Score columns: Δr* = 2.5 − 1.0 = 1.5; probability 0.8: Δr* = log(0.8/0.2) = log 4; a Δr* field wins."""
    f = _jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "P", "chosen": " a", "rejected": " b", "score_chosen": 2.5, "score_rejected": 1.0},
            {
                "prompt": "P",
                "chosen": " a",
                "rejected": " b",
                "preference_prob": 0.8,
                "subset": "s1",
                "id": "x7",
            },
            {
                "prompt": "P",
                "chosen": " a",
                "rejected": " b",
                "delta_reward": -0.25,
                "score_chosen": 9.0,
                "score_rejected": 0.0,
            },
            {"prompt": "P", "chosen": " a", "rejected": " b"},
        ],
    )
    res = load_pairs(f)
    assert res.format == "trl" and res.skipped == {}
    d = [p.delta_reward for p in res.pairs]
    assert d[0] == 1.5 and d[1] == pytest.approx(math.log(4.0)) and d[2] == -0.25 and d[3] is None
    assert [p.reward_source for p in res.pairs] == [
        "score_columns",
        "probability_logit",
        "delta_reward_field",
        None,
    ]
    assert res.pairs[1].subset == "s1" and res.pairs[1].meta == {"id": "x7"} and res.pairs[1].preference_prob == 0.8
    assert res.delta_reward_sources == {
        "score_columns": 1,
        "probability_logit": 1,
        "delta_reward_field": 1,
        "none": 1,
    }
    # an explicit source that a record lacks is an error naming the record and field
    with pytest.raises(RecordError, match=r"record 1 \(line 2\): field 'score_chosen' is missing"):
        load_pairs(f, delta_reward_source="score_columns", on_error="raise")
    # the data's labels are kept: a probability below 1/2 gives a negative Δr*
    g = _jsonl(tmp_path / "g.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b", "p_chosen": 0.2}])
    assert load_pairs(g).pairs[0].delta_reward == pytest.approx(-math.log(4.0))


def test_awkward_records_are_counted_or_raised(tmp_path):
    """Each bad record is skipped with its reason (skip) or raises naming record, line and field (raise)."""
    good = {"prompt": "P", "chosen": "a", "rejected": "b"}
    recs = [
        good,
        {"prompt": "P", "chosen": "a"},  # 1 missing field
        {"prompt": "P", "chosen": "   ", "rejected": "b"},  # 2 empty response
        {"prompt": "P", "chosen": 5, "rejected": "b"},  # 3 non-string
        {"prompt": "P", "chosen": "same", "rejected": "same"},  # 4 chosen == rejected
        "{not json",  # 5 invalid JSON
        "",  # blank line: not a record
        "[1, 2]",  # 6 not an object
        {"prompt": "P", "chosen": "a", "rejected": "b", "preference_prob": 1.5},  # 7 probability out of range
        {
            "prompt": "P",
            "chosen": "a",
            "rejected": "b",
            "score_chosen": float("nan"),
            "score_rejected": 0,
        },  # 8
        {"prompt": "", "chosen": "a", "rejected": "b"},  # 9 empty prompt
    ]
    # json.dumps writes the NaN score of record 8 as a bare NaN, which json.loads reads back as nan
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs)
    f = tmp_path / "bad.jsonl"
    f.write_text(text)
    res = load_pairs(f)
    assert res.n_records == 10 and [p.index for p in res.pairs] == [0]
    assert res.skipped == {
        "missing_field": 1,
        "empty_response": 1,
        "wrong_type": 1,
        "identical_responses": 1,
        "invalid_json": 1,
        "not_an_object": 1,
        "out_of_range": 1,
        "non_finite": 1,
        "empty_prompt": 1,
    }
    assert res.examples["missing_field"] == ["record 1 (line 2): field 'rejected' is missing"]
    assert res.examples["empty_response"] == ["record 2 (line 3): field 'chosen' is empty"]
    assert res.examples["wrong_type"] == ["record 3 (line 4): field 'chosen' must be a string, got int"]
    assert res.examples["not_an_object"] == ["record 6 (line 8): must be a JSON object, got list"]
    assert "skipped 9" in res.summary()
    with pytest.raises(RecordError, match=r"record 1 \(line 2\): field 'rejected' is missing") as info:
        load_pairs(f, on_error="raise")
    assert info.value.reason == "missing_field" and info.value.record == 1 and info.value.field == "rejected"


def test_hh_without_assistant_turn(tmp_path):
    """An HH-style record whose transcript has no "\\n\\nAssistant:" is rejected with the field named."""
    f = _jsonl(
        tmp_path / "hh.jsonl",
        [
            {"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: hi\n\nAssistant: no"},
            {"chosen": "\n\nHuman: hi there", "rejected": "\n\nHuman: hi\n\nAssistant: no"},
        ],
    )
    res = load_pairs(f)
    assert res.format == "hh" and len(res.pairs) == 1 and res.skipped == {"hh_no_assistant": 1}
    with pytest.raises(RecordError, match=r"record 1 \(line 2\): field 'chosen' has no"):
        load_pairs(f, on_error="raise")


def test_all_bad_raises_and_format_errors(tmp_path):
    f = _jsonl(tmp_path / "x.jsonl", [{"prompt": "P", "chosen": "", "rejected": "b"}])
    with pytest.raises(ValueError, match="no usable preference pair"):
        load_pairs(f)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="contains no records"):
        load_pairs(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match="cannot detect the record format"):
        detect_format({"text": "hello"})
    with pytest.raises(ValueError, match="unknown format"):
        load_pairs(f, format="csv")
    with pytest.raises(ValueError, match="q_clip"):
        load_pairs(f, q_clip=0.5)
    with pytest.raises(ValueError, match="soft_preference"):
        load_pairs(f, delta_reward_source="soft_preference")
    with pytest.raises(FileNotFoundError):
        load_pairs(tmp_path / "missing.jsonl")


def test_chat_message_records(tmp_path):
    """Message lists: the shared prefix is the prompt, the final assistant message the response."""
    user = {"role": "user", "content": "Q?"}
    recs = [
        # implicit prompt (TRL): whole conversations
        {
            "chosen": [user, {"role": "assistant", "content": "A1"}],
            "rejected": [user, {"role": "assistant", "content": "A2"}],
        },
        # explicit prompt list + single assistant messages
        {
            "prompt": [user],
            "chosen": [{"role": "assistant", "content": "A1"}],
            "rejected": [{"role": "assistant", "content": "A2"}],
        },
        # text prompt with message responses: the prompt becomes one user message
        {"prompt": "Q?", "chosen": [{"role": "assistant", "content": "A1"}], "rejected": "A2"},
        # the two conversations diverge before the last turn
        {
            "chosen": [user, {"role": "assistant", "content": "A1"}],
            "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "A2"}],
        },
        # final message is not the assistant's
        {
            "prompt": [user],
            "chosen": [{"role": "user", "content": "A1"}],
            "rejected": [{"role": "assistant", "content": "A2"}],
        },
        # a message without content
        {"prompt": [{"role": "user"}], "chosen": "A1", "rejected": "A2"},
    ]
    res = load_pairs(_jsonl(tmp_path / "chat.jsonl", recs))
    assert res.format == "trl"
    assert [(p.prompt, p.chosen, p.rejected) for p in res.pairs] == [([user], "A1", "A2")] * 3
    assert res.skipped == {"prefix_mismatch": 1, "wrong_role": 1, "wrong_type": 1}
    assert res.examples["wrong_type"] == ["record 5 (line 6): field 'prompt[0].content' must be a string, got missing"]


def test_alpacaeval_synthetic_orientation_ties_and_range(tmp_path):
    """preference 1.8 → q = 0.8 → y_w = output_2, Δr* = log(0.8/0.2) = log 4; 1.25 → q = 0.25 → y_w =
    output_1, Δr* = log(0.75/0.25) = log 3; 1.5 with distinct outputs is a tie (skipped); 2.5 is out of
    range."""
    base = {
        "instruction": "I",
        "output_1": "one",
        "output_2": "two",
        "dataset": "d",
        "generator_1": "g1",
        "generator_2": "g2",
    }
    f = _jsonl(
        tmp_path / "ae.jsonl",
        [
            {**base, "preference": 1.8},
            {**base, "preference": 1.25},
            {**base, "preference": 1.5},
            {**base, "preference": 2.5},
            {**base, "preference": "2"},
        ],
    )
    res = load_pairs(f)
    a, b = res.pairs
    assert (a.chosen, a.rejected, a.meta["generator_chosen"]) == ("two", "one", "g2")
    assert a.delta_reward == pytest.approx(math.log(4.0)) and a.preference_prob == pytest.approx(0.8)
    assert (b.chosen, b.rejected, b.meta["generator_chosen"]) == ("one", "two", "g1")
    assert b.delta_reward == pytest.approx(math.log(3.0))
    assert res.skipped == {"tie": 1, "out_of_range": 1, "wrong_type": 1}
    with pytest.raises(ValueError, match="does not apply to AlpacaEval"):
        load_pairs(f, delta_reward_source="score_columns")
    chat = load_pairs(f, prompt_style="chat").pairs[0]
    assert chat.prompt == [{"role": "user", "content": "I"}]


def test_containers_json_gzip_parquet_and_limit(tmp_path):
    """The same records read identically from JSONL, gzip JSONL (found by magic bytes), JSON and Parquet."""
    recs = [
        {
            "prompt": f"P{i}",
            "chosen": [{"role": "assistant", "content": f"a{i}"}],
            "rejected": [{"role": "assistant", "content": f"b{i}"}],
            "score_chosen": float(i),
            "score_rejected": 0.0,
        }
        for i in range(5)
    ]
    ref = load_pairs(_jsonl(tmp_path / "a.jsonl", recs)).pairs
    assert [p.delta_reward for p in ref] == [0.0, 1.0, 2.0, 3.0, 4.0]
    gz = _jsonl(tmp_path / "b.data", recs, gz=True)  # no suffix: sniffed
    (tmp_path / "c.json").write_text(json.dumps(recs))
    (tmp_path / "d.json").write_text(json.dumps({"data": recs}))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "e.parquet")
    for path, container in [
        (gz, "jsonl+gz"),
        (tmp_path / "c.json", "json"),
        (tmp_path / "d.json", "json"),
        (tmp_path / "e.parquet", "parquet"),
    ]:
        res = load_pairs(path)
        assert res.container == container and res.pairs == ref, path
    lim = load_pairs(tmp_path / "e.parquet", limit=2)
    assert lim.n_records == 2 and [p.index for p in lim.pairs] == [0, 1]
    (tmp_path / "bad.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(ValueError, match="top-level JSON"):
        load_pairs(tmp_path / "bad.json")


def test_huge_integer_reward_is_a_skipped_record_not_an_overflow(tmp_path):
    f = tmp_path / "d.jsonl"
    good = {"prompt": "q", "chosen": " a", "rejected": " b"}
    f.write_text(json.dumps({**good, "delta_reward": 10**400}) + "\n" + json.dumps({**good, "delta_reward": 1}) + "\n")
    res = load_pairs(f)
    assert res.skipped == {"non_finite": 1} and [p.index for p in res.pairs] == [1]
    assert "record 0 (line 1): field 'delta_reward' must be finite" in res.examples["non_finite"][0]
    with pytest.raises(RecordError, match=rf"{f}: record 0 \(line 1\): field 'delta_reward'"):
        load_pairs(f, on_error="raise")


def test_record_not_telling_its_format_is_skipped_and_detection_moves_on(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "x"}\n' + json.dumps({"prompt": "q", "chosen": " a", "rejected": " b"}) + "\n")
    res = load_pairs(f)
    assert res.format == "trl" and res.skipped == {"unknown_format": 1} and len(res.pairs) == 1
