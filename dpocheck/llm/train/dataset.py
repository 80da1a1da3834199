"""Training rows: dpocheck's own tokenisation joined with precomputed reference scores (C3, C4, C8, C10).

One row per pair, built from an :class:`~dpocheck.llm.scoring.encode.EncodedPair` (``encode_pair``'s boundary and
truncation rules, so the policy sees exactly the tokens the packed scorer saw) and that pair's reference row
(``dpocheck score`` output, joined on ``index``). The row schema (:data:`ROW_COLUMNS`, plus the loss's
precomputed columns prefixed ``loss_``):

``index``
    the record index in the data (the join key with scores files);
``prompt_ids``
    the token ids both sequences share (at least one);
``chosen_ids`` / ``rejected_ids``
    each sequence's token ids after the shared prompt: the response tokens (when the two prompts tokenise
    differently at the boundary, the few unshared prompt tokens come first); the scored tokens are always the
    last ``n_chosen`` / ``n_rejected``;
``ref_chosen_logp_sum`` … ``ref_rejected_logp_mean``
    log π_ref(y|x) summed over the response tokens and per-token mean (float64, from the reference scores);
``n_chosen`` / ``n_rejected``
    scored token counts (checked against the reference scores: another tokenizer, chat template or truncation
    is refused);
``delta_reward``
    Δr* = r*(y_w) − r*(y_l) when the data gives it, else None;
``chosen_truncated`` / ``rejected_truncated``
    whether the sequence was cut to the token budget (``encode_pair``'s flags; carried into the eval files);
``loss_<name>``
    the pair-constant inputs of the loss from ``LossSpec.precompute`` on the reference log-probs of the chosen
    convention (``sum`` or ``mean``), e.g. ``loss_offset`` = c of ℓ = softplus(c − β·δ_θ).

With ``normalize="sum"`` the ``cpo_margin`` margin m = γ(1/π_ref(y_w) + 1/π_ref(y_l)) (C8) is astronomically large
(1/π_ref of a whole sequence is e^{100} or more): it is computed in log space, and the offset c = β·δ_ref + m is
then so large that the loss is c − β·δ_θ to float64 precision — linear in δ_θ, with the same gradient weight β on
every pair (the value itself is a huge constant). Where e^{log m} overflows float64 the registry raises
OverflowError, reported here as an input error naming the record and suggesting ``normalize="mean"`` (with
per-token means 1/π̄_ref is the response's perplexity).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dpocheck.errors import InputError
from dpocheck.llm.scoring.encode import EncodedPair

NORMALIZE_CHOICES = ("sum", "mean")
LOSS_PREFIX = "loss_"
REF_COLUMNS = ("ref_chosen_logp_sum", "ref_rejected_logp_sum", "ref_chosen_logp_mean", "ref_rejected_logp_mean")
ROW_COLUMNS = (
    "index",
    "prompt_ids",
    "chosen_ids",
    "rejected_ids",
    *REF_COLUMNS,
    "n_chosen",
    "n_rejected",
    "delta_reward",
)
TRUNCATION_COLUMNS = ("chosen_truncated", "rejected_truncated")
_SCORE_KEYS = {  # reference-scores key -> row column
    "chosen_logp_sum": "ref_chosen_logp_sum",
    "rejected_logp_sum": "ref_rejected_logp_sum",
    "chosen_logp_mean": "ref_chosen_logp_mean",
    "rejected_logp_mean": "ref_rejected_logp_mean",
}


class TrainingInputError(InputError):
    """Bad training input; the message names the record index (when there is one) and the field."""

    def __init__(self, index: int | None, field_name: str, message: str):
        self.index = index
        self.field = field_name
        where = f"record {index}: " if index is not None else ""
        super().__init__(f"{where}field '{field_name}' {message}")


def check_beta(beta: Any) -> float:
    """β as a float, or TrainingInputError unless it is finite and > 0."""
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise TrainingInputError(None, "beta", f"must be a number, got {beta!r}") from None
    if not (math.isfinite(b) and b > 0):
        raise TrainingInputError(None, "beta", f"must be finite and > 0, got {beta!r}")
    return b


def check_normalize(normalize: str) -> str:
    """The log-prob convention, ``sum`` or ``mean``."""
    if normalize not in NORMALIZE_CHOICES:
        raise TrainingInputError(None, "normalize", f"must be one of {NORMALIZE_CHOICES}, got {normalize!r}")
    return normalize


def resolve_loss(loss_name: str, loss_params: Mapping[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """(LossSpec, resolved params) from the registry; unknown loss or bad/unknown parameter → TrainingInputError."""
    from dpocheck.theory.registry import get_loss

    try:
        spec = get_loss(loss_name)
    except (ValueError, KeyError) as err:
        raise TrainingInputError(None, "loss", str(err)) from None
    params = dict(loss_params or {})
    try:
        resolved = spec.resolve(**params)
    except (TypeError, ValueError) as err:
        bad = next((k for k in params if k in str(err)), "loss_params")
        raise TrainingInputError(None, bad, f"rejected by loss {loss_name!r}: {err}") from None
    return spec, resolved


def _finite_float(index: int, field_name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TrainingInputError(index, field_name, f"must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise TrainingInputError(index, field_name, f"must be finite, got {value!r}")
    return v


def _index_reference(reference_rows: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    refs: dict[int, Mapping[str, Any]] = {}
    for k, row in enumerate(reference_rows):
        idx = row.get("index")
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise TrainingInputError(None, "index", f"of reference row {k} must be an integer, got {idx!r}")
        if idx in refs:
            raise TrainingInputError(idx, "index", "appears twice in the reference scores")
        refs[idx] = row
    return refs


def _reference_values(enc: EncodedPair, ref: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, col in _SCORE_KEYS.items():
        if key not in ref:
            raise TrainingInputError(enc.index, key, "is missing from the reference scores")
        out[col] = _finite_float(enc.index, key, ref[key])
    for side, n in (("chosen", enc.chosen_tokens), ("rejected", enc.rejected_tokens)):
        if n < 1:
            raise TrainingInputError(enc.index, side, "is an empty response (no tokens to train on)")
        have = ref.get(f"{side}_tokens")
        if have is not None and have != n:
            raise TrainingInputError(
                enc.index,
                f"{side}_tokens",
                f"is {have} in the reference scores but {n} in the training encoding "
                "(scored with another tokenizer, chat template or max_length?)",
            )
        out[f"n_{side}"] = n
    dr = ref.get("delta_reward")
    out["delta_reward"] = None if dr is None else _finite_float(enc.index, "delta_reward", dr)
    return out


def _precompute(spec: Any, values: list[dict[str, Any]], beta: float, params: dict, normalize: str) -> dict:
    from dpocheck.theory.registry import ReferencePairs

    def col(name: str) -> np.ndarray:
        return np.array([v[name] for v in values], dtype=np.float64)

    mean_w, mean_l = col("ref_chosen_logp_mean"), col("ref_rejected_logp_mean")
    if normalize == "sum":  # log π(y|x) sums over |y| tokens (dpo_nll's per-token NLL divides by it)
        logp_w, logp_l = col("ref_chosen_logp_sum"), col("ref_rejected_logp_sum")
        tokens_w, tokens_l = col("n_chosen"), col("n_rejected")
    else:
        logp_w, logp_l = mean_w, mean_l
        tokens_w = tokens_l = np.ones_like(mean_w)
    ref = ReferencePairs(logp_w, logp_l, mean_logp_w=mean_w, mean_logp_l=mean_l, tokens_w=tokens_w, tokens_l=tokens_l)
    return spec.precompute(ref, beta, **params)


def build_training_rows(
    pairs_encoded: Sequence[EncodedPair],
    reference_rows: Iterable[Mapping[str, Any]],
    loss_name: str,
    beta: float,
    loss_params: Mapping[str, Any] | None = None,
    normalize: str = "sum",
) -> list[dict[str, Any]]:
    """Rows of the training schema (module docstring), in the order of ``pairs_encoded``.

    ``reference_rows`` are ``dpocheck score`` rows (keys ``index``, ``chosen_logp_sum`` … ``rejected_logp_mean``,
    ``chosen_tokens``, ``rejected_tokens``, ``delta_reward``), joined on ``index``. Raises
    :class:`TrainingInputError` naming the record and field for β ≤ 0, an unknown loss or bad loss parameter
    (e.g. γ < 0), a missing, non-finite or mismatched reference value, an empty response, a loss input that
    overflows float64 (cpo_margin with summed log-probs).
    """
    beta = check_beta(beta)
    normalize = check_normalize(normalize)
    spec, params = resolve_loss(loss_name, loss_params)
    refs = _index_reference(reference_rows)
    values = []
    for enc in pairs_encoded:
        ref = refs.get(enc.index)
        if ref is None:
            raise TrainingInputError(enc.index, "index", "has no row in the reference scores")
        values.append(_reference_values(enc, ref))
    if not values:
        return []
    try:
        pre = _precompute(spec, values, beta, params, normalize)
    except OverflowError as err:
        bad = next(k for k, v in enumerate(values) if _overflows(spec, [v], beta, params, normalize))
        raise TrainingInputError(
            pairs_encoded[bad].index,
            "loss",
            f"{loss_name!r} inputs overflow float64 with normalize={normalize!r} ({err}); "
            "use the per-token mean convention (normalize='mean', --normalize mean)",
        ) from None
    rows = []
    for k, (enc, v) in enumerate(zip(pairs_encoded, values, strict=True)):
        s = enc.shared
        row: dict[str, Any] = {
            "index": enc.index,
            "prompt_ids": list(enc.chosen_ids[:s]),
            "chosen_ids": list(enc.chosen_ids[s:]),
            "rejected_ids": list(enc.rejected_ids[s:]),
            **{c: v[c] for c in REF_COLUMNS},
            "n_chosen": v["n_chosen"],
            "n_rejected": v["n_rejected"],
            "delta_reward": v["delta_reward"],
            "chosen_truncated": enc.chosen_truncated,
            "rejected_truncated": enc.rejected_truncated,
        }
        for name, arr in pre.items():
            x = float(np.asarray(arr, dtype=np.float64).reshape(-1)[k] if np.ndim(arr) else arr)
            if not math.isfinite(x):
                raise TrainingInputError(enc.index, LOSS_PREFIX + name, f"is not finite ({x}) for loss {loss_name!r}")
            row[LOSS_PREFIX + name] = x
        rows.append(row)
    return rows


def _overflows(spec: Any, values: list[dict], beta: float, params: dict, normalize: str) -> bool:
    try:
        _precompute(spec, values, beta, params, normalize)
    except OverflowError:
        return True
    return False


def encoded_from_row(row: Mapping[str, Any]) -> EncodedPair:
    """The EncodedPair a training row came from, for the packed kernels (truncation flags: False when the row
    has none)."""
    prompt = tuple(int(t) for t in row["prompt_ids"])
    chosen = prompt + tuple(int(t) for t in row["chosen_ids"])
    rejected = prompt + tuple(int(t) for t in row["rejected_ids"])
    return EncodedPair(
        index=int(row["index"]),
        chosen_ids=chosen,
        rejected_ids=rejected,
        chosen_start=len(chosen) - int(row["n_chosen"]),
        rejected_start=len(rejected) - int(row["n_rejected"]),
        shared=len(prompt),
        chosen_truncated=bool(row.get("chosen_truncated", False)),
        rejected_truncated=bool(row.get("rejected_truncated", False)),
    )


def loss_columns(rows: Sequence[Mapping[str, Any]] | Any) -> list[str]:
    """The ``loss_*`` columns of a list of rows or a ``datasets.Dataset``."""
    names = getattr(rows, "column_names", None)
    if names is None:
        names = list(rows[0]) if len(rows) else []
    return [c for c in names if c.startswith(LOSS_PREFIX)]


def to_dataset(rows: Sequence[Mapping[str, Any]]) -> Any:
    """A ``datasets.Dataset`` of training rows with explicit types (float64 log-probs, nullable Δr*)."""
    from datasets import Dataset, Features, Value
    from datasets import Sequence as Seq

    if not rows:
        raise TrainingInputError(None, "data", "has no training pairs")
    feats: dict[str, Any] = {
        "index": Value("int64"),
        "prompt_ids": Seq(Value("int64")),
        "chosen_ids": Seq(Value("int64")),
        "rejected_ids": Seq(Value("int64")),
        **{c: Value("float64") for c in REF_COLUMNS},
        "n_chosen": Value("int64"),
        "n_rejected": Value("int64"),
        "delta_reward": Value("float64"),
    }
    for c in TRUNCATION_COLUMNS:
        if c in rows[0]:
            feats[c] = Value("bool")
    for c in loss_columns(rows):
        feats[c] = Value("float64")
    return Dataset.from_list([dict(r) for r in rows], features=Features(feats))
