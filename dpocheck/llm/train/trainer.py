"""``PreferenceTrainer``: TRL 1.16's ``DPOTrainer`` training any loss of the registry on packed, pre-scored rows.

A thin subclass (no forked trainer). What it overrides in TRL 1.16 and why (:func:`check_trl` refuses, with exit
status 2 in the CLI, a TRL whose DPOTrainer lacks one of these hooks or changed its parameters; the ``train``
extra pins the tested range :data:`TESTED_TRL`):

* ``compute_loss`` — the public hook (TRL keeps its own loss in the private ``_compute_loss``): runs the packed
  policy forward (:func:`~dpocheck.llm.train.forward.policy_logps`, the prompt once per pair), forms δ_θ in the
  trained convention and returns the batch mean of ``get_loss(name).apply(δ_θ, β, **loss_* columns)``; it also
  puts the U metrics (:mod:`~dpocheck.llm.train.metrics`) into TRL's metric store ``self._metrics``, which TRL's
  ``log`` averages over the logging window and hands to ``Trainer.log`` (``state.log_history``, TensorBoard, W&B).
* ``_prepare_dataset`` — TRL would extract prompts and tokenise text with its own rules; the rows are already
  tokenised by dpocheck (``encode_pair``'s boundary rule, so δ_θ = δ_ref exactly at step 0), so it only checks
  the schema.
* ``_precompute_ref_logps`` — with ``precompute_ref_log_probs=True`` (set by this class) TRL keeps no reference
  model in memory and would run one pass over the data; the reference log-probs come precomputed by dpocheck's
  packed scorer in the ``ref_*`` columns, so it only checks they are there. The reference model is never run.
* ``_set_signature_columns_if_needed`` — keeps the row schema and ``loss_*`` columns when
  ``remove_unused_columns=True`` (TRL's list names its own columns).
* ``prediction_step`` — TRL's asks ``compute_loss`` for logits, which the packed forward never builds (logits only
  at scored positions); evaluation returns the loss, and the metrics land in TRL's eval store (``eval_*`` keys).

Two functions of TRL's ``dpo_trainer`` module are replaced while ``DPOTrainer.__init__`` runs
(:data:`TRL_PATCHED_FUNCTIONS`; :func:`check_trl` refuses a TRL without them): ``hash_module``, which hashes the
whole state dict for TRL's own reference precompute (a float32 copy of each tensor: ~35-40 s and ~4 GB of host RAM
per rank at 8B), and ``create_model_from_path``, with which TRL under FSDP loads a second, reference copy of the
model from its config's name. The reference log-probs come with the rows, so neither is needed.

Adapters: ``peft_config`` (a PEFT ``LoraConfig``) goes to TRL, which seeds with ``args.seed`` and wraps the model
with ``get_peft_model``; pass the bare model (made trainable by :func:`trainable_model`), never a wrapped one.
TRL's ``disable_dropout`` zeroes every ``nn.Dropout``, the adapter's too: the adapter's dropout is set back to
``peft_config.lora_dropout`` afterwards (the base model's own dropout stays off, as in the reference scoring).

The logged ``loss`` is the batch-mean loss accumulated in float64 through TRL's metric store (TRL's ``log``
lets it replace the Trainer's own float32 running loss; the two agree to float32 rounding). This matters for
``cpo_margin`` with summed log-probs: its offsets c = β·δ_ref + m carry m ~ e^{100} or more, so ℓ ≈ c − β·δ_θ
is astronomically large (gradient −β per pair, exact); the Trainer's float32 accumulator overflows to inf and then
NaN, so its end-of-run ``train_loss`` summary is NaN there, while the logged per-step ``loss`` stays finite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from trl import DPOConfig, DPOTrainer

from dpocheck.errors import InputError
from dpocheck.llm.models import pad_token_id

from .collator import PackedPreferenceCollator
from .dataset import (
    LOSS_PREFIX,
    REF_COLUMNS,
    ROW_COLUMNS,
    TrainingInputError,
    check_beta,
    check_normalize,
    loss_columns,
    resolve_loss,
    to_dataset,
)
from .forward import policy_logps
from .metrics import displacement_metrics, pair_margins, preference_metrics

#: The TRL releases this trainer is tested with (pyproject's ``train`` extra pins the same range).
TESTED_TRL = ">=1.16,<1.17"
#: The DPOTrainer methods :class:`PreferenceTrainer` overrides or calls, with the leading parameters it relies on.
TRL_HOOKS: dict[str, tuple[str, ...]] = {
    "_prepare_dataset": ("dataset", "processing_class", "args", "dataset_name"),
    "_precompute_ref_logps": ("dataset", "name", "batch_size"),
    "_set_signature_columns_if_needed": (),
    "compute_loss": ("model", "inputs", "return_outputs", "num_items_in_batch"),
    "prediction_step": ("model", "inputs", "prediction_loss_only", "ignore_keys"),
    "log": ("logs", "start_time"),
}
#: Functions of ``trl.trainer.dpo_trainer`` replaced while ``DPOTrainer.__init__`` runs (see the module docstring).
TRL_PATCHED_FUNCTIONS = ("hash_module", "create_model_from_path")


def check_trl(trainer_class: Any = DPOTrainer) -> None:
    """Refuse a TRL whose DPOTrainer lacks a hook :class:`PreferenceTrainer` overrides, or has it with other
    parameters (:data:`TRL_HOOKS`): an InputError naming the TRL version and the tested range, before any model
    loads, instead of a silent change of behaviour."""
    import trl
    import trl.trainer.dpo_trainer as dpo_module

    for name in TRL_PATCHED_FUNCTIONS:
        if not callable(getattr(dpo_module, name, None)):
            raise InputError(
                f"TRL {trl.__version__}: trl.trainer.dpo_trainer.{name} is missing, but dpocheck's trainer replaces it "
                f"while DPOTrainer.__init__ runs; it is tested with trl{TESTED_TRL}: pip install 'trl{TESTED_TRL}'"
            )
    for name, expected in TRL_HOOKS.items():
        fn = getattr(trainer_class, name, None)
        got = list(inspect.signature(fn).parameters)[1:] if callable(fn) else None
        if got is None or got[: len(expected)] != list(expected):
            found = "is missing" if got is None else f"takes ({', '.join(got)})"
            raise InputError(
                f"TRL {trl.__version__}: DPOTrainer.{name} {found}, but dpocheck's trainer overrides it with "
                f"({', '.join(expected)}); it is tested with trl{TESTED_TRL}: pip install 'trl{TESTED_TRL}'"
            )


# the activation (gradient) checkpointing switch: recent transformers call it activation_checkpointing (the old
# name, which TRL's config re-declares, still works but warns); older releases know gradient_checkpointing only
CHECKPOINTING_FIELD = (
    "activation_checkpointing"
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(DPOConfig)}
    else "gradient_checkpointing"
)


def checkpointing_overrides(enabled: bool) -> dict[str, Any]:
    """The DPOConfig keys of ``--gradient-checkpointing``: transformers' activation checkpointing of the decoder
    layers, non-reentrant (exact on the CPU: the same losses and gradients as without; it acts in training mode
    only, so the no-grad eval scoring is unchanged). TRL forces reentrant for PEFT under ZeRO-3 (its own rule)."""
    kwargs_field = f"{CHECKPOINTING_FIELD}_kwargs"
    return {CHECKPOINTING_FIELD: bool(enabled), kwargs_field: {"use_reentrant": False} if enabled else None}


@contextlib.contextmanager
def _without_trl_reference_work() -> Any:
    """Inside ``DPOTrainer.__init__``: no state-dict hash, no reference model loaded (see the module docstring)."""
    import trl.trainer.dpo_trainer as dpo_module

    saved = {name: getattr(dpo_module, name) for name in TRL_PATCHED_FUNCTIONS}
    dpo_module.hash_module = lambda module: "dpocheck: reference log-probs precomputed in the rows"
    dpo_module.create_model_from_path = lambda *args, **kwargs: None  # TRL guards every later use with `is not None`
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(dpo_module, name, fn)


def preference_config_kwargs(output_dir: str, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments :func:`preference_config` gives ``DPOConfig`` (every key a field DPOConfig declares)."""
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "bf16": False,
        "fp16": False,
        CHECKPOINTING_FIELD: False,  # TRL's DPOConfig defaults it on
        "remove_unused_columns": False,
        "precompute_ref_log_probs": True,
        "max_length": None,
        "logging_steps": 1,
        "report_to": "none",
        "dataloader_pin_memory": torch.cuda.is_available(),
        # without a GPU, `use_cpu` is what makes `accelerate launch --num_processes 2` a gloo DDP run
        "use_cpu": not torch.cuda.is_available(),
    }
    kwargs.update(overrides)
    return kwargs


