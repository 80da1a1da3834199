"""The one way a preference pair becomes text: what the scorer, the reward model and the sampler read (C2–C4).

δ_ref (``dpocheck score``) and Δr* (``dpocheck reward``) are compared pair by pair in C2's check
β·δ_ref + Δr* ≤ 0, so both must read the same conversation; this module is the only place that renders one.

* **Plain** (no chat template): a text prompt is used as it is; chat messages are rendered HH-style
  (``"\\n\\nHuman: …\\n\\nAssistant: …"`` ending with an open ``"\\n\\nAssistant:"`` turn). The full text is
  prompt + response, with one space between an open ``"Assistant:"`` turn and a response that does not start
  with whitespace. Tokenised with the tokenizer's special tokens (e.g. BOS).
* **Chat template**: prompt text = the template applied to the prompt messages with
  ``add_generation_prompt=True``; full text = the template applied to the prompt messages plus
  ``{"role": "assistant", "content": response}``, with trailing whitespace removed (the response ends with the
  template's end-of-turn marker, the model's decision to stop, but not the newline written after it). A text
  prompt is one ``user`` message, except an HH-RLHF dialogue (``"\\n\\nHuman: …\\n\\nAssistant:"``), which is
  split into its turns with one leading space dropped from each turn and from the response — exactly what the
  data reader's ``prompt_style="chat"`` does, so a text-style and a chat-style load render identically.
  Special tokens come from the template only (no second BOS).
"""

from __future__ import annotations

from typing import Any

from dpocheck.llm.data.hh import HH_ASSISTANT, HH_HUMAN, hh_prompt_to_messages
from dpocheck.llm.data.types import ChatMessages

from .settings import CHAT_TEMPLATE_CHOICES

PLAIN_ROLES = {"user": "Human", "assistant": "Assistant", "system": "System"}


def render_plain(messages: ChatMessages) -> str:
    """Chat messages as an HH-style transcript ending with an open ``"\\n\\nAssistant:"`` turn (no template)."""
    parts = [f"\n\n{PLAIN_ROLES.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages]
    return "".join(parts) + HH_ASSISTANT


def is_hh_dialogue(prompt: str | ChatMessages) -> bool:
    """True for a text prompt that is an HH-RLHF dialogue prefix (``"\\n\\nHuman:"`` … ``"\\n\\nAssistant:"``)."""
    return isinstance(prompt, str) and prompt.startswith(HH_HUMAN) and prompt.endswith(HH_ASSISTANT)


def as_messages(prompt: str | ChatMessages) -> ChatMessages:
    """The prompt as chat messages: an HH dialogue split into turns, other text as one ``user`` message."""
    if not isinstance(prompt, str):
        return list(prompt)
    if is_hh_dialogue(prompt):
        return hh_prompt_to_messages(prompt)
    return [{"role": "user", "content": prompt}]


def render_prompt(tokenizer: Any, prompt: str | ChatMessages, use_chat_template: bool) -> str:
    """The prompt text the model continues (a generation prompt under a chat template)."""
    if use_chat_template:
        return tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
    return prompt if isinstance(prompt, str) else render_plain(prompt)


def render_texts(tokenizer: Any, prompt: str | ChatMessages, response: str, use_chat_template: bool) -> tuple[str, str]:
    """(prompt text, full text) for one response, per the rules of the module docstring."""
    if use_chat_template:
        msgs = as_messages(prompt)
        content = response.removeprefix(" ") if is_hh_dialogue(prompt) else response
        prompt_text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*msgs, {"role": "assistant", "content": content}], tokenize=False)
        return prompt_text, full.rstrip()
    prompt_text = render_prompt(tokenizer, prompt, False)
    sep = " " if not isinstance(prompt, str) and not response[:1].isspace() else ""
    return prompt_text, prompt_text + sep + response


def has_chat_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_chat_template(tokenizer: Any, mode: str) -> bool:
    """Whether to use the chat template: ``auto`` = if the tokenizer has one, ``model`` = required, ``none``."""
    if mode not in CHAT_TEMPLATE_CHOICES:
        raise ValueError(f"chat_template must be one of {CHAT_TEMPLATE_CHOICES}, got {mode!r}")
    if mode == "none":
        return False
    if mode == "model" and not has_chat_template(tokenizer):
        raise ValueError("chat_template='model' but the tokenizer has no chat template")
    return has_chat_template(tokenizer)
