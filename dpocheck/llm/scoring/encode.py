"""Tokenising a rendered pair: the prompt/response token boundary, truncation, and the batch and shard plan.

The text comes from :mod:`dpocheck.llm.scoring.render`; this module turns it into the token ids whose log-probs give
δ = log π(y_w|x) − log π(y_l|x) (C2, C3, C4, C8, C10).

**Prompt/response token boundary (the rule).** The full text (prompt + response) is tokenised *once*, exactly as
the model would see it, and the response is the run of tokens from the first token that contains at least one
response character (found from the tokenizer's character offsets) to the end. So a token that straddles the
boundary (a prompt ending in a space followed by a word: ``"A: "`` + ``"Hi"`` → ``" Hi"``) counts as a response
token, and its log-prob is conditioned on the prompt tokens before it; the number of such pairs is reported
(``boundary_merged`` in the manifest). Tokenisers without offsets fall back to the longest common token prefix
of ``tokenize(prompt)`` and ``tokenize(prompt + response)``.

**Truncation** (``max_length`` tokens per sequence): the two sequences of a pair share their prompt, so the prompt
is cut from the left first (the same tokens from both; a leading BOS is kept; at least one prompt token stays),
then a response that is still too long is cut from the right. A sequence whose prompt or response was cut has
its ``*_truncated`` flag set. A pair where no response token fits is an error.

No command lets a sequence exceed the model's context (the one rule,
:func:`~dpocheck.llm.scoring.settings.cap_max_length`): ``max_length`` 0 means the context, and a larger value is
capped at it, so a longer sequence is truncated and flagged, not scored past the positions the model was trained on.

**Batch plan.** Batches hold several pairs, bucketed by length under a padded-token budget (``batch_tokens``, the
memory knob); consecutive batches form shards (the resume unit). In ``dpocheck score`` a pair that alone needs
more than ``batch_tokens`` tokens in one forward pass is a bad record (reason ``over_batch_tokens``), so the
budget bounds memory for every record. Both plans are deterministic functions of the
encoded pairs and the settings, so a resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dpocheck.errors import InputError
from dpocheck.llm.data.fields import unicode_problem
from dpocheck.llm.data.types import PreferencePair

from .render import render_texts
from .settings import PREFIX_MODES, ScoreSettings


class ScoringError(InputError):
    """A pair that cannot be scored; the message names the record index and the field."""

    def __init__(self, index: int, field_name: str | None, message: str, reason: str):
        self.index = index
        self.field = field_name
        self.reason = reason
        what = f"field '{field_name}' " if field_name else ""
        super().__init__(f"record {index}: {what}{message}")


def _common_prefix_len(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def tokenize_with_boundary(
    tokenizer: Any, prompt_text: str, full_text: str, add_special_tokens: bool
) -> tuple[list[int], int, bool]:
    """Token ids of ``full_text`` and the index of the first response token (see the boundary rule).

    Returns (ids, start, merged) where ``merged`` says the boundary fell inside token ``start``. When the full
    text does not begin with the prompt text (a template that rewrites earlier turns), the boundary is the end of
    their longest common character prefix.
    """
    boundary = len(prompt_text) if full_text.startswith(prompt_text) else _common_prefix_len(prompt_text, full_text)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(full_text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = enc["offset_mapping"]
        start = next((i for i, (_, end) in enumerate(offsets) if end > boundary), len(ids))
        merged = start < len(ids) and offsets[start][0] < boundary
        return ids, start, merged
    ids = list(tokenizer(full_text, add_special_tokens=add_special_tokens)["input_ids"])
    p_ids = list(tokenizer(full_text[:boundary], add_special_tokens=add_special_tokens)["input_ids"])
    start = _common_prefix_len(ids, p_ids)
    return ids, start, start < len(p_ids)


# ------------------------------------------------------------------------------------------------ encoding
def _text_problem(tokenizer: Any, text: str) -> str | None:
    """Why the tokenizer cannot take ``text`` (a lone surrogate, or the tokenizer's own error), or None."""
    problem = unicode_problem(text)
    if problem:
        return problem
    try:
        tokenizer(text, add_special_tokens=False)
    except Exception as err:
        return f"cannot be tokenised ({type(err).__name__}: {err})"
    return None


def untokenizable(tokenizer: Any, pair: PreferencePair, response_field: str, err: Exception) -> ScoringError:
    """The bad-record error (reason ``untokenizable_text``) for a pair whose rendered text the tokenizer refused:
    names the field whose text is at fault (the prompt, else the response being encoded)."""
    prompt = pair.prompt
    prompt_texts = [prompt] if isinstance(prompt, str) else [m.get("content") for m in prompt]
    response = pair.chosen if response_field == "chosen" else pair.rejected
    for name, texts in (("prompt", prompt_texts), (response_field, [response])):
        for text in texts:
            problem = _text_problem(tokenizer, text) if isinstance(text, str) else None
            if problem:
                return ScoringError(pair.index, name, problem, "untokenizable_text")
    what = f"cannot be rendered and tokenised ({type(err).__name__}: {err})"
    return ScoringError(pair.index, response_field, what, "untokenizable_text")


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair after truncation: two full sequences and where their scored parts start.

    ``shared`` tokens at the front are identical in both sequences and lie before both response starts (the
    part whose keys/values are computed once).
    """

    index: int
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    chosen_start: int
    rejected_start: int
    shared: int
    chosen_truncated: bool
    rejected_truncated: bool
    prompt_truncated: bool = False
    boundary_merged: bool = False

    @property
    def chosen_tokens(self) -> int:
        return len(self.chosen_ids) - self.chosen_start

    @property
    def rejected_tokens(self) -> int:
        return len(self.rejected_ids) - self.rejected_start

    @property
    def prefix_len(self) -> int:
        """Tokens run once in the prefix pass: all shared tokens but the last (it starts the continuations)."""
        return self.shared - 1

    @property
    def cont_len(self) -> int:
        return max(len(self.chosen_ids), len(self.rejected_ids)) - self.prefix_len


def encode_pair(
    tokenizer: Any,
    pair: PreferencePair,
    *,
    use_chat_template: bool,
    max_length: int | None = 1024,
) -> EncodedPair:
    """Tokenise a pair per the boundary and truncation rules of the module docstring.

    Raises :class:`ScoringError` (naming the record index and field) for an empty response, a response with no
    tokens, text the tokenizer cannot take (reason ``untokenizable_text``: a lone surrogate, or any error the
    tokenizer or the chat template raises on the record's text), or a pair where no response token fits in
    ``max_length``.
    """
    if max_length is not None and max_length < 2:
        raise InputError(f"max_length must be >= 2 tokens, got {max_length}")
    seqs = []
    for name, response in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        if not isinstance(response, str) or not response.strip():
            raise ScoringError(pair.index, name, "is an empty response (nothing to score)", "empty_response")
        try:
            prompt_text, full = render_texts(tokenizer, pair.prompt, response, use_chat_template)
            ids, start, merged = tokenize_with_boundary(tokenizer, prompt_text, full, not use_chat_template)
        except Exception as err:  # any text the tokenizer (or its chat template) cannot take is a bad record
            raise untokenizable(tokenizer, pair, name, err) from err
        if start >= len(ids):
            raise ScoringError(pair.index, name, "has no response tokens after tokenisation", "empty_response")
        if start == 0:
            bos = getattr(tokenizer, "bos_token_id", None)
            if bos is None:
                raise ScoringError(
                    pair.index,
                    "prompt",
                    "is empty and the tokenizer has no BOS token: the first response token has no context",
                    "empty_prompt",
                )
            ids, start = [bos, *ids], 1
        seqs.append((ids, start, merged))
    (ids_c, start_c, merged_c), (ids_r, start_r, merged_r) = seqs
    shared = min(_common_prefix_len(ids_c, ids_r), start_c, start_r)
    trunc_c = trunc_r = prompt_cut = False
    if max_length is not None and max(len(ids_c), len(ids_r)) > max_length:
        bos = getattr(tokenizer, "bos_token_id", None)
        head = 1 if bos is not None and shared >= 2 and ids_c[0] == bos else 0
        over = max(len(ids_c), len(ids_r)) - max_length
        drop = max(0, min(over, shared - head - 1))
        if drop:
            prompt_cut = trunc_c = trunc_r = True
            ids_c = ids_c[:head] + ids_c[head + drop :]
            ids_r = ids_r[:head] + ids_r[head + drop :]
            start_c, start_r, shared = start_c - drop, start_r - drop, shared - drop
        if len(ids_c) > max_length:
            ids_c, trunc_c = ids_c[:max_length], True
        if len(ids_r) > max_length:
            ids_r, trunc_r = ids_r[:max_length], True
        for name, ids, start in (("chosen", ids_c, start_c), ("rejected", ids_r, start_r)):
            if start >= len(ids):
                raise ScoringError(
                    pair.index,
                    name,
                    f"no response token fits in max_length={max_length} (prompt needs {start} tokens)",
                    "too_long",
                )
    return EncodedPair(
        pair.index,
        tuple(ids_c),
        tuple(ids_r),
        start_c,
        start_r,
        shared,
        trunc_c,
        trunc_r,
        prompt_cut,
        merged_c or merged_r,
    )


@dataclass
class EncodeResult:
    """Encoded pairs (aligned with ``pairs``) and the pairs that could not be encoded (``on_error='skip'``)."""

    pairs: list[PreferencePair]
    encoded: list[EncodedPair]
    skipped: list[dict[str, Any]] = field(default_factory=list)


def encode_pairs(
    tokenizer: Any,
    pairs: Iterable[PreferencePair],
    settings: ScoreSettings,
    use_chat_template: bool,
    *,
    bound_memory: bool = False,
) -> EncodeResult:
    """Encode every pair; errors raise or are collected with their index and reason (``settings.on_error``).

    With ``bound_memory`` (``dpocheck score``), a pair whose single-pair batch costs more than
    ``settings.batch_tokens`` padded tokens is such an error (reason ``over_batch_tokens``), so the budget bounds
    memory for every record; without it such a pair runs alone in its own batch.
    """
    kept, encoded, skipped = [], [], []
    for pair in pairs:
        try:
            enc = encode_pair(tokenizer, pair, use_chat_template=use_chat_template, max_length=settings.max_length)
            cost = padded_cost([enc], settings.prefix_mode)
            if bound_memory and cost > settings.batch_tokens:
                raise ScoringError(
                    pair.index,
                    None,
                    f"needs {cost} tokens in one forward pass ({settings.prefix_mode} mode), more than "
                    f"--batch-tokens {settings.batch_tokens}; raise --batch-tokens or lower --max-length",
                    "over_batch_tokens",
                )
        except ScoringError as err:
            if settings.on_error == "raise":
                raise
            skipped.append({"index": pair.index, "reason": err.reason, "error": str(err)})
            continue
        kept.append(pair)
        encoded.append(enc)
    return EncodeResult(kept, encoded, skipped)


# ---------------------------------------------------------------------------------------------- batch plan
def padded_cost(batch: Sequence[EncodedPair], prefix_mode: str = "packed") -> int:
    """Padded tokens a batch runs.

    ``packed``: B·max(P + C_w + C_l); ``cache``: B·P_max + 2B·max(C); ``none``: 2B·max(L) (P = prefix tokens,
    C = continuation tokens, L = full sequence length).
    """
    b = len(batch)
    if not batch:
        return 0
    if prefix_mode == "packed":
        return b * max(real_cost(e, "packed") for e in batch)
    if prefix_mode == "cache":
        return b * max(e.prefix_len for e in batch) + 2 * b * max(e.cont_len for e in batch)
    return 2 * b * max(max(len(e.chosen_ids), len(e.rejected_ids)) for e in batch)


def real_cost(e: EncodedPair, prefix_mode: str = "packed") -> int:
    """Tokens a pair needs without padding (the prompt counted once when shared)."""
    if prefix_mode != "none" and e.prefix_len >= 1:
        return len(e.chosen_ids) + len(e.rejected_ids) - e.prefix_len
    return len(e.chosen_ids) + len(e.rejected_ids)


def plan_batches(encoded: Sequence[EncodedPair], batch_tokens: int, prefix_mode: str = "packed") -> list[list[int]]:
    """Deterministic batches (lists of positions into ``encoded``), bucketed by length under a padded budget.

    Pairs are sorted by the length that sets the padding of their mode (row length for ``packed``, then
    continuation and prefix length for ``cache``, sequence length for ``none``; ties by index) and packed
    greedily while the padded cost (:func:`padded_cost`) stays within ``batch_tokens``; a pair over budget on
    its own gets its own batch.
    """
    if batch_tokens < 1:
        raise InputError(f"batch_tokens must be >= 1, got {batch_tokens}")
    if prefix_mode not in PREFIX_MODES:
        raise InputError(f"prefix_mode must be one of {PREFIX_MODES}, got {prefix_mode!r}")

    def key(i: int) -> tuple[int, int, int]:
        e = encoded[i]
        if prefix_mode == "packed":
            return (real_cost(e, "packed"), 0, e.index)
        if prefix_mode == "cache":
            return (e.cont_len, e.prefix_len, e.index)
        return (max(len(e.chosen_ids), len(e.rejected_ids)), 0, e.index)

    order = sorted(range(len(encoded)), key=key)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        trial = [encoded[j] for j in current] + [encoded[i]]
        if current and padded_cost(trial, prefix_mode) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def plan_shards(batches: Sequence[list[int]], shard_pairs: int) -> list[list[list[int]]]:
    """Consecutive batches grouped into shards of at least ``shard_pairs`` pairs (the last may be smaller)."""
    shards: list[list[list[int]]] = []
    current: list[list[int]] = []
    n = 0
    for b in batches:
        current.append(b)
        n += len(b)
        if n >= shard_pairs:
            shards.append(current)
            current, n = [], 0
    if current:
        shards.append(current)
    return shards
