"""Sequence log-probabilities of preference pairs under a causal LM: the δ's of C2, C3, C4, C8 and C10.

For each pair (x, y_w, y_l) this computes log π(y|x) for y = y_w and y = y_l, summed over the response tokens and
as the per-token mean (the released code's length-normalised convention, PAPER.md §1), with token counts and
truncation flags.

**Prompt/response token boundary (the rule).** The full text (prompt + response) is tokenised *once*, exactly as
the model would see it, and the response is the run of tokens from the first token that contains at least one
response character (found from the tokenizer's character offsets) to the end. So a token that straddles the
boundary (a prompt ending in a space followed by a word: ``"A: "`` + ``"Hi"`` → ``" Hi"``) counts as a response
token, and its log-prob is conditioned on the prompt tokens before it; the number of such pairs is reported
(``boundary_merged`` in the manifest). Tokenisers without offsets fall back to the longest common token prefix
of ``tokenize(prompt)`` and ``tokenize(prompt + response)``.

* Without a chat template (``chat_template="none"``): full text = prompt + response, tokenised with the
  tokenizer's special tokens (e.g. BOS). Chat-message prompts are rendered HH-style
  (``"\\n\\nHuman: …\\n\\nAssistant: …"`` ending with ``"\\n\\nAssistant:"``, then a space unless the response
  starts with whitespace).
* With the model's chat template (``"auto"`` when it has one): prompt text = the template applied to the prompt
  messages with ``add_generation_prompt=True`` (a text prompt is one ``user`` message); full text = the template
  applied to the prompt messages plus ``{"role": "assistant", "content": response}``, with trailing whitespace
  removed. The response therefore includes the template's end-of-turn marker (``<|im_end|>`` for SmolLM2) — the
  model's decision to stop — but not the newline the template writes after it. Special tokens come from the
  template only (no second BOS).

**Truncation** (``max_length`` tokens per sequence): the two sequences of a pair share their prompt, so the prompt
is cut from the left first (the same tokens from both; a leading BOS is kept; at least one prompt token stays),
then a response that is still too long is cut from the right. A sequence whose prompt or response was cut has
its ``*_truncated`` flag set. A pair where no response token fits is an error.

**Fast path (prefix sharing).** The prompt tokens shared by both sequences are computed once, in one of two ways
(``prefix_mode``): ``packed`` (default) runs each pair as one row ``prompt | chosen | rejected`` whose block mask
lets each response see only the prompt and itself, with the rejected response's positions restarting after the
prompt — no padding between the two responses; ``cache`` runs the prompts, repeats their key/value cache twice
along the batch and runs both responses against it. ``none`` runs both full sequences (the reference). Batches
hold several pairs, bucketed by length under a padded-token budget (``batch_tokens``, the memory knob); masks are
explicit 4-D additive masks (right padding, no fully-masked rows); logits are computed only at scored positions.
In fp32 every mode equals the unshared computation to ≤ 1e-4 nats per sequence (tested). On the shared HH-RLHF
data with SmolLM2 the packed plan runs 99 % real tokens, the cache plan 50–80 % (its two responses pad to the
longer one).

**Output directory** (:func:`score_to_directory`): shards ``scores-<rank>-<k>.jsonl`` (written to a temp file and
renamed, so a shard is complete or absent), ``manifest.json`` (model identity, data sha256, settings, tokenizer
and chat template, counts) and, after all ranks finish, the merged ``scores.jsonl`` sorted by index. The batch
plan is a deterministic function of the data and settings, and shard ``k`` always holds the same pairs, so a
resumed run (``resume=True``) skips complete shards and reproduces the uninterrupted output exactly. Under
``torchrun`` the shards are dealt to ranks round-robin (``k % world_size``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpocheck._io import write_text_atomic as write_atomic

from .types import ChatMessages, PreferencePair

ROW_KEYS = (
    "index",
    "chosen_logp_sum",
    "rejected_logp_sum",
    "chosen_logp_mean",
    "rejected_logp_mean",
    "chosen_tokens",
    "rejected_tokens",
    "chosen_truncated",
    "rejected_truncated",
    "delta_reward",
    "reward_source",
    "subset",
)
CHAT_TEMPLATE_CHOICES = ("auto", "none", "model")
ON_ERROR_CHOICES = ("raise", "skip")
PREFIX_MODES = ("packed", "cache", "none")
MANIFEST = "manifest.json"
MERGED = "scores.jsonl"
SHARD_RE = re.compile(r"^scores-(\d+)-(\d+)\.jsonl$")
FORMAT_VERSION = 1


class ScoringError(ValueError):
    """A pair that cannot be scored; the message names the record index and the field."""

    def __init__(self, index: int, field_name: str | None, message: str, reason: str):
        self.index = index
        self.field = field_name
        self.reason = reason
        what = f"field '{field_name}' " if field_name else ""
        super().__init__(f"record {index}: {what}{message}")


# ----------------------------------------------------------------------------------------------- rendering
_PLAIN_ROLES = {"user": "Human", "assistant": "Assistant", "system": "System"}


def render_plain(messages: ChatMessages) -> str:
    """Chat messages as an HH-style transcript ending with an open ``"\\n\\nAssistant:"`` turn (no template)."""
    parts = []
    for m in messages:
        role = _PLAIN_ROLES.get(m["role"], m["role"].capitalize())
        parts.append(f"\n\n{role}: {m['content']}")
    return "".join(parts) + "\n\nAssistant:"


def _as_messages(prompt: str | ChatMessages) -> ChatMessages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def render_texts(tokenizer: Any, prompt: str | ChatMessages, response: str, use_chat_template: bool) -> tuple[str, str]:
    """(prompt text, full text) for one response, per the boundary rule of the module docstring."""
    if use_chat_template:
        msgs = _as_messages(prompt)
        prompt_text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*msgs, {"role": "assistant", "content": response}], tokenize=False)
        return prompt_text, full.rstrip()
    if isinstance(prompt, str):
        return prompt, prompt + response
    prompt_text = render_plain(prompt)
    sep = "" if response[:1].isspace() else " "
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
    tokens, or a pair where no response token fits in ``max_length``.
    """
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be >= 2 tokens, got {max_length}")
    seqs = []
    for name, response in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        if not isinstance(response, str) or not response.strip():
            raise ScoringError(pair.index, name, "is an empty response (nothing to score)", "empty_response")
        prompt_text, full = render_texts(tokenizer, pair.prompt, response, use_chat_template)
        ids, start, merged = tokenize_with_boundary(tokenizer, prompt_text, full, not use_chat_template)
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
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    if prefix_mode not in PREFIX_MODES:
        raise ValueError(f"prefix_mode must be one of {PREFIX_MODES}, got {prefix_mode!r}")

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


