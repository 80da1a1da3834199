"""Settings of ``dpocheck train`` and every check that needs no model (exit 2 naming the field, C-free plumbing).

:class:`TrainSettings` is the run's typed arguments; :func:`validate` refuses bad numbers and choices, an
unwritable or already used ``--out``, a ``--resume`` whose settings differ from the run's manifest, and reference
scores (``--reference-scores``) made from another model, data set or rendering — all before anything heavy is
loaded, with :class:`InputError` (the CLI prints its one line and exits 2).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dpocheck.errors import InputError
from dpocheck.llm.data.load import input_file
from dpocheck.llm.manifest import MANIFEST, check_output, differences, is_complete, read_manifest
from dpocheck.llm.scoring.settings import LOGP_CONVENTIONS

TOOL = "train"
LOSS_PARAM_FLAGS = {"gamma": "--gamma", "tau": "--tau", "alpha": "--alpha", "lam": "--lambda"}  # registry name → flag
METRICS = "metrics.jsonl"
RESUME_FREE = ("resume", "threads", "progress")  # settings that may differ when a run is resumed
TRAIN_DTYPES = ("auto", "fp32", "bf16")
#: the scale options and their defaults; left out of a run's identity at their default, so runs made before the
#: options existed still resume and are reused by ``train-sweep``
SCALE_DEFAULTS: dict[str, Any] = {
    "lora_r": None,
    "lora_alpha": None,
    "lora_dropout": 0.0,
    "lora_target_modules": None,
    "load_in_4bit": False,
    "gradient_checkpointing": False,
}


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
    max_length: int | None = 1024  # 0 or None: the model's context (the one context rule of every command)
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
    lam: float | None = None
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
    # scale (dpocheck.llm.train.precision, .adapters): None = full fine-tuning; alpha None = 2·r; targets None = the
    # attention + MLP projections of the model's layers
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False

    def loss_params(self) -> dict[str, float]:
        """The loss hyper-parameters given on the command line (γ, τ, α); the registry fills the rest."""
        given = (("gamma", self.gamma), ("tau", self.tau), ("alpha", self.alpha), ("lam", self.lam))
        return {k: v for k, v in given if v is not None}

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the original, with paths made absolute."""
        d = asdict(self)
        for k in ("data", "out", "heldout", "reference_scores"):
            if d[k] is not None:
                d[k] = os.path.abspath(d[k])
        d["model"] = str(resolve_model_path(self.model))
        for k, default in SCALE_DEFAULTS.items():
            if d[k] == default:
                del d[k]
        return {k: v for k, v in d.items() if k not in RESUME_FREE}


# ------------------------------------------------------------------------------------------------ validation
def resolve_model_path(model: str | None) -> Path:
    """The model path (``None``: the SmolLM2 GGUF default), absolute; FileNotFoundError → InputError."""
    from dpocheck.llm.models import default_model_path

    try:
        p = Path(model) if model is not None else default_model_path()
    except FileNotFoundError as err:
        raise InputError(f"--model: {err}") from err
    return p.resolve()


def check_out_dir(out: str, resume: bool) -> dict[str, Any] | None:
    """``--out`` must be writable, and new unless ``--resume`` (the output protocol of
    :mod:`dpocheck.llm.manifest`: an existing run needs ``--resume``, files without a manifest are refused,
    ``--resume`` needs a run); returns the earlier manifest on resume."""
    from dpocheck.llm.preflight import check_output_path

    p = check_output_path(Path(out).absolute(), directory=True)
    stray = sorted(p.iterdir())[:1] if p.is_dir() else []
    return check_output(
        p / MANIFEST,
        tool=TOOL,
        resume=resume,
        outputs=stray,
        require_run=True,
        where=f"--out {p}",
        stray_hint="it holds no training run: choose a new --out",
    )


def resolve_loss(settings: TrainSettings) -> tuple[Any, dict[str, float]]:
    """(LossSpec, its full parameters) for ``settings.loss`` (the core's registry lookup); unknown loss or bad
    parameter → InputError naming the command-line flag (``--loss``, ``--gamma``, …)."""
    from .dataset import TrainingInputError
    from .dataset import resolve_loss as core_resolve_loss

    try:
        spec, params = core_resolve_loss(settings.loss, settings.loss_params())
    except TrainingInputError as err:
        flag = LOSS_PARAM_FLAGS.get(err.field, "--loss")
        raise InputError(f"{flag}: {err}") from None
    return spec, dict(params)


