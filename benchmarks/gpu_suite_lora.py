"""Part ``lora_train_8b`` of ``benchmarks/gpu_suite.py``: ``dpocheck train`` with bf16 + LoRA, gradient
checkpointing and the U callback on a random Llama-3-8B-shape model saved to local disk (see the suite's docstring).

Written against the scale-training options of :class:`~dpocheck.llm.train.settings.TrainSettings` (``dtype``
"bf16", ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``gradient_checkpointing``); the suite skips this part, with
the reason, where they are absent.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import gpu_llama8b_score as score8b
import gpu_suite as suite

WORDS = "the cat sat on a mat and we talk about sea waves numbers poems code quick brown fox lazy dog".split()


def write_pairs(path: Path, n: int, tiny: bool, seed: int = 0) -> Path:
    """``n`` TRL records of random words (prompt ~3× a response), a JSONL file."""
    rng = random.Random(seed)
    p_words, r_words = (8, 4) if tiny else (240, 100)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    recs = [{"prompt": text(p_words), "chosen": text(r_words), "rejected": text(r_words + 7)} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def run_lora_part(tiny: bool, work: Path) -> dict:
    import torch
    from transformers import TrainerCallback

    from dpocheck._io import read_jsonl
    from dpocheck.llm.data.load import load_pairs
    from dpocheck.llm.models import toy_tokenizer
    from dpocheck.llm.scoring.encode import encode_pairs
    from dpocheck.llm.scoring.settings import ScoreSettings
    from dpocheck.llm.train import callback as cb_mod
    from dpocheck.llm.train import trainer as tr_mod
    from dpocheck.llm.train.run import train
    from dpocheck.llm.train.settings import TrainSettings

    device = suite._device(tiny)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tok = toy_tokenizer()
    shapes = {**(score8b.TINY if tiny else score8b.LLAMA3_8B)}
    shapes.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    shapes["vocab_size"] = max(shapes["vocab_size"], len(tok))
    t0 = time.perf_counter()
    model = suite._random_model(shapes, dtype, device)
    layer, head = suite._param_counts(model)
    model_dir = work / "model"
    model.save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    build_save_s = time.perf_counter() - t0
    batch, steps, max_length = (2, 4, 256) if tiny else (4, 10, 1024)
    data = write_pairs(work / "pairs.jsonl", batch * steps, tiny)

    metric_s: list[float] = []
    eval_s: list[float] = []
    store, evaluate = tr_mod.PreferenceTrainer._store_metrics, cb_mod.UndesirableSpaceCallback.evaluate

    def timed_store(self, *args, **kwargs):
        t = time.perf_counter()
        store(self, *args, **kwargs)
        metric_s.append(time.perf_counter() - t)

    def timed_eval(self, *args, **kwargs):
        t = time.perf_counter()
        out = evaluate(self, *args, **kwargs)
        eval_s.append(time.perf_counter() - t)
        return out

    tr_mod.PreferenceTrainer._store_metrics = timed_store
    cb_mod.UndesirableSpaceCallback.evaluate = timed_eval

    class Timer(TrainerCallback):
        def __init__(self):
            self.steps: list[float] = []
            self.train = [0.0, 0.0]

        def on_train_begin(self, args, state, control, **kwargs):
            suite._sync(device)
            self.train[0] = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            suite._sync(device)
            self.train[1] = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            suite._sync(device)
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            suite._sync(device)
            self.steps.append(time.perf_counter() - self._t)

    timer = Timer()
    settings = TrainSettings(
        data=str(data),
        loss="dpo",
        beta=0.1,
        out=str(work / "run"),
        model=str(model_dir),
        max_steps=steps,
        lr=1e-5,
        batch_size=batch,
        eval_every=steps // 2,  # the U callback's whole-set evals at step 0, the middle and the last step
        save_steps=10**9,
        max_length=max_length,
        progress=False,
        dtype="bf16",
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        gradient_checkpointing=True,
    )
    suite._reset_peak(device)
    t1 = time.perf_counter()
    result = train(settings, callbacks=[timer])
    train_s = time.perf_counter() - t1
    pairs = load_pairs(data, prompt_style="chat").pairs
    encoded = encode_pairs(tok, pairs, ScoreSettings(max_length=max_length), True).encoded
    fwd_per_pair = suite._forward_flops(shapes, layer, head, encoded) / len(encoded)
    tokens_per_pair = sum(suite._real_tokens(e) for e in encoded) / len(encoded)
    timed = timer.steps[1:] or timer.steps
    step = sum(timed) / len(timed)
    flops = 3.0 * fwd_per_pair * batch
    train_wall = timer.train[1] - timer.train[0]
    run = work / "run"
    losses = [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r and "train_runtime" not in r]
    every = steps // 2
    expected_evals = sorted(f"step-{s}.jsonl" for s in {0, *range(every, result.steps + 1, every), result.steps})
    evals = sorted(p.name for p in (run / "eval").iterdir())
    last = read_jsonl(run / "eval" / f"step-{result.steps}.jsonl")
    checks = {
        # the reference is scored one pair per forward with the same bf16 weights and kernel: exactly log 2
        "first_loss_is_log2_exactly": losses[0] == math.log(2),
        "eval_files_complete": evals == expected_evals,
        "final_is_merged_with_adapter_beside": (run / "final" / "config.json").is_file() and (run / "adapter").is_dir(),
    }
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        raise RuntimeError(f"LoRA training check failed: {failed} (first loss {losses[0]!r})")
    return {
        "config": "tiny" if tiny else "llama3-8b-shapes",
        "path": "dpocheck.llm.train.run.train: dtype bf16, LoRA r 16 alpha 32, gradient checkpointing, U callback "
        f"(eval_every {steps // 2}: whole-set evals at steps 0, {steps // 2} and {steps}), adapter and merged final/",
        "device_name": suite._device_name(device),
        "pairs": len(pairs),
        "pairs_per_step": batch,
        "steps": len(timer.steps),
        "build_and_save_seconds": build_save_s,
        "train_call_seconds": train_s,
        "reference_seconds": result.manifest.get("reference", {}).get("seconds"),
        "seconds_per_step": step,
        "step_seconds": timer.steps,
        "tokens_per_second": tokens_per_pair * batch / step,
        "tflops_per_second": flops / step / 1e12,
        "mfu": suite._mfu(flops, step, device),
        "mfu_lora_2x": suite._mfu(2.0 * fwd_per_pair * batch, step, device),
        "peak_memory_gib": suite._peak_gib(device),
        "u_metrics_seconds_per_step": sum(metric_s) / max(1, len(metric_s)),
        "u_eval_seconds": eval_s,
        "u_callback_share": (sum(metric_s) + sum(eval_s)) / train_wall if train_wall > 0 else None,
        "u_metrics_share_of_step": (sum(metric_s) / max(1, len(metric_s))) / step,
        "first_loss": losses[0],
        "checks": checks,
        "eval_files": evals,
        "final_share_in_u": sum(bool(r["in_u"]) for r in last) / len(last),
        "precision": result.manifest.get("precision"),
        "trainable_parameters": result.manifest.get("trainable_parameters"),
        "definitions": {
            "mfu": "3 x true forward FLOPs of the packed rows / s per step / dense bf16 peak by device name",
            "mfu_lora_2x": "the same with 2 x (LoRA: no weight gradient for the frozen weights)",
            "u_callback_share": "(U metrics in every step + the whole-set U evals) / wall time of trainer.train()",
            "seconds_per_step": "mean over the steps after the first",
        },
    }
