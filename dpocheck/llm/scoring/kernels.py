"""Log-prob kernels: Σ_t log π(y_t | x, y_<t) of scored token spans under a causal LM, exactly and prefix-shared.

These are the sequence log-probabilities behind every δ of the paper (δ_ref, δ_θ: C2, C3, C4, C8, C10). Three
ways to score the two responses of a pair (``prefix_mode``):

* ``packed`` (default, :func:`score_batch_packed`): each pair is one row ``prompt | chosen | rejected`` whose
  block mask lets each response see only the prompt and itself, with the rejected response's positions
  restarting after the prompt — no padding between the two responses;
* ``cache`` (:func:`score_batch_shared`): the prompts run once, their key/value cache is repeated twice along
  the batch and both responses run against it;
* ``none`` (:func:`score_sequences`): both full sequences, the unshared reference computation.

Masks are explicit 4-D additive masks (right padding, no fully-masked rows). The base model (``get_decoder()``)
returns hidden states; dpocheck applies the output head (``get_output_embeddings()``) itself to the hidden states
of scored positions only, in chunks of ≤ 2048 rows, with the log-softmax in fp32 (no ``logits_to_keep``, so any
transformers version with these two accessors works, and no [tokens × vocab] logits tensor is ever held). A model
whose own forward changes the logits otherwise (e.g. a subclass adding a bias) is detected once on a 4-token probe
and scored through its own forward. On CUDA
the per-sequence sums are dense row reductions (deterministic, so ``--resume`` reproduces a run bit for bit) and
packed rows are padded to a multiple of 64 tokens (``pad_multiple``) for the fused SDPA kernels; on the CPU the
sums are float64 ``index_add_`` in token order and nothing is padded. In fp32 every mode equals the unshared
computation to ≤ 1e-4 nats per sequence (tested). On the shared HH-RLHF data with SmolLM2 the packed plan runs
99 % real tokens, the cache plan 50–80 % (its two responses pad to the longer one).

With ``hidden_sums=True`` each :class:`SequenceScore` also carries Σ_k h_k, the float64 sum of the hidden states the
output head reads at the scored positions (the states that predict the response's tokens), the input of CHES
(Razin et al. 2024, PAPER §6); it is taken from the same forward pass (no second one), and the log-probs are the
same with or without it (tested). None where the model is scored through its own forward (no hidden states).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .encode import EncodedPair
from .hidden import segment_vector_sums
from .settings import PREFIX_MODES

HEAD_CHUNK = 2048  # rows of hidden states per output-head matmul (bounds the logits held at once)
SDPA_BACKENDS = ("auto", "math", "efficient", "flash", "cudnn")


@contextmanager
def sdpa_backend(name: str = "auto") -> Iterator[None]:
    """Force one scaled-dot-product-attention backend inside the block (``auto``: torch's own choice).

    ``math`` is the reference; ``efficient``/``flash``/``cudnn`` are the fused kernels (flash takes no custom
    mask, so with the packed 4-D mask it has no kernel and torch raises). Uses ``torch.nn.attention.sdpa_kernel``.
    """
    if name not in SDPA_BACKENDS:
        raise ValueError(f"sdpa backend must be one of {SDPA_BACKENDS}, got {name!r}")
    if name == "auto":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "math": SDPBackend.MATH,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }[name]
    with sdpa_kernel(backend):
        yield


def default_pad_multiple(device: Any) -> int:
    """Row-length multiple of packed batches: 64 on CUDA (fused SDPA kernels like aligned shapes), 1 elsewhere."""
    import torch

    return 64 if torch.device(device).type == "cuda" else 1


def _new_cache(cls: Any, config: Any) -> Any:
    """An empty key/value cache: transformers 5 builds it from the config, 4.x takes no arguments."""
    if "config" in inspect.signature(cls.__init__).parameters:
        return cls(config=config)
    return cls()


def _additive_mask(allowed: Any, dtype: Any) -> Any:
    import torch

    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, neg)[:, None, :, :]


def _round_up(n: int, multiple: int) -> int:
    if multiple < 1:
        raise ValueError(f"pad_multiple must be >= 1, got {multiple}")
    return -(-n // multiple) * multiple


def forward_kwargs(model: Any) -> dict[str, str]:
    """Name of the cache argument (``cache`` in transformers 5, ``past_key_values`` before) of the base model."""
    cached = getattr(model, "_dpocheck_kwargs", None)
    if cached is not None:
        return cached
    parts = _decoder_and_head(model)
    fwd = parts[0].forward if parts is not None else model.forward
    params = inspect.signature(fwd).parameters
    names = {"cache_arg": "cache" if "cache" in params else "past_key_values"}
    try:
        model._dpocheck_kwargs = names
    except AttributeError:  # pragma: no cover - exotic wrappers
        pass
    return names


def is_fsdp_sharded(model: Any) -> bool:
    """True for a model sharded by FSDP (FSDP2 ``fully_shard``, or an FSDP1 wrapper): its parameters are gathered
    by the root module's forward only, so dpocheck's direct decoder/head calls would read shards."""
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(model, (FSDPModule, FullyShardedDataParallel))


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """(base model, output head) of a causal LM; None for wrappers that hide them (DDP: their forward must run),
    for FSDP-sharded models (checked on every call: sharding happens in place, after a model may have been
    scored unsharded) and for models whose own forward changes the logits in a way the head cannot reproduce
    (checked once per model on a 4-token probe, cached on the model)."""
    if is_fsdp_sharded(model):
        return None
    cached = getattr(model, "_dpocheck_parts", False)
    if cached is not False:
        return cached
    parts = None
    get_decoder = getattr(model, "get_decoder", None)
    get_head = getattr(model, "get_output_embeddings", None)
    if get_decoder is not None and get_head is not None:
        decoder, head = get_decoder(), get_head()
        if decoder is not None and head is not None and decoder is not model and _head_reproduces(model, decoder, head):
            parts = (decoder, head)
    try:
        model._dpocheck_parts = parts
    except AttributeError:  # pragma: no cover - exotic wrappers
        pass
    return parts


def _head_reproduces(model: Any, decoder: Any, head: Any) -> bool:
    """Decoder + head (+ the known logit adjustments) give the model's own logits on a 4-token probe."""
    import torch

    try:
        device = next(model.parameters()).device
        vocab = max(int(getattr(model.config, "vocab_size", 2) or 2), 2)
        ids = (torch.arange(1, 5, device=device) * 7 % vocab)[None]
        with torch.no_grad():
            ref = model(input_ids=ids, use_cache=False).logits.float()
            mine = _head_logits(model, head, decoder(input_ids=ids, use_cache=False)[0]).float()
    except (RuntimeError, TypeError, ValueError, AttributeError, StopIteration):
        return False
    if ref.shape != mine.shape:
        return False
    return bool((ref - mine).abs().max() <= 1e-3 * (1.0 + ref.abs().max()))


def _bool_logits_to_keep(model: Any) -> bool:
    """Whether a wrapper's model understands a 2-D boolean ``logits_to_keep`` (transformers ≥ 5)."""
    import transformers

    inner = model
    while hasattr(inner, "module") and not hasattr(inner, "config"):
        inner = inner.module
    forward = getattr(inner, "forward", None)
    if forward is None or int(transformers.__version__.split(".")[0]) < 5:
        return False
    return "logits_to_keep" in inspect.signature(forward).parameters


def _head_logits(model: Any, head: Any, hidden: Any) -> Any:
    """The causal LM's logits from final hidden states, with the logit adjustments some heads apply after the
    matmul (Cohere's ``logit_scale``, Granite's ``logits_scaling``, Gemma-2/3's ``final_logit_softcapping``)."""
    import torch

    logits = head(hidden)
    cfg = getattr(model, "config", None)
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    scaling = getattr(cfg, "logits_scaling", None)
    if scaling not in (None, 1, 1.0):
        logits = logits / scaling
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _logps_from_logits(x: Any, targets: Any) -> Any:
    """float64 log softmax(x)[target]; the normaliser in the logits' precision but at least fp32."""
    import torch

    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    picked = x.gather(-1, targets[:, None]).squeeze(-1)
    return picked.double() - torch.logsumexp(x, dim=-1).double()


def _scored_logps(logits: Any, targets: Any, chunk: int = HEAD_CHUNK) -> Any:
    """float64 log-probs log softmax(logits)[target] for [N, V] logits, chunk by chunk.

    The normaliser logsumexp is computed in the logits' precision but at least fp32 (bf16/fp16 logits are
    upcast; float64 models stay float64); its rounding is ~1e-7 nats per token in fp32, far below the fp32
    forward pass's own noise. The difference target − logsumexp and the sums are taken in float64.
    """
    parts = [
        _logps_from_logits(logits[i : i + chunk], targets[i : i + chunk]) for i in range(0, logits.shape[0], chunk)
    ]
    return _cat(parts, logits)


def _cat(parts: list[Any], like: Any) -> Any:
    import torch

    if not parts:
        return torch.empty(0, dtype=torch.float64, device=like.device)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _scored_forward(
    model: Any, kwargs: dict[str, Any], keep: Any, targets: Any, slot: Any = None, n_slots: int = 0
) -> tuple[Any, Any, Any]:
    """(float64 log-probs of ``targets`` at the kept positions ``keep[:, :-1]``, the model output, hidden sums).

    With a base model and head exposed, the head runs on the kept hidden states only, ≤ HEAD_CHUNK rows at a
    time; otherwise (a wrapper such as DistributedDataParallel) the wrapper's forward runs and its full logits
    are indexed. ``slot`` (the sequence of each kept position, non-decreasing, ``n_slots`` in all): also return
    the float64 per-sequence sums of the kept hidden states ([n_slots, hidden]; None without a head, or without
    ``slot``).
    """
    parts = _decoder_and_head(model)
    sel = keep[:, :-1]
    if parts is None:
        if _bool_logits_to_keep(model):  # transformers ≥ 5 keeps only the scored positions' logits itself
            out = model(**kwargs, logits_to_keep=keep)
            return _scored_logps(out.logits, targets), out, None
        out = model(**kwargs)
        return _scored_logps(out.logits[:, :-1][sel], targets), out, None
    decoder, head = parts
    out = decoder(**kwargs)
    hidden = out[0][:, :-1][sel]
    chunks = [
        _logps_from_logits(_head_logits(model, head, hidden[i : i + HEAD_CHUNK]), targets[i : i + HEAD_CHUNK])
        for i in range(0, hidden.shape[0], HEAD_CHUNK)
    ]
    sums = None if slot is None else segment_vector_sums(hidden, slot, n_slots, HEAD_CHUNK)
    return _cat(chunks, hidden), out, sums


def _segment_sums(logp: Any, slot: Any, n_slots: int, dense: bool | None = None) -> tuple[Any, Any]:
    """Per-slot float64 sums of token log-probs and their all-finite flags; ``slot`` is non-decreasing.

    CPU: ``index_add_`` (sequential, deterministic). CUDA: the tokens are laid out as a dense [slots, max
    tokens] table (zeros elsewhere) and summed along rows, a deterministic reduction (float64 ``index_add_``
    uses atomics on CUDA, whose order varies run to run). ``dense`` forces one way (default: by device).
    """
    import torch

    dev = logp.device
    finite = torch.ones(n_slots, dtype=torch.bool, device=dev)
    bad = ~torch.isfinite(logp)
    if bad.any():
        finite[slot[bad]] = False
    if not (dev.type == "cuda" if dense is None else dense):
        sums = torch.zeros(n_slots, dtype=torch.float64, device=dev)
        sums.index_add_(0, slot, logp)
        return sums, finite
    counts = torch.bincount(slot, minlength=n_slots)
    starts = torch.cumsum(counts, 0) - counts
    offset = torch.arange(slot.shape[0], device=dev) - starts[slot]
    width = int(counts.max()) if slot.numel() else 0
    table = torch.zeros((n_slots, max(width, 1)), dtype=torch.float64, device=dev)
    table = table.index_put((slot, offset), logp)
    return table.sum(1), finite


def _run_scored(
    model: Any, ids: Any, mask4: Any, positions: Any, keep: Any, cache: Any = None, hidden: bool = False
) -> tuple[Any, Any, Any]:
    """One forward pass returning float64 per-row sums of next-token log-probs at ``keep`` positions, their
    all-finite flags and (``hidden``) the per-row float64 sums of the kept hidden states (else None).

    ``keep[b, t]`` means the logits at position t are scored against token ``ids[b, t + 1]``.
    """
    names = forward_kwargs(model)
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask4, "position_ids": positions}
    if cache is not None:
        kwargs[names["cache_arg"]] = cache
        kwargs["use_cache"] = True
    else:
        kwargs["use_cache"] = False
    if keep[:, -1].any():
        raise RuntimeError("internal error: a kept position has no next token")
    targets = ids[:, 1:][keep[:, :-1]]
    rows = keep[:, :-1].nonzero()[:, 0]
    n = ids.shape[0]
    logp, _, hsums = _scored_forward(model, kwargs, keep, targets, rows if hidden else None, n)
    return (*_segment_sums(logp, rows, n), hsums)


