"""``train(settings)``: the whole ``dpocheck train`` run — validate, load, reference, (corrupt), train, save.

Output folder (``settings.out``):

- ``manifest.json`` (the output protocol's layout, :mod:`dpocheck.llm.manifest`): ``fingerprint`` (the data
  file's identity and sha256, every setting a resume must share), the model, library versions, the reference
  (reused or scored here), the corruption record (share with δ_ref < 0 before and after), ``status``, the
  run's ``result`` (or ``failure``: the reason and the step) and ``health``, the measured verdict on the final
  policy (healthy / degraded / degenerate, with the numbers behind it and every eval step's verdict:
  :func:`dpocheck.llm.train.trajectories.run_health`, PAPER §6), also printed on screen;
- ``metrics.jsonl``: one row per logged optimizer step (``step``, ``loss``, ``share_in_u/<convention>``, …) —
  rows of ``state.log_history``, appended as they are logged;
- ``eval/step-<N>.jsonl``: the whole training set (and the held-out set) scored with the policy at step N;
- ``reference/``: the reference scores (a ``dpocheck score`` folder) unless ``--reference-scores`` was given;
- ``corrupted_reference/``: the misaligned reference of ``--corrupt-reference`` (model and tokenizer);
- ``checkpoints/checkpoint-<N>/``: the Trainer's checkpoints (``--resume`` continues from the last);
- ``final/``: the trained policy (``save_pretrained``, safetensors, with the tokenizer); with ``--lora-r`` the merged
  model (base + adapter, fp32: :func:`~dpocheck.llm.train.adapters.save_merged`), which plain transformers loads;
- ``adapter/``: with ``--lora-r``, the PEFT adapter (``PeftModel.from_pretrained(base, RUN/adapter)``).

The precision (``--dtype``) and the batch layout it implies are :mod:`.precision`'s; adapters are :mod:`.adapters`'s
(PEFT); the manifest records both (``precision``, ``lora``, ``trainable_parameters``, ``gradient_checkpointing``).

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

from dpocheck._io import read_jsonl
from dpocheck.llm.manifest import MANIFEST, MERGED, RUNNING, OutputRun, data_identity, open_output, read_manifest
from dpocheck.llm.scoring.settings import LOGP_CONVENTIONS

from .metrics import share_negative
from .settings import METRICS, TOOL, InputError, TrainSettings, resolve_loss, resolve_model_path, validate
from .trajectories import run_health


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
            "adapter": (self.manifest.get("lora") or {}).get("adapter"),
            "corruption": self.manifest.get("corruption"),
            "health": (self.manifest.get("health") or {}).get("verdict"),
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
    return read_jsonl(Path(out) / METRICS)


def _print(msg: str, main: bool) -> None:
    if main:
        print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ reference
def score_settings(settings: TrainSettings, max_length: int | None, precision: Any = None) -> Any:
    """The ScoreSettings of the reference and eval scoring passes (packed) at token budget ``max_length``, in the
    run's precision (:class:`~dpocheck.llm.train.precision.TrainingPrecision`; None: fp32, batches)."""
    from dpocheck.llm.scoring.settings import ScoreSettings

    tokens = settings.batch_tokens if precision is None else precision.scoring_batch_tokens(settings.batch_tokens)
    return ScoreSettings(
        max_length=max_length,
        batch_tokens=tokens,
        chat_template=settings.chat_template,
        dtype="fp32" if precision is None else precision.dtype,
        prefix_mode="packed",
        on_error=settings.on_error,
        limit=settings.limit,
    )


# ------------------------------------------------------------------------------------------------ the run
def _load_data(settings: TrainSettings, path: str, prompt_style: str) -> Any:
    from dpocheck.llm.data.load import load_pairs

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


