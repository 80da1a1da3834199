"""Vectorised training of tabular softmax policies on preference pairs (C3, C4, C5, C8, C10).

Every instance of a :class:`~dpocheck.sims.batch.BanditBatch` has its own logits z (X × Y), initialised
at log π_ref. For a tabular softmax policy δ_θ = z[x, w] − z[x, l] (the normaliser cancels), so the
gradient of the training loss in the logits is Σ_i ∂ℓ_i/∂δ_i·(e_w − e_l) / N. The per-pair losses and
their exact derivatives ∂ℓ/∂δ_θ come from the loss registry (:mod:`dpocheck.theory.registry`) —
nothing here re-implements a loss. Everything pair-constant (the logistic family's offset c in
ℓ = softplus(c − β·δ_θ), or δ_ref) is precomputed once by the registry before training. The losses that
also depend on log π(y_w|x) = z[x, w] − logsumexp(z[x]) (DPOP, DPO + NLL; PAPER §6) add
∂ℓ_i/∂log π(y_w)·(e_w − π(·|x)) (see :func:`dpocheck.theory.tabular_logit_gradient`).

**The training loss is the mean over pairs** of each instance: L_b(z) = (1/N)·Σ_i ℓ_i, so learning rates
do not depend on the number of pairs. One step updates every instance with one array operation. With
soft labels (label_prob q < 1) a pair contributes q·ℓ(δ; y_w ≻ y_l) + (1 − q)·ℓ(−δ; y_l ≻ y_w), the
expected loss over its Bradley–Terry labels (C5a's population reading); the swapped pair has δ_ref →
−δ_ref and y_w, y_l exchanged. For DPOP and DPO + NLL the swapped label's chosen response is y_l: its
displacement is penalised, its NLL is added (the expectation over labels is well defined for both).

Runs are deterministic: no randomness is used after the batch is built, and every reduction has a fixed
order, so equal inputs give bit-for-bit equal trajectories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import logsumexp

from dpocheck.theory import (
    LossSpec,
    ReferencePairs,
    dpo_gradient_weight,
    get_loss,
    in_undesirable_space,
)

from .batch import BanditBatch, batched_log_softmax, gather_pairs

REFERENCE_POINTS = ("rlhf_optimum", "ecpoc")
OPTIMIZERS = ("sgd", "adam")

# Per-instance metrics recorded along a trajectory (each a mean over the instance's pairs or contexts).
METRIC_COLUMNS = (
    "frac_in_U",  # share of pairs with δ_ref < δ_θ < 0 (C3, the released code's frac_in_U)
    "pref_acc",  # share of pairs with δ_θ > 0 (labelled winner preferred)
    "reward_acc",  # share with δ_θ > δ_ref: implicit-reward accuracy, what TRL logs as rewards/accuracies
    "true_pref_acc",  # share with sign(δ_θ) = sign(Δr*): the policy orders the pair like the true reward
    "dpo_grad_weight",  # mean |∂ℓ_DPO/∂δ_θ| = β·σ(β(δ_ref − δ_θ)) (C4)
    "kl",  # KL(π‖π_ref), mean over contexts
    "expected_reward",  # E_{y~π}[r*], mean over contexts
    "p_w",  # mean π(y_w|x) over pairs (likelihood displacement when it falls)
    "logp_w_shift",  # mean log π(y_w|x) − log π_ref(y_w|x) over pairs
    "loss",  # the training loss: mean over pairs of ℓ_i (NaN for the exact reference points)
)


@dataclass(frozen=True)
class LossConfig:
    """A training loss by name (one of dpocheck.theory.LOSS_NAMES) with its hyper-parameters.

    gamma: the margin scale of cpo_margin (C8: m = γ(1/π_ref(y_w) + 1/π_ref(y_l))), released_easy and
    released_adaptive (C10) and simpo; a scalar or a (B,) array, one γ per instance. None takes the registry's
    default (0.05 for cpo_margin, the released demo config; 0.5 for the others). tau: released adaptive softplus
    (C10). alpha: released adaptive softplus (C10, > 0) or the NLL weight of dpo_nll (≥ 0). lam: DPOP's λ (≥ 0).
    None takes the registry's default (τ 2, α 1, λ 50); lam and alpha may be (B,) arrays too. Hyper-parameters the
    loss does not take are ignored. "cpo_margin" is the paper's constrained preference optimization, not TRL's
    CPOTrainer.
    """

    name: str
    gamma: Any = None
    tau: float | None = None
    alpha: Any = None
    lam: Any = None

    def __post_init__(self) -> None:
        spec = get_loss(self.name)  # ValueError listing the names
        if self.gamma is not None:
            g = np.asarray(self.gamma, dtype=np.float64)
            if not np.all(np.isfinite(g)) or np.any(g < 0):
                raise ValueError(f"gamma must be finite and >= 0, got {self.gamma!r}")
        spec.resolve(**self.params())  # ValueError naming a bad τ, α or λ

    @property
    def spec(self) -> LossSpec:
        """The loss's registry entry."""
        return get_loss(self.name)

    @property
    def gamma_value(self) -> Any:
        """γ as given, else the registry default (None for a loss without γ)."""
        return self.spec.defaults.get("gamma") if self.gamma is None else self.gamma

    def params(self) -> dict[str, Any]:
        """The hyper-parameters the loss takes, as given (γ per instance stays a (B,) array)."""
        given = {"gamma": self.gamma, "tau": self.tau, "alpha": self.alpha, "lam": self.lam}
        return {k: given[k] for k in self.spec.params if given[k] is not None}

    def describe(self) -> str:
        """Short label, e.g. 'cpo_margin(γ=0.05)'."""
        return self.spec.describe(**self.params())


