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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpocheck._io import write_json_atomic

try:  # the one CLI error type (exit 2) once dpocheck.errors exists
    from dpocheck.errors import InputError
except ImportError:  # pragma: no cover - older checkouts

    class InputError(ValueError):  # type: ignore[no-redef]
        """Bad user input: the CLI prints the one-line message and exits 2."""


MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
RESUME_FREE = ("resume", "threads", "progress")  # settings that may differ when a run is resumed
FORMAT_VERSION = 1


@dataclass
class TrainSettings:
    """Everything ``dpocheck train`` needs; all but :data:`RESUME_FREE` must match on ``--resume``."""

    data: str
    loss: str
    beta: float
    out: str
    model: str | None = None
    format: str = "auto"
    delta_reward_source: str = "auto"
    max_length: int | None = 1024
    batch_tokens: int = 4096
    limit: int | None = None
    on_error: str = "raise"
    chat_template: str = "auto"
    dtype: str = "auto"
    device: str | None = None
    trust_remote_code: bool = False
    gamma: float | None = None
    tau: float | None = None
    alpha: float | None = None
    normalize: str = "sum"
    max_steps: int | None = None
    epochs: float | None = None
    lr: float = 1e-6
    batch_size: int = 2
    grad_accum: int = 1
    eval_every: int = 10
    save_steps: int = 50
    heldout: str | None = None
    seed: int = 0
    reference_scores: str | None = None
    corrupt_reference: float | None = None
    corrupt_steps: int = 20
    corrupt_lr: float = 1e-4
    resume: bool = False
    threads: int | None = None
    progress: bool = True

    def loss_params(self) -> dict[str, float]:
        """The loss hyper-parameters given on the command line (γ, τ, α); the registry fills the rest."""
        return {k: v for k, v in (("gamma", self.gamma), ("tau", self.tau), ("alpha", self.alpha)) if v is not None}

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the original, with paths made absolute."""
        d = asdict(self)
        for k in ("data", "out", "heldout", "reference_scores"):
            if d[k] is not None:
                d[k] = os.path.abspath(d[k])
        d["model"] = str(resolve_model_path(self.model))
        return {k: v for k, v in d.items() if k not in RESUME_FREE}


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


# ------------------------------------------------------------------------------------------------ validation
def resolve_model_path(model: str | None) -> Path:
    """The model path (``None``: the SmolLM2 GGUF default), absolute; FileNotFoundError → InputError."""
    from dpocheck.llm.models import default_model_path

    try:
        p = Path(model) if model is not None else default_model_path()
    except FileNotFoundError as err:
        raise InputError(f"--model: {err}") from err
    return p.resolve()


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_out_dir(out: str, resume: bool) -> None:
    """``--out`` must be writable, new (or empty) unless ``--resume``, and hold a run when ``--resume``."""
    p = Path(out).absolute()
    if p.exists() and not p.is_dir():
        raise InputError(f"--out: {p} exists and is not a directory")
    base = _nearest_existing(p)
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"--out: {p} is not writable (no write permission on {base})")
    if resume:
        if not (p / MANIFEST).is_file():
            raise InputError(f"--resume: {p} holds no training run (no {MANIFEST}); drop --resume to start one")
    elif p.is_dir() and any(p.iterdir()):
        raise InputError(f"--out: {p} already exists and is not empty; pass --resume or choose a new one")


def resolve_loss(settings: TrainSettings) -> tuple[Any, dict[str, float]]:
    """(LossSpec, its full parameters) for ``settings.loss``; unknown loss or bad parameter → InputError."""
    from dpocheck.theory.registry import LOSS_NAMES, get_loss

    if settings.loss not in LOSS_NAMES:
        raise InputError(f"--loss: unknown loss {settings.loss!r}; expected one of {', '.join(LOSS_NAMES)}")
    spec = get_loss(settings.loss)
    try:
        params = spec.resolve(**settings.loss_params())
    except TypeError as err:
        raise InputError(f"--loss {settings.loss}: {err}") from err
    except ValueError as err:
        raise InputError(f"--loss {settings.loss}: {err}") from err
    return spec, dict(params)


def validate(settings: TrainSettings) -> None:
    """Every check that needs no model: numbers, choices, paths, the resume settings, the reference manifest."""
    s = settings
    if not (isinstance(s.beta, int | float) and math.isfinite(s.beta) and s.beta > 0):
        raise InputError(f"--beta: must be a finite number > 0, got {s.beta!r}")
    if s.gamma is not None and not (math.isfinite(s.gamma) and s.gamma >= 0):
        raise InputError(f"--gamma: must be a finite number >= 0, got {s.gamma!r}")
    if s.normalize not in ("sum", "mean"):
        raise InputError(f"--normalize: expected sum or mean, got {s.normalize!r}")
    if s.dtype not in ("auto", "fp32"):
        raise InputError(f"--dtype: training runs in fp32 (auto means fp32 here), got {s.dtype!r}")
    for name, value, low in (
        ("--batch-size", s.batch_size, 1),
        ("--grad-accum", s.grad_accum, 1),
        ("--eval-every", s.eval_every, 1),
        ("--save-steps", s.save_steps, 1),
        ("--batch-tokens", s.batch_tokens, 1),
        ("--corrupt-steps", s.corrupt_steps, 1),
        ("--max-steps", s.max_steps, 1),
    ):
        if value is not None and value < low:
            raise InputError(f"{name}: must be >= {low}, got {value}")
    if s.epochs is not None and not (math.isfinite(s.epochs) and s.epochs > 0):
        raise InputError(f"--epochs: must be > 0, got {s.epochs!r}")
    if s.max_steps is not None and s.epochs is not None:
        raise InputError("--max-steps and --epochs: give one of them")
    if not (math.isfinite(s.lr) and s.lr > 0):
        raise InputError(f"--lr: must be > 0, got {s.lr!r}")
    if s.max_length is not None and s.max_length < 2:
        raise InputError(f"--max-length: must be >= 2 (or 0 for no limit), got {s.max_length}")
    if s.corrupt_reference is not None:
        r = s.corrupt_reference
        if not (math.isfinite(r) and 0.0 <= r <= 1.0):
            raise InputError(f"--corrupt-reference: the share R must lie in [0, 1], got {r!r}")
        if s.reference_scores is not None:
            raise InputError(
                "--reference-scores: cannot be reused with --corrupt-reference (the corrupted model is the reference)"
            )
        if not (math.isfinite(s.corrupt_lr) and s.corrupt_lr > 0):
            raise InputError(f"--corrupt-lr: must be > 0, got {s.corrupt_lr!r}")
    if s.threads is not None and s.threads < 1:
        raise InputError(f"--threads: must be >= 1, got {s.threads}")
    if not Path(s.data).is_file():
        raise InputError(f"--data: preference data file not found: {s.data}")
    if s.heldout is not None and not Path(s.heldout).is_file():
        raise InputError(f"--heldout: file not found: {s.heldout}")
    model_path = resolve_model_path(s.model)
    if not model_path.exists():
        raise InputError(f"--model: {model_path} does not exist")
    resolve_loss(s)
    check_out_dir(s.out, s.resume)
    if s.resume:
        check_resume_settings(Path(s.out), s)
    if s.reference_scores is not None:
        check_reference_scores(Path(s.reference_scores), model_path, Path(s.data), s)


def check_resume_settings(out: Path, settings: TrainSettings) -> None:
    """A resumed run must use the settings of the run in ``out``; the first difference is named (InputError)."""
    old = json.loads((out / MANIFEST).read_text()).get("settings", {})
    new = settings.identity()
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise InputError(
                f"--resume: setting {key!r} differs from the run in {out} ({old.get(key)!r} -> {new.get(key)!r}); "
                "resume with the original settings or start a new --out"
            )


def check_reference_scores(ref: Path, model_path: Path, data: Path, settings: TrainSettings) -> dict[str, Any]:
    """The manifest of a ``dpocheck score`` folder must name this model, data and rendering; returns it.

    Checked: the model files (path, sizes, mtimes, metadata hashes), the data's sha256 and Δr* source, the token
    budget (``max_length``), the chat-template mode and fp32 weights — what changes δ_ref. A mismatch raises
    InputError naming the field, never a silent recomputation.
    """
    from dpocheck.llm.models import model_fingerprint
    from dpocheck.llm.scoring import sha256_file

    mpath = ref / MANIFEST
    if not (ref / "scores.jsonl").is_file() or not mpath.is_file():
        raise InputError(f"--reference-scores: {ref} is not a finished `dpocheck score` folder")
    manifest = json.loads(mpath.read_text())
    if manifest.get("status") != "complete":
        raise InputError(f"--reference-scores: {ref} is an unfinished scoring run (status {manifest.get('status')!r})")
    fp = manifest.get("fingerprint", {})
    model_fp = model_fingerprint(model_path)
    got_model = {k: fp.get("model", {}).get(k) for k in ("path", "files")}
    if got_model != model_fp:
        raise InputError(
            f"--reference-scores: model in {mpath} ({got_model['path']}) is not --model ({model_fp['path']}) "
            "or its files changed"
        )
    if fp.get("model", {}).get("dtype") != "torch.float32":
        dtype = fp.get("model", {}).get("dtype")
        raise InputError(f"--reference-scores: model.dtype is {dtype!r}; training needs fp32 reference scores")
    data_fp = fp.get("data", {})
    if data_fp.get("sha256") != sha256_file(data):
        raise InputError(f"--reference-scores: data.sha256 in {mpath} is not that of --data {data}")
    if data_fp.get("delta_reward_source") != settings.delta_reward_source:
        raise InputError(
            f"--reference-scores: data.delta_reward_source {data_fp.get('delta_reward_source')!r} != "
            f"{settings.delta_reward_source!r}"
        )
    sfp = fp.get("settings", {})
    for key, value in (("max_length", settings.max_length), ("chat_template", settings.chat_template)):
        if sfp.get(key) != value:
            raise InputError(f"--reference-scores: settings.{key} {sfp.get(key)!r} != {value!r} of this run")
    return manifest


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


def prepare_for_training(model: Any) -> Any:
    """A loaded (possibly GGUF-dequantized) model made trainable and saveable: no quantizer, grads on, no cache."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.is_quantized = False
    model.config.use_cache = False
    model.requires_grad_(True)
    model.train()
    return model


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

    At train begin the file is cut back to the rows up to the step the run starts from (0 for a new run, the
    checkpoint's step on resume), so a resumed run's file equals an uninterrupted run's.
    """
    from transformers import TrainerCallback

    class MetricsFileCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            kept = []
            if path.is_file():
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
def data_identity(settings: TrainSettings, load: Any, prompt_style: str) -> dict[str, Any]:
    """The data part of a scoring fingerprint (as ``dpocheck score`` writes it)."""
    from dpocheck.llm.scoring import sha256_file

    return {
        "path": os.path.abspath(settings.data),
        "sha256": sha256_file(settings.data),
        "format": load.format,
        "delta_reward_source": settings.delta_reward_source,
        "prompt_style": prompt_style,
    }


def score_settings(settings: TrainSettings) -> Any:
    """The ScoreSettings of the reference and eval scoring passes (fp32, packed)."""
    from dpocheck.llm.scoring import ScoreSettings

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
) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """Reference score rows by pair index: reused from ``--reference-scores`` or scored into ``OUT/reference``.

    Reused scores must hold a row for every training pair (InputError naming the first missing index).
    """
    from dpocheck.llm.models import model_fingerprint
    from dpocheck.llm.scoring import read_jsonl, score_to_directory

    if settings.reference_scores is not None:
        ref = Path(settings.reference_scores)
        rows = {r["index"]: r for r in read_jsonl(ref / "scores.jsonl")}
        missing = [p.index for p in pairs if p.index not in rows]
        if missing:
            raise InputError(
                f"--reference-scores: record {missing[0]} of --data has no row in {ref / 'scores.jsonl'} "
                f"({len(missing)} missing); score the same data and --limit"
            )
        return rows, {"scores": str(ref.resolve()), "reused": True}
    ref = Path(settings.out) / "reference"
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
    from dpocheck.llm.scoring import encode_pairs, resolve_chat_template

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
    prompt_style = "chat" if use_tpl else "text"
    load = _load_data(settings, settings.data, prompt_style)
    heldout = _load_data(settings, settings.heldout, prompt_style) if settings.heldout else None
    _print(f"data: {load.summary()}", main)
    data_id = data_identity(settings, load, prompt_style)

    manifest: dict[str, Any] = {}
    if settings.resume:
        manifest = json.loads((out / MANIFEST).read_text())
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
        write_json_atomic(out / MANIFEST, manifest)

    loaded = load_model(model_path, dtype="fp32", device="cpu", trust_remote_code=settings.trust_remote_code)
    model = prepare_for_training(loaded.model)
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
        write_json_atomic(out / MANIFEST, manifest)

    enc = encode_pairs(tokenizer, load.pairs, score_settings(settings), use_tpl)
    trainer = build_trainer(model, tokenizer, enc, ref_rows, params, settings, out, heldout=heldout)
    trainer.add_callback(metrics_callback(out / METRICS))
    for cb in callbacks:
        trainer.add_callback(cb)
    resume_from = last_checkpoint(out) if settings.resume else None
    _print(f"resuming from {resume_from}" if resume_from else "training from step 0", main and settings.resume)
    t_train = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - t_train

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
        write_json_atomic(out / MANIFEST, manifest)
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
    from dpocheck.llm.models import load_model
    from dpocheck.llm.scoring import encode_pairs, score_pairs

    from .corrupt import CorruptionRecord, choose_corrupted, run_sft, sft_rows

    folder = out / "corrupted_reference"
    done = folder / "corruption.json"
    if done.is_file():  # resumed run: the SFT already happened
        record = json.loads(done.read_text())
        loaded = load_model(folder, dtype="fp32", device="cpu", trust_remote_code=settings.trust_remote_code)
        return prepare_for_training(loaded.model), record
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
    model = prepare_for_training(model)
    if main:
        save_model(model, tokenizer, folder)
        write_json_atomic(done, record)
    state.wait_for_everyone()
    return model, record


def build_trainer(
    model: Any,
    tokenizer: Any,
    enc: Any,
    ref_rows: dict[int, dict[str, Any]],
    params: dict[str, float],
    settings: TrainSettings,
    out: Path,
    *,
    heldout: Any = None,
) -> Any:
    """The preference trainer (the core's DPOTrainer subclass) on training rows of ``enc`` and ``ref_rows``.

    The DPOConfig is the core's :func:`preference_config` (fp32 explicitly — TRL's bf16 default changes the loss —
    columns kept, every step logged, no reporting) with this run's seed, schedule and checkpoints in
    ``OUT/checkpoints``. An overflowing loss input (``cpo_margin`` on summed log-probs) is an input error.
    """
    from .dataset import build_training_rows, to_dataset
    from .trainer import PreferenceTrainer, preference_config

    rows = build_training_rows(
        enc.encoded, list(ref_rows.values()), settings.loss, settings.beta, params, settings.normalize
    )
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