def encode_checked(tokenizer: Any, load: Any, sset: Any, use_tpl: bool, flag: str) -> dict[str, Any]:
    """Tokenise every pair of ``load`` as the run will (``sset``), before anything is written; returns the counts.

    A pair that cannot be encoded (text the tokenizer cannot take, no response token within the budget, …) is an
    InputError naming the option, file, record and field (``--on-error raise``), or is dropped from ``load.pairs``
    and counted by reason (``skip``). The counts use ``dpocheck score``'s keys
    (:mod:`~dpocheck.llm.scoring.account`): ``records_read``, ``pairs`` (kept), ``skipped_by_reason`` and the
    truncation counts.
    """
    from dpocheck.llm.scoring.account import truncation_counts
    from dpocheck.llm.scoring.encode import ScoringError, encode_pairs

    try:
        enc = encode_pairs(tokenizer, load.pairs, sset, use_tpl)
    except ScoringError as err:
        raise InputError(f"{flag} {load.path}: {err}") from err
    load.pairs = enc.pairs
    by_reason = dict(load.skipped)
    for item in enc.skipped:
        by_reason[item["reason"]] = by_reason.get(item["reason"], 0) + 1
    if not enc.pairs:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(by_reason.items())) or "none read"
        raise InputError(f"{flag} {load.path}: no pair to train on ({load.n_records} records read; skipped: {why})")
    return {
        "records_read": load.n_records,
        "pairs": len(enc.pairs),
        "skipped_by_reason": dict(sorted(by_reason.items())),
        **truncation_counts(enc.encoded),
        "boundary_merged": sum(e.boundary_merged for e in enc.encoded),
    }


def account_line(counts: dict[str, Any], max_length: int | None) -> str:
    """``training on N, skipped M (…) of R records read; K sequences truncated to max_length=L`` (score's words)."""
    from dpocheck.llm.scoring.account import skip_line, truncation_line

    kept = skip_line(counts["pairs"], counts["skipped_by_reason"], verb="training on")
    return f"{kept} of {counts['records_read']} records read; {truncation_line(counts, max_length)}"


def _use_cpu(settings: TrainSettings) -> bool:
    import torch

    return settings.device == "cpu" or not torch.cuda.is_available()


def train(settings: TrainSettings, callbacks: list[Any] | tuple[Any, ...] = ()) -> TrainResult:
    """Run ``dpocheck train``: see the module docstring for the output folder. ``callbacks`` are added last.

    The output folder goes through the output protocol (:mod:`dpocheck.llm.manifest`): its manifest says
    ``running`` while the run goes on, ``complete`` at the end and ``failed`` with the reason (and the step) when
    any error stops it. ``progress=False`` silences every bar (transformers', TRL's, the GGUF de-quantisation's)
    for the run only: the global setting is restored afterwards.
    """
    from dpocheck.llm.models import quiet_loading

    with quiet_loading(not settings.progress):
        return _train(settings, callbacks)


def _train(settings: TrainSettings, callbacks: list[Any] | tuple[Any, ...]) -> TrainResult:
    validate(settings)
    t0 = time.perf_counter()
    import torch
    from accelerate import PartialState

    from .trainer import check_trl

    check_trl()  # a TRL without the hooks the trainer overrides stops here, before any model loads
    from dpocheck.llm.models import load_config, load_tokenizer
    from dpocheck.llm.scoring.render import resolve_chat_template
    from dpocheck.llm.scoring.runner import tokenizer_info
    from dpocheck.llm.scoring.settings import cap_max_length, context_length

    if settings.threads:
        torch.set_num_threads(settings.threads)
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
    max_length, note = cap_max_length(
        settings.max_length, context_length(load_config(model_path, settings.trust_remote_code), tokenizer)
    )
    _print(f"dpocheck train: {note}", main and note is not None)
    if settings.reference_scores is not None:
        check_reference_max_length(Path(settings.reference_scores), max_length)
    prompt_style = "chat" if use_tpl else "text"
    load = _load_data(settings, settings.data, prompt_style)
    heldout = _load_data(settings, settings.heldout, prompt_style) if settings.heldout else None
    _print(f"data: {load.summary()}", main)
    # every pair is tokenised before anything is written: a bad record stops here, named, with no output folder
    sset = score_settings(settings, max_length)
    counts = encode_checked(tokenizer, load, sset, use_tpl, "--data")
    _print(f"dpocheck train: {account_line(counts, max_length)}", main)
    if heldout is not None:
        counts["heldout"] = encode_checked(tokenizer, heldout, sset, use_tpl, "--heldout")
    data_id = data_identity(
        settings.data, format=load.format, delta_reward_source=settings.delta_reward_source, prompt_style=prompt_style
    )
    extra = {
        "loss": {"name": spec.name, "claim": spec.claim, "params": params, "convention": settings.normalize},
        "data": {"pairs": len(load.pairs), "skipped": load.skipped},
        "counts": counts,
        "tokenizer": tokenizer_info(tokenizer, use_tpl, with_template=False),
        "max_length_used": max_length,
        "versions": versions(),
        "world_size": state.num_processes,
    }
    fingerprint = {"data": data_id, "settings": settings.identity()}
    state.wait_for_everyone()  # every process has checked --out before the main one writes into it
    if main:
        run = open_output(out / MANIFEST, fingerprint, tool=TOOL, resume=settings.resume, extra=extra, keep=_KEPT)
        _print(run.previous_failure or "", run.previous_failure is not None)
    else:
        run = OutputRun(out / MANIFEST, {"status": RUNNING, **extra}, write=False)
    job = _Job(settings, out, tokenizer, use_tpl, max_length, load, heldout, data_id, prompt_style, state, run)
    with run.guard(step=job.step):
        result = job.run(model_path, spec, params, callbacks)
    state.wait_for_everyone()
    return TrainResult(out, result["steps"], result["final_loss"], time.perf_counter() - t0, main, run.manifest)


