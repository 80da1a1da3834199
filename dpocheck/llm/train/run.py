"""``train(settings)``: the whole ``dpocheck train`` run — validate, load, reference, (corrupt), train, save.

Output folder (``settings.out``):

- ``manifest.json``: model fingerprint, data sha256, every setting, library versions, the reference (reused or
  scored here), the corruption record (share with δ_ref < 0 before and after), the run's outcome;
- ``metrics.jsonl``: one row per logged optimizer step (``step``, ``loss``, ``share_in_u/<convention>``, …) —
  rows of ``state.log_history``, appended as they are logged;
- ``eval/step-<N>.jsonl``: the whole training set (and the held-out set) scored with the policy at step N;
- ``reference/``: the reference scores (a ``dpocheck score`` folder) unless ``--reference-scores`` was given;
- ``corrupted_reference/``: the misaligned reference of ``--corrupt-reference`` (model and tokenizer);
- ``checkpoints/checkpoint-<N>/``: the Trainer's checkpoints (``--resume`` continues from the last);
- ``final/``: the trained policy (``save_pretrained``, safetensors, with the tokenizer).

Every bad input is refused before anything heavy is loaded, with :class:`InputError` naming the field.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpocheck.llm.manifest import read_manifest, write_manifest

from .settings import (
    FORMAT_VERSION,
    MANIFEST,
    METRICS,
    InputError,
    TrainSettings,
    resolve_loss,
    resolve_model_path,
    validate,
)


@dataclass
class TrainResult:
    """What :func:`train` did (on this process)."""

    out: Path
    steps: int
    final_loss: float | None
    seconds: float
    is_main_process: bool
    manifest: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The one JSON line the CLI prints."""
        return {
            "out": str(self.out),
            "steps": self.steps,
            "final_loss": self.final_loss,
            "seconds": round(self.seconds, 2),
            "final_model": str(self.out / "final"),
            "corruption": self.manifest.get("corruption"),
        }


# ------------------------------------------------------------------------------------------------ helpers
def versions() -> dict[str, str | None]:
    """Versions of the libraries that change the numbers."""
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "trl", "accelerate", "datasets", "dpocheck"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def save_model(model: Any, tokenizer: Any, path: Path) -> Path:
    """``save_pretrained`` (safetensors) of model and tokenizer into ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


def share_negative(rows: list[dict[str, Any]], normalize: str) -> float:
    """Share of scored pairs with δ_ref < 0 in a convention (U non-empty, C3)."""
    if not rows:
        return float("nan")
    key = "logp_" + normalize
    return sum(r["chosen_" + key] - r["rejected_" + key] < 0 for r in rows) / len(rows)


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def metrics_callback(path: Path) -> Any:
    """A TrainerCallback appending every logged row to ``path`` (JSONL, flushed and fsynced per row).

    At train begin the file is cut back to the rows up to the checkpoint's step on resume (to nothing when the run
    starts at step 0, e.g. killed before its first checkpoint), so a resumed run's file equals an uninterrupted run's.
    """
    from transformers import TrainerCallback

    class MetricsFileCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            kept = []
            if path.is_file() and state.global_step > 0:
                for line in path.read_text().splitlines():
                    if line.strip() and json.loads(line).get("step", 0) <= state.global_step:
                        kept.append(line + "\n")
            from dpocheck._io import write_text_atomic

            write_text_atomic(path, "".join(kept))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row = {"step": state.global_step, "epoch": state.epoch, **{k: _finite(v) for k, v in logs.items()}}
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, allow_nan=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    return MetricsFileCallback()


def last_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint folder under ``out/checkpoints`` (None if there is none)."""
    from transformers.trainer_utils import get_last_checkpoint

    ck = out / "checkpoints"
    return get_last_checkpoint(str(ck)) if ck.is_dir() else None


