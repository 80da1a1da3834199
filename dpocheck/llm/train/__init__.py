"""Preference training on TRL ≥ 1.16 with any loss of the registry, U watched during training (C3, C4, C8, C10).

Optional extra ``train`` (trl, datasets); TRL is imported only when a name that needs it is used.

Public API (stable; the ``dpocheck train`` command builds on it):

``build_training_rows(pairs_encoded, reference_rows, loss_name, beta, loss_params=None, normalize="sum")``
    (:mod:`.dataset`) EncodedPairs + ``dpocheck score`` rows → training rows (schema in :mod:`.dataset`:
    ``index``, ``prompt_ids``, ``chosen_ids``, ``rejected_ids``, ``ref_{chosen,rejected}_logp_{sum,mean}``,
    ``n_chosen``, ``n_rejected``, ``delta_reward``, ``loss_*``). Bad input → :class:`TrainingInputError`
    (an input error naming record and field: exit 2 in the CLI). Also ``to_dataset(rows)``,
    ``encoded_from_row(row)``, ``check_beta``, ``check_normalize``, ``resolve_loss``, ``NORMALIZE_CHOICES``.
``PackedPreferenceCollator(pad_token_id)``
    (:mod:`.collator`) rows → packed batch (prompt | chosen | rejected per row, block mask, restarted positions).
``policy_logps(model, batch) -> dict``
    (:mod:`.forward`) per-pair summed/mean log-probs of both responses, with gradients.
``PreferenceTrainer(model, args, train_dataset, eval_dataset=None, processing_class=tok, *, loss_name, normalize,
record_pairs=False)`` and ``preference_config(output_dir, **overrides) -> DPOConfig``
    (:mod:`.trainer`) the DPOTrainer subclass; β = ``args.beta``. Logs ``<metric>/<normalize>`` each step.
``preference_metrics(delta_theta, delta_ref, beta, delta_reward=None, convention="sum") -> dict``
    (:mod:`.metrics`) share_in_u, ranking_accuracy, implicit_reward_accuracy, grad_weight_in_u/outside_u,
    share_rlhf_side.
``displacement_metrics(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, convention="sum") -> dict``
    (:mod:`.metrics`) likelihood displacement (PAPER §6): chosen/rejected log-prob shifts, share_displaced,
    share_both_fell, share_displaced_ranked_correct.
``run_health(run_dir)``, ``step_rows(run_dir)``, ``transitions(run_dir)``
    (:mod:`.trajectories`) from a run's eval files alone: the health verdict recorded in its manifest, the per-step
    table of U and displacement, the per-pair transitions in and out of U and of displacement.
``UndesirableSpaceCallback(trainer, rows, eval_every, out_dir, heldout_rows=None, ...)``, ``score_rows(model, rows,
pad_token_id, convention)``
    (:mod:`.callback`) whole-set scoring every K steps → ``eval/step-<N>.jsonl`` and ``eval/*`` logs.

``trainable_model(model)``
    (:mod:`.trainer`) ``dpocheck.llm.models`` loaders return frozen eval-mode models (and GGUF ones carry a GGUF
    quantizer that ``Trainer`` refuses): this makes one trainable in place.

Scale (used by the command; docs/scale.md): :mod:`.precision` (``--dtype``: bf16 runs one pair per forward so step 0
stays exact; ``TrainingPrecision``), :mod:`.adapters` (LoRA / QLoRA through PEFT, the merged ``final/``),
:mod:`.sharding` (the U callback's per-rank share of the scoring, gathered in order).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NORMALIZE_CHOICES": "dataset",
    "ROW_COLUMNS": "dataset",
    "TrainingInputError": "dataset",
    "build_training_rows": "dataset",
    "check_beta": "dataset",
    "check_normalize": "dataset",
    "encoded_from_row": "dataset",
    "resolve_loss": "dataset",
    "to_dataset": "dataset",
    "PackedPreferenceCollator": "collator",
    "policy_logps": "forward",
    "PreferenceTrainer": "trainer",
    "preference_config": "trainer",
    "trainable_model": "trainer",
    "preference_metrics": "metrics",
    "displacement_metrics": "metrics",
    "run_health": "trajectories",
    "step_rows": "trajectories",
    "transitions": "trajectories",
    "UndesirableSpaceCallback": "callback",
    "score_rows": "callback",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
