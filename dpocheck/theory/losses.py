"""Per-pair preference losses and their exact derivatives in δ_θ (C1, C7, C8, C10), for numpy and torch.

Every loss is a function of the policy margin δ_θ = log π_θ(y_w|x) − log π_θ(y_l|x) and returns
``LossAndGrad(loss, grad)`` with grad = ∂ℓ/∂δ_θ exactly. The logistic family is ℓ = softplus(c − β·δ_θ) for a
per-pair offset c, so its effective target (where the sigmoid's argument is zero) is δ_θ = c/β:

==================  =========================================  ===================================
loss                offset c                                   source
==================  =========================================  ===================================
dpo                 β·δ_ref                                    PAPER §1
cpo_margin          β·δ_ref + m, m = γ(1/π_ref(y_w)+1/π_ref(y_l))  C8 (constrained preference opt.)
released_easy       β·δ_ref + γ(1/ℓ̄_ref(y_w) + 1/ℓ̄_ref(y_l))   C10 (ℓ̄ = mean log-prob, so < 0)
released_clip       β·max(δ_ref, 0)                            C10
released_adaptive   β·δ_ref + (β/α)·softplus(τ(γ − δ_ref))/τ     C10
simpo               γ (reference-free, δ length-normalised)   SimPO (Meng et al. 2024)
==================  =========================================  ===================================

plus IPO ((δ_θ − δ_ref − 1/(2β))², Azar et al. 2023) and the hinge max(0, δ_ref − δ_θ) (C7, the β → ∞ limit of
ℓ_DPO/β). The losses by name (defaults, precomputation, display) are in :mod:`dpocheck.theory.registry`.
For a tabular softmax policy with logits z, δ_θ = z_w − z_l (log Z cancels), so the gradient in the logits is
grad·(e_w − e_l); see :func:`tabular_logit_gradient`.

Two losses against likelihood displacement (PAPER §6) also depend on the policy's log π_θ(y_w|x), not only on δ_θ:
DPOP (:func:`dpop_loss`, Pal et al. 2024) and DPO + NLL (:func:`dpo_nll_loss`, Pang et al. 2024). For them
``LossAndGrad.grad_logp_w`` = ∂ℓ/∂log π_θ(y_w|x) at fixed δ_θ, next to ``grad`` = ∂ℓ/∂δ_θ at fixed log π_θ(y_w|x);
a policy change moves ℓ by grad·dδ_θ + grad_logp_w·d log π_θ(y_w|x). With log π(y_w|x) = z_w − logsumexp(z_x) the
tabular logit gradient gains grad_logp_w·(e_w − π(·|x)).

"cpo_margin" is the paper's Constrained Preference Optimization; it is NOT TRL's CPOTrainer (Contrastive
Preference Optimization), a different method.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ._array import Array, as_arrays, require_finite, require_positive_beta, sigmoid, softplus, to_numpy
from .pairs import exp_checked

# Defaults of the released code (PAPER.md C10): β 0.1, γ 0.5, τ 2.0, α 1.0.
RELEASED_DEFAULTS = {"beta": 0.1, "gamma": 0.5, "tau": 2.0, "alpha": 1.0}
#: SimPO's default γ (Meng et al. 2024).
SIMPO_DEFAULT_GAMMA = 0.5
#: The released demo configuration's β and γ (PAPER.md C10).
RELEASED_DEMO = {"beta": 2.5, "gamma": 0.05}
#: γ of the released demo configuration, the default γ of cpo_margin (C8).
CPO_MARGIN_DEMO_GAMMA = RELEASED_DEMO["gamma"]


#: DPOP's default λ: 50, the value of the Smaug paper's experiments (Pal et al. 2024, arXiv 2402.13228; also the
#: default of PaddleFormers' ``dpop_lambda``). The authors later reported results largely insensitive to λ in
#: [5, 500] (github.com/abacusai/smaug/issues/2).
DPOP_DEFAULT_LAMBDA = 50.0
#: DPO + NLL's default α: 1.0, RPO's value (Pang et al. 2024, arXiv 2404.19733 v3; TRL's ``DPOConfig.rpo_alpha``:
#: "The paper recommends rpo_alpha=1.0").
DPO_NLL_DEFAULT_ALPHA = 1.0


class LossAndGrad(NamedTuple):
    """Per-pair loss and its exact partial derivatives.

    grad: ∂ℓ/∂δ_θ at fixed log π_θ(y_w|x). grad_logp_w: ∂ℓ/∂log π_θ(y_w|x) at fixed δ_θ, None for the losses that
    depend on δ_θ alone. In the coordinates (log π_θ(y_w), log π_θ(y_l)): ∂ℓ/∂log π_θ(y_w) = grad + grad_logp_w and
    ∂ℓ/∂log π_θ(y_l) = −grad.
    """

    loss: Array
    grad: Array
    grad_logp_w: Array | None = None


def logistic_loss(delta_policy: Any, beta: float, offset: Any) -> LossAndGrad:
    """ℓ = softplus(c − β·δ_θ) = −log σ(β·δ_θ − c), ∂ℓ/∂δ_θ = −β·σ(c − β·δ_θ). The common core of C1/C8/C10."""
    require_positive_beta(beta)
    xp, (d, c) = as_arrays(delta_policy, offset)
    z = c - beta * d
    return LossAndGrad(softplus(xp, z), -beta * sigmoid(xp, z))


def dpo_offset(delta_ref: Any, beta: float) -> Array:
    """Offset c = β·δ_ref of the DPO loss."""
    _, (dref,) = as_arrays(delta_ref)
    return beta * dref


def dpo_loss(delta_policy: Any, delta_ref: Any, beta: float) -> LossAndGrad:
    """DPO (PAPER §1): ℓ = −log σ(β(δ_θ − δ_ref)); ∂ℓ/∂δ_θ = −β·σ(β(δ_ref − δ_θ)) (C4's gradient weight)."""
    return logistic_loss(delta_policy, beta, dpo_offset(delta_ref, beta))


def ipo_loss(delta_policy: Any, delta_ref: Any, beta: float) -> LossAndGrad:
    """IPO (Azar et al. 2023): ℓ = (δ_θ − δ_ref − 1/(2β))², ∂ℓ/∂δ_θ = 2(δ_θ − δ_ref − 1/(2β))."""
    require_positive_beta(beta)
    _, (d, dref) = as_arrays(delta_policy, delta_ref)
    e = d - dref - 1.0 / (2.0 * beta)
    return LossAndGrad(e * e, 2.0 * e)


def simpo_loss(delta_policy: Any, beta: float, gamma: float = SIMPO_DEFAULT_GAMMA) -> LossAndGrad:
    """SimPO (Meng et al. 2024, reference-free): ℓ = −log σ(β·δ̄_θ − γ), δ̄_θ the length-normalised margin.

    δ̄_θ = log π(y_w)/|y_w| − log π(y_l)/|y_l| (see :func:`length_normalized_delta`); for a tabular bandit each
    response has length 1 and δ̄_θ = δ_θ.
    """
    _, (d,) = as_arrays(delta_policy)
    return logistic_loss(d, beta, gamma + 0.0 * d)


def length_normalized_delta(logp_w: Any, logp_l: Any, len_w: Any, len_l: Any) -> Array:
    """δ̄ = log π(y_w)/|y_w| − log π(y_l)/|y_l| (per-token mean convention of SimPO and the released code)."""
    _, (lw, ll, nw, nl) = as_arrays(logp_w, logp_l, len_w, len_l)
    if bool((to_numpy(nw) <= 0).any() or (to_numpy(nl) <= 0).any()):
        raise ValueError("response lengths must be >= 1 (empty response)")
    return lw / nw - ll / nl


def hinge_loss(delta_policy: Any, delta_ref: Any) -> LossAndGrad:
    """Soft-margin ranking limit (C7, Prop. 5.1): ℓ = max(0, δ_ref − δ_θ), subgradient −1[δ_θ < δ_ref]."""
    xp, (d, dref) = as_arrays(delta_policy, delta_ref)
    gap = dref - d
    return LossAndGrad(xp.where(gap > 0, gap, xp.zeros_like(gap)), xp.where(gap > 0, -xp.ones_like(gap), 0 * gap))


def cpo_margin_offset(delta_ref: Any, beta: float, margin: Any = None, log_margin: Any = None) -> Array:
    """Offset c = β·δ_ref + m of the constrained-preference-optimization loss (C8); m given directly or as log m."""
    if (margin is None) == (log_margin is None):
        raise ValueError("give exactly one of margin or log_margin")
    if margin is None:
        margin = exp_checked("cpo_margin", log_margin)
    xp, (dref, m) = as_arrays(delta_ref, margin)
    require_finite("margin", m)
    if bool((to_numpy(m) < 0).any()):
        raise ValueError("the C8 margin m = γ(1/π_ref(y_w) + 1/π_ref(y_l)) must be >= 0")
    return beta * dref + m


def cpo_margin_loss(
    delta_policy: Any, delta_ref: Any, beta: float, margin: Any = None, log_margin: Any = None
) -> LossAndGrad:
    """Constrained preference optimization loss (C8, Thm 4.8): ℓ = −log σ(β(δ_θ − δ_ref) − m).

    m = γ(1/π_ref(y_w) + 1/π_ref(y_l)) ≥ 0, passed as ``margin`` or, for whole sequences where 1/π_ref ~ e^{200},
    as ``log_margin`` (see :func:`dpocheck.theory.pairs.log_cpo_margin`); a log margin whose exponential overflows
    raises OverflowError instead of silently producing inf. m = 0 is DPO. Not TRL's CPOTrainer.
    """
    return logistic_loss(delta_policy, beta, cpo_margin_offset(delta_ref, beta, margin, log_margin))


def released_easy_margin(mean_logp_ref_w: Any, mean_logp_ref_l: Any, gamma: float) -> Array:
    """The released code's `easy` margin a = γ(1/ℓ̄_ref(y_w) + 1/ℓ̄_ref(y_l)) (C10).

    ℓ̄ are per-token mean log-probs, which are < 0, so a < 0: the opposite sign of C8's margin m > 0.
    """
    _, (lw, ll) = as_arrays(mean_logp_ref_w, mean_logp_ref_l)
    require_finite("mean_logp_ref_w", lw)
    require_finite("mean_logp_ref_l", ll)
    if bool((to_numpy(lw) == 0).any() or (to_numpy(ll) == 0).any()):
        raise ValueError("the released `easy` margin divides by the mean log-prob, which is 0 for some pair")
    return gamma * (1.0 / lw + 1.0 / ll)


def released_easy_loss(
    delta_policy: Any,
    delta_ref: Any,
    beta: float,
    mean_logp_ref_w: Any,
    mean_logp_ref_l: Any,
    gamma: float = RELEASED_DEFAULTS["gamma"],
) -> LossAndGrad:
    """Released code, `easy` branch (C10): ℓ = −log σ(β·δ_θ − β·δ_ref − a), a = γ(1/ℓ̄_ref(y_w) + 1/ℓ̄_ref(y_l))."""
    xp, (dref, a) = as_arrays(delta_ref, released_easy_margin(mean_logp_ref_w, mean_logp_ref_l, gamma))
    return logistic_loss(delta_policy, beta, beta * dref + a)


def released_clip_offset(delta_ref: Any, beta: float) -> Array:
    """Offset β·max(δ_ref, 0) of the released `clip` branch (C10)."""
    xp, (dref,) = as_arrays(delta_ref)
    return beta * xp.where(dref > 0, dref, xp.zeros_like(dref))


def released_clip_loss(delta_policy: Any, delta_ref: Any, beta: float) -> LossAndGrad:
    """Released code, `clip` branch (C10): ℓ = −log σ(β(δ_θ − max(δ_ref, 0)))."""
    return logistic_loss(delta_policy, beta, released_clip_offset(delta_ref, beta))


def released_adaptive_margin(delta_ref: Any, gamma: float, tau: float) -> Array:
    """The adaptive softplus margin a = (1/τ)·log(1 + exp(τ(γ − δ_ref))) (C10); → max(0, γ − δ_ref) as τ → ∞."""
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be finite and > 0; got {tau!r}")
    xp, (dref,) = as_arrays(delta_ref)
    return softplus(xp, tau * (gamma - dref)) / tau


def released_adaptive_offset(
    delta_ref: Any,
    beta: float,
    gamma: float = RELEASED_DEFAULTS["gamma"],
    tau: float = RELEASED_DEFAULTS["tau"],
    alpha: float = RELEASED_DEFAULTS["alpha"],
) -> Array:
    """Offset β·δ_ref + (β/α)·a of the released adaptive softplus branch (C10)."""
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be finite and > 0; got {alpha!r}")
    _, (dref, a) = as_arrays(delta_ref, released_adaptive_margin(delta_ref, gamma, tau))
    return beta * dref + (beta / alpha) * a


def released_adaptive_loss(
    delta_policy: Any,
    delta_ref: Any,
    beta: float,
    gamma: float = RELEASED_DEFAULTS["gamma"],
    tau: float = RELEASED_DEFAULTS["tau"],
    alpha: float = RELEASED_DEFAULTS["alpha"],
) -> LossAndGrad:
    """Released code, adaptive softplus branch (C10): ℓ = −log σ(β·δ_θ − β·δ_ref − (β/α)·a).

    With α = 1 and τ → ∞ the effective target δ_ref + a becomes max(δ_ref, γ).
    """
    return logistic_loss(delta_policy, beta, released_adaptive_offset(delta_ref, beta, gamma, tau, alpha))


def _require_nonnegative(name: str, value: Any) -> None:
    v = np.asarray(to_numpy(value), dtype=np.float64)
    if not np.all(np.isfinite(v) & (v >= 0)):
        raise ValueError(f"{name} must be finite and >= 0; got {value!r}")


def dpop_penalty(policy_logp_w: Any, ref_logp_w: Any) -> Array:
    """DPOP's displacement penalty P = max(0, log π_ref(y_w|x) − log π_θ(y_w|x)) = max(0, −Δ_w) (Pal et al. 2024;
    PAPER §6). P > 0 exactly on displaced pairs (Δ_w < 0)."""
    xp, (lw, rw) = as_arrays(policy_logp_w, ref_logp_w)
    gap = rw - lw
    return xp.where(gap > 0, gap, xp.zeros_like(gap))


def dpop_from_offset(
    delta_policy: Any, beta: Any, offset: Any, policy_logp_w: Any, ref_logp_w: Any, penalty_weight: Any
) -> LossAndGrad:
    """ℓ = softplus(c − β·δ_θ + s·P) with c = β·δ_ref, s = β·λ, P = :func:`dpop_penalty`; the core of :func:`dpop_loss`.

    ∂ℓ/∂δ_θ = −β·σ(z) and ∂ℓ/∂log π_θ(y_w) = −s·σ(z)·1[Δ_w < 0], z = c − β·δ_θ + s·P. At the kink Δ_w = 0 the
    derivative in log π_θ(y_w) is the one-sided one from the non-displaced side (Δ_w ↓ 0): 0. Torch autograd through
    the returned loss gives the same numbers, the kink included (P is built with ``where``).
    """
    require_positive_beta(beta)
    xp, (d, c, lw, rw, s) = as_arrays(delta_policy, offset, policy_logp_w, ref_logp_w, penalty_weight)
    gap = rw - lw
    displaced = gap > 0
    zero = xp.zeros_like(gap)
    z = c - beta * d + s * xp.where(displaced, gap, zero)
    sig = sigmoid(xp, z)
    return LossAndGrad(softplus(xp, z), -beta * sig, xp.where(displaced, -s * sig, xp.zeros_like(sig)))


def dpop_loss(
    delta_policy: Any,
    delta_ref: Any,
    beta: Any,
    policy_logp_w: Any,
    ref_logp_w: Any,
    lam: Any = DPOP_DEFAULT_LAMBDA,
) -> LossAndGrad:
    """DPO-Positive (Pal et al. 2024, "Smaug", arXiv 2402.13228; PAPER §6): ℓ = −log σ(β·[(δ_θ − δ_ref) − λ·P]).

    P = max(0, log π_ref(y_w|x) − log π_θ(y_w|x)) sits inside the sigmoid, scaled by β; λ ≥ 0, λ = 0 is DPO, and on
    a pair that is not displaced (Δ_w ≥ 0) DPOP is DPO. Log-probs in the convention the loss is used with (summed or
    per-token mean). Derivatives: see :func:`dpop_from_offset`.
    """
    _require_nonnegative("lam", lam)
    require_finite("ref_logp_w", as_arrays(ref_logp_w)[1][0])
    xp, (dref, lam_a) = as_arrays(delta_ref, lam)
    return dpop_from_offset(delta_policy, beta, beta * dref, policy_logp_w, ref_logp_w, beta * lam_a)


def dpo_nll_from_offset(delta_policy: Any, beta: Any, offset: Any, policy_logp_w: Any, nll_weight: Any) -> LossAndGrad:
    """ℓ = softplus(c − β·δ_θ) − a·log π_θ(y_w|x) with c = β·δ_ref, a = α/|y_w|; the core of :func:`dpo_nll_loss`.

    ∂ℓ/∂δ_θ = −β·σ(c − β·δ_θ) (DPO's), ∂ℓ/∂log π_θ(y_w) = −a.
    """
    require_positive_beta(beta)
    xp, (d, c, lw, a) = as_arrays(delta_policy, offset, policy_logp_w, nll_weight)
    z = c - beta * d
    loss = softplus(xp, z) - a * lw
    return LossAndGrad(loss, -beta * sigmoid(xp, z), -a * xp.ones_like(loss))


def dpo_nll_loss(
    delta_policy: Any,
    delta_ref: Any,
    beta: Any,
    policy_logp_w: Any,
    alpha: Any = DPO_NLL_DEFAULT_ALPHA,
    tokens_w: Any = 1,
) -> LossAndGrad:
    """DPO + NLL on the chosen response (RPO, Pang et al. 2024, arXiv 2404.19733; TRL's ``rpo_alpha``; PAPER §6):
    ℓ = ℓ_DPO + α·(−log π_θ(y_w|x))/|y_w|, α ≥ 0 (α = 0 is DPO).

    tokens_w: the number of tokens policy_logp_w sums over, so that the NLL term is per token in either convention:
    |y_w| for summed log-probs; 1 for per-token means (already per token) and for one-token tabular responses.
    (TRL averages the NLL over all chosen tokens of a batch, which differs from this per-pair mean when lengths
    differ.) Derivatives: see :func:`dpo_nll_from_offset`.
    """
    _require_nonnegative("alpha", alpha)
    xp, (dref, a, n) = as_arrays(delta_ref, alpha, tokens_w)
    check_token_counts("tokens_w", n)
    return dpo_nll_from_offset(delta_policy, beta, beta * dref, policy_logp_w, a / n)


def check_token_counts(name: str, tokens: Any) -> None:
    """Token counts must be finite and ≥ 1 (ValueError naming the field otherwise)."""
    t = np.asarray(to_numpy(tokens), dtype=np.float64)
    if not np.all(np.isfinite(t) & (t >= 1)):
        raise ValueError(f"{name} must be finite and >= 1 (a token count); got {tokens!r}")


def soft_margin_gap(delta_policy: Any, delta_ref: Any, beta: float) -> Array:
    """ℓ_DPO/β − max(0, δ_ref − δ_θ) (C7, Prop. 5.1); lies in [0, (log 2)/β] and → 0 as β → ∞."""
    xp, (d, dref) = as_arrays(delta_policy, delta_ref)
    lossb = dpo_loss(d, dref, beta).loss / beta
    return lossb - hinge_loss(d, dref).loss


def tabular_logit_gradient(
    grad_delta: Any,
    pairs: Any,
    shape: tuple[int, int],
    *,
    grad_logp_w: Any = None,
    grad_logp_l: Any = None,
    log_pi: Any = None,
) -> np.ndarray:
    """Gradient of Σ_i ℓ_i in the logits z (contexts × responses) of a tabular softmax policy.

    δ_i = z[x_i, w_i] − z[x_i, l_i] (the normaliser cancels), so ∂/∂z[x, w] += ∂ℓ_i/∂δ_i and
    ∂/∂z[x, l] −= ∂ℓ_i/∂δ_i. Losses that also depend on log π(y_w|x) = z[x, w] − logsumexp(z[x]) (DPOP, DPO + NLL)
    pass grad_logp_w (∂ℓ_i/∂log π(y_w), at fixed δ) and the policy log_pi (X, Y): ∂/∂z[x] += g_w·(e_w − π(·|x));
    likewise grad_logp_l for a dependence on log π(y_l|x) (the swapped pair of a soft label). pairs: (N, 3) integer
    array of (x, w, l). numpy float64.
    """
    g = np.asarray(to_numpy(grad_delta), dtype=np.float64)
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
    out = np.zeros(shape, dtype=np.float64)
    np.add.at(out, (p[:, 0], p[:, 1]), g)
    np.add.at(out, (p[:, 0], p[:, 2]), -g)
    for col, gy in ((1, grad_logp_w), (2, grad_logp_l)):
        if gy is None:
            continue
        if log_pi is None:
            raise ValueError("log π(y|x) terms need the policy: pass log_pi (contexts × responses)")
        gy = np.broadcast_to(np.asarray(to_numpy(gy), dtype=np.float64), (len(p),))
        np.add.at(out, (p[:, 0], p[:, col]), gy)
        row = np.zeros(shape[0], dtype=np.float64)
        np.add.at(row, p[:, 0], gy)
        out -= row[:, None] * np.exp(np.asarray(to_numpy(log_pi), dtype=np.float64))
    return out