_KEPT = ("sessions", "model", "corruption", "reference")  # what a resumed run keeps from the earlier manifest


def check_reference_max_length(ref: Path, max_length: int | None) -> None:
    """``--reference-scores`` must have been scored with the token budget this run uses (after the context rule)."""
    manifest = read_manifest(ref / MANIFEST)
    used = manifest.get("fingerprint", {}).get("settings", {}).get("max_length")
    if used != max_length:
        raise InputError(f"--reference-scores: settings.max_length {used!r} != {max_length!r} of this run")


@dataclass
class _Job:
    """The state of one ``dpocheck train`` run between loading and saving (see :func:`train`)."""

    settings: TrainSettings
    out: Path
    tokenizer: Any
    use_tpl: bool
    max_length: int | None
    load: Any
    heldout: Any
    data_id: dict[str, Any]
    prompt_style: str
    state: Any
    manifest: OutputRun
    trainer: Any = None
    precision: Any = None

    def step(self) -> int | None:
        """The optimizer step reached (None before the trainer exists): recorded with a failure."""
        return None if self.trainer is None else int(self.trainer.state.global_step)

    def run(self, model_path: Path, spec: Any, params: dict[str, float], callbacks: Any) -> dict[str, Any]:
        from .adapters import load_policy, quiet_peft_warnings
        from .callback import UndesirableSpaceCallback
        from .corrupt import corrupt_reference
        from .guards import DivergenceCallback, diverged, explain_tied_head
        from .precision import training_precision

        s, out, main, run = self.settings, self.out, self.state.is_main_process, self.manifest
        t0 = time.perf_counter()
        device = self.state.device if s.device is None else s.device
        precision = self.precision = training_precision(s, device)
        _print(f"dpocheck train: {precision.note()}", main and precision.note() is not None)
        model, source, n_parameters = load_policy(model_path, s, precision, device)
        model_record = {"path": str(model_path), "source": source, "parameters": n_parameters}
        run.update(model={**model_record, "dtype": str(precision.torch_dtype)})
        run.manifest["precision"] = precision.record()
        run.manifest["gradient_checkpointing"] = bool(s.gradient_checkpointing)
        ref_model_path, ref_source = model_path, source
        if s.corrupt_reference is not None:
            model, record = corrupt_reference(
                model, self.tokenizer, self.load.pairs, s, self.score_settings(), self.use_tpl, out, main, self.state
            )
            run.manifest["corruption"] = record
            ref_model_path, ref_source = out / "corrupted_reference", "hf_folder"
        ref_rows, ref_info = self.reference_rows(model, self.load.pairs, ref_model_path, ref_source, self.data_id)
        ref_list = [ref_rows[p.index] for p in self.load.pairs if p.index in ref_rows]
        ref_info["share_delta_ref_negative"] = {c: share_negative(ref_list, c) for c in LOGP_CONVENTIONS}
        run.manifest["reference"] = ref_info
        if "corruption" in run.manifest:
            corruption = run.manifest["corruption"]
            corruption["share_delta_ref_negative_after"] = ref_info["share_delta_ref_negative"]
            before = corruption["share_delta_ref_negative_before"][s.normalize]
            after = ref_info["share_delta_ref_negative"][s.normalize]
            _print(
                f"corrupt-reference R={s.corrupt_reference}: share with δ_ref < 0 ({s.normalize}) "
                f"{before:.3f} before -> {after:.3f} after",
                main,
            )
        run.save()

        rows = training_rows(self.tokenizer, self.load.pairs, ref_rows, params, s, self.use_tpl, self.score_settings())
        heldout_rows = None
        if self.heldout is not None:
            h_id = data_identity(
                s.heldout,
                format=self.heldout.format,
                delta_reward_source=s.delta_reward_source,
                prompt_style=self.prompt_style,
            )
            h_rows, _ = self.reference_rows(
                model, self.heldout.pairs, ref_model_path, ref_source, h_id, folder="reference_heldout"
            )
            heldout_rows = training_rows(
                self.tokenizer, self.heldout.pairs, h_rows, params, s, self.use_tpl, self.score_settings()
            )
        peft_config = targets = None
        if s.lora_r is not None:
            from .adapters import lora_config, resolve_targets

            targets = resolve_targets(model, s.lora_target_modules, model_path.name)
            peft_config = lora_config(s, targets)
        trainer = self.trainer = build_trainer(model, self.tokenizer, rows, s, out, precision, peft_config)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        run.manifest["trainable_parameters"] = int(trainable)
        if targets is not None:
            from .adapters import lora_record

            run.manifest["lora"] = lora_record(s, targets, trainable, out)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # stdout carries the one JSON summary line; metrics.jsonl the logs
        trainer.add_callback(metrics_callback(out / METRICS))  # before the eval callback: it logs at step 0
        trainer.add_callback(DivergenceCallback())  # after the metrics file: the diverged step's row is kept
        eval_tokens = precision.scoring_batch_tokens(s.batch_tokens)
        eval_cb = UndesirableSpaceCallback(trainer, rows, s.eval_every, out, heldout_rows, batch_tokens=eval_tokens)
        trainer.add_callback(eval_cb)
        for cb in callbacks:
            trainer.add_callback(cb)
        resume_from = last_checkpoint(out) if s.resume else None
        _print(f"resuming from {resume_from}" if resume_from else "training from step 0", main and s.resume)
        t_train = time.perf_counter()
        try:
            with explain_tied_head(trainer.model, lambda line: _print(line, main)), quiet_peft_warnings():
                trainer.train(resume_from_checkpoint=resume_from)  # checkpoints of a LoRA run save its adapter
        except FloatingPointError as err:  # the trainer's check of the policy's log-probs
            raise diverged(trainer.state.global_step + 1, str(err), s.lr) from err
        train_seconds = time.perf_counter() - t_train
        step = trainer.state.global_step  # the final policy was scored by the callback at the end of training
        final = out / "final"
        if s.lora_r is None:
            trainer.save_model(str(final))  # main process only; safetensors
            if main:
                self.tokenizer.save_pretrained(str(final))
        else:  # OUT/adapter (PEFT) and OUT/final (merged)
            from .adapters import save_adapter_and_merged

            tok = self.tokenizer
            merged = save_adapter_and_merged(trainer, out, ref_model_path, precision.dtype, tok, s, self.state)
            run.manifest["lora"].update(merged or {})
        history = [h for h in trainer.state.log_history if "loss" in h]
        final_loss = float(history[-1]["loss"]) if history else None
        result = {
            "steps": step,
            "final_loss": final_loss,
            "train_seconds_this_session": round(train_seconds, 2),
            "resumed_from": resume_from,
        }
        session = {"seconds": round(time.perf_counter() - t0, 2), "resumed_from": resume_from}
        session["world_size"] = self.state.num_processes
        health = run_health(out, vocab_size=len(self.tokenizer)) if main else {}  # the eval files are main's
        _print(f"dpocheck train: {health.get('line')}", main)
        run.complete(result=result, health=health, sessions=[*run.manifest.get("sessions", []), session])
        return result

    def score_settings(self) -> Any:
        """The ScoreSettings of the reference and eval scoring passes (packed, the run's token budget, precision
        and layout)."""
        return score_settings(self.settings, self.max_length, self.precision)

    def reference_rows(
        self,
        model: Any,
        pairs: list[Any],
        model_path: Path,
        source: str,
        data_id: dict[str, Any],
        folder: str = "reference",
    ) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        """Reference score rows by pair index: reused from ``--reference-scores`` or scored into ``OUT/folder``.

        Reused scores must hold a row for every training pair (InputError naming the first missing index).
        """
        from dpocheck.llm.models import model_fingerprint
        from dpocheck.llm.scoring.runner import score_to_directory

        s = self.settings
        if s.reference_scores is not None and folder == "reference":
            ref = Path(s.reference_scores)
            rows = {r["index"]: r for r in read_jsonl(ref / MERGED)}
            missing = [p.index for p in pairs if p.index not in rows]
            if missing:
                raise InputError(
                    f"--reference-scores: record {missing[0]} of --data has no row in {ref / MERGED} "
                    f"({len(missing)} missing); score the same data and --limit"
                )
            return rows, {"scores": str(ref.resolve()), "reused": True}
        ref = self.out / folder
        model_id = {**model_fingerprint(model_path), "source": source, "dtype": str(self.precision.torch_dtype)}
        was_training = model.training
        model.eval()
        scored = score_to_directory(
            model,
            self.tokenizer,
            pairs,
            ref,
            self.score_settings(),
            model_identity=model_id,
            data_identity=data_id,
            resume=(ref / MANIFEST).is_file(),
            extra={"scored_by": "dpocheck train"},
            show_progress=s.progress,
        )
        model.train(was_training)
        rows = {r["index"]: r for r in read_jsonl(ref / MERGED)}
        return rows, {"scores": str(ref.resolve()), "reused": False, "seconds": round(scored.seconds, 2)}


