"""Benchmark: reference log-probs of preference pairs, dpocheck scoring vs TRL's DPOTrainer, on the CPU.

Same model (SmolLM2-135M-Instruct GGUF, de-quantised to fp32), same pairs (the first N HH-RLHF harmless-base test
pairs, chat template), same thread count, one run:

1. **TRL** (``trl`` in the benchmark environment): ``DPOTrainer._precompute_ref_logps`` — the reference log-prob
   precomputation that ``precompute_ref_log_probs=True`` runs — on a dataset holding the *same token sequences*
   (prompt = the chat-template rendering of the prompt with the generation prompt, chosen/rejected = response +
   ``<|im_end|>``, so TRL adds no second EOS). TRL concatenates chosen and rejected of each batch and pads them
   (no length bucketing, no prompt sharing); batch size ``--trl-batch-size``. Tokenisation happens when the
   trainer is built and is not timed for TRL (it is for dpocheck). If TRL's private precompute method is
   missing or fails, its per-batch ``compute_ref_log_probs`` loop over its own collator is timed instead (said
   in the output).
2. **dpocheck** ``score_pairs`` (what ``dpocheck score`` runs per batch): packed prefix sharing, length-bucketed
   batches under ``--batch-tokens``; plus the same code without prefix sharing (``prefix_mode=none``) for context.
3. **The machine**: fp32 matmul peak, the best of several large ``torch.matmul`` calls with the same threads.

Throughput is reported as *sequence tokens per second*: the tokens of the 2N full sequences (prompt + response,
both sides) divided by the wall time — the same numerator for every method, so the ratio is the speed-up. Model
FLOP/s = 2 × parameters × computed tokens / time (dpocheck computes the prompt once: "computed tokens"), as a
share of the measured matmul peak.

    python benchmarks/bench_llm_score.py [--pairs 200] [--threads 2]

Writes benchmarks/results/bench_llm_score.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def matmul_peak_gflops(dtype_name: str = "fp32", n: int = 2048, reps: int = 6) -> float:
    """Best GFLOP/s of an n×n @ n×n ``torch.matmul`` in ``dtype_name`` (fp32, bf16) over ``reps`` runs (after a
    warm-up): the peak the benchmarks' model FLOP/s are shares of."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def plain_copy(model):
    """The same weights in a plain (non-"quantized") model object: transformers flags GGUF-loaded models as
    quantized and Trainer refuses them, although the weights are de-quantised fp32 tensors."""
    import copy

    cfg = copy.deepcopy(model.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = type(model)(cfg)
    plain.load_state_dict(model.state_dict())
    return plain.to(model.dtype).eval().requires_grad_(False)


def trl_reference_logps(model, tok, prompts, chosen, rejected, batch_size: int, max_length: int):
    """Time TRL's reference log-prob precomputation; returns (seconds, chosen logps, rejected logps, path)."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    ds = Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected})
    tmp = tempfile.mkdtemp(prefix="bench-trl-")
    args = DPOConfig(
        output_dir=tmp,
        per_device_train_batch_size=batch_size,
        precompute_ref_log_probs=False,
        precompute_ref_batch_size=batch_size,
        max_length=max_length,
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the reference is a separate object with the same weights (TRL would otherwise load it from a path)
        ref = plain_copy(model)
        ref.config._attn_implementation = model.config._attn_implementation
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    data = trainer.train_dataset
    try:
        t = time.perf_counter()
        out = trainer._precompute_ref_logps(data, "bench", batch_size)
        seconds = time.perf_counter() - t
        return seconds, list(out["ref_chosen_logps"]), list(out["ref_rejected_logps"]), "_precompute_ref_logps"
    except Exception as err:  # noqa: BLE001 - fall back to TRL's own per-batch loop, and say so
        print(f"TRL _precompute_ref_logps failed ({type(err).__name__}: {err}); timing its per-batch loop", flush=True)
    from torch.utils.data import DataLoader

    loader = DataLoader(data, batch_size=batch_size, collate_fn=trainer.data_collator, shuffle=False)
    lc, lr = [], []
    t = time.perf_counter()
    for batch in loader:
        c, r = trainer.compute_ref_log_probs(trainer.ref_model, batch)
        lc += c.tolist()
        lr += r.tolist()
    seconds = time.perf_counter() - t
    del torch
    return seconds, lc, lr, "compute_ref_log_probs loop over DataCollatorForPreference"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--trl-batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--skip-trl", action="store_true", help="only dpocheck and the machine peak")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_llm_score.json"))
    args = ap.parse_args(argv)

    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    from dpocheck.llm.data.load import default_data_dir, load_pairs
    from dpocheck.llm.models import default_model_path, load_model
    from dpocheck.llm.scoring.encode import encode_pairs, real_cost
    from dpocheck.llm.scoring.render import render_texts
    from dpocheck.llm.scoring.runner import score_pairs
    from dpocheck.llm.scoring.settings import ScoreSettings

    torch.set_num_threads(args.threads)
    lm = load_model(dtype="fp32", device="cpu")
    model, tok = plain_copy(lm.model), lm.tokenizer
    model.config._attn_implementation = lm.model.config._attn_implementation
    path = default_data_dir() / "hh-rlhf-harmless-base-test.jsonl.gz"
    pairs = load_pairs(path, prompt_style="chat", limit=None).pairs[: args.pairs]
    settings = ScoreSettings(max_length=args.max_length, batch_tokens=args.batch_tokens)
    enc = encode_pairs(tok, pairs, settings, True)
    if any(e.chosen_truncated or e.rejected_truncated for e in enc.encoded):
        print("note: some pairs exceed --max-length (truncation rules differ between TRL and dpocheck)")
    seq_tokens = sum(len(e.chosen_ids) + len(e.rejected_ids) for e in enc.encoded)
    computed = sum(real_cost(e, "packed") for e in enc.encoded)
    print(
        f"{len(pairs)} HH-RLHF pairs, {seq_tokens} sequence tokens ({computed} with the prompt once), "
        f"{args.threads} threads, model {default_model_path().name}",
        flush=True,
    )

    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s", flush=True)
    results: dict = {}

    def timed_dpocheck(mode: str) -> tuple[float, list[dict]]:
        s = ScoreSettings(max_length=args.max_length, batch_tokens=args.batch_tokens, prefix_mode=mode)
        t = time.perf_counter()
        rows, skipped = score_pairs(model, tok, pairs, s)
        assert not skipped
        return time.perf_counter() - t, rows

    score_pairs(model, tok, pairs[:2], settings)  # warm-up
    sec, rows = timed_dpocheck("packed")
    results["dpocheck_packed"] = {"seconds": sec, "computed_tokens": computed}
    print(f"dpocheck packed: {sec:.1f} s", flush=True)
    sec_n, rows_n = timed_dpocheck("none")
    results["dpocheck_unshared"] = {"seconds": sec_n, "computed_tokens": seq_tokens}
    print(f"dpocheck unshared: {sec_n:.1f} s", flush=True)

    trl_info = None
    if not args.skip_trl:
        import trl

        prompts, chosen, rejected = [], [], []
        for p in pairs:
            pt, full_c = render_texts(tok, p.prompt, p.chosen, True)
            _, full_r = render_texts(tok, p.prompt, p.rejected, True)
            prompts.append(pt)
            chosen.append(full_c[len(pt) :])
            rejected.append(full_r[len(pt) :])
        sec_t, lc, lr, how = trl_reference_logps(
            model, tok, prompts, chosen, rejected, args.trl_batch_size, args.max_length
        )
        diffs = [abs(a - r["chosen_logp_sum"]) for a, r in zip(lc, rows, strict=True)]
        diffs += [abs(a - r["rejected_logp_sum"]) for a, r in zip(lr, rows, strict=True)]
        trl_info = {"version": trl.__version__, "path": how, "batch_size": args.trl_batch_size}
        results["trl_dpo_precompute"] = {"seconds": sec_t, "computed_tokens": seq_tokens, **trl_info}
        results["max_abs_logp_diff_trl_vs_dpocheck"] = max(diffs)
        print(f"TRL {trl.__version__} ({how}): {sec_t:.1f} s", flush=True)
    diffs_n = [
        abs(a[k] - b[k]) for a, b in zip(rows, rows_n, strict=True) for k in ("chosen_logp_sum", "rejected_logp_sum")
    ]
    results["max_abs_logp_diff_packed_vs_unshared"] = max(diffs_n)

    n_params = lm.n_parameters
    table = []
    for name in ("trl_dpo_precompute", "dpocheck_unshared", "dpocheck_packed"):
        if name not in results:
            continue
        r = results[name]
        r["sequence_tokens_per_second"] = seq_tokens / r["seconds"]
        r["pairs_per_second"] = len(pairs) / r["seconds"]
        r["model_gflops_per_second"] = 2 * n_params * r["computed_tokens"] / r["seconds"] / 1e9
        r["share_of_matmul_peak"] = r["model_gflops_per_second"] / peak
        table.append((name, r))
    if "trl_dpo_precompute" in results:
        results["speedup_vs_trl"] = results["trl_dpo_precompute"]["seconds"] / results["dpocheck_packed"]["seconds"]
    results.update(
        {
            "pairs": len(pairs),
            "sequence_tokens": seq_tokens,
            "computed_tokens_prefix_shared": computed,
            "threads": args.threads,
            "parameters": n_params,
            "matmul_peak_gflops_fp32": peak,
            "model": str(default_model_path()),
            "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs".strip(),
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        }
    )
    print()
    print(f"{'method':<22}{'seconds':>9}{'seq tok/s':>11}{'pairs/s':>9}{'GFLOP/s':>9}{'% peak':>8}")
    for name, r in table:
        print(
            f"{name:<22}{r['seconds']:>9.1f}{r['sequence_tokens_per_second']:>11.1f}{r['pairs_per_second']:>9.2f}"
            f"{r['model_gflops_per_second']:>9.1f}{100 * r['share_of_matmul_peak']:>8.1f}"
        )
    if "speedup_vs_trl" in results:
        print(
            f"speed-up vs TRL: {results['speedup_vs_trl']:.2f}x; largest |Δ log-prob| vs TRL: "
            f"{results['max_abs_logp_diff_trl_vs_dpocheck']:.2e} nats"
        )
    print(f"largest |Δ log-prob| packed vs unshared: {results['max_abs_logp_diff_packed_vs_unshared']:.2e} nats")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