@dataclass
class SequenceScore:
    """Summed log-prob of a scored token span, its token count, whether every token log-prob was finite and
    (``hidden_sums=True``) Σ_k h_k, the float64 sum of the hidden states that predict its tokens (CHES's input)."""

    logp_sum: float
    tokens: int
    finite: bool
    hidden_sum: Any = None  # numpy float64 [hidden size], or None

    @property
    def logp_mean(self) -> float:
        return self.logp_sum / self.tokens


def _to_scores(sums: Any, counts: Sequence[int], finite: Any, hidden: Any = None) -> list[SequenceScore]:
    """SequenceScores from device tensors, with one host transfer each (no per-element syncs on CUDA)."""
    h = [None] * len(counts) if hidden is None else list(hidden.cpu().numpy())
    return [
        SequenceScore(float(v), int(c), bool(f), hv)
        for v, c, f, hv in zip(sums.cpu().tolist(), counts, finite.cpu().tolist(), h, strict=True)
    ]


def score_sequences(
    model: Any,
    sequences: Sequence[tuple[Sequence[int], int]],
    pad_id: int = 0,
    pad_multiple: int | None = None,
    hidden_sums: bool = False,
) -> list[SequenceScore]:
    """Score full sequences in one right-padded batch, no cache: Σ_{t ≥ start} log π(ids[t] | ids[:t]).

    ``sequences`` holds (ids, start) with 1 ≤ start < len(ids). This is the unshared reference computation.
    Rows are padded to a multiple of ``pad_multiple`` (default :func:`default_pad_multiple` of the device).
    """
    import torch

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    n = len(sequences)
    mult = default_pad_multiple(device) if pad_multiple is None else pad_multiple
    lmax = _round_up(max(len(s) for s, _ in sequences), mult)
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
    sums, finite, hsums = _run_scored(model, ids, _additive_mask(allowed, dtype), positions, keep, hidden=hidden_sums)
    counts = keep.sum(1).tolist()
    return _to_scores(sums, counts, finite, hsums)