def training_rows(
    tokenizer: Any,
    pairs: list[Any],
    ref_rows: dict[int, dict[str, Any]],
    params: dict[str, float],
    settings: TrainSettings,
    use_tpl: bool,
    sset: Any,
) -> list[dict[str, Any]]:
    """The core's training rows of ``pairs`` (dpocheck tokenisation under ScoreSettings ``sset``, reference
    columns, the loss's inputs)."""
    from dpocheck.llm.scoring.encode import encode_pairs

    from .dataset import build_training_rows

    enc = encode_pairs(tokenizer, pairs, sset, use_tpl)
    return build_training_rows(
        enc.encoded, list(ref_rows.values()), settings.loss, settings.beta, params, settings.normalize
    )


def config_overrides(settings: TrainSettings, precision: Any = None) -> dict[str, Any]:
    """What ``dpocheck train`` sets on top of :func:`~dpocheck.llm.train.trainer.preference_config`: β, the
    schedule, the seed, checkpoints, the micro-batching of ``precision`` (default: the run's on the CPU),
    gradient checkpointing (every key a DPOConfig field: tested)."""
    from .precision import training_precision
    from .trainer import checkpointing_overrides

    precision = precision if precision is not None else training_precision(settings, "cpu")
    length = {"max_steps": settings.max_steps} if settings.max_steps else {"num_train_epochs": settings.epochs or 1.0}
    return {
        "beta": settings.beta,
        "learning_rate": settings.lr,
        "per_device_train_batch_size": precision.per_device_batch,
        "gradient_accumulation_steps": precision.accumulation,
        **checkpointing_overrides(settings.gradient_checkpointing),
        "seed": settings.seed,
        "data_seed": settings.seed,
        "save_strategy": "steps",
        "save_steps": settings.save_steps,
        "disable_tqdm": not settings.progress,
        "use_cpu": _use_cpu(settings),
        "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False,
        **length,
    }


