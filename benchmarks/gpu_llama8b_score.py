"""Scoring throughput of a Llama-3-8B-shaped model on one GPU (random weights, bf16, no download).

Builds ``LlamaConfig`` with the Llama-3-8B shapes (vocab 128256, hidden 4096, 32 layers, 32 heads, 8 KV heads,
MLP 14336), initialises random weights directly on the GPU in bf16, makes synthetic preference pairs as token ids
(prompt 64–512 tokens, responses 32–384 tokens) and scores them with the same code as ``dpocheck score``
(dpocheck.llm.encode + kernels: length-bucketed batches, prefix-shared packed rows). Reports tokens/s and model FLOP
utilisation, MFU = 2 × parameters × tokens / time / peak, against a nominal dense bf16 peak of 989 TFLOP/s
(H100/H200 SXM; override with --peak-tflops). Attention FLOPs are not counted (the usual convention), so MFU is
a lower bound. It also checks packed scores against the unshared computation on a few pairs.

    python benchmarks/gpu_llama8b_score.py                # on a GPU: < 5 minutes
    python benchmarks/gpu_llama8b_score.py --tiny         # small config, runs on the CPU (smoke test)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LLAMA3_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "bos_token_id": 128000,
    "eos_token_id": 128009,
}
TINY = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}


def synthetic_pairs(n: int, vocab: int, seed: int, tiny: bool) -> list:
    """Random-id pairs as EncodedPair: shared prompt, then two responses of different lengths."""
    from dpocheck.llm.encode import EncodedPair

    rng = random.Random(seed)
    p_lo, p_hi, r_lo, r_hi = (4, 40, 2, 30) if tiny else (64, 512, 32, 384)
    pairs = []
    for i in range(n):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(p_lo, p_hi))]
        chosen = [rng.randrange(3, vocab) for _ in range(rng.randint(r_lo, r_hi))]
        rejected = [rng.randrange(3, vocab) for _ in range(rng.randint(r_lo, r_hi))]
        # make the two responses differ in their first token so the shared part is exactly the prompt
        if rejected[0] == chosen[0]:
            rejected[0] = 3 + (chosen[0] - 2) % (vocab - 3)
        n_p = len(prompt)
        pairs.append(EncodedPair(i, tuple(prompt + chosen), tuple(prompt + rejected), n_p, n_p, n_p, False, False))
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small config (CPU smoke run)")
    ap.add_argument("--pairs", type=int, default=None, help="number of synthetic pairs (default 512; tiny 32)")
    ap.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per batch (default 32768)")
    ap.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 on CUDA")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="nominal dense peak for MFU (bf16)")
    ap.add_argument("--check-pairs", type=int, default=4, help="pairs re-scored unshared for the equality check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the result here as JSON")
    args = ap.parse_args(argv)

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from dpocheck.llm.encode import padded_cost, plan_batches, real_cost
    from dpocheck.llm.kernels import score_batch
    from dpocheck.llm.models import resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = resolve_dtype(args.dtype, device)
    shapes = TINY if args.tiny else LLAMA3_8B
    n_pairs = args.pairs or (32 if args.tiny else 512)
    batch_tokens = args.batch_tokens or (2048 if args.tiny else 32768)
    print(f"config: {'tiny' if args.tiny else 'Llama-3-8B shapes'} {shapes}", flush=True)
    print(f"device {device}, dtype {dtype}, pairs {n_pairs}, batch_tokens {batch_tokens}", flush=True)

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    cfg = LlamaConfig(**shapes)
    cfg._attn_implementation = "sdpa"
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    model.eval().requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    n_matmul = n_params - model.model.embed_tokens.weight.numel()
    build_s = time.perf_counter() - t0
    print(f"built {n_params / 1e9:.3f} B parameters in {build_s:.1f} s", flush=True)

    pairs = synthetic_pairs(n_pairs, cfg.vocab_size, args.seed, args.tiny)
    batches = plan_batches(pairs, batch_tokens, "packed")
    real = sum(real_cost(e) for e in pairs)
    padded = sum(padded_cost([pairs[i] for i in b]) for b in batches)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        score_batch(model, [pairs[i] for i in batches[0]], 0, "packed")  # warm-up (kernels, allocator)
        sync()
        t1 = time.perf_counter()
        scores = {}
        for b in batches:
            res = score_batch(model, [pairs[i] for i in b], 0, "packed")
            for k, i in enumerate(b):
                scores[i] = (res[2 * k].logp_sum, res[2 * k + 1].logp_sum)
        sync()
        seconds = time.perf_counter() - t1
        check = list(range(min(args.check_pairs, n_pairs)))
        ref = score_batch(model, [pairs[i] for i in check], 0, "none")
    diffs = [abs(scores[i][j] - ref[2 * k + j].logp_sum) for k, i in enumerate(check) for j in (0, 1)]
    tok_s = real / seconds
    flops = 2.0 * n_params * real / seconds
    result = {
        "config": "tiny" if args.tiny else "llama3-8b-shapes",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype),
        "parameters": n_params,
        "matmul_parameters": n_matmul,
        "pairs": n_pairs,
        "batches": len(batches),
        "tokens": real,
        "padding_efficiency": real / padded,
        "seconds": seconds,
        "build_seconds": build_s,
        "tokens_per_second": tok_s,
        "model_tflops_per_second": flops / 1e12,
        "peak_tflops_assumed": args.peak_tflops,
        "mfu": flops / (args.peak_tflops * 1e12),
        "mfu_matmul_params": 2.0 * n_matmul * real / seconds / (args.peak_tflops * 1e12),
        "max_abs_diff_vs_unshared": max(diffs),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "assumptions": "FLOPs = 2 x parameters x tokens (attention not counted); tokens = real (unpadded) tokens, "
        "the prompt counted once per pair; peak = nominal dense bf16 of H100/H200 SXM unless --peak-tflops",
    }
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
