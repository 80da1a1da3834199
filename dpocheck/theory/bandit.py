"""Tabular contextual bandits: the closed-form setting of PAPER.md (C1–C3).

A bandit has X contexts and Y responses, a reference policy (as log-probabilities, rows normalised), a true
reward r*(x, y), a KL strength β > 0 and preference pairs (x, w, l): y_w preferred over y_l in context x.
Everything is numpy float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import logsumexp

from . import pairs as _pairs

ROW_TOLERANCE = 1e-6  # allowed |Σ_y π_ref(y|x) − 1|


def rlhf_optimal_log_policy(log_pi_ref: Any, reward: Any, beta: float) -> np.ndarray:
    """log π*(y|x) = log π_ref(y|x) + r*(x,y)/β − logsumexp_y(...) (C1, the KL-regularised RLHF optimum).

    Computed entirely in log space: nothing is exponentiated before normalising.
    """
    _pairs.require_positive_beta(beta)
    r = np.asarray(reward, dtype=np.float64)
    # Shift-invariance of π* in r(x, ·): subtracting each context's best reward keeps the logits O(log π_ref) for
    # the best responses, so small β (r/β ~ 1e4) does not cost absolute precision in the normaliser.
    logits = np.asarray(log_pi_ref, dtype=np.float64) + (r - r.max(axis=-1, keepdims=True)) / beta
    return logits - logsumexp(logits, axis=-1, keepdims=True)


def rlhf_optimal_log_policy_error(log_pi_ref: Any, reward: Any, beta: float) -> np.ndarray:
    """A bound on the absolute float64 rounding error of each entry of :func:`rlhf_optimal_log_policy` (C1).

    Each entry is log π_ref + (r* − max r*)/β − logsumexp(...): a few roundings, each at most half a spacing of the
    largest term, so 4·eps·(|log π_ref| + |r* − max r*|/β + |logsumexp|) bounds the error. With a reward of 1e17
    in a context the bound is ~ 90 nats: such an entry holds no digit of the probability ratios it encodes, and
    pair margins must come from the key identity δ* = δ_ref + Δr*/β instead of from differences of entries.
    """
    _pairs.require_positive_beta(beta)
    lp = np.asarray(log_pi_ref, dtype=np.float64)
    r = np.asarray(reward, dtype=np.float64)
    t = (r - r.max(axis=-1, keepdims=True)) / beta
    lse = logsumexp(lp + t, axis=-1, keepdims=True)
    return 4 * np.finfo(np.float64).eps * (np.abs(lp) + np.abs(t) + np.abs(lse))


def log_softmax(logits: Any) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    z = np.asarray(logits, dtype=np.float64)
    return z - logsumexp(z, axis=-1, keepdims=True)


def policy_delta(log_pi: Any, pairs: Any) -> np.ndarray:
    """δ_π = log π(y_w|x) − log π(y_l|x) for every pair (x, w, l) (PAPER §1)."""
    lp = np.asarray(log_pi, dtype=np.float64)
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
    return lp[p[:, 0], p[:, 1]] - lp[p[:, 0], p[:, 2]]


def pair_values(table: Any, pairs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(table[x, w], table[x, l]) for every pair."""
    t = np.asarray(table, dtype=np.float64)
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
    return t[p[:, 0], p[:, 1]], t[p[:, 0], p[:, 2]]