def score_batch_shared(
    model: Any, batch: Sequence[EncodedPair], pad_id: int = 0, hidden_sums: bool = False
) -> list[SequenceScore]:
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
    names = forward_kwargs(model)
    cache = _new_cache(DynamicCache, model.config)
    kwargs: dict[str, Any] = {
        "input_ids": pre_ids,
        "attention_mask": _additive_mask(allowed, dtype),
        "position_ids": positions,
        names["cache_arg"]: cache,
        "use_cache": True,
    }
    parts = _decoder_and_head(model)
    out = parts[0](**kwargs) if parts is not None else model(**kwargs)  # the prompt pass needs no head
    returned = getattr(out, names["cache_arg"], None) or getattr(out, "past_key_values", None)
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
    mask4 = _additive_mask(allowed, dtype)
    sums, finite, hsums = _run_scored(model, c_ids, mask4, c_pos, keep, cache=cache, hidden=hidden_sums)
    counts = keep.sum(1).tolist()
    return _to_scores(sums, counts, finite, hsums)


def pack_pairs(batch: Sequence[EncodedPair], pad_id: int = 0, pad_multiple: int = 1) -> tuple[Any, Any, Any, Any, Any]:
    """The packed layout of a batch of pairs as CPU tensors ``(ids, seg, pos, keep, which)``, each [B, L].

    Row r is ``prompt | chosen continuation | rejected continuation`` (continuations start with the last shared
    token), right-padded with ``pad_id`` to the longest row (rounded up to a multiple of ``pad_multiple``). ``seg``
    is 0 for the prompt, 1 chosen, 2 rejected, −1 padding; ``pos`` restarts the rejected continuation's positions
    where the prompt ends; ``keep[r, t]`` marks the positions whose logits score token ``ids[r, t + 1]`` and
    ``which`` says for which response (0 chosen, 1 rejected). Used by :func:`score_batch_packed` and by the
    trainer's policy forward (one layout).
    """
    import torch

    b = len(batch)
    rows_len = [e.prefix_len + len(e.chosen_ids) + len(e.rejected_ids) - 2 * e.prefix_len for e in batch]
    lmax = _round_up(max(rows_len), pad_multiple)
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