# ------------------------------------------------------------------------------------------------- forward
def _forward_kwargs(model: Any) -> dict[str, str]:
    """Names of the cache argument and output field (``cache`` in transformers 5, ``past_key_values`` before)."""
    cached = getattr(model, "_dpocheck_kwargs", None)
    if cached is not None:
        return cached
    params = inspect.signature(model.forward).parameters
    names = {
        "cache_arg": "cache" if "cache" in params else "past_key_values",
        "logits_to_keep": "logits_to_keep" if "logits_to_keep" in params else "",
    }
    try:
        model._dpocheck_kwargs = names
    except AttributeError:  # pragma: no cover - exotic wrappers
        pass
    return names


def _additive_mask(allowed: Any, dtype: Any) -> Any:
    import torch

    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, neg)[:, None, :, :]


def _scored_logps(logits: Any, targets: Any, chunk: int = 2048) -> Any:
    """float64 log-probs log softmax(logits)[target] for [N, V] logits, chunk by chunk.

    The normaliser logsumexp is computed in the logits' precision but at least fp32 (bf16/fp16 logits are
    upcast; float64 models stay float64); its rounding is ~1e-7 nats per token in fp32, far below the fp32
    forward pass's own noise. The difference target − logsumexp and the sums are taken in float64.
    """
    import torch

    out = torch.empty(logits.shape[0], dtype=torch.float64, device=logits.device)
    for i in range(0, logits.shape[0], chunk):
        x = logits[i : i + chunk]
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        picked = x.gather(-1, targets[i : i + chunk, None]).squeeze(-1)
        out[i : i + chunk] = picked.double() - torch.logsumexp(x, dim=-1).double()
    return out


def _run_scored(model: Any, ids: Any, mask4: Any, positions: Any, keep: Any, cache: Any = None) -> tuple[Any, Any]:
    """One forward pass returning fp32 log-probs of the next tokens at ``keep`` positions, row by row.

    ``keep[b, t]`` means the logits at position t are scored against token ``ids[b, t + 1]``.
    """
    import torch

    names = _forward_kwargs(model)
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask4, "position_ids": positions}
    if cache is not None:
        kwargs[names["cache_arg"]] = cache
        kwargs["use_cache"] = True
    else:
        kwargs["use_cache"] = False
    if names["logits_to_keep"]:
        kwargs["logits_to_keep"] = keep
    out = model(**kwargs)
    targets = ids[:, 1:][keep[:, :-1]]
    logits = out.logits
    if logits.dim() == 3:
        logits = logits[:, :-1][keep[:, :-1]]
    elif keep[:, -1].any():  # logits_to_keep returned [N, V]: the last column must not be kept
        raise RuntimeError("internal error: a kept position has no next token")
    logp = _scored_logps(logits, targets)
    rows = keep[:, :-1].nonzero()[:, 0]
    sums = torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device)
    sums.index_add_(0, rows, logp)
    finite = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    bad = ~torch.isfinite(logp)
    if bad.any():
        finite[rows[bad]] = False
    return sums, finite


