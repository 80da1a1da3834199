"""GPU check: ``dpocheck train`` on a Llama-3-8B-shaped model — bf16 + LoRA, gradient checkpointing, the U callback.

What the 1 × 80 GB recipe of docs/scale.md runs, on random weights (no download): a Llama-3-8B-shaped model
(vocab 128256, hidden 4096, 32 layers, 32 heads, 8 KV heads, MLP 14336, untied head) is built in bf16 on the GPU and
saved as a Hugging Face folder with a small byte-level tokenizer (its 512 ids lie inside the 128256 rows); synthetic
preference pairs go to a JSONL file; then :func:`dpocheck.llm.train.run.train` runs exactly what
``dpocheck train --lora-r 16 --dtype bf16 --gradient-checkpointing --batch-size 4 --max-steps 10 --eval-every 5``
runs (reference scored one pair per forward, 10 optimizer steps of 4 accumulated one-pair micro-batches, the whole
set scored at steps 0, 5 and 10, adapter saved, merged fp32 model written to ``final/`` on the CPU).

Checked and written to benchmarks/results/gpu_train_8b.json: the step-1 loss is log 2 *exactly* (exit 1 if not),
every eval file is there, the peak CUDA memory (``torch.cuda.max_memory_allocated``) against the extrapolated table
of docs/scale.md (bf16 + LoRA + checkpointing at 32 layers), seconds per step, the share in U at the end.

    python benchmarks/gpu_train_8b.py [--layers 32] [--steps 10] [--pairs 32] [--work DIR]   # on a GPU
    python benchmarks/gpu_train_8b.py --tiny                                                   # CPU smoke test

Time on one H100 (estimate, not run): build + save ~1–2 min, load ~1 min, training and evals < 1 min, the fp32
merge of final/ on the CPU ~2–3 min (32 GB of host RAM).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "gpu_train_8b.json"
LLAMA3_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
TINY = {**LLAMA3_8B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2}  # fmt: skip
WORDS = "the capital of France is Paris sure here a short poem about sea waves roll in out dog fox".split()


def save_model(folder: Path, layers: int, tiny: bool, device: str) -> Path:
    """A random Llama-3-8B-shaped model (``tiny``: a small one) in bf16 with a toy tokenizer, saved to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from dpocheck.llm.models import toy_tokenizer

    tok = toy_tokenizer()
    cfg = LlamaConfig(**(TINY if tiny else LLAMA3_8B), num_hidden_layers=layers, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, initializer_range=0.02)  # fmt: skip
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    del model
    return folder


def write_pairs(path: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        prompt = " ".join(WORDS[(3 * i + j) % len(WORDS)] for j in range(40 + 7 * (i % 9)))
        rows.append({
            "prompt": f"Question: {prompt}?",
            "chosen": " " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(20 + 5 * (i % 7))) + ".",
            "rejected": " " + " ".join(WORDS[(2 * i + j + 5) % len(WORDS)] for j in range(15 + 6 * (i % 5))) + "!",
        })  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--tiny", action="store_true", help="a small model on the CPU (smoke test of this script)")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    import torch

    from dpocheck._io import read_jsonl, write_text_atomic
    from dpocheck.llm.train.run import train
    from dpocheck.llm.train.settings import TrainSettings

    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_train_8b_"))
    t0 = time.perf_counter()
    model = save_model(work / "model", 2 if args.tiny else args.layers, args.tiny, device)
    build_seconds = time.perf_counter() - t0
    data = write_pairs(work / "pairs.jsonl", args.pairs)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    every = max(args.steps // 2, 1)
    settings = TrainSettings(
        data=str(data), model=str(model), out=str(work / "run"), loss="dpo", beta=0.1, max_length=1024,
        chat_template="none", lr=1e-4, batch_size=args.batch_size, max_steps=args.steps, eval_every=every,
        save_steps=10_000, dtype="bf16", device=device, lora_r=16, gradient_checkpointing=True, progress=False,
    )  # fmt: skip
    result = train(settings)
    run = work / "run"
    losses = [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r and "train_runtime" not in r]
    evals = sorted(p.name for p in (run / "eval").iterdir())
    last = read_jsonl(run / "eval" / f"step-{result.steps}.jsonl")
    manifest = json.loads((run / "manifest.json").read_text())
    out = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": "tiny" if args.tiny else f"Llama-3-8B shape, {args.layers} layers, random bf16 weights",
        "parameters": manifest["model"]["parameters"],
        "trainable_parameters": manifest["trainable_parameters"],
        "steps": result.steps,
        "first_loss": losses[0],
        "first_loss_is_log2_exactly": losses[0] == math.log(2),
        "losses": losses,
        "eval_files": evals,
        "final_share_in_u": sum(bool(r["in_u"]) for r in last) / len(last),
        "train_seconds": manifest["result"]["train_seconds_this_session"],
        "seconds_per_step": manifest["result"]["train_seconds_this_session"] / max(result.steps, 1),
        "build_and_save_seconds": round(build_seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "precision": manifest["precision"],
        "final_is_merged": (run / "final" / "config.json").is_file() and (run / "adapter").is_dir(),
    }
    if cuda:
        out["cuda_max_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["cuda_max_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    expected = [f"step-{s}.jsonl" for s in sorted({0, *range(every, result.steps + 1, every), result.steps})]
    ok = out["first_loss_is_log2_exactly"] and evals == sorted(expected) and out["final_is_merged"]
    out["ok"] = ok
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(args.out), json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("device", "ok", "first_loss", "seconds_per_step")} | (
        {"cuda_max_allocated_gib": out["cuda_max_allocated_gib"]} if cuda else {})))  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