def build_trainer(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    settings: TrainSettings,
    out: Path,
    precision: Any = None,
    peft_config: Any = None,
) -> Any:
    """The preference trainer (the core's DPOTrainer subclass) on training ``rows``.

    The DPOConfig is the core's :func:`preference_config` (no Trainer autocast — the weights' own dtype is the
    precision, :mod:`.precision` — columns kept, every step logged, no reporting) with :func:`config_overrides`:
    this run's seed, schedule, micro-batching, checkpointing and checkpoints in ``OUT/checkpoints``. The collator
    pads rows to ``precision.pad_multiple``; ``peft_config`` (PEFT) goes to TRL.
    """
    from dpocheck.llm.models import pad_token_id

    from .collator import PackedPreferenceCollator
    from .dataset import to_dataset
    from .precision import training_precision
    from .trainer import PreferenceTrainer, preference_config

    precision = precision if precision is not None else training_precision(settings, "cpu")
    config = preference_config(str(out / "checkpoints"), **config_overrides(settings, precision))
    return PreferenceTrainer(
        model=model,
        args=config,
        train_dataset=to_dataset(rows),
        processing_class=tokenizer,
        loss_name=settings.loss,
        normalize=settings.normalize,
        data_collator=PackedPreferenceCollator(pad_token_id(tokenizer), pad_multiple=precision.pad_multiple),
        peft_config=peft_config,
    )
