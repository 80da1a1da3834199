"""Benchmark: peak memory of ``dpocheck train``'s training step — fp32 full, bf16 full, bf16 + LoRA, + gradient
checkpointing — on SmolLM2-135M and on Llama-3-8B-*width* models with 1 and 2 layers, and what that implies at 32
layers (the memory table of docs/scale.md).

Every configuration runs in a fresh process (``one``), through dpocheck's own trainer path:
:func:`dpocheck.llm.train.run.build_trainer` with the :class:`~dpocheck.llm.train.precision.TrainingPrecision`,
the PEFT ``LoraConfig`` (:mod:`dpocheck.llm.train.adapters`: r 16, alpha 32, every projection of the layers) and the
checkpointing keys a run would use, on synthetic rows (one pair packed into one row of ``--seq`` tokens:
prompt seq/2 | chosen seq/4 | rejected seq/4; reference log-probs given, as a run precomputes them), for 2
optimizer steps of AdamW (the first creates Adam's state). Peak = the process's ``ru_maxrss`` (CPU) or
``torch.cuda.max_memory_allocated`` (CUDA), so it includes Python, torch, transformers and TRL (~0.5 GiB on the
CPU; their difference cancels in the per-layer and per-vocab costs).

* ``smollm2``: the real SmolLM2-135M-Instruct GGUF (de-quantised by ``load_model`` in the configuration's dtype).
* ``llama8b``: Llama-3-8B's width (hidden 4096, MLP 14336, 32 heads, 8 KV heads, untied head, RoPE θ 5e5) with
  ``--layers`` layers and a ``--vocab`` (random weights built in code, in the target dtype). The real vocab (128256)
  puts 1.05 B parameters in the embedding and head alone (16.8 GB in fp32 + Adam), so the CPU runs use vocab 16384
  and 32768 and separate the parts: per layer = peak(2 layers) − peak(1 layer), per 16384 vocab rows = peak(vocab
  32768) − peak(vocab 16384); **extrapolated** (labelled so) to 32 layers and vocab 128256:
  peak(1 layer, 16384) + 31 × per layer + (128256 − 16384) / 16384 × per 16384 rows.

``bf16_full`` is bf16 weights with AdamW, which ``dpocheck train`` refuses (the updates underflow): it is measured
for what a bf16 copy of the weights costs. Commands::

    python benchmarks/memory_plan.py run [--threads 1]        # every configuration, one process each (~20 min)
    python benchmarks/memory_plan.py report                    # the table + extrapolation -> the JSON
    python benchmarks/memory_plan.py one llama8b bf16_lora --layers 32 --vocab 128256 --seq 2048 --device cuda

Writes benchmarks/results/memory_plan.json (``run`` keeps the raw rows in it; ``report`` adds the analysis).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

RESULTS = REPO / "benchmarks" / "results" / "memory_plan.json"
CONFIGS = ("fp32_full", "fp32_full_gc", "bf16_full", "bf16_lora", "bf16_lora_gc")
LLAMA8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8}
REAL_VOCAB, REAL_LAYERS, VOCAB_STEP = 128256, 32, 16384
GIB = 2**30
# (model, config, layers, vocab, seq) of the CPU plan
PLAN = (
    [("smollm2", c, None, None, 256) for c in CONFIGS]
    + [("llama8b", c, n, v, 256) for c in CONFIGS for n, v in ((1, 16384), (2, 16384), (1, 32768))]
    + [("llama8b", c, n, 16384, 2048) for c in ("bf16_lora", "bf16_lora_gc") for n in (1, 2)]
)


# ------------------------------------------------------------------------------------------------ one run
def _tiny_tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def _llama8b_width(layers: int, vocab: int, dtype, device):
    from gpu_llama8b_score import random_llama
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=vocab, num_hidden_layers=layers, max_position_embeddings=8192, rope_theta=5e5,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0, **LLAMA8B)  # fmt: skip
    return random_llama(cfg, dtype, device, seed=0)  # built in the target dtype: no fp32 copy first


def _rows(seq: int, vocab: int, n: int = 2) -> list[dict]:
    import random

    rng = random.Random(0)
    rows = []
    for i in range(n):
        q = seq // 4
        rows.append({
            "index": i, "prompt_ids": [rng.randrange(3, vocab) for _ in range(seq - 2 * q)],
            "chosen_ids": [rng.randrange(3, vocab) for _ in range(q)],
            "rejected_ids": [rng.randrange(3, vocab) for _ in range(q)],
            "ref_chosen_logp_sum": -10.0 * q, "ref_rejected_logp_sum": -10.0 * q, "ref_chosen_logp_mean": -10.0,
            "ref_rejected_logp_mean": -10.0, "n_chosen": q, "n_rejected": q, "delta_reward": None, "loss_offset": 0.0,
        })  # fmt: skip
    return rows


def run_one(model_name: str, config: str, layers: int | None, vocab: int | None, seq: int, device: str) -> dict:
    """Build, train 2 steps, return the measurement (see the module docstring)."""
    import torch
    from transformers.trainer_callback import PrinterCallback

    from dpocheck.llm.models import load_model
    from dpocheck.llm.train.adapters import lora_config, resolve_targets
    from dpocheck.llm.train.precision import TrainingPrecision
    from dpocheck.llm.train.run import build_trainer
    from dpocheck.llm.train.settings import TrainSettings
    from dpocheck.llm.train.trainer import trainable_model

    cuda = device.startswith("cuda")
    dtype_name = config.split("_")[0]
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    t0 = time.perf_counter()
    if model_name == "smollm2":
        loaded = load_model(None, dtype=dtype_name, device=device, progress=False)
        model, tok = loaded.model, loaded.tokenizer
        vocab, layers = int(model.config.vocab_size), int(model.config.num_hidden_layers)
    else:
        model, tok = _llama8b_width(layers, vocab, dtype, device), _tiny_tokenizer()
    model = trainable_model(model)
    build_seconds = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    lora = "lora" in config
    gc = config.endswith("_gc")
    with tempfile.TemporaryDirectory() as work:
        s = TrainSettings(data=work, loss="dpo", beta=0.1, out=work, max_steps=2, lr=1e-5, batch_size=1,
                          save_steps=1000, progress=False, gradient_checkpointing=gc,
                          lora_r=16 if lora else None)  # fmt: skip
        precision = TrainingPrecision(dtype_name, dtype_name == "bf16", 1, 1, 64 if cuda else 1)
        peft = lora_config(s, resolve_targets(model, None)) if lora else None
        trainer = build_trainer(model, tok, _rows(seq, vocab), s, Path(work), precision, peft)
        trainer.remove_callback(PrinterCallback)
        timer = _step_times()
        trainer.add_callback(timer)
        trainer.train()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    out = {
        "model": model_name, "config": config, "layers": layers, "vocab": vocab, "seq": seq, "device": device,
        "parameters": n_params, "trainable": trainable, "build_seconds": round(build_seconds, 1),
        "step_seconds": [round(t, 2) for t in timer.seconds],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "threads": torch.get_num_threads(),
    }  # fmt: skip
    if cuda:
        out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def _step_times():
    """A TrainerCallback recording each optimizer step's wall time."""
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self._t = 0.0

        def on_step_begin(self, *args, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            self.seconds.append(time.perf_counter() - self._t)

    return StepTimes()


# ------------------------------------------------------------------------------------------------ the plan
def _load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}


