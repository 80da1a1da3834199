"""The misaligned-reference construction of E2 (toy Fig. 2 of the paper; C2, C3).

The paper makes references misaligned by training them on preference data with a corruption ratio R. Our
toy version, exactly:

1. True rewards r*(x, y) ~ N(0, s²) i.i.d.; the preference data are all Y(Y−1)/2 pairs of distinct
   responses in each of the X contexts, labelled by the true reward (y_w has the higher r*): N =
   X·Y(Y−1)/2 clean pairs.
2. In each instance exactly round(R·N) of these labels are flipped (y_w and y_l exchanged), the flipped
   pairs chosen uniformly at random without replacement; so the flip rate is R up to rounding to a whole
   number of pairs.
3. π_ref is a Bradley–Terry fit to the corrupted labels, early-stopped: logits z start uniform (z = 0)
   and take `fit_steps` steps of plain gradient descent with step size `fit_lr` on the mean over pairs
   of −log σ(z[x, w'] − z[x, l']) — i.e. DPO with β = 1 from the uniform reference, on the corrupted
   pairs (w', l'); π_ref = softmax(z / T) with a temperature T (default 1; T < 1 makes the reference
   more confident, like a large model whose sequence log-probs differ by tens of nats). The fit is
   early-stopped because the maximum-likelihood scores can diverge.
4. The policy is then trained from π_ref on the clean labels. Where the corrupted fit reversed a pair,
   δ_ref < 0 and U = {δ_ref < δ_θ < 0} is non-empty (C3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batch import BanditBatch, all_pairs_by_reward, batched_log_softmax, uniform_log_policy
from .trainer import LossConfig, train

DEFAULT_FIT_STEPS = 200
DEFAULT_FIT_LR = 5.0


@dataclass(frozen=True)
class MisalignedReference:
    """A batch whose π_ref was fit to flipped labels (see the module docstring).

    batch: π_ref = the fitted reference, pairs = the clean labels (reward order); flipped: (B, N) bool,
    the pairs whose label the reference saw reversed; flip_rate: R requested; realised_flip_rate: (B,)
    share actually flipped.
    """

    batch: BanditBatch
    flipped: np.ndarray
    flip_rate: float
    realised_flip_rate: np.ndarray
    fit_steps: int
    fit_lr: float
    temperature: float = 1.0


def flip_labels(pairs: np.ndarray, flip_rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly round(flip_rate·N) labels per instance, chosen uniformly without replacement.

    pairs: (B, N, 3) (x, w, l). Returns (pairs with those rows' w and l exchanged, mask (B, N) of flipped
    rows).
    """
    if not 0.0 <= flip_rate <= 1.0:
        raise ValueError(f"flip_rate must lie in [0, 1], got {flip_rate!r}")
    B, N, _ = pairs.shape
    k = int(round(flip_rate * N))
    order = np.argsort(rng.random((B, N)), axis=1, kind="stable")
    mask = np.zeros((B, N), dtype=bool)
    np.put_along_axis(mask, order[:, :k], True, axis=1)
    out = pairs.copy()
    out[mask, 1] = pairs[mask, 2]
    out[mask, 2] = pairs[mask, 1]
    return out, mask


def fit_reference(
    pairs: np.ndarray,
    n_contexts: int,
    n_responses: int,
    *,
    steps: int = DEFAULT_FIT_STEPS,
    lr: float = DEFAULT_FIT_LR,
) -> np.ndarray:
    """Early-stopped Bradley–Terry fit from uniform logits: `steps` gradient steps of DPO with β = 1 (mean
    over pairs) against the uniform reference. Returns log π_ref, (B, X, Y)."""
    B = pairs.shape[0]
    uniform = uniform_log_policy(B, n_contexts, n_responses)
    fit_batch = BanditBatch(uniform, np.zeros_like(uniform), pairs, 1.0, None)
    traj = train(fit_batch, LossConfig("dpo"), steps, optimizer="sgd", lr=lr, record_every=max(steps, 1))
    return traj.log_pi


def misaligned_reference_batch(
    n_instances: int,
    n_contexts: int,
    n_responses: int,
    flip_rate: float,
    beta: float,
    *,
    seed: int,
    reward_scale: float = 1.0,
    fit_steps: int = DEFAULT_FIT_STEPS,
    fit_lr: float = DEFAULT_FIT_LR,
    temperature: float = 1.0,
) -> MisalignedReference:
    """Build the E2 setting (module docstring): clean pairs, a reference fit to labels with R = flip_rate
    flipped."""
    rng = np.random.default_rng(seed)
    reward = reward_scale * rng.standard_normal((n_instances, n_contexts, n_responses))
    clean = all_pairs_by_reward(reward)
    corrupted, mask = flip_labels(clean, flip_rate, rng)
    log_ref = fit_reference(corrupted, n_contexts, n_responses, steps=fit_steps, lr=fit_lr)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    log_ref = batched_log_softmax(log_ref / temperature)
    batch = BanditBatch(log_ref, reward, clean, beta, None)
    return MisalignedReference(batch, mask, float(flip_rate), mask.mean(axis=1), fit_steps, fit_lr, float(temperature))
