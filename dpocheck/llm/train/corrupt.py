"""Misaligned references for E2 (PAPER §5, our reading): a short SFT on the *rejected* responses of a share R.

The paper makes its references "misaligned with corruption ratio R" without saying how. Our reading: choose a
seeded random share R of the training pairs (``round(R·N)`` of them), fine-tune the model for a few steps with
TRL's ``SFTTrainer`` on those pairs' rejected responses (prompt tokens masked out: completion-only loss, fp32),
and on nothing else — the chosen responses and the other pairs are never trained on. That raises π(y_l) on the
chosen pairs, so R controls how many pairs end with δ_ref < 0, i.e. with a non-empty U (C3). The result is the
reference of the preference run and its starting policy.

The SFT uses dpocheck's own tokenisation (``encode_pair``: the tokens fed to the SFT are exactly the prompt and
rejected-response tokens the scorer scores), passed to ``SFTTrainer`` pre-tokenised with a ``completion_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


def choose_corrupted(n_pairs: int, share: float, seed: int) -> list[int]:
    """Positions (sorted) of the ``round(share·n_pairs)`` pairs whose rejected response is trained on; seeded."""
    import numpy as np

    if not 0.0 <= share <= 1.0:
        raise ValueError(f"corrupt_reference: the share R must lie in [0, 1], got {share!r}")
    k = int(round(share * n_pairs))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_pairs, size=k, replace=False))


def sft_rows(encoded: list[Any], positions: list[int]) -> dict[str, list[list[int]]]:
    """Pre-tokenised SFT columns: ``input_ids`` = prompt + rejected response, ``completion_mask`` 1 on the response.

    ``encoded`` are :class:`~dpocheck.llm.scoring.encode.EncodedPair` (after truncation), so the masked tokens are the
    scored rejected-response tokens exactly.
    """
    ids, masks = [], []
    for i in positions:
        e = encoded[i]
        seq = list(e.rejected_ids)
        ids.append(seq)
        masks.append([0] * e.rejected_start + [1] * (len(seq) - e.rejected_start))
    return {"input_ids": ids, "completion_mask": masks}


@dataclass
class CorruptionRecord:
    """What the corruption did: which pairs, the SFT, and the share with δ_ref < 0 before and after (C3)."""

    share: float
    n_pairs: int
    corrupted_indices: list[int]
    steps: int
    learning_rate: float
    sft_losses: list[float]
    share_delta_ref_negative_before: dict[str, float]
    share_delta_ref_negative_after: dict[str, float] | None = None
    model_dir: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record for the manifest."""
        return {
            "reading": "SFT on the rejected response of a seeded random share R of the training pairs, on nothing "
            "else (PAPER §5); the result is reference and starting policy",
            "share_R": self.share,
            "n_pairs": self.n_pairs,
            "n_corrupted": len(self.corrupted_indices),
            "corrupted_indices": self.corrupted_indices,
            "sft_steps": self.steps,
            "sft_learning_rate": self.learning_rate,
            "sft_losses": self.sft_losses,
            "share_delta_ref_negative_before": self.share_delta_ref_negative_before,
            "share_delta_ref_negative_after": self.share_delta_ref_negative_after,
            "model_dir": self.model_dir,
        }


def run_sft(
    model: Any,
    tokenizer: Any,
    columns: dict[str, list[list[int]]],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    work_dir: Path,
    use_cpu: bool,
    progress: bool,
) -> list[float]:
    """Train ``model`` in place with TRL's SFTTrainer (completion-only loss, fp32); returns the logged losses."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(
        output_dir=str(work_dir),
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type="constant",
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,  # TRL defaults (gradient) checkpointing on
        completion_only_loss=True,
        max_length=None,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=use_cpu,
        disable_tqdm=not progress,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_dict(columns), processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # stdout carries the command's one JSON line
    trainer.train()
    model.eval()
    return [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]


def corrupt_reference(
    model: Any,
    tokenizer: Any,
    pairs: list[Any],
    settings: Any,
    sset: Any,
    use_tpl: bool,
    out: Path,
    main: bool,
    state: Any,
) -> tuple[Any, dict[str, Any]]:
    """The ``--corrupt-reference R`` step of ``dpocheck train`` (module docstring): SFT on the rejected responses of
    the chosen share, the model saved to ``OUT/corrupted_reference``; reused from there on resume.

    ``settings`` is the run's :class:`~dpocheck.llm.train.settings.TrainSettings`, ``sset`` the ScoreSettings of
    its scoring passes. Returns the corrupted model (trainable) and the :class:`CorruptionRecord` as a dict.
    """
    from dpocheck.llm.manifest import read_manifest, write_manifest
    from dpocheck.llm.models import load_model
    from dpocheck.llm.scoring.encode import encode_pairs
    from dpocheck.llm.scoring.runner import score_pairs
    from dpocheck.llm.scoring.settings import LOGP_CONVENTIONS

    from .metrics import share_negative
    from .trainer import trainable_model

    folder = out / "corrupted_reference"
    done = folder / "corruption.json"
    if done.is_file():  # resumed run: the SFT already happened
        record = read_manifest(done)
        loaded = load_model(folder, dtype="fp32", device="cpu", trust_remote_code=settings.trust_remote_code)
        return trainable_model(loaded.model), record
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
            use_cpu=state.device.type == "cpu",
            progress=settings.progress,
        )
    record = CorruptionRecord(
        share=float(settings.corrupt_reference),
        n_pairs=len(enc.encoded),
        corrupted_indices=[enc.encoded[i].index for i in positions],
        steps=settings.corrupt_steps if positions else 0,
        learning_rate=settings.corrupt_lr,
        sft_losses=losses,
        share_delta_ref_negative_before={c: share_negative(before_rows, c) for c in LOGP_CONVENTIONS},
        model_dir=str(folder),
    ).as_dict()
    model = trainable_model(model)
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))
        write_manifest(done, record)
    state.wait_for_everyone()
    return model, record