def preference_config(output_dir: str, **overrides: Any) -> DPOConfig:
    """A ``DPOConfig`` for :class:`PreferenceTrainer`: fp32 (bf16/fp16 off), no gradient checkpointing, columns
    kept, reference log-probs precomputed, log every step, no external reporting, ``use_cpu`` when there is no GPU
    (several CPU processes under ``accelerate launch`` then form a gloo DDP group); ``overrides`` win. Every key is
    a field DPOConfig declares (tested)."""
    return DPOConfig(**preference_config_kwargs(output_dir, **overrides))


def trainable_model(model: Any) -> Any:
    """``model`` made trainable in place: parameters require grad, training mode, and a GGUF model loaded by
    ``dpocheck.llm.models.load_model`` (weights de-quantized to a float dtype on load) stripped of its GGUF
    quantizer, so ``Trainer`` accepts it and ``save_pretrained`` writes plain safetensors.

    Raises ValueError for any other quantization (its weights are not plain floats: train an adapter instead).
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        method = str(getattr(getattr(quantizer, "quantization_config", None), "quant_method", "")).lower()
        if "gguf" not in method or not all(p.dtype.is_floating_point for p in model.parameters()):
            raise ValueError(f"cannot train a model quantized with {method or type(quantizer).__name__}")
        quantizer.remove_quantization_config(model)  # transformers' own undo (quantizer, config, flags)
    model.requires_grad_(True)
    model.train()
    return model


class PreferenceTrainer(DPOTrainer):
    """DPOTrainer that trains registry loss ``loss_name`` on rows of :func:`~dpocheck.llm.train.build_training_rows`.

    ``train_dataset``: a list of rows or a ``datasets.Dataset`` of them. ``normalize``: the convention δ_θ is
    formed in (``sum`` or ``mean``; the rows' ``loss_*`` columns must have been built with the same one).
    ``record_pairs=True`` keeps every training batch's per-pair log-probs in :attr:`pair_records` (for checks).
    ``peft_config``: a PEFT adapter config (e.g. ``LoraConfig``) handed to TRL (module docstring).
    Logged per step: ``loss`` (float64, see the module docstring), ``<metric>/<normalize>`` for the metrics of
    :mod:`dpocheck.llm.train.metrics`, the mean ``logps/chosen/<normalize>``, ``logps/rejected/<normalize>``, and
    the Trainer's ``learning_rate``, ``grad_norm``, ``epoch``. β (``args.beta``), ``normalize`` and the loss
    parameters must be those the rows were built with (the rows do not record them).
    """

    _tag_names = ["trl", "dpo", "dpocheck"]
    _name = "dpocheck preference training"

    def __init__(
        self,
        model: Any,
        args: DPOConfig | None = None,
        train_dataset: Sequence[Mapping[str, Any]] | Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        loss_name: str = "dpo",
        normalize: str = "sum",
        data_collator: Any = None,
        callbacks: list[Any] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        record_pairs: bool = False,
        peft_config: Any = None,
    ):
        check_trl()
        if processing_class is None:
            raise ValueError("PreferenceTrainer needs the tokenizer (processing_class) the rows were encoded with")
        self.loss_spec, _ = resolve_loss(loss_name)
        self.loss_name = loss_name
        self.normalize = check_normalize(normalize)
        args = args if args is not None else preference_config("dpocheck-train")
        check_beta(args.beta)
        args.precompute_ref_log_probs = True  # the reference log-probs come with the rows
        if train_dataset is None:
            raise TrainingInputError(None, "train_dataset", "is required")
        train_dataset = self._as_checked_dataset(train_dataset, args.beta, "train_dataset")
        if eval_dataset is not None:
            eval_dataset = self._as_checked_dataset(eval_dataset, args.beta, "eval_dataset")
        if data_collator is None:
            data_collator = PackedPreferenceCollator(pad_token_id(processing_class))
        self.record_pairs = record_pairs
        self.pair_records: list[dict[str, Any]] = []
        from .adapters import quiet_peft_warnings

        with _without_trl_reference_work(), quiet_peft_warnings():
            super().__init__(
                model=model,
                ref_model=None,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                callbacks=callbacks,
                optimizers=optimizers,
                peft_config=peft_config,
            )
        dropout = float(getattr(peft_config, "lora_dropout", 0.0) or 0.0)
        if dropout > 0 and args.disable_dropout:
            from .adapters import restore_lora_dropout

            restore_lora_dropout(self.model, dropout)

    # ------------------------------------------------------------------------------------------ datasets
    def _as_checked_dataset(self, data: Any, beta: float, name: str) -> Any:
        """A ``datasets.Dataset`` with every schema column and loss inputs ``apply`` accepts."""
        ds = to_dataset(data) if isinstance(data, (list, tuple)) else data
        missing = [c for c in ROW_COLUMNS if c not in ds.column_names]
        if missing:
            raise TrainingInputError(None, missing[0], f"is missing from {name} (build it with build_training_rows)")
        first = ds[0]
        pre = {c[len(LOSS_PREFIX) :]: np.array([first[c]], dtype=np.float64) for c in loss_columns(ds)}
        try:
            self.loss_spec.apply(np.zeros(1), beta, policy_logp_w=np.zeros(1), **pre)
        except (KeyError, TypeError) as err:
            raise TrainingInputError(
                None, "loss_*", f"columns {sorted(pre)} of {name} do not fit loss {self.loss_name!r} ({err})"
            ) from None
        return ds

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        """Already tokenised by dpocheck (see module docstring): check the schema, change nothing."""
        missing = [c for c in ROW_COLUMNS if c not in dataset.column_names]
        if missing:
            raise TrainingInputError(None, missing[0], f"is missing from the {dataset_name} dataset")
        return dataset

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        """Reference log-probs are the rows' ``ref_*`` columns (dpocheck's packed scorer): nothing to run."""
        missing = [c for c in REF_COLUMNS if c not in dataset.column_names]
        if missing:
            raise TrainingInputError(None, missing[0], f"is missing from the {name} dataset")
        return dataset

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            extra = loss_columns(self.train_dataset) if self.train_dataset is not None else []
            self._signature_columns = [*ROW_COLUMNS, *extra]

    # ------------------------------------------------------------------------------------------------ loss
    def compute_loss(
        self, model: Any, inputs: Mapping[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """Mean over the batch of the registry loss at δ_θ (trained convention); logs the U metrics."""
        mode = "train" if self.model.training else "eval"
        logps = policy_logps(model, inputs)
        if not bool(logps["finite"].all()):
            bad = inputs["index"][~logps["finite"]].tolist()
            raise FloatingPointError(f"non-finite policy log-probabilities for record(s) {bad}")
        delta_theta = pair_margins(logps, self.normalize)
        pre = {k[len(LOSS_PREFIX) :]: v for k, v in inputs.items() if k.startswith(LOSS_PREFIX)}
        # the losses of the policy's chosen log-prob (dpop, dpo_nll) read it in the trained convention
        chosen = logps[f"chosen_logp_{self.normalize}"]
        per_pair = self.loss_spec.apply(delta_theta, self.beta, policy_logp_w=chosen, **pre).loss
        loss = per_pair.mean()
        self._store_metrics(mode, logps, inputs, delta_theta, per_pair)
        return (loss, logps) if return_outputs else loss

    def prediction_step(
        self, model: Any, inputs: Mapping[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[Any, None, None]:
        """Evaluation (``Trainer.evaluate`` on ``eval_dataset``): the loss only, metrics into TRL's eval store."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _store_metrics(
        self, mode: str, logps: Mapping[str, Any], inputs: Mapping[str, Any], delta_theta: Any, per_pair: Any
    ) -> None:
        conv = self.normalize
        ref = {f"chosen_logp_{conv}": inputs[f"ref_chosen_logp_{conv}"]}
        ref[f"rejected_logp_{conv}"] = inputs[f"ref_rejected_logp_{conv}"]
        lw, ll = logps[f"chosen_logp_{conv}"].detach(), logps[f"rejected_logp_{conv}"].detach()
        dref = pair_margins(ref, conv)
        gathered = self.accelerator.gather(
            (delta_theta.detach(), dref, inputs["delta_reward"], lw, ll, per_pair.detach())
        )
        d, dref, dr, lw, ll, losses = (t.cpu().numpy() for t in gathered)
        self._metrics[mode]["loss"].append(float(losses.mean()))  # float64; replaces the float32 "loss"
        for key, value in preference_metrics(d, dref, self.beta, dr, conv).items():
            self._metrics[mode][key].append(value)
        ref_wl = self.accelerator.gather((ref[f"chosen_logp_{conv}"], ref[f"rejected_logp_{conv}"]))  # PAPER §6
        for key, value in displacement_metrics(lw, ll, *(t.cpu().numpy() for t in ref_wl), conv).items():
            self._metrics[mode][key].append(value)
        self._metrics[mode][f"logps/chosen/{conv}"].append(float(lw.mean()))
        self._metrics[mode][f"logps/rejected/{conv}"].append(float(ll.mean()))
        if self.record_pairs and mode == "train":
            rec = {"step": self.state.global_step, "index": inputs["index"].tolist()}
            for key in ("chosen_logp_sum", "rejected_logp_sum", "chosen_logp_mean", "rejected_logp_mean"):
                rec[key] = logps[key].detach().cpu().tolist()
            for key in (*REF_COLUMNS, "delta_reward"):
                rec[key] = inputs[key].cpu().tolist()
            self.pair_records.append(rec)
