"""Many tabular bandits at once: a batch of B instances sharing shapes (X contexts, Y responses, N pairs).

A :class:`BanditBatch` stacks what :class:`dpocheck.theory.TabularBandit` holds for one instance, so
that a training step is one array operation across every instance and seed. Everything is numpy float64.
The constructors here are the settings of the simulations; every closed-form check they feed
lives in :mod:`dpocheck.theory`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.special import expit, logsumexp

from dpocheck.theory import TabularBandit

ROW_TOLERANCE = 1e-6  # allowed |Σ_y π_ref(y|x) − 1|, as in dpocheck.theory.bandit


def batched_log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax over the last axis, in float64 (log space: nothing exponentiated before
    normalising)."""
    z = np.asarray(logits, dtype=np.float64)
    return z - logsumexp(z, axis=-1, keepdims=True)


def gather_pairs(table: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(table[b, x, w], table[b, x, l]) for every instance b and pair (x, w, l); table (B, X, Y), pairs (B,
    N, 3)."""
    b = np.arange(table.shape[0])[:, None]
    return table[b, pairs[..., 0], pairs[..., 1]], table[b, pairs[..., 0], pairs[..., 2]]


@dataclass(frozen=True)
class BanditBatch:
    """B tabular bandits with equal shapes (PAPER §1), for vectorised simulation.

    log_pi_ref, reward: (B, X, Y) float64, rows of log_pi_ref normalised (full support); pairs: (B, N,
    3) int64 rows (x, w, l) with w ≠ l; beta: (B,) float64 > 0 (one β per instance); label_prob: (B, N)
    in [0, 1], the probability that y_w is the labelled winner. 1 everywhere means hard labels (the pair
    is observed as "y_w ≻ y_l"); σ(Δr*) means the Bradley–Terry population (every pair observed
    infinitely often, C5a).
    """

    log_pi_ref: np.ndarray
    reward: np.ndarray
    pairs: np.ndarray
    beta: np.ndarray
    label_prob: np.ndarray

    def __post_init__(self) -> None:
        lp = np.array(self.log_pi_ref, dtype=np.float64)
        r = np.array(self.reward, dtype=np.float64)
        p = np.array(self.pairs, dtype=np.int64)
        if lp.ndim != 3:
            raise ValueError(f"log_pi_ref: must be (instances, contexts, responses), got shape {lp.shape}")
        B = lp.shape[0]
        if p.ndim != 3 or p.shape[0] != B or p.shape[2] != 3:
            raise ValueError(f"pairs: must be (instances={B}, pairs, 3), got shape {p.shape}")
        beta = np.broadcast_to(np.asarray(self.beta, dtype=np.float64), (B,)).copy()
        q = self.label_prob
        q = np.ones(p.shape[:2]) if q is None else np.broadcast_to(np.asarray(q, dtype=np.float64), p.shape[:2])
        for name, value in (
            ("log_pi_ref", lp),
            ("reward", r),
            ("pairs", p),
            ("beta", beta),
            ("label_prob", q),
        ):
            object.__setattr__(self, name, np.array(value))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the instance and field when the batch is not valid."""
        lp, r, p, beta, q = self.log_pi_ref, self.reward, self.pairs, self.beta, self.label_prob
        B, X, Y = lp.shape
        if Y < 2:
            raise ValueError(f"log_pi_ref: need ≥ 2 responses, got {Y}")
        if r.shape != lp.shape:
            raise ValueError(f"reward: shape {r.shape} differs from log_pi_ref's {lp.shape}")
        for name, arr in (("log_pi_ref", lp), ("reward", r)):
            bad = ~np.isfinite(arr)
            if bad.any():
                b, x, y = np.argwhere(bad)[0]
                raise ValueError(f"instance {b}: {name}[{x}][{y}] is {arr[b, x, y]!r}; must be finite")
        row_err = np.abs(np.expm1(logsumexp(lp, axis=-1)))
        if np.any(row_err > ROW_TOLERANCE):
            b, x = np.argwhere(row_err > ROW_TOLERANCE)[0]
            raise ValueError(f"instance {b}: log_pi_ref row {x} does not sum to 1 (error {row_err[b, x]:.3g})")
        bad_beta = ~(np.isfinite(beta) & (beta > 0))
        if bad_beta.any():
            b = int(np.argmax(bad_beta))
            raise ValueError(f"instance {b}: beta must be finite and > 0, got {beta[b]!r}")
        for col, name, bound in ((0, "x", X), (1, "w", Y), (2, "l", Y)):
            bad = (p[..., col] < 0) | (p[..., col] >= bound)
            if bad.any():
                b, i = np.argwhere(bad)[0]
                raise ValueError(f"instance {b}: pairs[{i}] index {name}={p[b, i, col]} out of range [0, {bound})")
        same = p[..., 1] == p[..., 2]
        if same.any():
            b, i = np.argwhere(same)[0]
            raise ValueError(f"instance {b}: pairs[{i}] has w = l = {p[b, i, 1]}")
        bad_q = ~((q >= 0) & (q <= 1))
        if bad_q.any():
            b, i = np.argwhere(bad_q)[0]
            raise ValueError(f"instance {b}: label_prob[{i}] = {q[b, i]!r} is not a probability")

    # ---- shapes
    @property
    def n_instances(self) -> int:
        return self.log_pi_ref.shape[0]

    @property
    def n_contexts(self) -> int:
        return self.log_pi_ref.shape[1]

    @property
    def n_responses(self) -> int:
        return self.log_pi_ref.shape[2]

    @property
    def n_pairs(self) -> int:
        return self.pairs.shape[1]

    @property
    def hard_labels(self) -> bool:
        """True when every label probability is 1 (each pair observed once as y_w ≻ y_l)."""
        return bool(np.all(self.label_prob == 1.0))

    # ---- per-pair quantities, (B, N)
    def delta_ref(self) -> np.ndarray:
        """δ_ref = log π_ref(y_w|x) − log π_ref(y_l|x) per instance and pair."""
        lw, ll = gather_pairs(self.log_pi_ref, self.pairs)
        return lw - ll

    def delta_reward(self) -> np.ndarray:
        """Δr* = r*(x, y_w) − r*(x, y_l) per instance and pair."""
        rw, rl = gather_pairs(self.reward, self.pairs)
        return rw - rl

    def log_pi_ref_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(log π_ref(y_w|x), log π_ref(y_l|x)) per instance and pair."""
        return gather_pairs(self.log_pi_ref, self.pairs)

    def log_pi_opt(self) -> np.ndarray:
        """log π* of every instance (C1): log π_ref + r*/β, normalised in log space."""
        return batched_log_softmax(self.log_pi_ref + self.reward / self.beta[:, None, None])

    # ---- conversion
    def instance(self, i: int) -> TabularBandit:
        """Instance i as a :class:`dpocheck.theory.TabularBandit` (labels dropped)."""
        return TabularBandit(self.log_pi_ref[i], self.reward[i], float(self.beta[i]), self.pairs[i])

    def subset(self, index: Any) -> BanditBatch:
        """The instances selected by `index` (slice, int array or bool mask)."""
        idx = np.arange(self.n_instances)[index]
        idx = np.atleast_1d(idx)
        return BanditBatch(
            self.log_pi_ref[idx], self.reward[idx], self.pairs[idx], self.beta[idx], self.label_prob[idx]
        )

    def with_labels(self, label_prob: Any) -> BanditBatch:
        """The same batch with other label probabilities (B, N) or a scalar."""
        return replace(self, label_prob=np.broadcast_to(np.asarray(label_prob, dtype=np.float64), self.pairs.shape[:2]))

    def with_beta(self, beta: Any) -> BanditBatch:
        """The same batch with another β (scalar or (B,))."""
        return replace(self, beta=np.broadcast_to(np.asarray(beta, dtype=np.float64), (self.n_instances,)))

    def with_bt_population_labels(self) -> BanditBatch:
        """Label probabilities q = σ(Δr*): the Bradley–Terry population of each pair (C5a)."""
        return self.with_labels(expit(self.delta_reward()))

    @classmethod
    def from_bandits(cls, bandits: list[TabularBandit], label_prob: Any = None) -> BanditBatch:
        """Stack bandits of equal shapes and pair counts (β may differ)."""
        if not bandits:
            raise ValueError("from_bandits: need at least one bandit")
        shapes = {(b.log_pi_ref.shape, b.n_pairs) for b in bandits}
        if len(shapes) != 1:
            raise ValueError(f"from_bandits: bandits differ in shape or pair count: {sorted(shapes)}")
        return cls(
            np.stack([b.log_pi_ref for b in bandits]),
            np.stack([b.reward for b in bandits]),
            np.stack([b.pairs for b in bandits]),
            np.array([b.beta for b in bandits]),
            label_prob,
        )


# ---------------------------------------------------------------------------------------------- constructors


def all_pairs_by_reward(reward: np.ndarray) -> np.ndarray:
    """Every unordered pair of distinct responses in every context, oriented so y_w has the higher true
    reward.

    reward: (B, X, Y) → pairs (B, X·Y(Y−1)/2, 3), ordered by context, then by (a, b) with a < b.
    """
    B, X, Y = reward.shape
    a, b = np.triu_indices(Y, k=1)
    xs = np.repeat(np.arange(X), len(a))
    aa = np.tile(a, X)
    bb = np.tile(b, X)
    ra = reward[:, xs, aa]
    rb = reward[:, xs, bb]
    a_wins = ra >= rb
    w = np.where(a_wins, aa, bb)
    l = np.where(a_wins, bb, aa)
    return np.stack([np.broadcast_to(xs, w.shape), w, l], axis=-1).astype(np.int64)


def gaussian_batch(
    n_instances: int,
    n_contexts: int,
    n_responses: int,
    beta: Any,
    *,
    seed: int,
    misalignment: float = 0.5,
    ref_scale: float = 2.0,
    noise: float = 0.5,
    reward_scale: float = 1.0,
) -> BanditBatch:
    """Gaussian bandits with a reference misaligned to degree ρ = misalignment (E1's setting; C2).

    r*(x, y) ~ N(0, s²) i.i.d. with s = reward_scale; reference logits κ·((1 − 2ρ)·r*/s + ν·ε), ε ~ N(0,
    1), κ = ref_scale, ν = noise; every pair of distinct responses, oriented by the true reward. ρ = 0:
    π_ref ranks like r*; 0.5: unrelated; 1: reversed. Unlike :func:`dpocheck.theory.misaligned_bandit`
    the reward is not standardised per context, so the violation share has the closed form of
    :func:`dpocheck.figures.e1_violation_map.violation_share_closed_form`.
    """
    if not 0.0 <= misalignment <= 1.0:
        raise ValueError(f"misalignment must lie in [0, 1], got {misalignment!r}")
    if not reward_scale > 0:
        raise ValueError(f"reward_scale must be > 0, got {reward_scale!r}")
    rng = np.random.default_rng(seed)
    shape = (n_instances, n_contexts, n_responses)
    reward = reward_scale * rng.standard_normal(shape)
    logits = ref_scale * ((1 - 2 * misalignment) * reward / reward_scale + noise * rng.standard_normal(shape))
    return BanditBatch(batched_log_softmax(logits), reward, all_pairs_by_reward(reward), beta, None)


def one_pair_per_context(batch: BanditBatch, *, seed: int) -> BanditBatch:
    """Keep one pair per context: responses a ≠ b drawn uniformly per (instance, context), y_w the one with
    the higher true reward. Each pair's δ_θ is then a free coordinate of the tabular policy (no
    coupling)."""
    rng = np.random.default_rng(seed)
    B, X, Y = batch.log_pi_ref.shape
    a = rng.integers(0, Y, size=(B, X))
    b = (a + rng.integers(1, Y, size=(B, X))) % Y
    xs = np.broadcast_to(np.arange(X), (B, X))
    bi = np.arange(B)[:, None]
    a_wins = batch.reward[bi, xs, a] >= batch.reward[bi, xs, b]
    pairs = np.stack([xs, np.where(a_wins, a, b), np.where(a_wins, b, a)], axis=-1)
    return BanditBatch(batch.log_pi_ref, batch.reward, pairs, batch.beta, None)


def sample_bt_repeats(batch: BanditBatch, n_repeats: int, *, seed: int) -> tuple[BanditBatch, np.ndarray]:
    """Observe every pair n_repeats times with Bradley–Terry labels (y_w wins w.p. σ(Δr*)); hard labels.

    Returns (batch with N·n_repeats pairs, each oriented as labelled; empirical_q (B, N) the share of
    the repeats in which the original y_w won). Labels that disagree with r* make Δr* < 0 for that row
    (C2, C5a).
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    rng = np.random.default_rng(seed)
    q = expit(batch.delta_reward())  # (B, N)
    wins = rng.random((*q.shape, n_repeats)) < q[..., None]  # (B, N, R)
    p = np.repeat(batch.pairs[:, :, None, :], n_repeats, axis=2)  # (B, N, R, 3)
    w = np.where(wins, p[..., 1], p[..., 2])
    l = np.where(wins, p[..., 2], p[..., 1])
    pairs = np.stack([p[..., 0], w, l], axis=-1).reshape(batch.n_instances, -1, 3)
    out = BanditBatch(batch.log_pi_ref, batch.reward, pairs, batch.beta, None)
    return out, wins.mean(axis=-1)


def uniform_log_policy(n_instances: int, n_contexts: int, n_responses: int) -> np.ndarray:
    """log of the uniform policy, (B, X, Y)."""
    return np.full((n_instances, n_contexts, n_responses), -math.log(n_responses))
