"""Batches of training rows in the packed scorer's layout: one row ``prompt | chosen | rejected`` per pair.

The layout, the restarted positions and the 4-D additive block mask come from the packed scorer itself
(:func:`dpocheck.llm.scoring.kernels.pack_pairs`, :func:`~dpocheck.llm.scoring.kernels.packed_attention_mask`), so
the policy forward during training sees every token in exactly the context the reference scorer gave it and, at step 0,
reproduces the reference log-probs. Per-pair columns travel as tensors beside the model inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dpocheck.llm.scoring.kernels import pack_pairs, packed_attention_mask

from .dataset import LOSS_PREFIX, REF_COLUMNS, encoded_from_row

# keys of a collated batch that are model inputs or layout (the rest are per-pair columns)
LAYOUT_KEYS = ("input_ids", "attention_mask", "position_ids", "segment_ids", "score_mask", "score_which")


@dataclass
class PackedPreferenceCollator:
    """Collate training rows into a packed batch (a ``data_collator`` for :class:`~transformers.Trainer`).

    Returns ``input_ids``, ``position_ids``, ``segment_ids`` (0 prompt, 1 chosen, 2 rejected, −1 pad),
    ``attention_mask`` (4-D additive [B, 1, L, L] in ``mask_dtype``), ``score_mask`` (positions whose logits
    score the next token) and ``score_which`` (0 chosen, 1 rejected) — all [B, L] but the mask — plus per pair:
    ``index`` and ``n_chosen``/``n_rejected`` (int64), the ``ref_*`` log-probs, ``delta_reward`` (NaN where
    unknown) and every ``loss_*`` column (float64). Rows are padded to a multiple of ``pad_multiple``: the
    scorer's :func:`~dpocheck.llm.scoring.kernels.default_pad_multiple` on the training device, so a low-precision
    run's training forward has the shape of its reference and eval forwards.
    """

    pad_token_id: int
    mask_dtype: Any = None  # torch dtype of the additive mask; None: float32
    pad_multiple: int = 1  # row-length multiple (the scorer's on the training device: 64 on CUDA, 1 on the CPU)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        if not examples:
            raise ValueError("cannot collate an empty batch")
        encoded = [encoded_from_row(ex) for ex in examples]
        ids, seg, pos, keep, which = pack_pairs(encoded, self.pad_token_id, self.pad_multiple)
        dtype = self.mask_dtype or torch.float32
        batch: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": packed_attention_mask(seg, dtype),
            "position_ids": pos,
            "segment_ids": seg,
            "score_mask": keep,
            "score_which": which,
            "index": torch.tensor([int(ex["index"]) for ex in examples], dtype=torch.long),
            "n_chosen": torch.tensor([int(ex["n_chosen"]) for ex in examples], dtype=torch.long),
            "n_rejected": torch.tensor([int(ex["n_rejected"]) for ex in examples], dtype=torch.long),
        }
        floats = [*REF_COLUMNS, *(k for k in examples[0] if k.startswith(LOSS_PREFIX))]
        for col in floats:
            batch[col] = torch.tensor([float(ex[col]) for ex in examples], dtype=torch.float64)
        dr = [ex.get("delta_reward") for ex in examples]
        batch["delta_reward"] = torch.tensor([math.nan if v is None else float(v) for v in dr], dtype=torch.float64)
        return batch
