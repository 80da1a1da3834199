"""One GPU suite: Llama-3-8B-shape scoring, sampling and LoRA training, and a 1B full fine-tune step, on one GPU.

Random weights at Llama-3 shapes (nothing downloaded), one command, one JSON under ``benchmarks/results/``, written
after every part (a killed run keeps the parts that finished). Each part runs in its own process with a time
budget (killed and recorded as ``timed_out`` past it), so one part's failure or memory cannot spoil the next.
Planned for ≤ 8 minutes on one H100/H200 including the model builds (the budgets add up to 7.6 minutes):

1. ``scoring_8b`` — :mod:`benchmarks.gpu_llama8b_score` as it is: bf16 scoring of 512 synthetic pairs at 8B shape,
   tokens/s, ``mfu_true`` and ``mfu_all_params``, peak memory, packed-vs-unshared check (target: ≥ 50 % MFU, true
   FLOPs);
2. ``sampling_8b`` — the on-policy sampler's token-level core
   (:func:`dpocheck.llm.generation.sample.generate_samples`: left-padded batches, K samples each, sampler
   log-probs) and its forward-pass log-probs (``score_sequences``, as ``sample_batch`` runs them) at 8B shape in
   bf16: generated tokens/s, forward log-prob time, peak memory;
3. ``full_finetune_1b`` — a Llama-3.2-1B-shape bf16 full fine-tuning step: the training step ``dpocheck train``
   runs (packed collator → :func:`~dpocheck.llm.train.forward.policy_logps` → the registry's ``dpo`` loss →
   backward → ``torch.optim.AdamW``), called directly rather than through TRL's ``Trainer``, weights and
   optimizer state in bf16 (``dpocheck train`` refuses bf16 *full* fine-tuning: pure-bf16 AdamW updates round
   away, docs/bf16.md; this part measures the step's speed and memory at 1B shape, not a recipe): s/step, tokens/s,
   MFU, peak memory;
4. ``lora_train_8b`` — ``dpocheck train`` itself (:func:`dpocheck.llm.train.run.train`) on a random 8B-shape model
   saved to local disk: bf16 + LoRA (r 16), gradient checkpointing, the U callback on (whole-set eval at steps 0 and
   10), 10 steps: s/step, tokens/s, MFU, peak memory, the U metrics' and the U evals' share of the time (targets:
   ≥ 35 % MFU, U callback ≤ 5 %). It needs TRL + datasets (carried as wheels); without them it is ``skipped``
   with the reason.

MFU: model FLOPs / seconds / the device's dense bf16 peak by name (``gpu_llama8b_score.PEAK_BF16_TFLOPS``), and
against the bf16 matmul peak measured at the start of the run (``matmul_peak``). Training FLOPs = 3 × forward
FLOPs of the tokens run (forward = 2 × layer params × tokens + 2 × head params × scored tokens + attention; the
activation recomputation of gradient checkpointing is not counted; LoRA's frozen weights need no weight gradient,
so ≈ 2× is its real work: ``mfu_lora_2x`` says that too).

On the GPU machine (Python 3.12, torch 2.11+cu130, transformers 5.17, accelerate, peft; no trl, datasets,
array-api-compat, dill, multiprocess there), from the repository root, with the wheels made here by
``make gpu-wheels`` (``benchmarks/gpu_wheels.sh``: trl 1.16.0, datasets 5.2.0, dill 0.4.1, multiprocess 0.70.19,
array-api-compat 1.16.0 into ``wheels/``, ignored by git; carried to the machine)::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl && \\
      PYTHONPATH=/tmp/site python3 benchmarks/gpu_suite.py --out benchmarks/results/gpu_suite.json

Parts 1 and 2 import neither trl, datasets nor array-api-compat (``dpocheck.llm.scoring`` and ``.generation.sample``
do not import ``dpocheck.theory``); part 3 needs array-api-compat (the loss registry); part 4 all the wheels.

``--tiny`` runs the same code paths at toy size on the CPU in well under a minute (tested:
``tests/test_gpu_suite.py``); ``--parts`` picks parts; ``--budget-scale`` stretches every budget.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import gpu_llama8b_score as score8b  # noqa: E402  (the scoring benchmark and its FLOP/peak helpers)

DEFAULT_JSON = REPO / "benchmarks" / "results" / "gpu_suite.json"
FORMAT_VERSION = 1
# part → (budget on a GPU in seconds, budget with --tiny)
PARTS = {
    "matmul_peak": (20, 20),
    "scoring_8b": (100, 60),
    "sampling_8b": (70, 60),
    "full_finetune_1b": (60, 60),
    "lora_train_8b": (205, 60),
}
STATUSES = ("pending", "ok", "failed", "skipped", "timed_out")
LLAMA32_1B = {
    **score8b.LLAMA3_8B,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": True,
}
TARGETS = {
    "scoring_8b.mfu_true": ">= 0.50 on an H100",
    "lora_train_8b.mfu": ">= 0.35 on an H100",
    "lora_train_8b.u_callback_share": "<= 0.05",
}


# ------------------------------------------------------------------------------------------------ helpers
def _device(tiny: bool):
    import torch

    return torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _random_model(shapes: dict, dtype, device, seed: int = 0):
    """A LlamaForCausalLM of ``shapes`` with random weights (:func:`gpu_llama8b_score.random_llama`)."""
    from transformers import LlamaConfig

    return score8b.random_llama(LlamaConfig(**shapes), dtype, device, seed=seed)


def _param_counts(model) -> tuple[int, int]:
    """(decoder-layer parameters, output-head parameters)."""
    layer = sum(p.numel() for p in model.model.layers.parameters())
    return layer, model.get_output_embeddings().weight.numel()


def _peak(device) -> float | None:
    name = _device_name(device)
    return score8b.device_peak_tflops(name)


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _mfu(flops: float, seconds: float, device) -> float | None:
    peak = _peak(device)
    return flops / seconds / (peak * 1e12) if peak else None


def _missing_modules(*names: str) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


# ------------------------------------------------------------------------------------------------ parts
def part_matmul_peak(tiny: bool) -> dict:
    """The bf16 (and fp32) matmul peak of this device, measured: best of 10 products after 3 warm-ups."""
    import torch

    device = _device(tiny)
    n = 1024 if tiny else 8192
    out = {"n": n}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        for _ in range(3):
            a @ b
        _sync(device)
        best = 0.0
        for _ in range(10):
            t = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e12)
        out[f"{name}_tflops"] = best
    out["device_name"] = _device_name(device)
    out["dense_bf16_peak_tflops_by_name"] = _peak(device)
    return out


def part_scoring_8b(tiny: bool, work: Path) -> dict:
    """The existing 8B bf16 scoring benchmark, as it is; its JSON is this part's result."""
    path = work / "scoring.json"
    rc = score8b.main([*(["--tiny", "--pairs", "12"] if tiny else []), "--json", str(path)])
    result = json.loads(path.read_text())
    if rc != 0:
        raise RuntimeError(f"packed vs unshared check failed: gap {result['max_abs_diff_vs_unshared']:.3g} nats")
    return result


