"""``violations`` joins a policy with a reference only when both were tokenised alike, and never overwrites a report.

A policy (a score folder or a train run's eval file) scored under another token budget, chat template or tokenizer,
or whose token counts / truncation flags differ pair by pair, is refused with exit 2 naming the setting and both
values (``--allow-settings-mismatch`` joins anyway, labelled in the report). The default output is named after the
policy, and an existing report is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dpocheck.cli import main
from dpocheck.llm.manifest import MANIFEST, read_manifest, write_manifest
from dpocheck.llm.models import save_toy_model

pytest.importorskip("trl")

RECORDS = [
    {"prompt": f"Question {i}: what is the capital of France?", "chosen": f" Paris {i}.", "rejected": " The dog."}
    for i in range(4)
]


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().err


def _error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("dpocheck violations: error: ")]
    assert len(lines) == 1 and err.strip().endswith(lines[0]) and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """A toy model, its data, reference scores at --max-length 64 and 8, and a train run at 8 (one step)."""
    from dpocheck.cli import main as cli

    tmp = tmp_path_factory.mktemp("join")
    toy = save_toy_model(tmp / "toy", seed=3)
    data = tmp / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    common = ["--model", str(toy), "--data", str(data), "--no-progress"]
    paths = {"toy": toy, "data": data}
    for name, extra in (("ref64", ["--max-length", "64"]), ("ref8", ["--max-length", "8"]),
                        ("plain64", ["--max-length", "64", "--chat-template", "none"])):  # fmt: skip
        paths[name] = tmp / name
        assert cli(["score", *common, "--out", str(paths[name]), "--dtype", "fp32", *extra]) == 0
    paths["run8"] = tmp / "run8"
    train = ["train", *common, "--out", str(paths["run8"]), "--loss", "dpo", "--beta", "0.1", "--max-steps", "1"]
    assert cli([*train, "--max-length", "8", "--eval-every", "1", "--threads", "1", "--lr", "1e-3"]) == 0
    return paths


def _violations(*argv: str) -> list[str]:
    return ["violations", "--quiet", "--no-plot", "--bootstrap", "0", "--beta", "0.1", *argv]


def test_a_train_run_at_another_max_length_is_refused(made, tmp_path, capsys):
    policy = made["run8"] / "eval" / "step-1.jsonl"
    out = tmp_path / "v"
    status, err = _run(
        capsys, _violations("--scores", str(made["ref64"]), "--policy-scores", str(policy), "--out", str(out))
    )
    assert status == 2
    line = _error(err)
    assert "--max-length" in line and "8 for --policy-scores" in line and "64 for --scores" in line
    assert "same settings" in line and "--allow-settings-mismatch" in line
    assert not out.exists()
    # the same run against reference scores made with its settings joins, and sees the truncation
    status, err = _run(
        capsys, _violations("--scores", str(made["ref8"]), "--policy-scores", str(policy), "--out", str(out))
    )
    assert status == 0, err
    assert "policy join: 4 pairs joined" in err
    # joined anyway only when asked, and the report says so
    status, err = _run(
        capsys,
        _violations("--scores", str(made["ref64"]), "--policy-scores", str(policy), "--out", str(tmp_path / "v2"),
                    "--allow-settings-mismatch"),
    )  # fmt: skip
    assert status == 0, err
    rep = json.loads((tmp_path / "v2" / "violations-sum.json").read_text())
    assert any("JOINED DESPITE A TOKENISATION MISMATCH" in w and "--max-length" in w for w in rep["inputs"]["warnings"])
    assert "JOINED DESPITE A TOKENISATION MISMATCH" in (tmp_path / "v2" / "violations-sum.md").read_text()


def test_another_chat_template_use_is_refused(made, tmp_path, capsys):
    argv = _violations(
        "--scores", str(made["ref64"]), "--policy-scores", str(made["plain64"]), "--out", str(tmp_path / "v")
    )
    status, err = _run(capsys, argv)
    assert status == 2
    line = _error(err)
    assert "chat template use (--chat-template)" in line and "False for --policy-scores" in line and "True" in line


@pytest.mark.parametrize(
    "key, value, named",
    [
        ("vocab_size", 50_000, "vocabulary size"),
        ("class", "LlamaTokenizer", "tokenizer (class)"),
        ("eos_token", "</s>", "EOS token"),
        ("chat_template_sha256", "0" * 64, "the chat template (its sha256)"),
    ],
)
def test_another_tokenizer_is_refused(made, tmp_path, capsys, key, value, named):
    policy = tmp_path / "policy"
    shutil.copytree(made["ref64"], policy)
    m = read_manifest(policy / MANIFEST)
    m["fingerprint"]["tokenizer"][key] = value
    write_manifest(policy / MANIFEST, m)
    status, err = _run(
        capsys,
        _violations("--scores", str(made["ref64"]), "--policy-scores", str(policy), "--out", str(tmp_path / "v")),
    )
    assert status == 2
    line = _error(err)
    assert named in line and repr(value) in line


def test_token_counts_and_truncation_flags_are_compared_pair_by_pair(made, tmp_path, capsys):
    """Without a manifest nothing says how the policy was tokenised: its rows must still agree pair by pair."""
    policy = tmp_path / "policy"
    policy.mkdir()
    argv = _violations("--scores", str(made["ref64"]), "--policy-scores", str(policy), "--out", str(tmp_path / "v"))

    def write(rows: list[dict]) -> None:
        (policy / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    # at --max-length 8 the prompt is cut and the responses are whole: the flags say so
    write([json.loads(r) for r in (made["ref8"] / "scores.jsonl").read_text().splitlines()])
    status, err = _run(capsys, argv)
    assert status == 2
    line = _error(err)
    assert "record 0: chosen_truncated is True" in line and "False in --scores" in line
    assert "4 of 4 joined pairs differ" in line
    rows = [json.loads(r) for r in (made["ref64"] / "scores.jsonl").read_text().splitlines()]
    rows[2]["rejected_tokens"] += 1
    write(rows)
    status, err = _run(capsys, argv)
    assert status == 2 and "record 2: rejected_tokens is" in _error(err)
    rows[2]["rejected_tokens"] -= 1
    write(rows)
    status, err = _run(capsys, argv)
    assert status == 0, err
    assert "records no tokenisation settings; only token counts and truncation flags were compared" in err


def test_an_eval_file_of_a_run_without_a_recorded_tokenizer_uses_its_reference(made, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(made["run8"], run, ignore=shutil.ignore_patterns("checkpoints", "final"))
    m = read_manifest(run / MANIFEST)
    del m["tokenizer"]  # as runs written before the train manifest recorded it
    write_manifest(run / MANIFEST, m)
    policy = run / "eval" / "step-1.jsonl"
    status, err = _run(
        capsys, _violations("--scores", str(made["ref8"]), "--policy-scores", str(policy), "--out", str(tmp_path / "v"))
    )
    assert status == 0, err
    m["reference"]["scores"] = str(made["plain64"])  # its reference says: no chat template
    write_manifest(run / MANIFEST, m)
    status, err = _run(
        capsys,
        _violations("--scores", str(made["ref8"]), "--policy-scores", str(policy), "--out", str(tmp_path / "v2")),
    )
    assert status == 2 and "chat template use" in _error(err)


# --------------------------------------------------------------------------------------------- no overwrite
def test_reports_are_named_after_the_policy_and_never_overwritten(made, tmp_path, capsys):
    ref = tmp_path / "ref8"
    shutil.copytree(made["ref8"], ref)
    policy_b = tmp_path / "policy_b"
    shutil.copytree(made["ref8"], policy_b)
    eval_file = made["run8"] / "eval" / "step-1.jsonl"
    assert _run(capsys, _violations("--scores", str(ref), "--policy-scores", str(eval_file)))[0] == 0
    assert _run(capsys, _violations("--scores", str(ref), "--policy-scores", str(policy_b)))[0] == 0
    assert _run(capsys, _violations("--scores", str(ref)))[0] == 0
    first = ref / "violations-run8-step-1" / "violations-sum.json"
    second = ref / "violations-policy_b" / "violations-sum.json"
    assert first.is_file() and second.is_file() and (ref / "violations" / "violations-sum.json").is_file()
    assert json.loads(first.read_text())["policy"]["scores"] != json.loads(second.read_text())["policy"]["scores"]
    before = first.read_bytes()
    status, err = _run(
        capsys, _violations("--scores", str(ref), "--policy-scores", str(eval_file), "--normalize", "mean")
    )
    assert status == 2
    line = _error(err)
    assert "already holds a violations report (violations-sum.json)" in line and "--overwrite" in line
    assert first.read_bytes() == before and not (first.parent / "violations-mean.json").exists()
    argv = _violations("--scores", str(ref), "--policy-scores", str(eval_file), "--normalize", "mean", "--overwrite")
    assert _run(capsys, argv)[0] == 0
    names = sorted(p.name for p in first.parent.iterdir())  # the old sum report (and its pair table) is gone
    assert names == ["pairs-mean.csv", "violations-mean.json", "violations-mean.md"]


@pytest.mark.parametrize(
    "line, said",
    [
        (b'{"index": 0, "chosen_logp_sum": -1.0\xff}\n', "line 2: not valid UTF-8"),
        (b"[" * 5000 + b"\n", "line 2: not a score row"),
    ],
)
def test_a_damaged_score_line_is_named(made, tmp_path, capsys, line, said):
    policy = tmp_path / "policy"
    shutil.copytree(made["ref64"], policy)
    rows = (policy / "scores.jsonl").read_bytes().splitlines(keepends=True)
    (policy / "scores.jsonl").write_bytes(rows[0] + line + b"".join(rows[1:]))
    status, err = _run(
        capsys,
        _violations("--scores", str(made["ref64"]), "--policy-scores", str(policy), "--out", str(tmp_path / "v")),
    )
    assert status == 2 and f"scores.jsonl {said}" in _error(err)
