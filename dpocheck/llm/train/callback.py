"""``UndesirableSpaceCallback``: the whole training set (and a held-out set) scored every K steps, U over the data.

Every ``eval_every`` optimizer steps (once before the first step, and once after the last) the current policy scores
every pair with
dpocheck's packed scorer (no grad, eval mode, the same kernel and batch plan as ``dpocheck score``), writes
``<out_dir>/eval/step-<N>.jsonl`` (held-out: ``heldout-step-<N>.jsonl``) atomically, one row per pair —
``index``, ``delta_theta`` and ``delta_ref`` (in ``convention``), ``in_u`` (C3), the policy's
``chosen_logp_sum`` … ``rejected_logp_mean``, token counts and truncation flags (the keys of a ``dpocheck score``
row), the reference's ``ref_*`` log-probs and ``delta_reward``, then the likelihood-displacement marks of the pair
(PAPER §6, Razin et al. 2024: ``chosen_logp_shift_sum`` … ``rejected_logp_shift_mean``, ``displaced``, ``both_fell``
and ``degenerate``, :func:`dpocheck.llm.analysis.displacement.eval_row_marks`) — and logs the set-level metrics of
:mod:`dpocheck.llm.train.metrics` as ``eval/<metric>/<convention>`` (``eval/heldout/…``) through the trainer's
own logging (``state.log_history``, TensorBoard, W&B). In a multi-process run (DDP, FSDP, ZeRO-3) every rank scores
its share of the pairs and the rows are gathered (:mod:`.sharding`: the rows of a one-process run, in its order);
only the main process writes. Each row also says the precision of the weights that scored it (``dtype``).

Usable from a user's own TRL script (a plain ``DPOTrainer`` with its own tokenisation and loss), with rows from
:func:`dpocheck.llm.train.build_training_rows`: ``examples/undesirable_space_callback.py`` is a complete, runnable
script (tested at toy size), linked from ``docs/training.md``. With a plain DPOTrainer the convention is TRL's,
summed log-probs: ``convention="sum"``, the default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from dpocheck._io import write_jsonl_atomic
from dpocheck.llm.analysis.displacement import eval_row_marks
from dpocheck.llm.models import pad_token_id as tokenizer_pad_id
from dpocheck.llm.scoring.encode import plan_batches
from dpocheck.llm.scoring.kernels import score_batch
from dpocheck.llm.scoring.settings import LOGP_CONVENTIONS
from dpocheck.theory import in_undesirable_space

from .dataset import check_beta, check_normalize, encoded_from_row
from .guards import diverged
from .metrics import displacement_metrics, preference_metrics


def score_rows(
    model: Any,
    rows: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    convention: str = "sum",
    batch_tokens: int = 4096,
    *,
    distributed: bool = False,
) -> list[dict[str, Any]]:
    """Score training rows with ``model`` (packed, no grad, eval mode; training mode restored): one dict per row,
    in the order of ``rows``, with the keys of the module docstring and ``dtype`` (the weights' precision).

    ``distributed=True`` is collective (every rank of the torch.distributed group calls it): each rank scores its
    share of the planned batches and every rank gets all the rows (:mod:`.sharding`). ``batch_tokens=1``: one
    pair per forward (the layout of a bf16 run, :mod:`.precision`).
    """
    import torch

    from dpocheck.llm.scoring.distributed import dist_info

    from .sharding import batch_share, gather_in_order

    convention = check_normalize(convention)
    encoded = [encoded_from_row(r) for r in rows]
    batches = plan_batches(encoded, batch_tokens, "packed") if encoded else []
    rank, world = dist_info() if distributed else (0, 1)
    dtype = _dtype_name(model)
    local: list[tuple[int, dict[str, Any]]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in batch_share(len(batches), rank, world):
                batch = batches[0 if b is None else b]  # None: a repeat that keeps the ranks' forwards in step
                scores = score_batch(model, [encoded[i] for i in batch], pad_token_id, "packed")
                if b is not None:
                    for k, i in enumerate(batch):
                        row = _eval_row(rows[i], scores[2 * k], scores[2 * k + 1], convention)
                        local.append((i, {**row, "dtype": dtype}))
    finally:
        model.train(was_training)
    scored = gather_in_order(local, len(rows), world)
    for row, marks in zip(scored, eval_row_marks(scored, convention), strict=True):
        row.update(marks)
    return scored


def _dtype_name(model: Any) -> str:
    """``bf16``/``fp32``/``fp16`` (else torch's name) of the weights the kernels compute with."""
    import torch

    dtype = next(model.parameters()).dtype
    return {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}.get(dtype, str(dtype))


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
    """Set-level metrics (:func:`~dpocheck.llm.train.metrics.preference_metrics` in ``convention``, and
    :func:`~dpocheck.llm.train.metrics.displacement_metrics` in both conventions) of scored rows."""
    dr = [r["delta_reward"] if r["delta_reward"] is not None else float("nan") for r in eval_rows]
    out = preference_metrics(
        [r["delta_theta"] for r in eval_rows], [r["delta_ref"] for r in eval_rows], beta, dr, convention
    )
    for c in LOGP_CONVENTIONS:  # likelihood displacement (PAPER §6), per token in the mean convention
        logps = [
            [_nan(r[f"{p}{side}_logp_{c}"]) for r in eval_rows] for p in ("", "ref_") for side in ("chosen", "rejected")
        ]
        out.update(displacement_metrics(*logps, c))
    return out


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


class UndesirableSpaceCallback(TrainerCallback):
    """Score the whole training set (and ``heldout_rows``) every ``eval_every`` steps; see the module docstring.

    ``trainer``: the (TRL) trainer whose logging receives the ``eval/*`` metrics. ``beta`` defaults to
    ``trainer.args.beta``, ``convention`` to ``trainer.normalize`` (a :class:`PreferenceTrainer`) or ``sum``,
    ``pad_token_id`` to the trainer's tokenizer's. ``at_start``: also score before the first step (step 0);
    ``final``: also score the policy at the end of training when the last step is not a multiple of ``eval_every``.
    ``distributed`` (default: the trainer runs several processes): every rank scores its share of the pairs and the
    main process writes the gathered rows, the rows of a one-process run in the same order (:mod:`.sharding`);
    ``batch_tokens=1`` scores one pair per forward (a bf16 run's layout).
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
        distributed: bool | None = None,
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
        if distributed is None:
            accelerator = getattr(trainer, "accelerator", None)
            distributed = getattr(accelerator, "num_processes", 1) > 1
        self.distributed = bool(distributed)

    def evaluate(self, model: Any, step: int) -> dict[str, float]:
        """Score, write the eval files of ``step`` (main process) and return the metrics (also callable by hand).

        In a multi-process run every rank must call it: each scores its share of the pairs (:mod:`.sharding`).
        """
        logs: dict[str, float] = {}
        sets = [("step", "eval/", self.rows)]
        if self.heldout_rows:
            sets.append(("heldout-step", "eval/heldout/", self.heldout_rows))
        for stem, prefix, rows in sets:
            scored = score_rows(
                model, rows, self.pad_token_id, self.convention, self.batch_tokens, distributed=self.distributed
            )
            self._check_finite(scored, step)
            if self._is_main():
                write_jsonl_atomic(self.out_dir / "eval" / f"{stem}-{step}.jsonl", scored)
            logs.update({prefix + k: v for k, v in eval_metrics(scored, self.beta, self.convention).items()})
        self.last_step = step
        return logs

    def _check_finite(self, scored: Sequence[Mapping[str, Any]], step: int) -> None:
        """Stop the run (:func:`~.guards.diverged`) when the policy's log-probs of a pair are not finite: the
        weights have diverged, and an eval file of such rows would be meaningless (and not strict JSON)."""
        for row in scored:
            for key, value in sorted(row.items(), key=lambda kv: "logp" not in kv[0]):  # log-probs first
                if isinstance(value, float) and not math.isfinite(value):
                    lr = getattr(getattr(self.trainer, "args", None), "learning_rate", math.nan)
                    raise diverged(step, f"the policy's {key} of pair {row.get('index')} is {value}", lr)

    def log_evaluation(self, model: Any, step: int) -> dict[str, float]:
        """:meth:`evaluate` at ``step`` (every rank scores its share; the main process writes), then the metrics
        through the trainer's public ``log``.

        ``log`` runs with the model in eval mode: TRL's trainers then merge their (empty) evaluation metric store,
        not the training window of the step being trained, so the step's own training row is left whole.
        """
        model = model if model is not None else self.trainer.model
        logs = self.evaluate(model, step) if self.distributed or self._is_main() else {}
        logs = logs if self._is_main() else {}
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