@dataclass
class SequenceScore:
    """Summed log-prob of a scored token span, its token count and whether every token log-prob was finite."""

    logp_sum: float
    tokens: int
    finite: bool

    @property
    def logp_mean(self) -> float:
        return self.logp_sum / self.tokens


def _to_scores(sums: Any, counts: Sequence[int], finite: Any) -> list[SequenceScore]:
    """SequenceScores from device tensors, with one host transfer each (no per-element syncs on CUDA)."""
    return [
        SequenceScore(float(v), int(c), bool(f))
        for v, c, f in zip(sums.cpu().tolist(), counts, finite.cpu().tolist(), strict=True)
    ]


def score_sequences(model: Any, sequences: Sequence[tuple[Sequence[int], int]], pad_id: int = 0) -> list[SequenceScore]:
    """Score full sequences in one right-padded batch, no cache: Σ_{t ≥ start} log π(ids[t] | ids[:t]).

    ``sequences`` holds (ids, start) with 1 ≤ start < len(ids). This is the unshared reference computation.
    """
    import torch

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    n = len(sequences)
    lmax = max(len(s) for s, _ in sequences)
    ids = torch.full((n, lmax), pad_id, dtype=torch.long)
    valid = torch.zeros((n, lmax), dtype=torch.bool)
    keep = torch.zeros((n, lmax), dtype=torch.bool)
    for r, (s, start) in enumerate(sequences):
        if not 1 <= start < len(s):
            raise ValueError(f"sequence {r}: scored start {start} must be in [1, {len(s)})")
        ids[r, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        valid[r, : len(s)] = True
        keep[r, start - 1 : len(s) - 1] = True
    ids, valid, keep = ids.to(device), valid.to(device), keep.to(device)
    causal = torch.ones((lmax, lmax), dtype=torch.bool, device=device).tril()
    allowed = causal[None] & valid[:, None, :]
    positions = torch.arange(lmax, device=device)[None].expand(n, -1)
    sums, finite = _run_scored(model, ids, _additive_mask(allowed, dtype), positions, keep)
    counts = keep.sum(1).tolist()
    return _to_scores(sums, counts, finite)


def score_batch_shared(model: Any, batch: Sequence[EncodedPair], pad_id: int = 0) -> list[SequenceScore]:
    """Prefix-shared scores of a batch of pairs: [chosen₀, rejected₀, chosen₁, …].

    Pass 1 runs each pair's shared prompt tokens but the last (right-padded, explicit causal+padding mask) and
    keeps their keys/values; the cache is repeated twice along the batch; pass 2 runs both continuations (the
    last shared token followed by the rest of each sequence) against it, with positions continuing each pair's
    own prefix. Every pair must have ``prefix_len >= 1``.
    """
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    b = len(batch)
    p_lens = [e.prefix_len for e in batch]
    if min(p_lens) < 1:
        raise ValueError("score_batch_shared needs prefix_len >= 1 for every pair")
    pmax = max(p_lens)
    pre_ids = torch.full((b, pmax), pad_id, dtype=torch.long)
    pre_valid = torch.zeros((b, pmax), dtype=torch.bool)
    for r, e in enumerate(batch):
        pre_ids[r, : e.prefix_len] = torch.tensor(e.chosen_ids[: e.prefix_len], dtype=torch.long)
        pre_valid[r, : e.prefix_len] = True
    pre_ids, pre_valid = pre_ids.to(device), pre_valid.to(device)
    causal = torch.ones((pmax, pmax), dtype=torch.bool, device=device).tril()
    allowed = causal[None] & pre_valid[:, None, :]
    positions = torch.arange(pmax, device=device)[None].expand(b, -1)
    names = _forward_kwargs(model)
    cache = DynamicCache(config=model.config)
    kwargs: dict[str, Any] = {
        "input_ids": pre_ids,
        "attention_mask": _additive_mask(allowed, dtype),
        "position_ids": positions,
        names["cache_arg"]: cache,
        "use_cache": True,
    }
    if names["logits_to_keep"]:
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    returned = getattr(out, names["cache_arg"], None)
    if returned is not None:
        cache = returned
    cache.batch_repeat_interleave(2)

    conts = []
    for e in batch:
        for ids, start in ((e.chosen_ids, e.chosen_start), (e.rejected_ids, e.rejected_start)):
            conts.append((ids[e.prefix_len :], start - e.prefix_len))
    cmax = max(len(c) for c, _ in conts)
    c_ids = torch.full((2 * b, cmax), pad_id, dtype=torch.long)
    keep = torch.zeros((2 * b, cmax), dtype=torch.bool)
    c_pos = torch.zeros((2 * b, cmax), dtype=torch.long)
    pre_valid2 = pre_valid.repeat_interleave(2, dim=0)
    for r, (c, s) in enumerate(conts):
        c_ids[r, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        keep[r, s - 1 : len(c) - 1] = True
        c_pos[r] = p_lens[r // 2] + torch.arange(cmax)
    c_ids, keep, c_pos = c_ids.to(device), keep.to(device), c_pos.to(device)
    c_causal = torch.ones((cmax, cmax), dtype=torch.bool, device=device).tril()
    allowed = torch.cat([pre_valid2[:, None, :].expand(-1, cmax, -1), c_causal[None].expand(2 * b, -1, -1)], dim=2)
    sums, finite = _run_scored(model, c_ids, _additive_mask(allowed, dtype), c_pos, keep, cache=cache)
    counts = keep.sum(1).tolist()
    return _to_scores(sums, counts, finite)


def pack_pairs(batch: Sequence[EncodedPair], pad_id: int = 0) -> tuple[Any, Any, Any, Any, Any]:
    """The packed layout of a batch of pairs as CPU tensors ``(ids, seg, pos, keep, which)``, each [B, L].

    Row r is ``prompt | chosen continuation | rejected continuation`` (continuations start with the last shared
    token), right-padded with ``pad_id`` to the longest row. ``seg`` is 0 for the prompt, 1 chosen, 2 rejected,
    −1 padding; ``pos`` restarts the rejected continuation's positions where the prompt ends; ``keep[r, t]``
    marks the positions whose logits score token ``ids[r, t + 1]`` and ``which`` says for which response (0
    chosen, 1 rejected). Used by :func:`score_batch_packed` and by the trainer's policy forward (one layout).
    """
    import torch

    b = len(batch)
    rows_len = [e.prefix_len + len(e.chosen_ids) + len(e.rejected_ids) - 2 * e.prefix_len for e in batch]
    lmax = max(rows_len)
    ids = torch.full((b, lmax), pad_id, dtype=torch.long)
    seg = torch.full((b, lmax), -1, dtype=torch.long)
    pos = torch.zeros((b, lmax), dtype=torch.long)
    keep = torch.zeros((b, lmax), dtype=torch.bool)
    which = torch.zeros((b, lmax), dtype=torch.long)  # 0 chosen, 1 rejected (for kept positions)
    for r, e in enumerate(batch):
        p = e.prefix_len
        cc = e.chosen_ids[p:]
        cr = e.rejected_ids[p:]
        row = list(e.chosen_ids[:p]) + list(cc) + list(cr)
        ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        seg[r, :p] = 0
        seg[r, p : p + len(cc)] = 1
        seg[r, p + len(cc) : len(row)] = 2
        pos[r, :p] = torch.arange(p)
        pos[r, p : p + len(cc)] = p + torch.arange(len(cc))
        pos[r, p + len(cc) : len(row)] = p + torch.arange(len(cr))
        pos[r, len(row) :] = torch.arange(lmax - len(row)) + max(len(cc), len(cr)) + p
        keep[r, e.chosen_start - 1 : len(e.chosen_ids) - 1] = True
        off = p + len(cc) - p  # the rejected continuation sits len(cc) tokens later than in its own sequence
        keep[r, e.rejected_start - 1 + off : len(e.rejected_ids) - 1 + off] = True
        which[r, e.rejected_start - 1 + off : len(e.rejected_ids) - 1 + off] = 1
    return ids, seg, pos, keep, which


def packed_attention_mask(seg: Any, dtype: Any) -> Any:
    """The 4-D additive block mask [B, 1, L, L] of the packed layout from its segment ids (see :func:`pack_pairs`).

    Causal, and each continuation sees the prompt and itself only; padding queries see everything before them
    (no fully-masked rows), padding keys are hidden from real tokens.
    """
    import torch

    lmax = seg.shape[1]
    causal = torch.ones((lmax, lmax), dtype=torch.bool, device=seg.device).tril()
    sq, sk = seg[:, :, None], seg[:, None, :]
    allowed = causal[None] & ((sk == 0) | (sk == sq) | (sq < 0))
    allowed &= (sk >= 0) | (sq < 0)
    return _additive_mask(allowed, dtype)


def score_batch_packed(model: Any, batch: Sequence[EncodedPair], pad_id: int = 0) -> list[SequenceScore]:
    """Prefix-shared scores of a batch of pairs in one pass: [chosen₀, rejected₀, chosen₁, …].

    Each pair is one row ``prompt | chosen continuation | rejected continuation`` (continuations start with the
    last shared token, as in :func:`score_batch_shared`). The rejected continuation's positions restart where
    the prompt ends and an explicit 4-D mask lets each continuation see the prompt and itself only, so every
    token sees exactly the context it has in its own sequence, the prompt's keys/values are computed once, and
    the two responses need no padding to a common length. Rows are right-padded to the batch's longest.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if min(e.prefix_len for e in batch) < 1:
        raise ValueError("score_batch_packed needs prefix_len >= 1 for every pair")
    ids, seg, pos, keep, which = (t.to(device) for t in pack_pairs(batch, pad_id))
    # the scored token at a kept position t is ids[t + 1], except at the end of the chosen continuation,
    # where the next id in the row is the rejected continuation's first token: keep never marks that position.
    sums, finite = _run_scored_rows(model, ids, packed_attention_mask(seg, dtype), pos, keep, which)
    counts = packed_counts(keep, which)
    sums = sums.reshape(-1)
    finite = finite.reshape(-1)
    return _to_scores(sums, counts, finite)


def packed_counts(keep: Any, which: Any) -> list[int]:
    """Scored tokens per sequence of a packed batch, [chosen₀, rejected₀, chosen₁, …]."""
    import torch

    return torch.stack([(keep & (which == 0)).sum(1), (keep & (which == 1)).sum(1)], dim=1).reshape(-1).tolist()


def _run_scored_rows(model: Any, ids: Any, mask4: Any, positions: Any, keep: Any, which: Any) -> tuple[Any, Any]:
    """Like :func:`_run_scored`, but sums per (row, which) into a [B, 2] table."""
    import torch

    names = _forward_kwargs(model)
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask4, "position_ids": positions, "use_cache": False}
    if names["logits_to_keep"]:
        kwargs["logits_to_keep"] = keep
    out = model(**kwargs)
    targets = ids[:, 1:][keep[:, :-1]]
    logits = out.logits
    if logits.dim() == 3:
        logits = logits[:, :-1][keep[:, :-1]]
    logp = _scored_logps(logits, targets)
    nz = keep[:, :-1].nonzero()
    slot = nz[:, 0] * 2 + which[:, :-1][keep[:, :-1]]
    sums = torch.zeros(ids.shape[0] * 2, dtype=torch.float64, device=ids.device)
    sums.index_add_(0, slot, logp)
    finite = torch.ones(ids.shape[0] * 2, dtype=torch.bool, device=ids.device)
    bad = ~torch.isfinite(logp)
    if bad.any():
        finite[slot[bad]] = False
    return sums.reshape(-1, 2), finite.reshape(-1, 2)


def score_batch(
    model: Any, batch: Sequence[EncodedPair], pad_id: int = 0, prefix_mode: str = "packed"
) -> list[SequenceScore]:
    """Scores [chosen₀, rejected₀, chosen₁, …] of a batch, prefix-shared where possible.

    prefix_mode: ``packed`` (:func:`score_batch_packed`), ``cache`` (:func:`score_batch_shared`) or ``none``
    (:func:`score_sequences`). Pairs with a one-token shared prefix (nothing to share) always go unshared.
    """
    if prefix_mode not in PREFIX_MODES:
        raise ValueError(f"prefix_mode must be one of {PREFIX_MODES}, got {prefix_mode!r}")
    out: list[SequenceScore | None] = [None] * (2 * len(batch))
    shared_rows = [r for r, e in enumerate(batch) if prefix_mode != "none" and e.prefix_len >= 1]
    shared_set = set(shared_rows)
    plain_rows = [r for r in range(len(batch)) if r not in shared_set]
    if shared_rows:
        fn = score_batch_packed if prefix_mode == "packed" else score_batch_shared
        res = fn(model, [batch[r] for r in shared_rows], pad_id)
        for k, r in enumerate(shared_rows):
            out[2 * r], out[2 * r + 1] = res[2 * k], res[2 * k + 1]
    if plain_rows:
        seqs = []
        for r in plain_rows:
            e = batch[r]
            seqs += [(e.chosen_ids, e.chosen_start), (e.rejected_ids, e.rejected_start)]
        res = score_sequences(model, seqs, pad_id)
        for k, r in enumerate(plain_rows):
            out[2 * r], out[2 * r + 1] = res[2 * k], res[2 * k + 1]
    return [s for s in out if s is not None]


def make_row(pair: PreferencePair, enc: EncodedPair, chosen: SequenceScore, rejected: SequenceScore) -> dict:
    """The output row of one pair (exact keys :data:`ROW_KEYS`, the contract with the analysis side)."""
    for name, s in (("chosen", chosen), ("rejected", rejected)):
        if not s.finite or not math.isfinite(s.logp_sum):
            raise ScoringError(pair.index, name, f"has a non-finite log-probability ({s.logp_sum})", "non_finite")
        if s.tokens < 1:
            raise ScoringError(pair.index, name, "has no scored tokens", "empty_response")
    return {
        "index": pair.index,
        "chosen_logp_sum": chosen.logp_sum,
        "rejected_logp_sum": rejected.logp_sum,
        "chosen_logp_mean": chosen.logp_mean,
        "rejected_logp_mean": rejected.logp_mean,
        "chosen_tokens": chosen.tokens,
        "rejected_tokens": rejected.tokens,
        "chosen_truncated": enc.chosen_truncated,
        "rejected_truncated": enc.rejected_truncated,
        "delta_reward": pair.delta_reward,
        "reward_source": pair.reward_source,
        "subset": pair.subset,
    }


# ------------------------------------------------------------------------------------------------ settings
@dataclass
class ScoreSettings:
    """Everything that changes the scores or the output layout (recorded in the manifest; resume checks it)."""

    max_length: int | None = 1024
    batch_tokens: int = 4096
    chat_template: str = "auto"
    dtype: str = "auto"
    prefix_mode: str = "packed"
    shard_pairs: int = 128
    on_error: str = "raise"
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.chat_template not in CHAT_TEMPLATE_CHOICES:
            raise ValueError(f"chat_template must be one of {CHAT_TEMPLATE_CHOICES}, got {self.chat_template!r}")
        if self.prefix_mode not in PREFIX_MODES:
            raise ValueError(f"prefix_mode must be one of {PREFIX_MODES}, got {self.prefix_mode!r}")
        if self.on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {self.on_error!r}")
        if self.batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {self.batch_tokens}")
        if self.shard_pairs < 1:
            raise ValueError(f"shard_pairs must be >= 1, got {self.shard_pairs}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")


@dataclass
class EncodeResult:
    """Encoded pairs (aligned with ``pairs``) and the pairs that could not be encoded (``on_error='skip'``)."""

    pairs: list[PreferencePair]
    encoded: list[EncodedPair]
    skipped: list[dict[str, Any]] = field(default_factory=list)


def encode_pairs(
    tokenizer: Any, pairs: Iterable[PreferencePair], settings: ScoreSettings, use_chat_template: bool
) -> EncodeResult:
    """Encode every pair; errors raise or are collected with their index and reason (``settings.on_error``)."""
    kept, encoded, skipped = [], [], []
    for pair in pairs:
        try:
            enc = encode_pair(tokenizer, pair, use_chat_template=use_chat_template, max_length=settings.max_length)
        except ScoringError as err:
            if settings.on_error == "raise":
                raise
            skipped.append({"index": pair.index, "reason": err.reason, "error": str(err)})
            continue
        kept.append(pair)
        encoded.append(enc)
    return EncodeResult(kept, encoded, skipped)


def score_pairs(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    settings: ScoreSettings | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score pairs in memory: (rows sorted by index, skipped records). Same batching as the CLI."""
    settings = settings or ScoreSettings()
    use_tpl = resolve_chat_template(tokenizer, settings.chat_template)
    enc = encode_pairs(tokenizer, pairs, settings, use_tpl)
    pad = _pad_id(tokenizer)
    rows, skipped = [], list(enc.skipped)
    for batch in plan_batches(enc.encoded, settings.batch_tokens, settings.prefix_mode):
        r, s = _score_planned_batch(model, enc, batch, pad, settings)
        rows += r
        skipped += s
        if progress is not None:
            progress(len(batch))
    rows.sort(key=lambda row: row["index"])
    return rows, skipped


def _pad_id(tokenizer: Any) -> int:
    for cand in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if cand is not None:
            return int(cand)
    return 0  # pragma: no cover


def _score_planned_batch(
    model: Any, enc: EncodeResult, batch: Sequence[int], pad: int, settings: ScoreSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import torch

    with torch.inference_mode():
        scores = score_batch(model, [enc.encoded[i] for i in batch], pad, settings.prefix_mode)
    rows, skipped = [], []
    for k, i in enumerate(batch):
        try:
            rows.append(make_row(enc.pairs[i], enc.encoded[i], scores[2 * k], scores[2 * k + 1]))
        except ScoringError as err:
            if settings.on_error == "raise":
                raise
            skipped.append({"index": enc.pairs[i].index, "reason": err.reason, "error": str(err)})
    return rows, skipped


# ------------------------------------------------------------------------------------------ files, manifest
def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a JSONL file (blank lines ignored)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def tokenizer_info(tokenizer: Any, use_chat_template: bool) -> dict[str, Any]:
    """What the manifest records about the tokenizer and the chat template."""
    tpl = getattr(tokenizer, "chat_template", None) if use_chat_template else None
    return {
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "chat_template_used": use_chat_template,
        "chat_template_sha256": hashlib.sha256(tpl.encode()).hexdigest() if isinstance(tpl, str) else None,
        "chat_template": tpl if isinstance(tpl, str) else None,
    }


def fingerprint(
    model_identity: dict[str, Any], data_identity: dict[str, Any], settings: ScoreSettings, tok: dict[str, Any]
) -> dict[str, Any]:
    """The part of the manifest that must match for ``--resume`` (model, data, settings, tokenizer)."""
    return {
        "format_version": FORMAT_VERSION,
        "model": model_identity,
        "data": data_identity,
        "settings": asdict(settings),
        "tokenizer": {k: v for k, v in tok.items() if k != "chat_template"},
    }


def _fingerprint_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _fingerprint_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return diffs


def _shard_files(out: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for f in out.iterdir():
        m = SHARD_RE.match(f.name)
        if m:
            k = int(m.group(2))
            if k in found:
                raise RuntimeError(f"two files for shard {k} in {out}: {found[k].name}, {f.name}")
            found[k] = f
    return found


def _skipped_file(shard: Path) -> Path:
    return shard.with_name(shard.stem + ".skipped.json")


# ---------------------------------------------------------------------------------------------- distributed
def dist_info() -> tuple[int, int]:
    """(rank, world_size): from torch.distributed when initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed under torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on the CPU."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return dist_info()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------------------------- the runner
@dataclass
class ScoreRun:
    """What :func:`score_to_directory` did on this rank."""

    out_dir: Path
    n_pairs: int
    n_scored_now: int
    n_shards: int
    shards_done_before: int
    skipped: list[dict[str, Any]]
    seconds: float
    tokens: int
    merged: Path | None


def score_to_directory(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    out_dir: str | os.PathLike[str],
    settings: ScoreSettings,
    *,
    model_identity: dict[str, Any],
    data_identity: dict[str, Any],
    resume: bool = False,
    extra_manifest: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> ScoreRun:
    """Score ``pairs`` into ``out_dir`` (shards, manifest, merged ``scores.jsonl``); resumable; torchrun-aware.

    Rank r processes the shards k with k % world_size == r that are not complete yet (a shard file exists only
    once complete: it is written to a temp file and renamed). After a barrier, rank 0 checks every shard against
    the plan and merges them.
    """
    from tqdm import tqdm

    rank, world = dist_info()
    out = Path(out_dir)
    use_tpl = resolve_chat_template(tokenizer, settings.chat_template)
    tok = tokenizer_info(tokenizer, use_tpl)
    fp = fingerprint(model_identity, data_identity, settings, tok)
    manifest_path = out / MANIFEST

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if manifest_path.exists():
            if not resume:
                raise FileExistsError(f"{out} already holds a scoring run; pass --resume or choose a new --out")
            old = json.loads(manifest_path.read_text())
            diffs = _fingerprint_diff(old.get("fingerprint", {}), fp)
            if diffs:
                raise ValueError(
                    f"refusing to resume into {out}: its manifest was made with different inputs: "
                    + "; ".join(diffs[:8])
                )
        elif any(SHARD_RE.match(f.name) for f in out.iterdir()):
            raise FileExistsError(f"{out} holds score shards but no {MANIFEST}; refusing to mix runs")
        for f in out.iterdir():  # leftovers of a killed writer
            if f.name.startswith(".") and ".tmp-" in f.name:
                f.unlink()
        manifest = {
            "fingerprint": fp,
            "status": "running",
            "world_size": world,
            "row_keys": list(ROW_KEYS),
            "tokenizer_detail": tok,
            **(extra_manifest or {}),
        }
        if manifest_path.exists():
            old = json.loads(manifest_path.read_text())
            manifest = {**old, **manifest, "sessions": old.get("sessions", [])}
        write_atomic(manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    _barrier()
    if rank != 0:
        old = json.loads(manifest_path.read_text())
        if _fingerprint_diff(old.get("fingerprint", {}), fp):
            raise ValueError(f"rank {rank}: inputs differ from rank 0's manifest in {out}")

    t0 = time.perf_counter()
    enc = encode_pairs(tokenizer, pairs, settings, use_tpl)
    batches = plan_batches(enc.encoded, settings.batch_tokens, settings.prefix_mode)
    shards = plan_shards(batches, settings.shard_pairs)
    pad = _pad_id(tokenizer)
    done = _shard_files(out)
    mine = [k for k in range(len(shards)) if k % world == rank and k not in done]
    todo_pairs = sum(len(b) for k in mine for b in shards[k])
    n_tokens = 0
    skipped_now: list[dict[str, Any]] = []
    bar = tqdm(
        total=todo_pairs,
        desc=f"score rank {rank}" if world > 1 else "score",
        unit="pair",
        file=sys.stderr,
        disable=not show_progress,
        position=rank if world > 1 else None,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        dynamic_ncols=True,
    )
    try:
        for k in mine:
            rows: list[dict[str, Any]] = []
            shard_skipped: list[dict[str, Any]] = []
            for batch in shards[k]:
                r, s = _score_planned_batch(model, enc, batch, pad, settings)
                rows += r
                shard_skipped += s
                n_tokens += sum(real_cost(enc.encoded[i], settings.prefix_mode) for i in batch)
                bar.update(len(batch))
                el = time.perf_counter() - t0
                bar.set_postfix_str(f"{n_tokens / max(el, 1e-9):.0f} tok/s")
            rows.sort(key=lambda row: row["index"])
            path = out / f"scores-{rank}-{k}.jsonl"
            if shard_skipped:
                write_atomic(_skipped_file(path), json.dumps(shard_skipped) + "\n")
            write_atomic(path, _jsonl(rows))
            skipped_now += shard_skipped
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    _barrier()
    merged = None
    if rank == 0:
        merged = merge_shards(
            out,
            enc,
            shards,
            settings.prefix_mode,
            session={"rank_0_seconds": seconds, "world_size": world, "tokens_rank_0": n_tokens},
        )
    _barrier()
    return ScoreRun(
        out, len(pairs), todo_pairs, len(shards), len(done), enc.skipped + skipped_now, seconds, n_tokens, merged
    )


def merge_shards(
    out: Path,
    enc: EncodeResult,
    shards: Sequence[Sequence[Sequence[int]]],
    prefix_mode: str,
    session: dict[str, Any],
) -> Path:
    """Check every shard against the plan, write ``scores.jsonl`` sorted by index, finish the manifest."""
    files = _shard_files(out)
    missing = [k for k in range(len(shards)) if k not in files]
    if missing:
        raise RuntimeError(f"cannot merge {out}: shards {missing[:10]} are missing")
    extra = sorted(set(files) - set(range(len(shards))))
    if extra:
        raise RuntimeError(f"cannot merge {out}: shard files {extra[:10]} are not in the plan")
    rows: list[dict[str, Any]] = []
    skipped = list(enc.skipped)
    for k in range(len(shards)):
        shard_rows = read_jsonl(files[k])
        sk_path = _skipped_file(files[k])
        shard_skipped = json.loads(sk_path.read_text()) if sk_path.exists() else []
        expect = sorted(enc.pairs[i].index for b in shards[k] for i in b)
        got = sorted([r["index"] for r in shard_rows] + [s["index"] for s in shard_skipped])
        if got != expect:
            raise RuntimeError(f"shard file {files[k].name} does not hold the pairs the plan puts in shard {k}")
        rows += shard_rows
        skipped += shard_skipped
    rows.sort(key=lambda r: r["index"])
    indices = [r["index"] for r in rows]
    if len(set(indices)) != len(indices):
        raise RuntimeError(f"duplicate indices while merging {out}")
    merged = out / MERGED
    write_atomic(merged, _jsonl(rows))
    real = sum(real_cost(e, prefix_mode) for e in enc.encoded)
    padded = sum(padded_cost([enc.encoded[i] for i in b], prefix_mode) for s in shards for b in s)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest.update(
        {
            "status": "complete",
            "counts": {
                "pairs_in": len(enc.pairs) + len(enc.skipped),
                "scored": len(rows),
                "skipped": len(skipped),
                "chosen_truncated": sum(r["chosen_truncated"] for r in rows),
                "rejected_truncated": sum(r["rejected_truncated"] for r in rows),
                "prompt_truncated": sum(e.prompt_truncated for e in enc.encoded),
                "boundary_merged": sum(e.boundary_merged for e in enc.encoded),
                "shards": len(shards),
                "batches": sum(len(s) for s in shards),
                "tokens_real": real,
                "tokens_padded": padded,
                "padding_efficiency": real / padded if padded else 1.0,
            },
            "skipped": skipped,
            "sessions": [*manifest.get("sessions", []), session],
        }
    )
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return merged