def part_sampling_8b(tiny: bool) -> dict:
    """Batched sampling at 8B shape: generate_samples (the sampler's core) and the forward-pass log-probs."""
    import torch

    from dpocheck.llm.generation.sample import SampleSettings, generate_samples
    from dpocheck.llm.scoring.kernels import score_sequences

    device = _device(tiny)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = score8b.TINY if tiny else score8b.LLAMA3_8B
    t0 = time.perf_counter()
    model = _random_model(shapes, dtype, device).eval().requires_grad_(False)
    build_s = time.perf_counter() - t0
    n_prompts, k, new = (4, 2, 8) if tiny else (16, 4, 128)
    rng = random.Random(0)
    lo, hi = (4, 24) if tiny else (64, 256)
    vocab = shapes["vocab_size"]
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n_prompts)]
    settings = SampleSettings(k=k, max_new_tokens=new, batch_size=n_prompts)
    pad = 0
    eos = None if tiny else shapes["eos_token_id"]  # random weights: EOS is rare; every row runs `new` tokens
    generate_samples(model, prompts, SampleSettings(k=k, max_new_tokens=4), 0, eos, pad)  # warm-up
    _sync(device)
    _reset_peak(device)
    t1 = time.perf_counter()
    generated, sampler = generate_samples(model, prompts, settings, 1, eos, pad)
    _sync(device)
    gen_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    gaps = []
    with torch.inference_mode():
        for b, p in enumerate(prompts):
            rows = generated[b * k : (b + 1) * k]
            fwd = score_sequences(model, [(p + ids, len(p)) for ids in rows], pad_id=pad)
            gaps += [abs(f.logp_sum - sampler[b * k + j]) for j, f in enumerate(fwd)]
    _sync(device)
    fwd_s = time.perf_counter() - t2
    n_gen = sum(len(g) for g in generated)
    return {
        "config": "tiny" if tiny else "llama3-8b-shapes",
        "device_name": _device_name(device),
        "dtype": str(dtype),
        "build_seconds": build_s,
        "prompts_per_generate_call": n_prompts,
        "samples_per_prompt": k,
        "max_new_tokens": new,
        "prompt_tokens": sum(map(len, prompts)),
        "generated_tokens": n_gen,
        "generate_seconds": gen_s,
        "generated_tokens_per_second": n_gen / gen_s,
        "forward_logp_seconds": fwd_s,
        "sampling_tokens_per_second_with_logp": n_gen / (gen_s + fwd_s),
        "max_abs_sampler_vs_forward_logp": max(gaps),
        "peak_memory_gib": _peak_gib(device),
        "what": "generate_samples (left-padded batch, K samples each, sampler log-probs from the processed scores) "
        "then score_sequences per prompt (the forward-pass log pi(y|x) of sample_batch)",
    }


