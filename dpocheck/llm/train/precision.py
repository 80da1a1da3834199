"""The precision of a ``dpocheck train`` run: which dtype the weights compute in, and the batch layout that keeps
step 0 exact (C3, C4: δ_θ = δ_ref at the start, so the ``dpo`` loss is exactly log 2).

``--dtype``:

* ``fp32`` — fp32 weights and compute, batches of ``--batch-size`` pairs (the layout of every earlier run);
* ``bf16`` — the weights load in bf16 (:func:`dpocheck.llm.models.load_model`: parameters only, the RoPE buffers stay
  fp32; never ``.to()``, never the Trainer's ``bf16=True`` autocast, which wraps only ``model.forward`` and so
  misses dpocheck's kernel); the log-softmax of the scored logits runs in fp32, the per-sequence sums, the loss,
  the δ's and the metrics in float64. bf16 needs an adapter (``--lora-r``: frozen bf16 base, fp32 adapters):
  single-process bf16 *full* fine-tuning is refused, because AdamW's updates (~ the learning rate) fall below the
  bf16 resolution of the weights (measured on SmolLM2 at lr 1e-6: 0.39 % of the weights changed in 6 steps, against
  99.6 % in fp32; docs/scale.md);
* ``auto`` — bf16 on a CUDA device when an adapter is trained (``--lora-r``), fp32 otherwise. On this project's
  CPU measurement (benchmarks/bf16_train_study.py, docs/bf16.md) bf16 + LoRA follows the fp32 run's loss closely
  but its δ_θ sit ~0.1–1 nat (summed log-probs) from an fp32 rescoring of the same policy, so the CPU default
  stays fp32; on a GPU bf16 is what makes an 8B model fit and run at speed.

**Layout.** In bf16 a pair's log-probs depend on the shape of the batch it is computed in (the other rows, the
padded length: up to ~1 nat per sequence on SmolLM2), so no fixed reference batch plan matches shuffled training
batches. A bf16 (or 4-bit) run therefore computes *one pair per forward* everywhere: the reference scoring, every
training micro-batch and every eval pass; ``--batch-size N`` runs as N micro-batches of one pair whose gradients
are accumulated (× ``--grad-accum``), so the optimizer sees the same effective batch, the pairs of a step are the
same, and each step's loss is the mean over its pairs exactly (no short-micro-batch weighting). Rows are padded to
the scorer's multiple on the device (1 on the CPU, 64 on CUDA) in all three places.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpocheck.errors import InputError

#: a token budget below any pair's size: the scorer's batch plan then gives every pair its own forward
PER_PAIR_BATCH_TOKENS = 1
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16 / AMX, arm64 FEAT_BF16


def device_type(settings: Any) -> str:
    """``cuda`` or ``cpu`` (or another torch device type): the device a run of ``settings`` trains on."""
    import torch

    if settings.device:
        return torch.device(settings.device).type
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(settings: Any) -> str:
    """``fp32`` or ``bf16`` for ``settings.dtype`` (``auto``: bf16 on CUDA with an adapter, fp32 otherwise)."""
    if settings.dtype != "auto":
        return settings.dtype
    uses_adapter = settings.lora_r is not None
    return "bf16" if uses_adapter and device_type(settings) == "cuda" else "fp32"


def cpu_bf16_support() -> str | None:
    """The CPU feature that runs bf16 matmuls natively (``avx512_bf16``, ``amx_bf16``, arm64 ``bf16``), or None.

    Read from ``/proc/cpuinfo``; elsewhere (macOS, Windows) oneDNN's own bf16 check decides.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            words = set(fh.read().split())
    except OSError:
        import torch

        try:
            return "onednn" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
        except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
            return None
    return next((flag for flag in _CPU_BF16_FLAGS if flag in words), None)