def _col(v: Any, B: int) -> np.ndarray:
    """A per-instance value as a (B, 1) column for broadcasting over pairs."""
    return np.broadcast_to(np.asarray(v, dtype=np.float64), (B,)).reshape(B, 1)


class PairLoss:
    """Per-pair loss and its exact derivatives for one LossConfig on one batch, with everything pair-constant
    precomputed by the registry (:meth:`dpocheck.theory.LossSpec.precompute`) for the pairs as labelled and, with
    soft labels, for the swapped pairs. ``needs_policy_chosen``: the loss also depends on log π(y_w|x) (and, with
    soft labels, on log π(y_l|x), the swapped pair's chosen response)."""

    def __init__(self, loss: LossConfig, batch: BanditBatch) -> None:
        B = batch.n_instances
        self.loss = loss
        self.spec = loss.spec
        self.needs_policy_chosen = self.spec.needs_policy_chosen
        self.beta = _col(batch.beta, B)
        self.q = batch.label_prob
        self.hard = batch.hard_labels
        ref = ReferencePairs.single_token(*batch.log_pi_ref_pairs())
        resolved = self.spec.resolve(**loss.params())
        params = {k: _col(v, B) if np.ndim(v) else v for k, v in resolved.items()}
        self.fwd = self.spec.precompute(ref, self.beta, **params)
        self.rev = None if self.hard else self.spec.precompute(ref.swapped(), self.beta, **params)

    def __call__(
        self, delta: np.ndarray, logp_w: np.ndarray | None = None, logp_l: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(loss, ∂loss/∂δ_θ, ∂loss/∂log π(y_w), ∂loss/∂log π(y_l)), each (B, N) or None, at policy margins δ_θ =
        delta and chosen/rejected log-probs logp_w, logp_l (needed when ``needs_policy_chosen``). The partial
        derivatives in δ hold both log-probs' dependence fixed: the loss is ℓ(δ, log π(y_w)) with soft labels
        q·ℓ(δ, log π(y_w)) + (1 − q)·ℓ'(−δ, log π(y_l))."""
        fwd = self.spec.apply(delta, self.beta, policy_logp_w=logp_w, **self.fwd)
        if self.rev is None:
            return fwd.loss, fwd.grad, fwd.grad_logp_w, None
        rev = self.spec.apply(-delta, self.beta, policy_logp_w=logp_l, **self.rev)
        q = self.q
        gw = None if fwd.grad_logp_w is None else q * fwd.grad_logp_w
        gl = None if rev.grad_logp_w is None else (1 - q) * rev.grad_logp_w
        return q * fwd.loss + (1 - q) * rev.loss, q * fwd.grad - (1 - q) * rev.grad, gw, gl


def policy_metrics(
    batch: BanditBatch,
    log_pi: np.ndarray,
    pair_loss: np.ndarray | None = None,
    delta: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The METRIC_COLUMNS of each instance for policies log_pi (B, X, Y); pair_loss (B, N) or None (→ NaN).

    delta: the policy margins δ_θ (B, N) when known exactly from the logits (z_w − z_l, so that at π_ref
    it equals δ_ref bit for bit); by default they are taken from log_pi.
    """
    beta = _col(batch.beta, batch.n_instances)
    lw, ll = gather_pairs(log_pi, batch.pairs)
    d = lw - ll if delta is None else delta
    dref = batch.delta_ref()
    dr = batch.delta_reward()
    ref_w, _ = batch.log_pi_ref_pairs()
    pi = np.exp(log_pi)
    kl = np.sum(pi * (log_pi - batch.log_pi_ref), axis=-1).mean(axis=-1)
    true_order = ((dr > 0) & (d > 0)) | ((dr < 0) & (d < 0))
    return {
        "frac_in_U": in_undesirable_space(d, dref).mean(axis=1),
        "pref_acc": (d > 0).mean(axis=1),
        "reward_acc": (d > dref).mean(axis=1),
        "true_pref_acc": true_order.mean(axis=1),
        "dpo_grad_weight": dpo_gradient_weight(d, dref, beta).mean(axis=1),
        "kl": np.maximum(kl, 0.0),
        "expected_reward": np.sum(pi * batch.reward, axis=-1).mean(axis=-1),
        "p_w": np.exp(lw).mean(axis=1),
        "logp_w_shift": (lw - ref_w).mean(axis=1),
        "loss": pair_loss.mean(axis=1) if pair_loss is not None else np.full(batch.n_instances, np.nan),
    }


@dataclass
class Trajectory:
    """A training run on a batch.

    steps: (R,) recorded step numbers (0 = π_ref); metrics: name → (R, B); log_pi: (B, X, Y) final
    policy; deltas: (R, B, N) δ_θ at the recorded steps when requested, else None; escape_step: (B, N)
    the (linearly interpolated) step at which δ_θ first reached 0 for pairs that started in the closure
    of U (δ_ref < 0), NaN where it never did or U is empty; lr: (B,) learning rates (gradient-flow time
    = step·lr for one pair); config: the run's settings as plain data.
    """

    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    log_pi: np.ndarray
    escape_step: np.ndarray
    lr: np.ndarray
    deltas: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def final(self, name: str) -> np.ndarray:
        """The last recorded value of metric `name`, (B,)."""
        return self.metrics[name][-1]

    def final_delta(self, batch: BanditBatch) -> np.ndarray:
        """δ_θ of the final policy, (B, N)."""
        lw, ll = gather_pairs(self.log_pi, batch.pairs)
        return lw - ll


def train(
    batch: BanditBatch,
    loss: LossConfig | str,
    steps: int,
    *,
    optimizer: str = "sgd",
    lr: Any = 0.1,
    record_every: int | None = None,
    record_deltas: bool = False,
    adam_betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
    init_logits: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Trajectory:
    """Train every instance's tabular softmax policy from π_ref by `optimizer` on the mean loss over its
    pairs.

    loss: a LossConfig or a loss name (dpocheck.theory.LOSS_NAMES); optimizer "sgd" (plain gradient descent,
    z ← z − lr·∇) or "adam" (Kingma & Ba, bias-corrected, per logit); lr: scalar or (B,); record_every: record metrics
    at step 0, every k steps and at the last step (default: about 100 records). init_logits: start
    elsewhere than log π_ref (e.g. uniform, to fit a reference). progress(step, steps) is called after
    each step when given.
    """
    if isinstance(loss, str):
        loss = LossConfig(loss)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    B, X, Y = batch.log_pi_ref.shape
    N = batch.n_pairs
    if N == 0:
        raise ValueError("the batch has no preference pairs to train on")
    lr_b = np.broadcast_to(np.asarray(lr, dtype=np.float64), (B,)).copy()
    if not np.all(np.isfinite(lr_b) & (lr_b > 0)):
        raise ValueError(f"lr must be finite and > 0, got {lr!r}")
    record_every = max(1, steps // 100) if record_every is None else int(record_every)
    if record_every < 1:
        raise ValueError("record_every must be >= 1")

    pair_loss = PairLoss(loss, batch)
    z = np.array(batch.log_pi_ref if init_logits is None else init_logits, dtype=np.float64)
    if z.shape != (B, X, Y):
        raise ValueError(f"init_logits: shape {z.shape} differs from the batch's {(B, X, Y)}")
    p = batch.pairs
    base = (np.arange(B)[:, None] * X + p[..., 0]) * Y
    idx_w = (base + p[..., 1]).ravel()
    idx_l = (base + p[..., 2]).ravel()
    idx_all = np.concatenate([idx_w, idx_l])
    size = B * X * Y
    lr_col = lr_b[:, None, None]
    if optimizer == "adam":
        m = np.zeros_like(z)
        v = np.zeros_like(z)
        b1, b2 = adam_betas

    dref = batch.delta_ref()
    escape = np.full((B, N), np.nan)
    watching = dref < 0
    rec_steps: list[int] = []
    rec_metrics: dict[str, list[np.ndarray]] = {k: [] for k in METRIC_COLUMNS}
    rec_deltas: list[np.ndarray] = []

    def delta_of(zz: np.ndarray) -> np.ndarray:
        flat = zz.reshape(-1)
        return (flat[idx_w] - flat[idx_l]).reshape(B, N)

    def record(step: int, zz: np.ndarray, d: np.ndarray, per_pair_loss: np.ndarray) -> None:
        rec_steps.append(step)
        for k, val in policy_metrics(batch, batched_log_softmax(zz), per_pair_loss, d).items():
            rec_metrics[k].append(val)
        if record_deltas:
            rec_deltas.append(d.copy())

    chosen = pair_loss.needs_policy_chosen
    ctx = (np.arange(B)[:, None] * X + p[..., 0]).ravel()  # flat (instance, context) of every pair
    if chosen:
        # the policy's log π(y|x) as log π_ref(y|x) + (z − z_ref)[y] − (logsumexp z − logsumexp z_ref): exactly the
        # reference's at z = log π_ref, so Δ_w = 0 there is DPOP's kink itself (where the registry's derivative is
        # the non-displaced side's), not ± an ulp of rounding
        z_ref = batch.log_pi_ref.reshape(-1)
        lse_ref = logsumexp(batch.log_pi_ref, axis=-1).reshape(-1)
        ref_w, ref_l = (v.ravel() for v in batch.log_pi_ref_pairs())

    def evaluate(zz: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per-pair loss, gradient of the mean loss in the logits)."""
        if not chosen:
            ell, g, _, _ = pair_loss(d)
            grad = np.bincount(idx_all, weights=np.concatenate([g.ravel(), -g.ravel()]), minlength=size)
            return ell, grad.reshape(B, X, Y) / N
        flat = zz.reshape(-1)
        lse = logsumexp(zz, axis=-1).reshape(-1)
        shift = (lse - lse_ref)[ctx]
        lw = ref_w + (flat[idx_w] - z_ref[idx_w]) - shift
        ll = ref_l + (flat[idx_l] - z_ref[idx_l]) - shift
        log_pi = (zz - lse.reshape(B, X, 1)).reshape(-1)
        ell, g, gw, gl = pair_loss(d, lw.reshape(B, N), ll.reshape(B, N))
        gw = np.broadcast_to(gw, (B, N)).ravel()
        gl = np.zeros(B * N) if gl is None else np.broadcast_to(gl, (B, N)).ravel()
        w = np.concatenate([g.ravel() + gw, -g.ravel() + gl])
        grad = np.bincount(idx_all, weights=w, minlength=size).reshape(B, X, Y)
        # log π(y|x) = z[x, y] − logsumexp(z[x]): every log-prob term also pulls its context's row by −g·π(·|x)
        row = np.bincount(ctx, weights=gw + gl, minlength=B * X).reshape(B, X, 1)
        grad -= row * np.exp(log_pi.reshape(B, X, Y))
        return ell, grad / N

    d = delta_of(z)
    for t in range(1, steps + 1):
        ell, grad = evaluate(z, d)
        if (t - 1) % record_every == 0:
            record(t - 1, z, d, ell)
        if optimizer == "sgd":
            z -= lr_col * grad
        else:
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            mhat = m / (1 - b1**t)
            vhat = v / (1 - b2**t)
            z -= lr_col * mhat / (np.sqrt(vhat) + adam_eps)
        d_new = delta_of(z)
        crossed = watching & (d_new >= 0)
        if crossed.any():
            frac = -d[crossed] / (d_new[crossed] - d[crossed])
            escape[crossed] = (t - 1) + frac
            watching = watching & ~crossed
        d = d_new
        if progress is not None:
            progress(t, steps)
    ell, _ = evaluate(z, d)
    if not rec_steps or rec_steps[-1] != steps:
        record(steps, z, d, ell)
    if not np.all(np.isfinite(z)):
        b = int(np.argwhere(~np.isfinite(z))[0][0])
        raise FloatingPointError(f"instance {b}: logits became non-finite; lower the learning rate")
    return Trajectory(
        steps=np.array(rec_steps),
        metrics={k: np.stack(vs) for k, vs in rec_metrics.items()},
        log_pi=batched_log_softmax(z),
        escape_step=escape,
        lr=lr_b,
        deltas=np.stack(rec_deltas) if record_deltas else None,
        config={
            "loss": loss.describe(),
            "steps": steps,
            "optimizer": optimizer,
            "record_every": record_every,
            "loss_reduction": "mean over pairs",
        },
    )


# ------------------------------------------------------------------------------------- exact reference points


def rlhf_optimum_log_policy(batch: BanditBatch) -> np.ndarray:
    """log π* of every instance (C1), via dpocheck.theory.rlhf_optimal_log_policy."""
    from dpocheck.theory import rlhf_optimal_log_policy

    return np.stack(
        [
            rlhf_optimal_log_policy(batch.log_pi_ref[i], batch.reward[i], float(batch.beta[i]))
            for i in range(batch.n_instances)
        ]
    )


def ecpoc_log_policy(batch: BanditBatch, epsilon: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact E-CPOC policy of every instance (C9, dpocheck.theory.ecpoc_solve) and its `feasible` flags
    (B,)."""
    from dpocheck.theory import ecpoc_solve

    sols = [ecpoc_solve(batch.instance(i), epsilon) for i in range(batch.n_instances)]
    return np.stack([s.log_pi for s in sols]), np.array([s.feasible for s in sols])


def reference_point_metrics(batch: BanditBatch, name: str, epsilon: float = 0.0) -> dict[str, np.ndarray]:
    """METRIC_COLUMNS of an exact reference point: "rlhf_optimum" (C1) or "ecpoc" (C9, constraint δ ≥ ε)."""
    if name == "rlhf_optimum":
        return policy_metrics(batch, rlhf_optimum_log_policy(batch))
    if name == "ecpoc":
        return policy_metrics(batch, ecpoc_log_policy(batch, epsilon)[0])
    raise ValueError(f"unknown reference point {name!r}; choose one of {REFERENCE_POINTS}")


def kl_divergence(log_pi: np.ndarray, log_pi_ref: np.ndarray) -> np.ndarray:
    """KL(π‖π_ref) per instance, mean over contexts; (B, X, Y) → (B,)."""
    return np.maximum(np.sum(np.exp(log_pi) * (log_pi - log_pi_ref), axis=-1).mean(axis=-1), 0.0)


def gradient_flow_time(traj: Trajectory, n_pairs: int) -> np.ndarray:
    """Escape times (B, N) in the time of gradient flow on the single pair's loss ℓ_i, as in escape_time
    (C4).

    The trainer descends the mean over N pairs, so one step of size lr moves a pair whose logits no
    other pair touches by lr/N of flow time on ℓ_i: t = escape_step·lr/N (= step·lr for one pair per
    instance).
    """
    return traj.escape_step * traj.lr[:, None] / n_pairs


__all__ = [
    "METRIC_COLUMNS",
    "OPTIMIZERS",
    "REFERENCE_POINTS",
    "LossConfig",
    "PairLoss",
    "Trajectory",
    "ecpoc_log_policy",
    "gradient_flow_time",
    "kl_divergence",
    "policy_metrics",
    "reference_point_metrics",
    "rlhf_optimum_log_policy",
    "train",
]