@dataclass(frozen=True)
class TabularBandit:
    """A contextual bandit with a reference policy, true rewards, β and preference pairs (PAPER §1).

    log_pi_ref: (X, Y) float64, rows normalised (log-sum-exp 0 within ROW_TOLERANCE), all finite (full support).
    reward: (X, Y) float64 finite. beta: > 0. pairs: (N, 3) int64 rows (x, w, l) with w ≠ l.
    """

    log_pi_ref: np.ndarray
    reward: np.ndarray
    beta: float
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))

    def __post_init__(self) -> None:
        lp = np.array(self.log_pi_ref, dtype=np.float64, ndmin=2)
        r = np.array(self.reward, dtype=np.float64, ndmin=2)
        p = np.array(self.pairs, dtype=np.int64).reshape(-1, 3)
        object.__setattr__(self, "log_pi_ref", lp)
        object.__setattr__(self, "reward", r)
        object.__setattr__(self, "pairs", p)
        object.__setattr__(self, "beta", float(self.beta))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field when the bandit is not valid."""
        lp, r, p = self.log_pi_ref, self.reward, self.pairs
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta: must be finite and > 0, got {self.beta!r}")
        if lp.ndim != 2 or lp.shape[1] < 2:
            raise ValueError(f"log_pi_ref: must be a (contexts × responses) table with ≥ 2 responses, got {lp.shape}")
        if r.shape != lp.shape:
            raise ValueError(f"reward: shape {r.shape} differs from log_pi_ref's {lp.shape}")
        if not np.all(np.isfinite(lp)):
            x, y = np.argwhere(~np.isfinite(lp))[0]
            raise ValueError(
                f"log_pi_ref: entry [{x}][{y}] is {float(lp[x, y])!r}; "
                "the reference needs full support (finite log-probs)"
            )
        if not np.all(np.isfinite(r)):
            x, y = np.argwhere(~np.isfinite(r))[0]
            raise ValueError(f"reward: entry [{x}][{y}] is {float(r[x, y])!r}; rewards must be finite")
        row_err = np.abs(np.expm1(logsumexp(lp, axis=1)))
        if np.any(row_err > ROW_TOLERANCE):
            x = int(np.argmax(row_err))
            raise ValueError(
                f"log_pi_ref: row {x} sums to {math.exp(logsumexp(lp[x])):.9g}, not 1 (tolerance {ROW_TOLERANCE})"
            )
        if p.size:
            for col, name, bound in ((0, "x", lp.shape[0]), (1, "w", lp.shape[1]), (2, "l", lp.shape[1])):
                bad = (p[:, col] < 0) | (p[:, col] >= bound)
                if np.any(bad):
                    i = int(np.argmax(bad))
                    raise ValueError(f"pairs[{i}]: index {name}={p[i, col]} out of range [0, {bound})")
            same = p[:, 1] == p[:, 2]
            if np.any(same):
                i = int(np.argmax(same))
                raise ValueError(f"pairs[{i}]: w and l are the same response ({p[i, 1]})")

    # ---- shapes
    @property
    def n_contexts(self) -> int:
        return self.log_pi_ref.shape[0]

    @property
    def n_responses(self) -> int:
        return self.log_pi_ref.shape[1]

    @property
    def n_pairs(self) -> int:
        return self.pairs.shape[0]

    # ---- closed forms
    def log_pi_opt(self) -> np.ndarray:
        """log π* (C1)."""
        return rlhf_optimal_log_policy(self.log_pi_ref, self.reward, self.beta)

    def delta_ref(self) -> np.ndarray:
        """δ_ref per pair."""
        return policy_delta(self.log_pi_ref, self.pairs)

    def delta_reward(self) -> np.ndarray:
        """Δr* = r*(x, w) − r*(x, l) per pair."""
        return policy_delta(self.reward, self.pairs)

    def delta_opt(self) -> np.ndarray:
        """δ_{π*} per pair by the key identity δ_{π*} = δ_ref + Δr*/β (C1).

        Equal to the difference of two log π* entries in exact arithmetic, but exact in float64 too: with a reward
        of 1e17 in the context, log π* entries are ~ −1e17 (spacing 16) and their difference loses every digit.
        """
        return _pairs.delta_opt(self.delta_ref(), self.delta_reward(), self.beta)

    def violation_mask(self) -> np.ndarray:
        """C2 per pair: β·δ_ref + Δr* ≤ 0."""
        return _pairs.violation_mask(self.delta_ref(), self.delta_reward(), self.beta)

    def log_pi_ref_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(log π_ref(y_w|x), log π_ref(y_l|x)) per pair."""
        return pair_values(self.log_pi_ref, self.pairs)

    def with_beta(self, beta: float) -> TabularBandit:
        """The same bandit with another β."""
        return TabularBandit(self.log_pi_ref, self.reward, beta, self.pairs)

    # ---- (de)serialisation
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (log_pi_ref form)."""
        return {
            "beta": self.beta,
            "log_pi_ref": self.log_pi_ref.tolist(),
            "reward": self.reward.tolist(),
            "pairs": self.pairs.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], extra_keys: tuple[str, ...] = ()) -> TabularBandit:
        """Build from a dict with `beta`, `pi_ref` or `log_pi_ref`, `reward`, `pairs` (+ allowed extra keys).

        Raises ValueError naming the field on unknown keys, ragged rows, negative or non-normalised
        probabilities, β ≤ 0 or out-of-range indices.
        """
        if not isinstance(data, dict):
            raise ValueError("bandit: the top level must be a JSON object")
        known = {"beta", "pi_ref", "log_pi_ref", "reward", "pairs", *extra_keys}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; allowed: {sorted(known)}")
        for key in ("beta", "reward", "pairs"):
            if key not in data:
                raise ValueError(f"{key}: missing")
        if ("pi_ref" in data) == ("log_pi_ref" in data):
            raise ValueError("pi_ref / log_pi_ref: give exactly one of them")
        beta = data["beta"]
        if isinstance(beta, bool) or not isinstance(beta, int | float):
            raise ValueError(f"beta: must be a number, got {beta!r}")
        beta = _as_float(beta, "beta")
        ref_key = "pi_ref" if "pi_ref" in data else "log_pi_ref"
        ref = _table(data[ref_key], ref_key)
        if ref_key == "pi_ref":
            if np.any(ref < 0):
                x, y = np.argwhere(ref < 0)[0]
                raise ValueError(f"pi_ref: entry [{x}][{y}] is negative ({float(ref[x, y])!r})")
            if np.any(ref == 0):
                x, y = np.argwhere(ref == 0)[0]
                raise ValueError(f"pi_ref: entry [{x}][{y}] is 0; the reference needs full support")
            sums = ref.sum(axis=1)
            if np.any(np.abs(sums - 1) > ROW_TOLERANCE):
                x = int(np.argmax(np.abs(sums - 1)))
                raise ValueError(f"pi_ref: row {x} sums to {float(sums[x])!r}, not 1 (tolerance {ROW_TOLERANCE})")
            log_ref = np.log(ref)
        else:
            log_ref = ref
        reward = _table(data["reward"], "reward")
        raw_pairs = data["pairs"]
        if not isinstance(raw_pairs, list) or not all(
            isinstance(q, list) and len(q) == 3 and all(isinstance(i, int) and not isinstance(i, bool) for i in q)
            for q in raw_pairs
        ):
            raise ValueError("pairs: must be a list of [x, w, l] integer triples")
        for i, q in enumerate(raw_pairs):
            if any(abs(v) > 2**62 for v in q):
                raise ValueError(f"pairs[{i}]: index {max(q, key=abs)} out of range")
        return cls(log_ref, reward, beta, np.array(raw_pairs, dtype=np.int64).reshape(-1, 3))


def _as_float(v: int | float, name: str) -> float:
    """float(v), or ValueError naming the field when an integer is beyond float64 (JSON allows 1e400 as 10**400)."""
    try:
        return float(v)
    except OverflowError:
        raise ValueError(f"{name}: {str(v)[:20]}… ({len(str(v))} digits) is beyond float64") from None


def _table(value: Any, name: str) -> np.ndarray:
    """A rectangular float table from nested lists, or ValueError naming the field."""
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise ValueError(f"{name}: must be a non-empty list of rows")
    widths = {len(row) for row in value}
    if len(widths) != 1:
        raise ValueError(f"{name}: ragged rows (lengths {sorted(widths)})")
    for i, row in enumerate(value):
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"{name}: entry [{i}][{j}] is not a number ({v!r})")
            _as_float(v, f"{name}: entry [{i}][{j}]")
    arr = np.array(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) and name != "log_pi_ref":
        x, y = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name}: entry [{x}][{y}] is not finite")
    return arr


# ---------------------------------------------------------------- seeded constructors


def _all_pairs(n_responses: int) -> np.ndarray:
    a, b = np.triu_indices(n_responses, k=1)
    return np.stack([a, b], axis=1)


def random_bandit(
    n_contexts: int = 4,
    n_responses: int = 5,
    beta: float = 0.1,
    *,
    seed: int = 0,
    reward_scale: float = 1.0,
    ref_concentration: float = 1.0,
    pairs: str = "reward_order",
    n_pairs: int | None = None,
) -> TabularBandit:
    """A random bandit: reference logits ~ N(0, ref_concentration²), rewards ~ N(0, reward_scale²).

    pairs="reward_order": every pair of distinct responses in every context, oriented so that y_w has the higher
    true reward (labels agree with r*); pairs="bradley_terry": `n_pairs` pairs sampled with labels drawn from BT
    (see :func:`sample_bt_pairs`).
    """
    rng = np.random.default_rng(seed)
    log_ref = log_softmax(ref_concentration * rng.standard_normal((n_contexts, n_responses)))
    reward = reward_scale * rng.standard_normal((n_contexts, n_responses))
    return _with_pairs(log_ref, reward, beta, pairs, n_pairs, rng)


def misaligned_bandit(
    n_contexts: int = 4,
    n_responses: int = 5,
    beta: float = 0.1,
    misalignment: float = 0.5,
    *,
    seed: int = 0,
    reward_scale: float = 1.0,
    ref_concentration: float = 2.0,
    noise: float = 0.5,
    pairs: str = "reward_order",
    n_pairs: int | None = None,
) -> TabularBandit:
    """A bandit whose reference is misaligned with r* to a chosen degree ρ = misalignment ∈ [0, 1].

    Reference logits = ref_concentration·((1 − 2ρ)·r̃ + noise·ε), r̃ the context-standardised reward, ε ~ N(0, 1):
    ρ = 0 → π_ref ranks responses like r*; ρ = 0.5 → unrelated; ρ = 1 → reversed ranking.
    """
    if not 0.0 <= misalignment <= 1.0:
        raise ValueError(f"misalignment must lie in [0, 1], got {misalignment!r}")
    rng = np.random.default_rng(seed)
    reward = reward_scale * rng.standard_normal((n_contexts, n_responses))
    std = reward.std(axis=1, keepdims=True)
    r_tilde = (reward - reward.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
    logits = ref_concentration * ((1 - 2 * misalignment) * r_tilde + noise * rng.standard_normal(reward.shape))
    return _with_pairs(log_softmax(logits), reward, beta, pairs, n_pairs, rng)


def _with_pairs(
    log_ref: np.ndarray,
    reward: np.ndarray,
    beta: float,
    mode: str,
    n_pairs: int | None,
    rng: np.random.Generator,
) -> TabularBandit:
    if mode == "reward_order":
        ab = _all_pairs(log_ref.shape[1])
        rows = []
        for x in range(log_ref.shape[0]):
            for a, b in ab:
                w, l = (a, b) if reward[x, a] >= reward[x, b] else (b, a)
                rows.append((x, w, l))
        p = np.array(rows, dtype=np.int64).reshape(-1, 3)
        if n_pairs is not None:
            p = p[rng.permutation(len(p))[:n_pairs]]
        return TabularBandit(log_ref, reward, beta, p)
    if mode == "bradley_terry":
        b = TabularBandit(log_ref, reward, beta)
        return sample_bt_pairs(b, n_pairs if n_pairs is not None else 4 * log_ref.shape[0], rng=rng)
    raise ValueError(f"pairs must be 'reward_order' or 'bradley_terry', got {mode!r}")


def sample_bt_pairs(
    bandit: TabularBandit, n_pairs: int, *, seed: int | None = None, rng: np.random.Generator | None = None
) -> TabularBandit:
    """Sample n_pairs (x, a, b) uniformly (a ≠ b) and label them by Bradley–Terry: y_w = a w.p. σ(r*(a) − r*(b)).

    Some labels therefore disagree with r* (Δr* < 0 for those pairs), as in real preference data.
    """
    if rng is None:
        rng = np.random.default_rng(seed)
    x = rng.integers(0, bandit.n_contexts, size=n_pairs)
    a = rng.integers(0, bandit.n_responses, size=n_pairs)
    b = (a + rng.integers(1, bandit.n_responses, size=n_pairs)) % bandit.n_responses
    gap = bandit.reward[x, a] - bandit.reward[x, b]
    p_a = np.exp(-np.logaddexp(0.0, -gap))
    a_wins = rng.random(n_pairs) < p_a
    w = np.where(a_wins, a, b)
    l = np.where(a_wins, b, a)
    return TabularBandit(bandit.log_pi_ref, bandit.reward, bandit.beta, np.stack([x, w, l], axis=1))