def read_metrics(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of ``out/metrics.jsonl``."""
    p = Path(out) / METRICS
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _print(msg: str, main: bool) -> None:
    if main:
        print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ reference
def data_identity(settings: TrainSettings, load: Any, prompt_style: str, path: str | None = None) -> dict[str, Any]:
    """The data part of a scoring fingerprint (as ``dpocheck score`` writes it) of ``path`` (default: --data)."""
    from dpocheck.llm.manifest import sha256_file

    path = path or settings.data
    return {
        "path": os.path.abspath(path),
        "sha256": sha256_file(path),
        "format": load.format,
        "delta_reward_source": settings.delta_reward_source,
        "prompt_style": prompt_style,
    }


def score_settings(settings: TrainSettings) -> Any:
    """The ScoreSettings of the reference and eval scoring passes (fp32, packed)."""
    from dpocheck.llm.runner import ScoreSettings

    return ScoreSettings(
        max_length=settings.max_length,
        batch_tokens=settings.batch_tokens,
        chat_template=settings.chat_template,
        dtype="fp32",
        prefix_mode="packed",
        on_error=settings.on_error,
        limit=settings.limit,
    )


def reference_rows(
    model: Any,
    tokenizer: Any,
    pairs: list[Any],
    settings: TrainSettings,
    *,
    model_path: Path,
    source: str,
    data_id: dict[str, Any],
    folder: str = "reference",
) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """Reference score rows by pair index: reused from ``--reference-scores`` or scored into ``OUT/reference``.

    Reused scores must hold a row for every training pair (InputError naming the first missing index).
    """
    from dpocheck.llm.models import model_fingerprint
    from dpocheck.llm.runner import read_jsonl, score_to_directory

    if settings.reference_scores is not None and folder == "reference":
        ref = Path(settings.reference_scores)
        rows = {r["index"]: r for r in read_jsonl(ref / "scores.jsonl")}
        missing = [p.index for p in pairs if p.index not in rows]
        if missing:
            raise InputError(
                f"--reference-scores: record {missing[0]} of --data has no row in {ref / 'scores.jsonl'} "
                f"({len(missing)} missing); score the same data and --limit"
            )
        return rows, {"scores": str(ref.resolve()), "reused": True}
    ref = Path(settings.out) / folder
    model_id = {**model_fingerprint(model_path), "source": source, "dtype": "torch.float32"}
    was_training = model.training
    model.eval()
    run = score_to_directory(
        model,
        tokenizer,
        pairs,
        ref,
        score_settings(settings),
        model_identity=model_id,
        data_identity=data_id,
        resume=(ref / MANIFEST).is_file(),
        extra_manifest={"scored_by": "dpocheck train"},
        show_progress=settings.progress,
    )
    model.train(was_training)
    rows = {r["index"]: r for r in read_jsonl(ref / "scores.jsonl")}
    return rows, {"scores": str(ref.resolve()), "reused": False, "seconds": round(run.seconds, 2)}


# ------------------------------------------------------------------------------------------------ the run
def _load_data(settings: TrainSettings, path: str, prompt_style: str) -> Any:
    from dpocheck.llm.data import load_pairs

    try:
        return load_pairs(
            path,
            settings.format,
            delta_reward_source=settings.delta_reward_source,
            limit=settings.limit,
            on_error=settings.on_error,
            prompt_style=prompt_style,
        )
    except (ValueError, FileNotFoundError) as err:
        flag = "--heldout" if path == settings.heldout else "--data"
        raise InputError(f"{flag}: {err}") from err


def _use_cpu(settings: TrainSettings) -> bool:
    import torch

    return settings.device == "cpu" or not torch.cuda.is_available()


def train(settings: TrainSettings, callbacks: list[Any] | tuple[Any, ...] = ()) -> TrainResult:
    """Run ``dpocheck train``: see the module docstring for the output folder. ``callbacks`` are added last."""
    validate(settings)
    t0 = time.perf_counter()
    import torch
    from accelerate import PartialState

    from dpocheck.llm.models import load_model, load_tokenizer
    from dpocheck.llm.render import resolve_chat_template

    from .trainer import trainable_model

    if settings.threads:
        torch.set_num_threads(settings.threads)
    if not settings.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    state = PartialState(cpu=_use_cpu(settings))  # joins the process group under `accelerate launch`
    main = state.is_main_process
    out = Path(settings.out).absolute()
    spec, params = resolve_loss(settings)
    model_path = resolve_model_path(settings.model)

    tokenizer = load_tokenizer(model_path, trust_remote_code=settings.trust_remote_code)
    try:
        use_tpl = resolve_chat_template(tokenizer, settings.chat_template)
    except ValueError as err:
        raise InputError(f"--chat-template: {err}") from err
    prompt_style = "chat" if use_tpl else "text"
    load = _load_data(settings, settings.data, prompt_style)
    heldout = _load_data(settings, settings.heldout, prompt_style) if settings.heldout else None
    _print(f"data: {load.summary()}", main)
    data_id = data_identity(settings, load, prompt_style)

    manifest: dict[str, Any] = {}
    if settings.resume:
        manifest = read_manifest(out / MANIFEST)
    manifest.update(
        {
            "format_version": FORMAT_VERSION,
            "status": "running",
            "settings": settings.identity(),
            "loss": {"name": spec.name, "claim": spec.claim, "params": params, "convention": settings.normalize},
            "data": {**data_id, "pairs": len(load.pairs), "skipped": load.skipped},
            "versions": versions(),
            "world_size": state.num_processes,
        }
    )
    state.wait_for_everyone()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out / MANIFEST, manifest)

    loaded = load_model(model_path, dtype="fp32", device="cpu", trust_remote_code=settings.trust_remote_code)
    model = trainable_model(loaded.model)
    manifest["model"] = {
        "path": str(model_path),
        "source": loaded.source,
        "parameters": loaded.n_parameters,
        "dtype": "torch.float32",
    }
    ref_model_path, ref_source = model_path, loaded.source

    if settings.corrupt_reference is not None:
        model, record = _corrupt(model, tokenizer, load.pairs, settings, use_tpl, out, main, state)
        manifest["corruption"] = record
        ref_model_path, ref_source = out / "corrupted_reference", "hf_folder"

    ref_rows, ref_info = reference_rows(
        model, tokenizer, load.pairs, settings, model_path=ref_model_path, source=ref_source, data_id=data_id
    )
    ref_list = [ref_rows[p.index] for p in load.pairs if p.index in ref_rows]
    ref_info["share_delta_ref_negative"] = {c: share_negative(ref_list, c) for c in ("sum", "mean")}
    manifest["reference"] = ref_info
    if "corruption" in manifest:
        manifest["corruption"]["share_delta_ref_negative_after"] = ref_info["share_delta_ref_negative"]
        before = manifest["corruption"]["share_delta_ref_negative_before"][settings.normalize]
        after = ref_info["share_delta_ref_negative"][settings.normalize]
        _print(
            f"corrupt-reference R={settings.corrupt_reference}: share with δ_ref < 0 ({settings.normalize}) "
            f"{before:.3f} before -> {after:.3f} after",
            main,
        )
    if main:
        write_manifest(out / MANIFEST, manifest)

    from .callback import UndesirableSpaceCallback

    rows = training_rows(tokenizer, load.pairs, ref_rows, params, settings, use_tpl)
    heldout_rows = None
    if heldout is not None:
        h_rows, _ = reference_rows(
            model,
            tokenizer,
            heldout.pairs,
            settings,
            model_path=ref_model_path,
            source=ref_source,
            data_id=data_identity(settings, heldout, prompt_style, settings.heldout),
            folder="reference_heldout",
        )
        heldout_rows = training_rows(tokenizer, heldout.pairs, h_rows, params, settings, use_tpl)
    trainer = build_trainer(model, tokenizer, rows, settings, out)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # stdout carries the one JSON summary line; metrics.jsonl has the logs
    trainer.add_callback(metrics_callback(out / METRICS))  # before the eval callback: it logs at step 0
    eval_cb = UndesirableSpaceCallback(
        trainer, rows, settings.eval_every, out, heldout_rows, batch_tokens=settings.batch_tokens
    )
    trainer.add_callback(eval_cb)
    for cb in callbacks:
        trainer.add_callback(cb)
    resume_from = last_checkpoint(out) if settings.resume else None
    _print(f"resuming from {resume_from}" if resume_from else "training from step 0", main and settings.resume)
    t_train = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - t_train
    step = trainer.state.global_step
    if main and step % settings.eval_every != 0:  # the final policy is always scored
        trainer.log(eval_cb.evaluate(trainer.model, step))

    final = out / "final"
    trainer.save_model(str(final))  # main process only; safetensors
    if main:
        tokenizer.save_pretrained(str(final))
    history = [h for h in trainer.state.log_history if "loss" in h]
    final_loss = float(history[-1]["loss"]) if history else None
    manifest.update(
        {
            "status": "complete",
            "result": {
                "steps": trainer.state.global_step,
                "final_loss": final_loss,
                "train_seconds_this_session": round(train_seconds, 2),
                "resumed_from": resume_from,
            },
        }
    )
    manifest.setdefault("sessions", []).append(
        {"seconds": round(time.perf_counter() - t0, 2), "resumed_from": resume_from, "world_size": state.num_processes}
    )
    if main:
        write_manifest(out / MANIFEST, manifest)
    state.wait_for_everyone()
    return TrainResult(out, trainer.state.global_step, final_loss, time.perf_counter() - t0, main, manifest)


def _corrupt(
    model: Any,
    tokenizer: Any,
    pairs: list[Any],
    settings: TrainSettings,
    use_tpl: bool,
    out: Path,
    main: bool,
    state: Any,
) -> tuple[Any, dict[str, Any]]:
    """The ``--corrupt-reference`` step (see :mod:`.corrupt`); reuses ``OUT/corrupted_reference`` on resume."""
    from dpocheck.llm.encode import encode_pairs
    from dpocheck.llm.models import load_model
    from dpocheck.llm.runner import score_pairs

    from .corrupt import CorruptionRecord, choose_corrupted, run_sft, sft_rows
    from .trainer import trainable_model

    folder = out / "corrupted_reference"
    done = folder / "corruption.json"
    if done.is_file():  # resumed run: the SFT already happened
        record = read_manifest(done)
        loaded = load_model(folder, dtype="fp32", device="cpu", trust_remote_code=settings.trust_remote_code)
        return trainable_model(loaded.model), record
    sset = score_settings(settings)
    model.eval()
    before_rows, _ = score_pairs(model, tokenizer, pairs, sset)
    enc = encode_pairs(tokenizer, pairs, sset, use_tpl)
    positions = choose_corrupted(len(enc.encoded), float(settings.corrupt_reference), settings.seed)
    losses: list[float] = []
    if positions:
        losses = run_sft(
            model,
            tokenizer,
            sft_rows(enc.encoded, positions),
            steps=settings.corrupt_steps,
            lr=settings.corrupt_lr,
            batch_size=settings.batch_size,
            seed=settings.seed,
            work_dir=out / "checkpoints" / "corruption-sft",
            use_cpu=_use_cpu(settings),
            progress=settings.progress,
        )
    record = CorruptionRecord(
        share=float(settings.corrupt_reference),
        n_pairs=len(enc.encoded),
        corrupted_indices=[enc.encoded[i].index for i in positions],
        steps=settings.corrupt_steps if positions else 0,
        learning_rate=settings.corrupt_lr,
        sft_losses=losses,
        share_delta_ref_negative_before={c: share_negative(before_rows, c) for c in ("sum", "mean")},
        model_dir=str(folder),
    ).as_dict()
    model = trainable_model(model)
    if main:
        save_model(model, tokenizer, folder)
        write_manifest(done, record)
    state.wait_for_everyone()
    return model, record


def training_rows(
    tokenizer: Any,
    pairs: list[Any],
    ref_rows: dict[int, dict[str, Any]],
    params: dict[str, float],
    settings: TrainSettings,
    use_tpl: bool,
) -> list[dict[str, Any]]:
    """The core's training rows of ``pairs`` (dpocheck tokenisation, reference columns, the loss's inputs)."""
    from dpocheck.llm.encode import encode_pairs

    from .dataset import build_training_rows

    enc = encode_pairs(tokenizer, pairs, score_settings(settings), use_tpl)
    return build_training_rows(
        enc.encoded, list(ref_rows.values()), settings.loss, settings.beta, params, settings.normalize
    )


def build_trainer(model: Any, tokenizer: Any, rows: list[dict[str, Any]], settings: TrainSettings, out: Path) -> Any:
    """The preference trainer (the core's DPOTrainer subclass) on training ``rows``.

    The DPOConfig is the core's :func:`preference_config` (fp32 explicitly — TRL's bf16 default changes the loss —
    columns kept, every step logged, no reporting) with this run's seed, schedule and checkpoints in
    ``OUT/checkpoints``.
    """
    from .dataset import to_dataset
    from .trainer import PreferenceTrainer, preference_config

    length = {"max_steps": settings.max_steps} if settings.max_steps else {"num_train_epochs": settings.epochs or 1.0}
    config = preference_config(
        str(out / "checkpoints"),
        beta=settings.beta,
        learning_rate=settings.lr,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        seed=settings.seed,
        data_seed=settings.seed,
        save_strategy="steps",
        save_steps=settings.save_steps,
        disable_tqdm=not settings.progress,
        use_cpu=_use_cpu(settings),
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        **length,
    )
    return PreferenceTrainer(
        model=model,
        args=config,
        train_dataset=to_dataset(rows),
        processing_class=tokenizer,
        loss_name=settings.loss,
        normalize=settings.normalize,
    )
