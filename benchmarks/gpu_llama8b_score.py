"""Scoring throughput of a Llama-3-8B-shaped model on one GPU (random weights, bf16, no download).

Builds ``LlamaConfig`` with the Llama-3-8B shapes (vocab 128256, hidden 4096, 32 layers, 32 heads, 8 KV heads,
MLP 14336), initialises random weights directly on the GPU in bf16, makes synthetic preference pairs as token ids
(prompt 64–512 tokens, responses 32–384 tokens) and scores them with the same code as ``dpocheck score``
(dpocheck.llm.scoring.encode + kernels: length-bucketed batches, prefix-shared packed rows padded to ``--pad-multiple``,
the output head applied by dpocheck to scored positions only).

Two MFU figures are printed with their definitions (peak: ``--peak-tflops``, default the device's dense bf16
peak from :data:`PEAK_BF16_TFLOPS`, n/a on the CPU or an unknown device):

* ``mfu_true``: FLOPs = 2 × decoder-layer parameters × real tokens + 2 × head parameters × scored tokens +
  attention (4 × layers × hidden × attended query–key pairs of the real tokens under the packed mask);
* ``mfu_all_params``: FLOPs = 2 × all parameters × real tokens (embedding and head over every token counted; the
  common shortcut, ~9 % high at 8B).

It checks packed scores against the unshared computation on ``--check-pairs`` pairs and exits 1 when the largest
gap exceeds the dtype's tolerance (:data:`CHECK_TOL`: fp32 1e-3, bf16/fp16 1.0 nats; a plain causal mask in place
of the packed one moves 8B-width scores by ~16 nats). Every distinct batch shape is run once before timing
(kernel selection, allocator). Estimated wall time on one H200: imports + random-weight build ~30 s, warm-up
and timed pass over ~360k tokens ~30 s at 50 % MFU: well under 5 minutes.

    python benchmarks/gpu_llama8b_score.py                # on a GPU; writes benchmarks/results/gpu_llama8b_score.json
    python benchmarks/gpu_llama8b_score.py --tiny         # small config on the CPU (smoke test, same JSON path)
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
    "initializer_range": 0.5,  # far-from-uniform next-token distributions, so a wrong mask shows in the check
}


def synthetic_pairs(n: int, vocab: int, seed: int, tiny: bool) -> list:
    """Random-id pairs as EncodedPair: shared prompt, then two responses of different lengths."""
    from dpocheck.llm.scoring.encode import EncodedPair

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


PEAK_BF16_TFLOPS = (  # dense bf16 tensor-core peak by device-name substring (first match wins)
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A6000", 155.0),
    ("RTX 4090", 165.0),
)
CHECK_TOL = {"torch.float32": 1e-3, "torch.bfloat16": 1.0, "torch.float16": 1.0}  # nats per sequence
DEFAULT_JSON = REPO / "benchmarks" / "results" / "gpu_llama8b_score.json"


def device_peak_tflops(name: str) -> float | None:
    """Dense bf16 peak of a device from its name, or None when unknown (CPU included)."""
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def attended_pairs(e) -> int:
    """Query–key pairs the packed mask allows for one pair's real tokens (prompt causal; each continuation sees
    the prompt and its own causal prefix)."""
    p = e.prefix_len
    total = p * (p + 1) // 2
    for seq in (e.chosen_ids, e.rejected_ids):
        c = len(seq) - p
        total += c * p + c * (c + 1) // 2
    return total


def model_flops(cfg, n_layer_params: int, n_head_params: int, tokens: int, scored: int, attended: int) -> float:
    """True FLOPs of a scoring pass: layers over every real token, the head over scored tokens, attention."""
    attn = 4.0 * cfg.num_hidden_layers * cfg.num_attention_heads * (cfg.hidden_size // cfg.num_attention_heads)
    return 2.0 * n_layer_params * tokens + 2.0 * n_head_params * scored + attn * attended


def check_packed_vs_unshared(model, pairs, scores: dict, dtype) -> tuple[float, float]:
    """(largest |packed − unshared| in nats over the pairs' sequences, the dtype's tolerance)."""
    from dpocheck.llm.scoring.kernels import score_batch

    ref = score_batch(model, pairs, 0, "none")
    diffs = [abs(scores[e.index][j] - ref[2 * k + j].logp_sum) for k, e in enumerate(pairs) for j in (0, 1)]
    return max(diffs), CHECK_TOL[str(dtype)]


def probe_sdpa(model, batch, pad_multiple: int) -> list[str]:
    """SDPA backends that run the packed 4-D mask on this device (one small batch each)."""
    from dpocheck.llm.scoring.kernels import SDPA_BACKENDS, score_batch, sdpa_backend

    ok = []
    for name in SDPA_BACKENDS[1:]:
        try:
            with sdpa_backend(name):
                score_batch(model, batch, 0, "packed", pad_multiple)
            ok.append(name)
        except RuntimeError:
            pass
    return ok


def random_llama(cfg, dtype, device, seed: int = 0):
    """A ``LlamaForCausalLM`` of ``cfg`` with seeded random weights, built directly on ``device`` in ``dtype`` (no
    fp32 copy first; RoPE buffers stay fp32), SDPA attention. The one builder of the benchmarks' random models."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    cfg._attn_implementation = "sdpa"
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small config (CPU smoke run)")
    ap.add_argument("--pairs", type=int, default=None, help="number of synthetic pairs (default 512; tiny 32)")
    ap.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per batch (default 32768)")
    ap.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 on CUDA")
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="dense peak for MFU (default: the device's dense bf16 peak by name; n/a on the CPU / unknown devices)",
    )
    ap.add_argument("--check-pairs", type=int, default=4, help="pairs re-scored unshared for the equality check")
    ap.add_argument("--sdpa-backend", choices=("auto", "math", "efficient", "flash", "cudnn"), default="auto")
    ap.add_argument("--pad-multiple", type=int, default=None, help="packed row-length multiple (default 64 on CUDA)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(DEFAULT_JSON), help="write the result here as JSON ('' for none)")
    args = ap.parse_args(argv)

    import torch
    from transformers import LlamaConfig

    from dpocheck.llm.models import resolve_dtype
    from dpocheck.llm.scoring.encode import plan_batches, real_cost
    from dpocheck.llm.scoring.kernels import default_pad_multiple, pack_pairs, packed_counts, score_batch, sdpa_backend

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = resolve_dtype(args.dtype, device)
    shapes = TINY if args.tiny else LLAMA3_8B
    n_pairs = args.pairs or (32 if args.tiny else 512)
    batch_tokens = args.batch_tokens or (2048 if args.tiny else 32768)
    pad_multiple = args.pad_multiple or default_pad_multiple(device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops if args.peak_tflops is not None else device_peak_tflops(device_name)
    print(f"config: {'tiny' if args.tiny else 'Llama-3-8B shapes'} {shapes}", flush=True)
    print(f"device {device} ({device_name}), dtype {dtype}, pairs {n_pairs}, batch_tokens {batch_tokens}", flush=True)
    print(
        f"peak {peak if peak is not None else 'n/a'} TFLOP/s "
        f"(dense bf16, {'given' if args.peak_tflops else 'by device name'})"
    )

    t0 = time.perf_counter()
    cfg = LlamaConfig(**shapes)
    model = random_llama(cfg, dtype, device, seed=args.seed)
    model.eval().requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.model.embed_tokens.weight.numel()
    n_head = model.lm_head.weight.numel()
    n_layer_params = sum(p.numel() for p in model.model.layers.parameters())
    build_s = time.perf_counter() - t0
    print(f"built {n_params / 1e9:.3f} B parameters in {build_s:.1f} s", flush=True)

    pairs = synthetic_pairs(n_pairs, cfg.vocab_size, args.seed, args.tiny)
    batches = plan_batches(pairs, batch_tokens, "packed")
    packs = [pack_pairs([pairs[i] for i in b], 0, pad_multiple) for b in batches]
    real = sum(real_cost(e) for e in pairs)
    padded = sum(ids.numel() for ids, *_ in packs)
    scored = sum(sum(packed_counts(keep, which)) for _, _, _, keep, which in packs)
    attended = sum(attended_pairs(e) for e in pairs)
    shapes_timed = sorted({tuple(ids.shape) for ids, *_ in packs})

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        available = probe_sdpa(model, [pairs[i] for i in batches[0][:2]], pad_multiple)
        with sdpa_backend(args.sdpa_backend):
            t_w = time.perf_counter()
            for shape in shapes_timed:  # warm up every timed batch shape once (kernel choice, allocator)
                b = next(b for b, (ids, *_) in zip(batches, packs, strict=True) if tuple(ids.shape) == shape)
                score_batch(model, [pairs[i] for i in b], 0, "packed", pad_multiple)
            sync()
            warmup_s = time.perf_counter() - t_w
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t1 = time.perf_counter()
            scores = {}
            for b in batches:
                res = score_batch(model, [pairs[i] for i in b], 0, "packed", pad_multiple)
                for k, i in enumerate(b):
                    scores[i] = (res[2 * k].logp_sum, res[2 * k + 1].logp_sum)
            sync()
            seconds = time.perf_counter() - t1
            check = [pairs[i] for i in range(min(args.check_pairs, n_pairs))]
            gap, tol = check_packed_vs_unshared(model, check, scores, dtype)
    flops_true = model_flops(cfg, n_layer_params, n_head, real, scored, attended)
    flops_all = 2.0 * n_params * real

    def mfu(flops: float) -> float | None:
        return flops / seconds / (peak * 1e12) if peak else None

    result = {
        "config": "tiny" if args.tiny else "llama3-8b-shapes",
        "label": "CPU smoke run at tiny size: not a GPU result" if device.type != "cuda" else "GPU run",
        "device": str(device),
        "device_name": device_name,
        "dtype": str(dtype),
        "parameters": n_params,
        "layer_parameters": n_layer_params,
        "embedding_parameters": n_embed,
        "head_parameters": n_head,
        "pairs": n_pairs,
        "batches": len(batches),
        "batch_shapes": len(shapes_timed),
        "tokens": real,
        "scored_tokens": scored,
        "padded_tokens": padded,
        "padding_efficiency": real / padded,
        "pad_multiple": pad_multiple,
        "sdpa_backend": args.sdpa_backend,
        "sdpa_backends_available_with_mask": available,
        "seconds": seconds,
        "warmup_seconds": warmup_s,
        "build_seconds": build_s,
        "tokens_per_second": real / seconds,
        "true_tflops_per_second": flops_true / seconds / 1e12,
        "peak_tflops": peak,
        "mfu_true": mfu(flops_true),
        "mfu_all_params": mfu(flops_all),
        "max_abs_diff_vs_unshared": gap,
        "check_tolerance": tol,
        "check_passed": gap <= tol,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "definitions": {
            "mfu_true": "(2 x decoder-layer params x tokens + 2 x head params x scored tokens + 4 x layers x hidden "
            "x attended query-key pairs) / seconds / peak",
            "mfu_all_params": "2 x all params x tokens / seconds / peak (embedding and head over every token)",
            "tokens": "real (unpadded) tokens, the prompt counted once per pair",
            "padding_efficiency": "tokens / padded tokens run (rows padded to pad_multiple)",
            "peak": "dense bf16 peak of the device by name unless --peak-tflops; n/a on the CPU",
            "check": "max |packed - unshared| summed log-prob over the check pairs' sequences, vs the dtype tolerance",
            "seconds": "timed pass only, after one warm-up run of every batch shape",
        },
    }
    width = max(len(k) for k in result)
    for k, v in result.items():
        if k == "definitions":
            for name, text in v.items():
                print(f"  {name}: {text}")
        else:
            print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if gap > tol:
        print(f"FAIL: packed vs unshared gap {gap:.3g} nats > tolerance {tol} for {dtype}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