def _save(data: dict) -> None:
    from dpocheck._io import write_text_atomic

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS, json.dumps(data, indent=1) + "\n")


def _key(r: dict) -> tuple:
    return (r["model"], r["config"], r["layers"] if r["model"] != "smollm2" else None, r["vocab"] if r["model"] !=
            "smollm2" else None, r["seq"])  # fmt: skip


def run_plan(threads: int, device: str) -> None:
    """Every configuration of :data:`PLAN` not measured yet, one fresh process each (resumable)."""
    data = _load()
    done = {_key(r) for r in data["runs"]}
    for model_name, config, layers, vocab, seq in PLAN:
        if (model_name, config, layers, vocab, seq) in done:
            continue
        cmd = [sys.executable, __file__, "one", model_name, config, "--seq", str(seq), "--threads", str(threads)]
        cmd += ["--device", device] + (["--layers", str(layers), "--vocab", str(vocab)] if layers else [])
        print(" ".join(cmd[1:]), file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        if proc.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["process_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"  peak {row['peak_rss_mib']} MiB, steps {row['step_seconds']} s", file=sys.stderr, flush=True)
        data["runs"].append(row)
        note = "2-core machine shared with other jobs; peak RSS is stable, times are not"
        data["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads, "note": note}
        _save(data)


# ------------------------------------------------------------------------------------------------ the table
def report() -> dict:
    """Per-layer and per-vocab costs, the 32-layer extrapolation and what fits (labelled), into the JSON."""
    data = _load()
    peak = {_key(r): r["peak_rss_mib"] for r in data["runs"]}
    table = []
    for config in CONFIGS:
        for seq in (256, 2048):
            l1, l2 = peak.get(("llama8b", config, 1, 16384, seq)), peak.get(("llama8b", config, 2, 16384, seq))
            v2 = peak.get(("llama8b", config, 1, 32768, seq)) or peak.get(("llama8b", config, 1, 32768, 256))
            if l1 is None or l2 is None or v2 is None:
                continue
            per_layer = l2 - l1
            per_vocab = v2 - (l1 if seq == 256 else peak[("llama8b", config, 1, 16384, 256)])
            extra = l1 + (REAL_LAYERS - 1) * per_layer + (REAL_VOCAB - VOCAB_STEP) / VOCAB_STEP * per_vocab
            table.append({
                "config": config, "seq": seq, "smollm2_peak_mib": peak.get(("smollm2", config, None, None, 256))
                if seq == 256 else None, "peak_1_layer_vocab_16384_mib": l1, "peak_2_layers_vocab_16384_mib": l2,
                "per_layer_mib": per_layer, "per_16384_vocab_rows_mib": per_vocab,
                "vocab_cost_measured_at_seq": 256 if seq == 2048 else seq,
                "extrapolated_32_layers_vocab_128256_gib": round(extra / 1024, 1),
            })  # fmt: skip
    data["table"] = table
    data["extrapolation"] = (
        "EXTRAPOLATED, not measured: peak(1 layer, vocab 16384) + 31 x per layer + (128256 - 16384) / 16384 x per "
        "16384 vocab rows, from CPU peak RSS (includes ~0.5 GiB of Python/torch/transformers/TRL); at seq 2048 the "
        "vocab part is the seq-256 one (a lower bound). GPU kernels differ (fused SDPA keeps no [L, L] attention "
        "weights; a CUDA context adds ~0.5-1 GiB)."
    )
    _save(data)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("one", help="measure one configuration in this process (prints one JSON line)")
    one.add_argument("model", choices=("smollm2", "llama8b"))
    one.add_argument("config", choices=CONFIGS)
    one.add_argument("--layers", type=int, default=1)
    one.add_argument("--vocab", type=int, default=16384)
    one.add_argument("--seq", type=int, default=256)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--device", default="cpu")
    run = sub.add_parser("run", help="every configuration of the plan, one process each (resumable)")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--device", default="cpu")
    sub.add_parser("report", help="the table and the extrapolation from the measured rows")
    args = ap.parse_args()
    if args.cmd == "one":
        import torch

        torch.set_num_threads(args.threads)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        print(json.dumps(run_one(args.model, args.config, args.layers, args.vocab, args.seq, args.device)))
    elif args.cmd == "run":
        run_plan(args.threads, args.device)
    else:
        print(json.dumps(report()["table"], indent=1))


if __name__ == "__main__":
    main()
