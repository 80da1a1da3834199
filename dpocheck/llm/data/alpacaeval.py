"""AlpacaEval annotations: two outputs and the judge's preference, oriented so y_w is the preferred output.

q = ``preference`` − 1 is the judge's probability that ``output_2`` is better; Δr* = logit(q_w), clipped (C2).
"""

from __future__ import annotations

from typing import Any

from .fields import ReaderOptions, RecordError, check_distinct, finite_number, logit_clipped, text_field
from .types import ChatMessages, PreferencePair


def parse_alpacaeval(rec: dict[str, Any], rn: int, opts: ReaderOptions) -> PreferencePair:
    instruction = text_field(rec, "instruction", rn, response=False)
    out1 = text_field(rec, "output_1", rn)
    out2 = text_field(rec, "output_2", rn)
    pref = finite_number(rec, "preference", rn)
    if not 1.0 <= pref <= 2.0:
        raise RecordError(rn, "preference", f"must be in [1, 2], got {pref!r}", "out_of_range")
    check_distinct(out1, out2, rn, ("output_1", "output_2"))
    q = pref - 1.0  # judge's probability that output_2 is better
    if q == 0.5:
        raise RecordError(rn, "preference", "is an exact tie (1.5): no preferred output", "tie")
    second = q > 0.5
    q_w = q if second else 1.0 - q
    chosen, rejected = (out2, out1) if second else (out1, out2)
    g1, g2 = rec.get("generator_1"), rec.get("generator_2")
    meta = {
        "chosen_field": "output_2" if second else "output_1",
        "generator_chosen": g2 if second else g1,
        "generator_rejected": g1 if second else g2,
        "q_output_2": q,
        "q_clipped": not (opts.q_clip <= q_w <= 1.0 - opts.q_clip),
    }
    if isinstance(rec.get("annotator"), str):
        meta["annotator"] = rec["annotator"]
    dr, src = None, None
    if opts.delta_reward_source in ("auto", "soft_preference"):
        dr, src = logit_clipped(q_w, opts.q_clip), "soft_preference_logit"
    prompt_out: str | ChatMessages = instruction
    if opts.prompt_style == "chat":
        prompt_out = [{"role": "user", "content": instruction}]
    subset = rec.get("dataset") if isinstance(rec.get("dataset"), str) else None
    return PreferencePair(rn, prompt_out, chosen, rejected, dr, src, q_w, subset, meta)
