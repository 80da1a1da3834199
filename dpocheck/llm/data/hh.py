"""HH-RLHF transcripts: a shared dialogue up to the last ``"\\n\\nAssistant:"``, then two responses.

The prompt is the shared dialogue up to and including the last ``"\\n\\nAssistant:"``; the response is the
rest, with its leading space kept (how the transcript was written and how BPE tokenizers merge the space into the
first word). With ``prompt_style="chat"`` the dialogue becomes chat messages (``Human`` → ``user``,
``Assistant`` → ``assistant``, one leading space removed from each turn and from the responses).
"""

from __future__ import annotations

import re
from typing import Any

from .fields import ReaderOptions, RecordError, check_distinct, delta_reward_of, meta_of, subset_of, text_field
from .types import ChatMessages, PreferencePair

HH_ASSISTANT = "\n\nAssistant:"
HH_HUMAN = "\n\nHuman:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def hh_split(chosen: str, rejected: str, rn: int = 0) -> tuple[str, str, str]:
    """Split two HH-RLHF transcripts into (shared prompt, chosen response, rejected response).

    The prompt ends with the last ``"\\n\\nAssistant:"``; responses keep their leading space.
    """
    cut = []
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        i = text.rfind(HH_ASSISTANT)
        if i < 0:
            raise RecordError(rn, name, "has no '\\n\\nAssistant:' turn (not an HH-RLHF transcript)", "hh_no_assistant")
        cut.append(i + len(HH_ASSISTANT))
    prompt_c, prompt_r = chosen[: cut[0]], rejected[: cut[1]]
    if prompt_c != prompt_r:
        n = min(len(prompt_c), len(prompt_r))
        k = next((j for j in range(n) if prompt_c[j] != prompt_r[j]), n)
        raise RecordError(
            rn,
            None,
            "'chosen' and 'rejected' transcripts differ before their last '\\n\\nAssistant:' turn "
            f"(first difference at character {k}): two conversations, not two responses",
            "prefix_mismatch",
        )
    return prompt_c, chosen[cut[0] :], rejected[cut[1] :]


def hh_prompt_to_messages(prompt: str, rn: int = 0) -> ChatMessages:
    """An HH-RLHF dialogue prefix (ending in ``"\\n\\nAssistant:"``) as chat messages, minus the open turn."""
    parts = _HH_TURN.split(prompt)
    if parts[0].strip():
        raise RecordError(rn, "chosen", "has text before the first '\\n\\nHuman:' turn", "hh_unparsable")
    roles = {"Human": "user", "Assistant": "assistant"}
    msgs: ChatMessages = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        msgs.append({"role": roles[role], "content": content.removeprefix(" ")})
    if not msgs or msgs[-1]["role"] != "assistant" or msgs[-1]["content"]:
        raise RecordError(rn, "chosen", "dialogue prefix does not end with an open Assistant turn", "hh_unparsable")
    return msgs[:-1]


def parse_hh(rec: dict[str, Any], rn: int, opts: ReaderOptions) -> PreferencePair:
    chosen_t = text_field(rec, "chosen", rn)
    rejected_t = text_field(rec, "rejected", rn)
    prompt, chosen, rejected = hh_split(chosen_t, rejected_t, rn)
    for name, resp in (("chosen", chosen), ("rejected", rejected)):
        if not resp.strip():
            raise RecordError(rn, name, "has an empty final Assistant response", "empty_response")
    check_distinct(chosen, rejected, rn, ("chosen", "rejected"))
    prompt_out: str | ChatMessages = prompt
    if opts.prompt_style == "chat":
        prompt_out = hh_prompt_to_messages(prompt, rn)
        chosen, rejected = chosen.removeprefix(" "), rejected.removeprefix(" ")
    dr, src, prob = delta_reward_of(rec, rn, opts)
    return PreferencePair(rn, prompt_out, chosen, rejected, dr, src, prob, subset_of(rec), meta_of(rec))
