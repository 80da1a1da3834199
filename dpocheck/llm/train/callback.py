"""``UndesirableSpaceCallback``: the whole training set (and a held-out set) scored every K steps, U over the data.

Every ``eval_every`` optimizer steps (once before the first step, and once after the last) the current policy scores
every pair with
dpocheck's packed scorer (no grad, eval mode, the same kernel and batch plan as ``dpocheck score``), writes
``<out_dir>/eval/step-<N>.jsonl`` (held-out: ``heldout-step-<N>.jsonl``) atomically, one row per pair —
``index``, ``delta_theta`` and ``delta_ref`` (in ``convention``), ``in_u`` (C3), the policy's
``chosen_logp_sum`` … ``rejected_logp_mean``, token counts and truncation flags (the keys of a ``dpocheck score``
row), the reference's ``ref_*`` log-probs and ``delta_reward`` — and logs the set-level metrics of
:mod:`dpocheck.llm.train.metrics` as ``eval/<metric>/<convention>`` (``eval/heldout/…``) through the trainer's
own logging (``state.log_history``, TensorBoard, W&B). Only the main process scores and writes.

Usable from a user's own TRL script (a plain ``DPOTrainer`` with its own tokenisation and loss), with rows from
:func:`dpocheck.llm.train.build_training_rows`: ``examples/undesirable_space_callback.py`` is a complete, runnable
script (tested at toy size), linked from ``docs/training.md``. With a plain DPOTrainer the convention is TRL's,
summed log-probs: ``convention="sum"``, the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from dpocheck._io import write_jsonl_atomic
from dpocheck.llm.models import pad_token_id as tokenizer_pad_id
from dpocheck.llm.scoring.encode import plan_batches
from dpocheck.llm.scoring.kernels import score_batch
from dpocheck.theory import in_undesirable_space

from .dataset import check_beta, check_normalize, encoded_from_row
from .metrics import preference_metrics


def score_rows(
    model: Any, rows: Sequence[Mapping[str, Any]], pad_token_id: int, convention: str = "sum", batch_tokens: int = 4096
) -> list[dict[str, Any]]:
    """Score training rows with ``model`` (packed, no grad, eval mode; training mode restored): one dict per row,
    in the order of ``rows``, with the keys of the module docstring."""
    import torch

    convention = check_normalize(convention)
    encoded = [encoded_from_row(r) for r in rows]
    out: list[dict[str, Any] | None] = [None] * len(rows)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in plan_batches(encoded, batch_tokens, "packed"):
                scores = score_batch(model, [encoded[i] for i in batch], pad_token_id, "packed")
                for k, i in enumerate(batch):
                    out[i] = _eval_row(rows[i], scores[2 * k], scores[2 * k + 1], convention)
    finally:
        model.train(was_training)
    return [r for r in out if r is not None]


def _eval_row(row: Mapping[str, Any], chosen: Any, rejected: Any, convention: str) -> dict[str, Any]:
    pol = {
        "chosen_logp_sum": chosen.logp_sum,
        "rejected_logp_sum": rejected.logp_sum,
        "chosen_logp_mean": chosen.logp_mean,
        "rejected_logp_mean": rejected.logp_mean,
    }
    d = pol[f"chosen_logp_{convention}"] - pol[f"rejected_logp_{convention}"]
    dref = row[f"ref_chosen_logp_{convention}"] - row[f"ref_rejected_logp_{convention}"]
    finite = chosen.finite and rejected.finite
    return {
        "index": int(row["index"]),
        "convention": convention,
        "delta_theta": d,
        "delta_ref": dref,
        "in_u": bool(in_undesirable_space(d, dref)) if finite else None,
        **pol,
        "chosen_tokens": chosen.tokens,
        "rejected_tokens": rejected.tokens,
        **{k: bool(row[k]) for k in ("chosen_truncated", "rejected_truncated") if k in row},
        **{k: row[k] for k in ("ref_chosen_logp_sum", "ref_rejected_logp_sum")},
        **{k: row[k] for k in ("ref_chosen_logp_mean", "ref_rejected_logp_mean")},
        "delta_reward": row.get("delta_reward"),
    }


def eval_metrics(eval_rows: Sequence[Mapping[str, Any]], beta: float, convention: str) -> dict[str, float]:
    """Set-level metrics (:func:`~dpocheck.llm.train.metrics.preference_metrics`) of scored rows."""
    dr = [r["delta_reward"] if r["delta_reward"] is not None else float("nan") for r in eval_rows]
    return preference_metrics(
        [r["delta_theta"] for r in eval_rows], [r["delta_ref"] for r in eval_rows], beta, dr, convention
    )


class UndesirableSpaceCallback(TrainerCallback):
    """Score the whole training set (and ``heldout_rows``) every ``eval_every`` steps; see the module docstring.

    ``trainer``: the (TRL) trainer whose logging receives the ``eval/*`` metrics. ``beta`` defaults to
    ``trainer.args.beta``, ``convention`` to ``trainer.normalize`` (a :class:`PreferenceTrainer`) or ``sum``,
    ``pad_token_id`` to the trainer's tokenizer's. ``at_start``: also score before the first step (step 0);
    ``final``: also score the policy at the end of training when the last step is not a multiple of ``eval_every``.
    """

    def __init__(
        self,
        trainer: Any,
        rows: Sequence[Mapping[str, Any]],
        eval_every: int,
        out_dir: str | Path,
        heldout_rows: Sequence[Mapping[str, Any]] | None = None,
        *,
        beta: float | None = None,
        convention: str | None = None,
        pad_token_id: int | None = None,
        batch_tokens: int = 4096,
        at_start: bool = True,
        final: bool = True,
    ):
        if not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"eval_every must be an integer >= 1, got {eval_every!r}")
        self.trainer = trainer
        self.rows = list(rows)
        self.heldout_rows = list(heldout_rows) if heldout_rows is not None else None
        self.eval_every = eval_every
        self.out_dir = Path(out_dir)
        self.beta = check_beta(beta if beta is not None else trainer.args.beta)
        self.convention = check_normalize(convention or getattr(trainer, "normalize", "sum"))
        if pad_token_id is None:
            tok = getattr(trainer, "processing_class", None)
            tok = getattr(tok, "tokenizer", tok)
            pad_token_id = tokenizer_pad_id(tok)
        self.pad_token_id = int(pad_token_id)
        self.batch_tokens = batch_tokens
        self.at_start = at_start
        self.final = final
        self.last_step: int | None = None  # the last step scored

    def evaluate(self, model: Any, step: int) -> dict[str, float]:
        """Score, write the eval files of ``step`` and return the metrics (also callable by hand)."""
        logs: dict[str, float] = {}
        sets = [("step", "eval/", self.rows)]
        if self.heldout_rows:
            sets.append(("heldout-step", "eval/heldout/", self.heldout_rows))
        for stem, prefix, rows in sets:
            scored = score_rows(model, rows, self.pad_token_id, self.convention, self.batch_tokens)
            write_jsonl_atomic(self.out_dir / "eval" / f"{stem}-{step}.jsonl", scored)
            logs.update({prefix + k: v for k, v in eval_metrics(scored, self.beta, self.convention).items()})
        self.last_step = step
        return logs

    def log_evaluation(self, model: Any, step: int) -> dict[str, float]:
        """:meth:`evaluate` at ``step`` on the main process, then the metrics through the trainer's public ``log``.

        ``log`` runs with the model in eval mode: TRL's trainers then merge their (empty) evaluation metric store,
        not the training window of the step being trained, so the step's own training row is left whole.
        """
        model = model if model is not None else self.trainer.model
        logs = self.evaluate(model, step) if self._is_main() else {}
        target = self.trainer.model
        was_training = target.training
        target.eval()
        try:
            self.trainer.log(dict(logs))
        finally:
            target.train(was_training)
        return logs

    def _is_main(self) -> bool:
        return bool(self.trainer.is_world_process_zero())

    def _due(self, step: int) -> bool:
        return step % self.eval_every == 0 and step != self.last_step

    # Scoring at step N runs when step N is over: at the next step's start (the trainer has logged and
    # checkpointed step N by then, so the flags it sets for that step are untouched), or at the end of training.
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        step = state.global_step
        if step == 0:
            if self.at_start:
                self.log_evaluation(model, step)
        elif self._due(step) and not (self.out_dir / "eval" / f"step-{step}.jsonl").is_file():
            self.log_evaluation(model, step)  # a resumed run killed between its checkpoint and this step's scoring
        else:
            self.last_step = step  # scored by the run this one resumes

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step > 0 and self._due(state.global_step):
            self.log_evaluation(model, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        step = state.global_step
        if self._due(step) or (self.final and step != self.last_step):
            self.log_evaluation(model, step)
