"""TRL-style records: ``prompt``/``chosen``/``rejected`` as text or as chat-message conversations.

A record without ``prompt`` whose ``chosen`` is an HH-RLHF transcript is read as one (:mod:`.hh`); conversational
records (any field a message list) must share every message before the final assistant message.
"""

from __future__ import annotations

from typing import Any

from .fields import (
    ReaderOptions,
    RecordError,
    check_distinct,
    delta_reward_of,
    get_field,
    messages_field,
    meta_of,
    subset_of,
    text_field,
)
from .hh import HH_ASSISTANT, parse_hh
from .types import ChatMessages, PreferencePair


def parse_trl(rec: dict[str, Any], rn: int, opts: ReaderOptions) -> PreferencePair:
    chosen_v = get_field(rec, "chosen", rn)
    rejected_v = get_field(rec, "rejected", rn)
    prompt_v = rec.get("prompt")
    conversational = any(isinstance(v, list) for v in (prompt_v, chosen_v, rejected_v))
    if not conversational:
        if prompt_v is None:
            if isinstance(chosen_v, str) and HH_ASSISTANT in chosen_v:
                return parse_hh(rec, rn, opts)
            raise RecordError(rn, "prompt", "is missing (and 'chosen' is not an HH-RLHF transcript)", "missing_field")
        prompt = text_field(rec, "prompt", rn, response=False)
        chosen = text_field(rec, "chosen", rn)
        rejected = text_field(rec, "rejected", rn)
        check_distinct(chosen, rejected, rn, ("chosen", "rejected"))
        prompt_out: str | ChatMessages = prompt
        if opts.prompt_style == "chat":
            prompt_out = [{"role": "user", "content": prompt}]
    else:
        if prompt_v is None:
            prompt_msgs: ChatMessages = []
        elif isinstance(prompt_v, str):
            prompt_msgs = [{"role": "user", "content": text_field(rec, "prompt", rn, response=False)}]
        else:
            prompt_msgs = messages_field(prompt_v, "prompt", rn)
        full = {}
        for name, v in (("chosen", chosen_v), ("rejected", rejected_v)):
            if isinstance(v, str):
                msgs = [{"role": "assistant", "content": text_field(rec, name, rn)}]
            else:
                msgs = messages_field(v, name, rn)
                if not msgs:
                    raise RecordError(rn, name, "is an empty message list", "empty_response")
            conv = prompt_msgs + msgs
            if conv[-1]["role"] != "assistant":
                raise RecordError(
                    rn,
                    name,
                    f"final message has role {conv[-1]['role']!r}, expected 'assistant'",
                    "wrong_role",
                )
            if not conv[-1]["content"].strip():
                raise RecordError(rn, name, "final assistant message is empty", "empty_response")
            full[name] = conv
        if full["chosen"][:-1] != full["rejected"][:-1]:
            raise RecordError(
                rn,
                None,
                "'chosen' and 'rejected' conversations differ before their final assistant message",
                "prefix_mismatch",
            )
        prompt_out = full["chosen"][:-1]
        if not prompt_out:
            raise RecordError(rn, "prompt", "is empty (no shared messages before the responses)", "empty_prompt")
        chosen, rejected = full["chosen"][-1]["content"], full["rejected"][-1]["content"]
        check_distinct(chosen, rejected, rn, ("chosen", "rejected"))
    dr, src, prob = delta_reward_of(rec, rn, opts)
    return PreferencePair(rn, prompt_out, chosen, rejected, dr, src, prob, subset_of(rec), meta_of(rec))