def validate(settings: TrainSettings) -> None:
    """Every check that needs no model: numbers, choices, paths, the resume settings, the reference manifest."""
    s = settings
    if not (isinstance(s.beta, int | float) and math.isfinite(s.beta) and s.beta > 0):
        raise InputError(f"--beta: must be a finite number > 0, got {s.beta!r}")
    if s.gamma is not None and not (math.isfinite(s.gamma) and s.gamma >= 0):
        raise InputError(f"--gamma: must be a finite number >= 0, got {s.gamma!r}")
    if s.normalize not in LOGP_CONVENTIONS:
        raise InputError(f"--normalize: expected one of {LOGP_CONVENTIONS}, got {s.normalize!r}")
    if s.dtype not in TRAIN_DTYPES:
        raise InputError(f"--dtype: training runs in {', '.join(TRAIN_DTYPES)}, got {s.dtype!r}")
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
    if s.max_length is not None and (s.max_length < 0 or s.max_length == 1):
        raise InputError(f"--max-length: must be 0 (the model's context) or >= 2, got {s.max_length}")
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
    for flag, path in (("--data", s.data), ("--heldout", s.heldout)):
        try:
            if path is not None:
                input_file(path)
        except OSError as err:
            raise InputError(f"{flag}: {err}") from None
    model_path = resolve_model_path(s.model)
    if not model_path.exists():
        raise InputError(f"--model: {model_path} does not exist")
    resolve_loss(s)
    check_scale_settings(s, model_path)  # LoRA, 4-bit, bf16: one line naming the flag, before any weight loads
    old = check_out_dir(s.out, s.resume)
    if old is not None:
        check_resume_settings(Path(s.out), old, s)
    if s.reference_scores is not None:
        check_reference_scores(Path(s.reference_scores), model_path, Path(s.data), s)


def check_scale_settings(settings: TrainSettings, model_path: Path) -> None:
    """The LoRA / QLoRA / precision options (:mod:`.adapters`, :mod:`.precision`): numbers, combinations, the target
    modules against a weightless build of the model, and what the machine supports."""
    from .adapters import check_adapter_settings
    from .precision import check_precision_settings

    check_adapter_settings(settings, model_path)
    check_precision_settings(settings)


def check_resume_settings(out: Path, manifest: dict[str, Any], settings: TrainSettings) -> None:
    """A resumed run must use the settings of the run in ``out`` (its manifest ``fingerprint.settings``); the first
    difference is named (InputError). The data file's hash is compared once the data are read."""
    old = manifest.get("fingerprint", {}).get("settings", {})
    diffs = differences(old, settings.identity())
    if diffs:
        key, change = diffs[0].split(": ", 1)
        raise InputError(
            f"--resume: setting {key!r} differs from the run in {out} ({change}); "
            "resume with the original settings or start a new --out"
        )


def check_reference_scores(ref: Path, model_path: Path, data: Path, settings: TrainSettings) -> dict[str, Any]:
    """The manifest of a ``dpocheck score`` folder must name this model, data and rendering; returns it.

    Checked: the model files (path, sizes, mtimes, metadata hashes), the data's sha256 and Δr* source, the token
    budget (``max_length``), the chat-template mode and fp32 weights — what changes δ_ref. A mismatch raises
    InputError naming the field, never a silent recomputation.
    """
    from dpocheck.llm.manifest import sha256_file
    from dpocheck.llm.models import model_fingerprint

    mpath = ref / MANIFEST
    if not (ref / "scores.jsonl").is_file() or not mpath.is_file():
        raise InputError(f"--reference-scores: {ref} is not a finished `dpocheck score` folder")
    manifest = read_manifest(mpath)
    if not is_complete(manifest):
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
    checks = [("chat_template", settings.chat_template)]
    if settings.max_length:  # 0: the model's context, compared once the model's context is known
        checks.append(("max_length", settings.max_length))
    for key, value in checks:
        if sfp.get(key) != value:
            raise InputError(f"--reference-scores: settings.{key} {sfp.get(key)!r} != {value!r} of this run")
    return manifest