def score_batch_packed(
    model: Any,
    batch: Sequence[EncodedPair],
    pad_id: int = 0,
    pad_multiple: int | None = None,
    hidden_sums: bool = False,
) -> list[SequenceScore]:
    """Prefix-shared scores of a batch of pairs in one pass: [chosen₀, rejected₀, chosen₁, …].

    Each pair is one row ``prompt | chosen continuation | rejected continuation`` (continuations start with the
    last shared token, as in :func:`score_batch_shared`). The rejected continuation's positions restart where
    the prompt ends and an explicit 4-D mask lets each continuation see the prompt and itself only, so every
    token sees exactly the context it has in its own sequence, the prompt's keys/values are computed once, and
    the two responses need no padding to a common length. Rows are right-padded to the batch's longest, rounded
    up to a multiple of ``pad_multiple`` (default :func:`default_pad_multiple`: 64 on CUDA, 1 on the CPU).
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if min(e.prefix_len for e in batch) < 1:
        raise ValueError("score_batch_packed needs prefix_len >= 1 for every pair")
    mult = default_pad_multiple(device) if pad_multiple is None else pad_multiple
    ids, seg, pos, keep, which = (t.to(device) for t in pack_pairs(batch, pad_id, mult))
    # the scored token at a kept position t is ids[t + 1], except at the end of the chosen continuation,
    # where the next id in the row is the rejected continuation's first token: keep never marks that position.
    mask4 = packed_attention_mask(seg, dtype)
    sums, finite, hsums = _packed_sums(model, ids, mask4, pos, keep, which, hidden_sums)
    return _to_scores(sums.reshape(-1), packed_counts(keep, which), finite.reshape(-1), hsums)


def packed_counts(keep: Any, which: Any) -> list[int]:
    """Scored tokens per sequence of a packed batch, [chosen₀, rejected₀, chosen₁, …]."""
    import torch

    return torch.stack([(keep & (which == 0)).sum(1), (keep & (which == 1)).sum(1)], dim=1).reshape(-1).tolist()


def packed_row_sums(model: Any, ids: Any, mask4: Any, positions: Any, keep: Any, which: Any) -> tuple[Any, Any]:
    """Like :func:`_run_scored`, but sums per (row, which) into a [B, 2] table."""
    sums, finite, _ = _packed_sums(model, ids, mask4, positions, keep, which, False)
    return sums, finite


def _packed_sums(
    model: Any, ids: Any, mask4: Any, positions: Any, keep: Any, which: Any, hidden: bool
) -> tuple[Any, Any, Any]:
    """:func:`packed_row_sums` and (``hidden``) the [2B, d] hidden-state sums of [chosen₀, rejected₀, …] (else None)."""
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask4, "position_ids": positions, "use_cache": False}
    targets = ids[:, 1:][keep[:, :-1]]
    nz = keep[:, :-1].nonzero()
    # row-major order and chosen before rejected within a row: slot is non-decreasing
    slot = nz[:, 0] * 2 + which[:, :-1][keep[:, :-1]]
    n = ids.shape[0] * 2
    logp, _, hsums = _scored_forward(model, kwargs, keep, targets, slot if hidden else None, n)
    sums, finite = _segment_sums(logp, slot, n)
    return sums.reshape(-1, 2), finite.reshape(-1, 2), hsums


def score_batch(
    model: Any,
    batch: Sequence[EncodedPair],
    pad_id: int = 0,
    prefix_mode: str = "packed",
    pad_multiple: int | None = None,
    hidden_sums: bool = False,
) -> list[SequenceScore]:
    """Scores [chosen₀, rejected₀, chosen₁, …] of a batch, prefix-shared where possible.

    prefix_mode: ``packed`` (:func:`score_batch_packed`), ``cache`` (:func:`score_batch_shared`) or ``none``
    (:func:`score_sequences`). Pairs with a one-token shared prefix (nothing to share) always go unshared.
    ``pad_multiple``: row-length multiple of the packed and unshared layouts (default: 64 on CUDA, 1 on the CPU).
    ``hidden_sums``: also the per-sequence hidden-state sums (:class:`SequenceScore`, module docstring).
    """
    if prefix_mode not in PREFIX_MODES:
        raise ValueError(f"prefix_mode must be one of {PREFIX_MODES}, got {prefix_mode!r}")
    out: list[SequenceScore | None] = [None] * (2 * len(batch))
    shared_rows = [r for r, e in enumerate(batch) if prefix_mode != "none" and e.prefix_len >= 1]
    shared_set = set(shared_rows)
    plain_rows = [r for r in range(len(batch)) if r not in shared_set]
    if shared_rows:
        rows_in = [batch[r] for r in shared_rows]
        if prefix_mode == "packed":
            res = score_batch_packed(model, rows_in, pad_id, pad_multiple, hidden_sums)
        else:
            res = score_batch_shared(model, rows_in, pad_id, hidden_sums)
        for k, r in enumerate(shared_rows):
            out[2 * r], out[2 * r + 1] = res[2 * k], res[2 * k + 1]
    if plain_rows:
        seqs = []
        for r in plain_rows:
            e = batch[r]
            seqs += [(e.chosen_ids, e.chosen_start), (e.rejected_ids, e.rejected_start)]
        res = score_sequences(model, seqs, pad_id, pad_multiple, hidden_sums)
        for k, r in enumerate(plain_rows):
            out[2 * r], out[2 * r + 1] = res[2 * k], res[2 * k + 1]
    return [s for s in out if s is not None]