def synthetic_training_rows(model, n_pairs: int, tiny: bool, seed: int = 0) -> list[dict]:
    """Training rows (dpocheck's schema, ``dpo`` at β 0.1) of random-id pairs, with reference log-probs scored by
    ``model`` itself (the reference precompute, no grad)."""
    import torch

    from dpocheck.llm.scoring.kernels import score_batch
    from dpocheck.llm.train.dataset import build_training_rows

    pairs = score8b.synthetic_pairs(n_pairs, model.config.vocab_size, seed, tiny)
    ref = []
    with torch.inference_mode():
        for e in pairs:
            c, r = score_batch(model, [e], 0, "packed")
            ref.append(
                {
                    "index": e.index,
                    "chosen_logp_sum": c.logp_sum,
                    "rejected_logp_sum": r.logp_sum,
                    "chosen_logp_mean": c.logp_mean,
                    "rejected_logp_mean": r.logp_mean,
                    "chosen_tokens": c.tokens,
                    "rejected_tokens": r.tokens,
                    "delta_reward": None,
                }
            )
    return build_training_rows(pairs, ref, "dpo", 0.1)


def part_full_finetune_1b(tiny: bool) -> dict:
    """bf16 full fine-tuning steps at Llama-3.2-1B shape through dpocheck's training step (see the docstring)."""
    import torch

    from dpocheck.llm.train.collator import PackedPreferenceCollator
    from dpocheck.llm.train.dataset import encoded_from_row, resolve_loss
    from dpocheck.llm.train.forward import policy_logps
    from dpocheck.llm.train.metrics import pair_margins

    device = _device(tiny)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = score8b.TINY if tiny else LLAMA32_1B
    t0 = time.perf_counter()
    model = _random_model(shapes, dtype, device)
    build_s = time.perf_counter() - t0
    batch, steps, warmup = (2, 3, 1) if tiny else (8, 4, 1)
    rows = synthetic_training_rows(model, batch * steps, tiny)
    model.train().requires_grad_(True)
    spec, _ = resolve_loss("dpo")
    collate = PackedPreferenceCollator(0, mask_dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    layer, head = _param_counts(model)
    seconds, flops = [], []
    _reset_peak(device)
    for s in range(steps):
        chunk = rows[s * batch : (s + 1) * batch]
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in collate(chunk).items()}
        _sync(device)
        t = time.perf_counter()
        logps = policy_logps(model, inputs)
        loss = spec.apply(
            pair_margins(logps, "sum"), 0.1, policy_logp_w=logps["chosen_logp_sum"], **_loss_inputs(inputs)
        )
        loss.loss.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        seconds.append(time.perf_counter() - t)
        flops.append(3.0 * _forward_flops(shapes, layer, head, [encoded_from_row(r) for r in chunk]))
    timed, timed_flops = seconds[warmup:], flops[warmup:]
    step_s = sum(timed) / len(timed)
    tokens = sum(_real_tokens(encoded_from_row(r)) for r in rows[warmup * batch :]) / len(timed)
    return {
        "config": "tiny" if tiny else "llama3.2-1b-shapes",
        "path": "dpocheck.llm.train: PackedPreferenceCollator -> policy_logps -> registry dpo loss -> backward -> "
        "torch AdamW (lr 1e-5), weights and optimizer state in the model dtype; not through TRL's Trainer",
        "device_name": _device_name(device),
        "dtype": str(dtype),
        "build_seconds": build_s,
        "pairs_per_step": batch,
        "steps_timed": len(timed),
        "seconds_per_step": step_s,
        "step_seconds": seconds,
        "tokens_per_second": tokens / step_s,
        "tflops_per_second": sum(timed_flops) / sum(timed) / 1e12,
        "mfu": _mfu(sum(timed_flops), sum(timed), device),
        "peak_memory_gib": _peak_gib(device),
        "final_loss": float(loss.loss.mean()),
    }


