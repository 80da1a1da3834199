"""LoRA and QLoRA adapters for ``dpocheck train``, from PEFT (never a home-made adapter).

* ``--lora-r R`` trains a LoRA adapter of rank R on the layers' projections (``--lora-target-modules``; default:
  every linear layer inside the decoder layers, e.g. ``q_proj k_proj v_proj o_proj gate_proj up_proj down_proj``
  for Llama/SmolLM2/Qwen2), scale ``--lora-alpha`` / R (default alpha = 2·R), dropout ``--lora-dropout`` on the
  adapter input. The adapter is handed to TRL as ``peft_config`` (TRL seeds with ``--seed`` and wraps the model
  with ``get_peft_model``), so no second model is held: the reference is the frozen base, scored before wrapping;
  LoRA's B starts at 0, so step 0 reproduces the base bit for bit and the ``dpo`` loss is exactly log 2.
* ``--load-in-4bit`` (QLoRA) loads the base in bitsandbytes NF4 (bf16 compute) on a CUDA GPU, prepares it with
  PEFT's ``prepare_model_for_kbit_training`` and scores the reference with that 4-bit base. It is refused without
  CUDA: bitsandbytes' CPU 4-bit path repacks the weights on the first no-grad forward and so changes the
  log-probs a model gives before and after it was scored.

The target names are checked before any weight is read, on a weightless (meta-device) build of the model from its
config: every name must be a linear layer inside the decoder layers (PEFT itself silently adapts a partial match),
and the output head and the embeddings are refused.

Output of a LoRA run (:func:`save_merged`): ``RUN/adapter/`` (PEFT's adapter folder) and ``RUN/final/``, the merged
model as a plain transformers folder: the base in the training dtype, upcast to fp32, plus scale·B·A, saved in fp32
(a bf16 merge would round away every update below the bf16 resolution of the base weight).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dpocheck.errors import InputError

ADAPTER_DIR = "adapter"


def layer_linear_names(model: Any) -> tuple[list[str], set[str]]:
    """(leaf names of the linear layers inside the decoder layers of ``model``, in order; the leaf names of its
    output head and input embeddings)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    outside = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if module is head or module is embed}
    names: list[str] = []
    for name, module in decoder.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head and leaf not in names:
            names.append(leaf)
    return names, outside


def weightless_model(model_path: Path, trust_remote_code: bool = False) -> Any:
    """The model at ``model_path`` built from its config on the meta device (no weight is read or allocated)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from dpocheck.llm.models import load_config

    config = load_config(model_path, trust_remote_code)
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


@contextlib.contextmanager
def quiet_peft_warnings() -> Iterator[None]:
    """Keep two PEFT 0.21 notices off the command's stderr: it reads transformers' deprecated
    ``is_gradient_checkpointing`` (a FutureWarning on every wrap), and saving an adapter of a GGUF base warns that
    the GGUF's folder holds no config.json (the vocabulary is unchanged: dpocheck never resizes it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message="Could not find a config file in .*", category=UserWarning)
        yield


def check_adapter_settings(settings: Any, model_path: Path) -> list[str] | None:
    """Refuse bad ``--lora-*`` / ``--load-in-4bit`` settings with one line naming the flag (no weight is read);
    returns the target module names (None without ``--lora-r``)."""
    s = settings
    if s.lora_r is None:
        for flag, given in (
            ("--lora-alpha", s.lora_alpha is not None),
            ("--lora-dropout", bool(s.lora_dropout)),
            ("--lora-target-modules", s.lora_target_modules is not None),
            ("--load-in-4bit", bool(s.load_in_4bit)),
        ):
            if given:
                raise InputError(f"{flag}: needs --lora-r R (the options of a LoRA adapter)")
        return None
    if isinstance(s.lora_r, bool) or not isinstance(s.lora_r, int) or s.lora_r < 1:
        raise InputError(f"--lora-r: must be a whole number >= 1, got {s.lora_r!r}")
    if s.lora_alpha is not None and not (math.isfinite(s.lora_alpha) and s.lora_alpha > 0):
        raise InputError(f"--lora-alpha: must be a finite number > 0, got {s.lora_alpha!r}")
    if not (math.isfinite(s.lora_dropout) and 0.0 <= s.lora_dropout < 1.0):
        raise InputError(f"--lora-dropout: must lie in [0, 1), got {s.lora_dropout!r}")
    if importlib.util.find_spec("peft") is None:
        raise InputError("--lora-r: LoRA needs peft (pip install 'peft>=0.18', part of the train extra)")
    if s.load_in_4bit:
        check_4bit(s, model_path)
    return resolve_targets(weightless_model(model_path, s.trust_remote_code), s.lora_target_modules, model_path.name)