def check_precision_settings(settings: Any) -> None:
    """Refuse, before any model loads, the precision combinations that cannot give a sound run (one line each)."""
    dtype = resolve_dtype(settings)
    if dtype != "bf16":
        return
    why = "" if settings.dtype == "bf16" else " (--dtype auto is bf16 on CUDA with --lora-r)"
    if settings.lora_r is None:
        raise InputError(
            "--dtype: bf16 full fine-tuning does not train (AdamW's updates fall below the bf16 resolution of the "
            "weights; docs/scale.md): add --lora-r R (frozen bf16 base, fp32 adapters) or use --dtype fp32"
        )
    if settings.reference_scores is not None:
        raise InputError(
            f"--reference-scores: a bf16 run scores its own reference, one pair per forward, so that step-0 δ_θ "
            f"equals δ_ref{why}; drop --reference-scores or use --dtype fp32"
        )
    if settings.corrupt_reference is not None:
        raise InputError(f"--corrupt-reference: the corruption SFT trains fp32 weights{why}; use --dtype fp32")
    kind = device_type(settings)
    if kind == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise InputError("--dtype: this CUDA device has no bf16 support; use --dtype fp32")
    elif kind == "cpu" and cpu_bf16_support() is None:
        raise InputError(
            "--dtype: this CPU has no native bf16 matmuls (no avx512_bf16/amx_bf16/bf16 flag); use --dtype fp32"
        )


@dataclass(frozen=True)
class TrainingPrecision:
    """How a run computes: ``dtype`` (``fp32``/``bf16``), ``per_pair`` layout and the micro-batching it implies."""

    dtype: str
    per_pair: bool
    batch_size: int  # pairs per device per optimizer step and accumulation round, as asked (--batch-size)
    grad_accum: int  # --grad-accum, as asked
    pad_multiple: int  # row-length multiple of every packed batch (the scorer's on the device)

    @property
    def torch_dtype(self) -> Any:
        import torch

        return torch.bfloat16 if self.dtype == "bf16" else torch.float32

    @property
    def per_device_batch(self) -> int:
        """Pairs per forward in training (the Trainer's ``per_device_train_batch_size``)."""
        return 1 if self.per_pair else self.batch_size

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step (the Trainer's ``gradient_accumulation_steps``)."""
        return self.batch_size * self.grad_accum if self.per_pair else self.grad_accum

    def scoring_batch_tokens(self, batch_tokens: int) -> int:
        """The token budget of the no-grad scoring passes (reference, eval): one pair per forward when per-pair."""
        return PER_PAIR_BATCH_TOKENS if self.per_pair else batch_tokens

    def record(self) -> dict[str, Any]:
        """The manifest's ``precision`` entry."""
        return {
            "dtype": self.dtype,
            "weights": "torch.bfloat16 (parameters; RoPE buffers fp32)" if self.dtype == "bf16" else "torch.float32",
            "log_softmax": "fp32",
            "sums_loss_deltas": "float64",
            "layout": "one pair per forward (reference, training, eval)" if self.per_pair else "batches",
            "pairs_per_forward": self.per_device_batch if self.per_pair else None,
            "per_device_train_batch_size": self.per_device_batch,
            "gradient_accumulation_steps": self.accumulation,
            "pairs_per_step_per_device": self.batch_size * self.grad_accum,
            "pad_multiple": self.pad_multiple,
        }

    def note(self) -> str | None:
        """The line printed when the layout changes what ``--batch-size`` means, else None."""
        if not self.per_pair or self.batch_size == 1:
            return None
        return (
            f"{self.dtype}: --batch-size {self.batch_size} runs as {self.batch_size} micro-batches of one pair "
            f"(gradient accumulation {self.accumulation} = {self.batch_size} x --grad-accum {self.grad_accum}); "
            "the effective batch and the pairs of each step are unchanged"
        )


def training_precision(settings: Any, device: Any) -> TrainingPrecision:
    """The :class:`TrainingPrecision` of a validated run on ``device``."""
    from dpocheck.llm.scoring.kernels import default_pad_multiple

    dtype = resolve_dtype(settings)
    per_pair = dtype == "bf16" or bool(settings.load_in_4bit)
    return TrainingPrecision(dtype, per_pair, settings.batch_size, settings.grad_accum, default_pad_multiple(device))