def _loss_inputs(inputs: dict) -> dict:
    from dpocheck.llm.train.dataset import LOSS_PREFIX

    return {k[len(LOSS_PREFIX) :]: v for k, v in inputs.items() if k.startswith(LOSS_PREFIX)}


def _real_tokens(e) -> int:
    return len(e.chosen_ids) + len(e.rejected_ids) - e.prefix_len


def _forward_flops(shapes: dict, layer: int, head: int, encoded: list) -> float:
    """True forward FLOPs of packed rows (:func:`gpu_llama8b_score.model_flops`)."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(**shapes)
    tokens = sum(_real_tokens(e) for e in encoded)
    scored = sum(len(e.chosen_ids) + len(e.rejected_ids) - 2 * e.prefix_len for e in encoded)
    attended = sum(score8b.attended_pairs(e) for e in encoded)
    return score8b.model_flops(cfg, layer, head, tokens, scored, attended)


def train_modules_missing() -> str | None:
    """Why ``dpocheck train`` cannot run here (None when it can): TRL and datasets must be importable."""
    missing = _missing_modules("trl", "datasets", "array_api_compat")
    if missing:
        return f"not importable: {', '.join(missing)} (install the carried wheels: see the docstring)"
    return None


def part_lora_train_8b(tiny: bool, work: Path) -> dict:
    """``dpocheck train`` with bf16 + LoRA + gradient checkpointing + the U callback, 10 steps (see the docstring)."""
    from gpu_suite_lora import run_lora_part

    return run_lora_part(tiny, work)


# ------------------------------------------------------------------------------------------------ orchestration
class Skipped(Exception):
    """A part that cannot run here; the message says why."""


def _run_part(name: str, tiny: bool, out: Path) -> None:
    """Child process: run one part, write its result (or the reason it was skipped / failed) to ``out``."""
    work = Path(tempfile.mkdtemp(prefix=f"gpu-suite-{name}-"))
    t = time.perf_counter()
    try:
        if name == "lora_train_8b":
            why = train_modules_missing()
            if why:
                raise Skipped(why)
        if name == "full_finetune_1b" and _missing_modules("array_api_compat"):
            raise Skipped("not importable: array_api_compat (the loss registry; install the carried wheels)")
        fn = globals()[f"part_{name}"]
        result = fn(tiny, work) if name in ("scoring_8b", "lora_train_8b") else fn(tiny)
        record = {"status": "ok", "result": result}
    except Skipped as err:
        record = {"status": "skipped", "reason": str(err)}
    except Exception as err:  # noqa: BLE001 - a failing part is recorded, the suite goes on
        record = {"status": "failed", "reason": f"{type(err).__name__}: {err}"}
    record["seconds"] = time.perf_counter() - t
    out.write_text(json.dumps(record, default=str))


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "array-api-compat"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _write(path: Path, report: dict) -> None:
    from dpocheck._io import write_json_atomic

    write_json_atomic(path, report, indent=1)


def run_suite(out: Path, *, tiny: bool, parts: list[str], budget_scale: float = 1.0) -> dict:
    """Run the parts one process each, writing ``out`` after every part; returns the report."""
    report = {
        "suite": "dpocheck GPU suite",
        "format_version": FORMAT_VERSION,
        "mode": "tiny (CPU smoke run: not GPU numbers)" if tiny else "gpu",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": _versions(),
        "targets": TARGETS,
        "parts": {p: {"status": "pending", "budget_seconds": PARTS[p][1 if tiny else 0] * budget_scale} for p in parts},
    }
    _write(out, report)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in parts:
        entry = report["parts"][name]
        print(f"gpu suite: {name} (budget {entry['budget_seconds']:.0f} s)", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            part_json = Path(tmp) / "part.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-json", str(part_json)]
            t = time.perf_counter()
            try:
                proc = subprocess.run(
                    [*cmd, *(["--tiny"] if tiny else [])],
                    env=env,
                    timeout=entry["budget_seconds"],
                    capture_output=True,
                    text=True,
                )
                if part_json.is_file():
                    entry.update(json.loads(part_json.read_text()))
                else:
                    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
                    entry.update(status="failed", reason=f"exit {proc.returncode}: " + " | ".join(tail))
            except subprocess.TimeoutExpired:
                entry.update(status="timed_out", reason=f"killed after its budget of {entry['budget_seconds']:.0f} s")
            entry["wall_seconds"] = time.perf_counter() - t
        report["total_seconds"] = time.perf_counter() - t0
        _write(out, report)
        print(f"gpu suite: {name}: {entry['status']}" + (f" ({entry['reason']})" if entry.get("reason") else ""))
    _summary(report)
    return report


def _summary(report: dict) -> None:
    p = report["parts"]

    def get(part: str, key: str):
        e = p.get(part, {})
        return e.get("result", {}).get(key) if e.get("status") == "ok" else None

    lines = [
        ("scoring_8b", "tokens_per_second", "mfu_true", "peak_memory_gib"),
        ("sampling_8b", "generated_tokens_per_second", "sampling_tokens_per_second_with_logp", "peak_memory_gib"),
        ("full_finetune_1b", "seconds_per_step", "mfu", "peak_memory_gib"),
        ("lora_train_8b", "seconds_per_step", "mfu", "u_callback_share"),
    ]
    for part, *keys in lines:
        if part in p:
            vals = ", ".join(f"{k} {get(part, k):.4g}" if isinstance(get(part, k), float) else f"{k} {get(part, k)}"
                             for k in keys)  # fmt: skip
            print(f"  {part:<18} {p[part]['status']:<9} {vals}")
    print(f"  total {report.get('total_seconds', 0):.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (smoke run of the same code paths)")
    ap.add_argument("--out", default=str(DEFAULT_JSON), help="the suite's JSON (rewritten after every part)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time budget")
    ap.add_argument("--part", choices=tuple(PARTS), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--part-json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.part:
        _run_part(args.part, args.tiny, Path(args.part_json))
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        ap.error(f"--parts: expected names of {', '.join(PARTS)}, got {args.parts!r}")
    if not args.tiny:
        import torch

        if not torch.cuda.is_available():
            print("gpu_suite: no CUDA device; use --tiny for the CPU smoke run", file=sys.stderr)
            return 2
    report = run_suite(Path(args.out), tiny=args.tiny, parts=parts, budget_scale=args.budget_scale)
    return 0 if all(e["status"] in ("ok", "skipped") for e in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