def resolve_targets(model: Any, targets: list[str] | None, model_name: str = "the model") -> list[str]:
    """The adapter's target module names: ``targets`` checked against ``model`` (every one must be a linear layer
    inside its decoder layers), or, when None, every such layer name."""
    if targets is not None:
        bad = [t for t in targets if not isinstance(t, str) or not t or "," in t or "." in t]
        if not targets or bad:
            got = bad[0] if bad else "nothing"
            raise InputError(f"--lora-target-modules: give module names separated by spaces (q_proj v_proj): {got!r}")
    names, outside = layer_linear_names(model)
    if targets is None:
        if not names:
            raise InputError(f"--lora-r: {model_name} has no linear layer inside its decoder layers to adapt")
        return names
    for t in targets:
        if t in outside:
            raise InputError(
                f"--lora-target-modules: {t} is the output head or the input embedding; adapters go on the layers' "
                f"projections ({' '.join(names)})"
            )
        if t not in names:
            raise InputError(
                f"--lora-target-modules: {model_name} has no linear layer {t!r} in its decoder layers "
                f"(it has: {' '.join(names) or 'none'})"
            )
    return list(dict.fromkeys(targets))


def check_4bit(settings: Any, model_path: Path) -> None:
    """``--load-in-4bit`` needs a CUDA GPU, bitsandbytes, a Hugging Face folder and its own reference scores."""
    import torch

    from dpocheck.llm.models import is_gguf

    from .precision import device_type

    if device_type(settings) != "cuda" or not torch.cuda.is_available():
        raise InputError(
            "--load-in-4bit: needs a CUDA GPU (bitsandbytes' CPU 4-bit path repacks the weights on the first no-grad "
            "forward and changes the log-probs); use --lora-r alone on this machine"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError("--load-in-4bit: needs bitsandbytes (pip install bitsandbytes)")
    if is_gguf(model_path):
        raise InputError("--load-in-4bit: needs a Hugging Face model folder (a GGUF file is de-quantised on load)")
    if settings.reference_scores is not None:
        raise InputError("--reference-scores: a 4-bit run scores its own reference with the 4-bit base")


def lora_alpha(settings: Any) -> float:
    """``--lora-alpha``, or 2·r when it is not given."""
    return float(settings.lora_alpha) if settings.lora_alpha is not None else 2.0 * settings.lora_r


def lora_config(settings: Any, targets: list[str]) -> Any:
    """PEFT's ``LoraConfig`` of the run (no bias, causal LM)."""
    from peft import LoraConfig

    return LoraConfig(
        r=int(settings.lora_r),
        lora_alpha=lora_alpha(settings),
        lora_dropout=float(settings.lora_dropout),
        target_modules=list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def lora_record(settings: Any, targets: list[str], trainable: int, out: Path) -> dict[str, Any]:
    """The manifest's ``lora`` entry."""
    return {
        "r": int(settings.lora_r),
        "alpha": lora_alpha(settings),
        "dropout": float(settings.lora_dropout),
        "target_modules": list(targets),
        "load_in_4bit": bool(settings.load_in_4bit),
        "trainable_parameters": int(trainable),
        "adapter": str(out / ADAPTER_DIR),
        "merged": str(out / "final"),
        "reference": "the base model, adapters off (scored before the adapter was added)",
        "merged_weights": "fp32: base (training dtype, upcast) + scale·B·A",
    }


def restore_lora_dropout(model: Any, p: float) -> int:
    """Set PEFT's adapter dropout back to ``p`` (TRL's ``disable_dropout`` zeroes every ``nn.Dropout``, the adapter's
    included; the base model's own dropout stays off, as in the reference scoring); returns how many were set."""
    import torch

    n = 0
    for name, module in model.named_modules():
        if ".lora_dropout." in f".{name}." and isinstance(module, torch.nn.Dropout):
            module.p = p
            n += 1
    return n


def load_4bit(model_path: Path, device: Any, trust_remote_code: bool, gradient_checkpointing: bool) -> Any:
    """The base model in bitsandbytes NF4 with bf16 compute on ``device`` (CUDA), prepared for adapter training."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_path),
        quantization_config=quant,
        dtype=torch.bfloat16,
        device_map={"": str(device)},
        local_files_only=True,
        trust_remote_code=trust_remote_code,
        attn_implementation="sdpa",
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def load_policy(model_path: Path, settings: Any, precision: Any, device: Any) -> tuple[Any, str, int]:
    """(the starting policy, its source, its parameter count): ``load_model`` in the run's dtype, made trainable
    (:func:`~dpocheck.llm.train.trainer.trainable_model`), or the 4-bit base of ``--load-in-4bit``."""
    from dpocheck.llm.models import load_model

    from .trainer import trainable_model

    s = settings
    if s.load_in_4bit:
        model = load_4bit(model_path, device, s.trust_remote_code, s.gradient_checkpointing)
        return model, "hf_folder (4-bit nf4)", int(model.num_parameters())
    loaded = load_model(
        model_path, dtype=precision.dtype, device=device, trust_remote_code=s.trust_remote_code, progress=s.progress
    )
    return trainable_model(loaded.model), loaded.source, loaded.n_parameters


def save_adapter_and_merged(
    trainer: Any, out: Path, base_path: Path, dtype: str, tokenizer: Any, settings: Any, state: Any
) -> dict[str, Any] | None:
    """``out/adapter`` (PEFT's adapter folder, with the tokenizer; every rank takes part, as FSDP / ZeRO-3 gather
    it) and ``out/final`` (:func:`save_merged`, on the main process, whose record it returns; None elsewhere)."""
    with quiet_peft_warnings():
        trainer.save_model(str(out / ADAPTER_DIR))
    record = None
    if state.is_main_process:
        tokenizer.save_pretrained(str(out / ADAPTER_DIR))
        record = save_merged(
            out / ADAPTER_DIR,
            base_path,
            dtype,
            out / "final",
            tokenizer,
            trust_remote_code=settings.trust_remote_code,
            load_in_4bit=settings.load_in_4bit,
            progress=settings.progress,
        )
    state.wait_for_everyone()
    return record


def save_merged(
    adapter_dir: Path,
    base_path: Path,
    dtype: str,
    out_dir: Path,
    tokenizer: Any,
    *,
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Merge the adapter in ``adapter_dir`` into the base at ``base_path`` and save a plain transformers folder.

    The base is loaded on the CPU in the training ``dtype`` (the weights the policy computed with; a 4-bit base
    is loaded on the GPU and de-quantised), its parameters are upcast to fp32 (exact), the adapter is merged
    (W + scale·B·A in fp32) and the result saved with the tokenizer. Returns what was done (for the manifest).
    """
    import torch
    from peft import PeftModel

    from dpocheck.llm.models import load_model, quiet_loading

    from .trainer import trainable_model

    if load_in_4bit:
        from dpocheck.llm.models import default_device

        base = load_4bit(base_path, default_device(), trust_remote_code, False).dequantize().cpu()
    else:
        loaded = load_model(base_path, dtype=dtype, device="cpu", trust_remote_code=trust_remote_code, progress=False)
        base = trainable_model(loaded.model)  # strips a GGUF quantizer, so save_pretrained writes plain safetensors
    base.requires_grad_(False)
    with torch.no_grad():
        for param in base.parameters():
            param.data = param.data.float()
    with quiet_peft_warnings():
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.config.dtype = torch.float32
    merged.eval()
    with quiet_loading(not progress):
        merged.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return {"merged_from": str(base_path), "base_dtype": dtype, "saved_dtype": "torch.float32"}
