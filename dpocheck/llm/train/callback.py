"""``UndesirableSpaceCallback``: the whole training set (and a held-out set) scored every K steps, U over the data.

Every ``eval_every`` optimizer steps (and once before the first step) the current policy scores every pair with
dpocheck's packed scorer (no grad, eval mode, the same kernel and batch plan as ``dpocheck score``), writes
``<out_dir>/eval/step-<N>.jsonl`` (held-out: ``heldout-step-<N>.jsonl``) atomically, one row per pair —
``index``, ``delta_theta`` and ``delta_ref`` (in ``convention``), ``in_u`` (C3), the policy's
``chosen_logp_sum`` … ``rejected_logp_mean`` and token counts (the keys of a ``dpocheck score`` row), the
reference's ``ref_*`` log-probs and ``delta_reward`` — and logs the set-level metrics of
:mod:`dpocheck.llm.train.metrics` as ``eval/<metric>/<convention>`` (``eval/heldout/…``) through the trainer's
own logging (``state.log_history``, TensorBoard, W&B). Only the main process scores and writes.

Usable from a user's own TRL script, with rows from :func:`dpocheck.llm.train.build_training_rows`::

    from trl import DPOConfig, DPOTrainer
    from dpocheck.llm.encode import encode_pair
    from dpocheck.llm.runner import read_jsonl
    from dpocheck.llm.train import UndesirableSpaceCallback, build_training_rows

    ref = read_jsonl("ref/scores.jsonl")  # dpocheck score --model path/to/model --data pairs.jsonl --out ref
    encoded = [encode_pair(tokenizer, p, use_chat_template=True) for p in pairs]  # pairs: load_pairs(...).pairs
    rows = build_training_rows(encoded, ref, "dpo", beta=0.1)  # dpocheck's view of the data
    args = DPOConfig("out", beta=0.1, bf16=False, max_steps=200)
    trainer = DPOTrainer("path/to/model", args=args, train_dataset=my_text_dataset)  # the user's own setup
    trainer.add_callback(UndesirableSpaceCallback(trainer, rows, eval_every=50, out_dir="out"))
    trainer.train()  # out/eval/step-0.jsonl, step-50.jsonl, …; log_history gains eval/share_in_u/sum, …

(with a plain DPOTrainer the convention is TRL's, summed log-probs: ``convention="sum"``, the default).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from dpocheck._io import write_text_atomic
from dpocheck.llm.encode import plan_batches
from dpocheck.llm.kernels import score_batch
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
    ``pad_token_id`` to the trainer's tokenizer's. ``at_start``: also score before the first step (step 0).
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
            pad_token_id = next((c for c in (tok.pad_token_id, tok.eos_token_id) if c is not None), 0)
        self.pad_token_id = int(pad_token_id)
        self.batch_tokens = batch_tokens
        self.at_start = at_start

    def evaluate(self, model: Any, step: int) -> dict[str, float]:
        """Score, write the eval files of ``step`` and return the logged metrics (also callable by hand)."""
        logs: dict[str, float] = {}
        sets = [("step", "eval/", self.rows)]
        if self.heldout_rows:
            sets.append(("heldout-step", "eval/heldout/", self.heldout_rows))
        for stem, prefix, rows in sets:
            scored = score_rows(model, rows, self.pad_token_id, self.convention, self.batch_tokens)
            text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in scored)
            write_text_atomic(self.out_dir / "eval" / f"{stem}-{step}.jsonl", text)
            logs.update({prefix + k: v for k, v in eval_metrics(scored, self.beta, self.convention).items()})
        return logs

    def _run(self, state: Any, control: Any, model: Any) -> None:
        if not state.is_world_process_zero:
            return
        logs = self.evaluate(model if model is not None else self.trainer.model, state.global_step)
        # Trainer.log itself, not TRL's override: that one would flush TRL's half-filled training-metric window.
        # Its on_log event clears control.should_log, which would drop this step's training log on this process
        # only (and, under DDP, leave the other ranks waiting in the loss gather): keep the flag as it was.
        should_log = control.should_log
        Trainer.log(self.trainer, logs)
        control.should_log = should_log

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.at_start and state.global_step == 0:
            self._run(state, control, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step % self.eval_every == 0:
            self._run(state, control, model)
