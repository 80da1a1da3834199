"""The one table of preference losses: name → formula, derivative, precomputation, target, defaults, display.

Every consumer (sims, proofs_check, figures, the LLM trainer) reads a loss from :data:`LOSSES`; adding a loss is one
entry here plus its tests. The formulas themselves live in :mod:`dpocheck.theory.losses` (pure functions); an entry
only wires them up:

* :meth:`LossSpec.precompute` turns the reference quantities of the pairs (:class:`ReferencePairs`) into everything
  pair-constant, once before training: the logistic family (ℓ = softplus(c − β·δ_θ)) gets its offset ``c``; IPO and
  the hinge get ``delta_ref``.
* :meth:`LossSpec.apply` evaluates the per-pair loss and its exact ∂ℓ/∂δ_θ from δ_θ and that output, on numpy
  arrays or torch tensors (differentiable by autograd).

Losses of the policy's chosen log-prob (``LossSpec.needs_policy_chosen``; PAPER §6, against likelihood displacement):

* ``dpop`` (DPO-Positive, Pal et al. 2024): ℓ = softplus(β·δ_ref − β·δ_θ + β·λ·max(0, log π_ref(y_w) − log π_θ(y_w))).
  precompute → {"offset": β·δ_ref, "ref_logp_w": log π_ref(y_w|x), "penalty_weight": β·λ}.
* ``dpo_nll`` (DPO + NLL, RPO, Pang et al. 2024): ℓ = softplus(β·δ_ref − β·δ_θ) − (α/|y_w|)·log π_θ(y_w|x).
  precompute → {"offset": β·δ_ref, "nll_weight": α/tokens_w}, tokens_w from :class:`ReferencePairs` (|y_w| with
  summed log-probs, 1 with per-token means), so the NLL term is per token in either convention.

  Their ``apply(δ_θ, β, policy_logp_w=log π_θ(y_w|x), **pre)`` needs the policy's chosen log-prob in the same
  convention as the reference log-probs (ValueError without it; the other losses ignore it) and returns
  ``LossAndGrad(loss, grad, grad_logp_w)``: grad = ∂ℓ/∂δ_θ at fixed log π_θ(y_w|x), grad_logp_w = ∂ℓ/∂log π_θ(y_w|x)
  at fixed δ_θ (None for the losses of δ_θ alone). At DPOP's kink Δ_w = 0 grad_logp_w is the one-sided derivative
  from the non-displaced side, 0 (autograd through the returned loss agrees).

Callers that hold δ_ref and the per-pair quantities directly (a margin m, per-token mean log-probs, log π_ref(y_w),
a token count) use :meth:`LossSpec.precompute_delta`, and the name-based :func:`loss_and_grad` /
:func:`effective_target`. "cpo_margin" is the paper's constrained preference optimization (C8), not TRL's CPOTrainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from array_api_compat import is_torch_array

from . import losses as _L
from ._array import Array, as_arrays, require_finite, require_positive_beta
from .losses import LossAndGrad
from .pairs import log_cpo_margin


@dataclass(frozen=True)
class ReferencePairs:
    """Per-pair reference quantities, arrays of one shape (numpy or torch).

    logp_w, logp_l: log π_ref(y_w|x), log π_ref(y_l|x) in the convention the loss is used with (summed or per-token
    mean). mean_logp_w, mean_logp_l: per-token mean log-probs (the released `easy` branch needs them, C10); for a
    tabular bandit every response is one token and they equal logp_w, logp_l (see :meth:`single_token`).
    tokens_w, tokens_l: how many tokens logp_w, logp_l (and the policy's log-probs in the same convention) sum over —
    |y_w|, |y_l| with summed log-probs, 1 with per-token means and for tabular bandits; dpo_nll needs tokens_w to
    make its NLL term per token (PAPER §6).
    """

    logp_w: Array
    logp_l: Array
    mean_logp_w: Array | None = None
    mean_logp_l: Array | None = None
    tokens_w: Array | None = None
    tokens_l: Array | None = None

    @classmethod
    def single_token(cls, logp_w: Array, logp_l: Array) -> ReferencePairs:
        """Pairs of one-token responses (tabular bandits): the per-token means are the log-probs themselves and
        every token count is 1."""
        return cls(logp_w, logp_l, logp_w, logp_l, 1, 1)

    def delta_ref(self) -> Array:
        """δ_ref = log π_ref(y_w|x) − log π_ref(y_l|x)."""
        _, (lw, ll) = as_arrays(self.logp_w, self.logp_l)
        return lw - ll

    def swapped(self) -> ReferencePairs:
        """The same pairs with y_w and y_l exchanged (the other Bradley–Terry label, for soft labels, C5a)."""
        return ReferencePairs(
            self.logp_l, self.logp_w, self.mean_logp_l, self.mean_logp_w, self.tokens_l, self.tokens_w
        )


# ------------------------------------------------------------------------------------------- parameter checks

_SYMBOLS = {"gamma": "γ", "tau": "τ", "alpha": "α", "lam": "λ"}


def _check_param(name: str, value: Any, positive: bool = False) -> None:
    """Finite and ≥ 0, or > 0 when `positive` (scalars or arrays); ValueError naming the parameter otherwise."""
    v = np.asarray(value.detach().cpu() if is_torch_array(value) else value, dtype=np.float64)
    ok = np.isfinite(v) & ((v > 0) if positive else (v >= 0))
    if not np.all(ok):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}; got {value!r}")


def _log_gamma(gamma: Any) -> Any:
    """log γ (−inf for γ = 0): math.log for a scalar, the array library's log for per-pair/per-instance arrays."""
    if np.ndim(gamma) == 0 and not is_torch_array(gamma):
        g = float(gamma)
        return math.log(g) if g > 0 else -math.inf
    xp, (g,) = as_arrays(gamma)
    with np.errstate(divide="ignore"):
        return xp.log(g)


def _fmt(value: Any) -> str:
    return f"{value:g}" if np.ndim(value) == 0 else "per instance"


# ------------------------------------------------------------------------------------------------ the entry


@dataclass(frozen=True)
class LossSpec:
    """One preference loss of the registry (see the module docstring for the precompute/apply split).

    family: "logistic" (ℓ = softplus(c − β·δ_θ), precompute → {"offset": c}), "ipo" or "hinge" (precompute →
    {"delta_ref": δ_ref}), "dpop" or "dpo_nll" (see the module docstring). params: hyper-parameter names, defaults
    their values when not given; positive_params: those that must be > 0 (the others ≥ 0). delta_params: the
    keywords of :meth:`precompute_delta` (hyper-parameters and per-pair quantities such as a margin).
    needs_policy_chosen: :meth:`apply` needs ``policy_logp_w`` = log π_θ(y_w|x) (DPOP, DPO + NLL).
    """

    name: str
    label: str
    color: str
    claim: str
    family: str
    params: tuple[str, ...]
    defaults: Mapping[str, float]
    reference_free: bool
    needs_mean_logps: bool
    delta_params: tuple[str, ...]
    _from_ref: Callable[[ReferencePairs, dict[str, Any]], dict[str, Any]] = field(repr=False, compare=False)
    _precompute_delta: Callable[..., dict[str, Any]] = field(repr=False, compare=False)
    _target_delta: Callable[..., Array] = field(repr=False, compare=False)
    positive_params: tuple[str, ...] = ()
    needs_policy_chosen: bool = False

    # ---- parameters
    def resolve(self, **params: Any) -> dict[str, Any]:
        """Hyper-parameters with defaults filled in; unknown names raise TypeError, bad values ValueError."""
        extra = set(params) - set(self.params)
        if extra:
            raise TypeError(f"loss {self.name!r} takes no parameter(s) {sorted(extra)}; it takes {list(self.params)}")
        out = {**self.defaults, **params}
        for k, v in out.items():
            _check_param(k, v, k in self.positive_params)
        return out

    def describe(self, **params: Any) -> str:
        """Short label such as 'cpo_margin(γ=0.05)', 'dpop(λ=50)' or 'released_adaptive(γ=0.5,τ=2,α=1)'."""
        p = self.resolve(**params)
        if not p:
            return self.name
        if len(self.params) == 1 and np.ndim(p[self.params[0]]) != 0:
            return f"{self.name}({_SYMBOLS.get(self.params[0], self.params[0])} per instance)"
        return f"{self.name}(" + ",".join(f"{_SYMBOLS.get(k, k)}={_fmt(p[k])}" for k in self.params) + ")"

    # ---- precomputation
    def _delta_kwargs(self, ref: ReferencePairs, params: dict[str, Any]) -> dict[str, Any]:
        if self.needs_mean_logps and (ref.mean_logp_w is None or ref.mean_logp_l is None):
            raise ValueError(f"loss {self.name!r} needs per-token mean log-probs (ReferencePairs.mean_logp_w/_l)")
        if self.name == "dpo_nll" and ref.tokens_w is None:
            raise ValueError(
                "loss 'dpo_nll' needs ReferencePairs.tokens_w, the number of tokens log π(y_w|x) sums over: |y_w| "
                "with summed log-probs, 1 with per-token means (its NLL term is per token)"
            )
        return self._from_ref(ref, self.resolve(**params))

    def precompute(self, ref: ReferencePairs, beta: Any, **params: Any) -> dict[str, Array]:
        """Everything pair-constant, computed once: logistic family → {"offset": c}; ipo/hinge → {"delta_ref"};
        dpop → {"offset", "ref_logp_w", "penalty_weight"}; dpo_nll → {"offset", "nll_weight"} (module docstring).

        beta and the hyper-parameters may be scalars or arrays broadcastable to the pairs (e.g. (B, 1) columns).
        cpo_margin's margin is formed in log space; one whose exponential overflows raises OverflowError naming
        the pair.
        """
        return self._precompute_delta(ref.delta_ref(), beta, **self._delta_kwargs(ref, params))

    def precompute_delta(self, delta_ref: Any, beta: Any, **params: Any) -> dict[str, Array]:
        """As :meth:`precompute`, from δ_ref and the per-pair quantities named in ``delta_params``."""
        self._check_delta_params(params)
        return self._precompute_delta(delta_ref, beta, **params)

    def _check_delta_params(self, params: Mapping[str, Any]) -> None:
        extra = set(params) - set(self.delta_params)
        if extra:
            raise TypeError(f"loss {self.name!r} takes no parameter(s) {sorted(extra)}")
        for k in set(params) & set(self.params):
            _check_param(k, params[k], k in self.positive_params)

    # ---- evaluation
    def apply(self, delta_policy: Any, beta: Any, *, policy_logp_w: Any = None, **precomputed: Any) -> LossAndGrad:
        """Per-pair loss and exact derivatives at policy margins δ_θ, from :meth:`precompute`'s output.

        policy_logp_w: log π_θ(y_w|x) in the convention of the reference log-probs (summed or per-token mean);
        required when ``needs_policy_chosen`` (ValueError otherwise), ignored by the other losses. Returns
        LossAndGrad(loss, grad = ∂ℓ/∂δ_θ at fixed log π_θ(y_w), grad_logp_w = ∂ℓ/∂log π_θ(y_w) at fixed δ_θ or
        None). Works on numpy arrays and torch tensors; torch inputs with requires_grad give a differentiable loss.
        """
        if self.needs_policy_chosen and policy_logp_w is None:
            raise ValueError(
                f"loss {self.name!r} depends on the policy's chosen log-prob: pass policy_logp_w = log π_θ(y_w|x) "
                "in the convention of the reference log-probs"
            )
        if self.family == "logistic":
            return _L.logistic_loss(delta_policy, beta, precomputed["offset"])
        if self.family == "ipo":
            return _L.ipo_loss(delta_policy, precomputed["delta_ref"], beta)
        if self.family == "dpop":
            return _L.dpop_from_offset(
                delta_policy,
                beta,
                precomputed["offset"],
                policy_logp_w,
                precomputed["ref_logp_w"],
                precomputed["penalty_weight"],
            )
        if self.family == "dpo_nll":
            return _L.dpo_nll_from_offset(
                delta_policy, beta, precomputed["offset"], policy_logp_w, precomputed["nll_weight"]
            )
        return _L.hinge_loss(delta_policy, precomputed["delta_ref"])

    def loss_and_grad(
        self, delta_policy: Any, ref: ReferencePairs, beta: Any, *, policy_logp_w: Any = None, **params: Any
    ) -> LossAndGrad:
        """apply(δ_θ, β, policy_logp_w=…, **precompute(ref, β, **params))."""
        return self.apply(delta_policy, beta, policy_logp_w=policy_logp_w, **self.precompute(ref, beta, **params))

    def effective_target(self, ref: ReferencePairs, beta: Any, *, policy_logp_w: Any = None, **params: Any) -> Array:
        """δ_θ at which the sigmoid's argument is 0 (the β → ∞ hinge target, C7/C10); IPO: its minimiser.

        dpo, hinge, dpo_nll (its NLL term is outside the sigmoid): δ_ref; cpo_margin: δ_ref + m/β; released_easy:
        δ_ref + a/β (a < 0); released_clip: max(δ_ref, 0); released_adaptive: δ_ref + a/α; simpo: γ/β; ipo:
        δ_ref + 1/(2β); dpop: δ_ref + λ·max(0, log π_ref(y_w) − log π_θ(y_w)) (needs policy_logp_w).
        """
        kwargs = self._delta_kwargs(ref, params)
        return self.effective_target_delta(ref.delta_ref(), beta, policy_logp_w=policy_logp_w, **kwargs)

    def effective_target_delta(self, delta_ref: Any, beta: Any, *, policy_logp_w: Any = None, **params: Any) -> Array:
        """As :meth:`effective_target`, from δ_ref and the per-pair quantities named in ``delta_params``."""
        self._check_delta_params(params)
        require_positive_beta(beta)
        if self.family == "dpop":
            if policy_logp_w is None:
                raise ValueError("dpop's effective target δ_ref + λ·P depends on the policy: pass policy_logp_w")
            return self._target_delta(delta_ref, beta, policy_logp_w=policy_logp_w, **params)
        return self._target_delta(delta_ref, beta, **params)


# ------------------------------------------------------------------------------------ per-loss wiring


def _no_ref_params(ref: ReferencePairs, p: dict[str, Any]) -> dict[str, Any]:
    return dict(p)


def _cpo_from_ref(ref: ReferencePairs, p: dict[str, Any]) -> dict[str, Any]:
    # log m = log γ + logaddexp(−log π_ref(y_w), −log π_ref(y_l)), symmetric in (y_w, y_l)
    return {"log_margin": log_cpo_margin(ref.logp_w, ref.logp_l, 1.0) + _log_gamma(p["gamma"])}


def _easy_from_ref(ref: ReferencePairs, p: dict[str, Any]) -> dict[str, Any]:
    return {"mean_logp_ref_w": ref.mean_logp_w, "mean_logp_ref_l": ref.mean_logp_l, "gamma": p["gamma"]}


def _dref(delta_ref: Any) -> Array:
    return as_arrays(delta_ref)[1][0]


def _offset(fn: Callable[..., Array]) -> Callable[..., dict[str, Array]]:
    def pre(delta_ref: Any, beta: Any, **p: Any) -> dict[str, Array]:
        return {"offset": fn(delta_ref, beta, **p)}

    return pre


def _delta_ref_only(delta_ref: Any, beta: Any) -> dict[str, Array]:
    return {"delta_ref": _dref(delta_ref)}


def _simpo_offset(delta_ref: Any, beta: Any, gamma: Any = _L.SIMPO_DEFAULT_GAMMA) -> Array:
    return gamma + 0.0 * _dref(delta_ref)


def _easy_offset(
    delta_ref: Any,
    beta: Any,
    mean_logp_ref_w: Any,
    mean_logp_ref_l: Any,
    gamma: Any = _L.RELEASED_DEFAULTS["gamma"],
) -> Array:
    _, (dref, a) = as_arrays(delta_ref, _L.released_easy_margin(mean_logp_ref_w, mean_logp_ref_l, gamma))
    return beta * dref + a


def _cpo_offset(delta_ref: Any, beta: Any, margin: Any = None, log_margin: Any = None) -> Array:
    return _L.cpo_margin_offset(delta_ref, beta, margin, log_margin)


def _easy_target(
    delta_ref: Any,
    beta: Any,
    mean_logp_ref_w: Any,
    mean_logp_ref_l: Any,
    gamma: Any = _L.RELEASED_DEFAULTS["gamma"],
) -> Array:
    return _dref(delta_ref) + _L.released_easy_margin(mean_logp_ref_w, mean_logp_ref_l, gamma) / beta


def _dpop_from_ref(ref: ReferencePairs, p: dict[str, Any]) -> dict[str, Any]:
    return {"ref_logp_w": ref.logp_w, **p}


def _dpo_nll_from_ref(ref: ReferencePairs, p: dict[str, Any]) -> dict[str, Any]:
    return {"tokens_w": ref.tokens_w, **p}


def _dpop_pre(delta_ref: Any, beta: Any, ref_logp_w: Any = None, lam: Any = _L.DPOP_DEFAULT_LAMBDA) -> dict[str, Array]:
    if ref_logp_w is None:
        raise ValueError("loss 'dpop' needs ref_logp_w = log π_ref(y_w|x)")
    xp, (dref, rw) = as_arrays(delta_ref, ref_logp_w)
    require_finite("ref_logp_w", rw)
    return {"offset": beta * dref, "ref_logp_w": rw, "penalty_weight": beta * lam}


def _dpop_target(
    delta_ref: Any, beta: Any, policy_logp_w: Any, ref_logp_w: Any = None, lam: Any = _L.DPOP_DEFAULT_LAMBDA
) -> Array:
    if ref_logp_w is None:
        raise ValueError("loss 'dpop' needs ref_logp_w = log π_ref(y_w|x)")
    return _dref(delta_ref) + lam * _L.dpop_penalty(policy_logp_w, ref_logp_w)


def _dpo_nll_pre(
    delta_ref: Any, beta: Any, tokens_w: Any = None, alpha: Any = _L.DPO_NLL_DEFAULT_ALPHA
) -> dict[str, Array]:
    if tokens_w is None:
        raise ValueError("loss 'dpo_nll' needs tokens_w (|y_w| with summed log-probs, 1 with per-token means)")
    _L.check_token_counts("tokens_w", tokens_w)
    xp, (dref, n) = as_arrays(delta_ref, tokens_w)
    return {"offset": beta * dref, "nll_weight": alpha / n}


def _over_beta(fn: Callable[..., Array]) -> Callable[..., Array]:
    def target(delta_ref: Any, beta: Any, **p: Any) -> Array:
        return fn(_dref(delta_ref), beta, **p) / beta

    return target


_RELEASED = {k: _L.RELEASED_DEFAULTS[k] for k in ("gamma", "tau", "alpha")}

_ENTRIES = (
    LossSpec(
        name="dpo",
        label="DPO",
        color="tab:red",
        claim="PAPER §1",
        family="logistic",
        params=(),
        defaults={},
        reference_free=False,
        needs_mean_logps=False,
        delta_params=(),
        _from_ref=_no_ref_params,
        _precompute_delta=_offset(_L.dpo_offset),
        _target_delta=lambda delta_ref, beta: _dref(delta_ref) + 0.0,
    ),
    LossSpec(
        name="ipo",
        label="IPO",
        color="tab:brown",
        claim="IPO (Azar et al. 2023)",
        family="ipo",
        params=(),
        defaults={},
        reference_free=False,
        needs_mean_logps=False,
        delta_params=(),
        _from_ref=_no_ref_params,
        _precompute_delta=_delta_ref_only,
        _target_delta=lambda delta_ref, beta: _dref(delta_ref) + 1.0 / (2.0 * beta),
    ),
    LossSpec(
        name="simpo",
        label="SimPO",
        color="tab:pink",
        claim="SimPO (Meng et al. 2024)",
        family="logistic",
        params=("gamma",),
        defaults={"gamma": _L.SIMPO_DEFAULT_GAMMA},
        reference_free=True,
        needs_mean_logps=False,
        delta_params=("gamma",),
        _from_ref=_no_ref_params,
        _precompute_delta=_offset(_simpo_offset),
        _target_delta=lambda delta_ref, beta, gamma=_L.SIMPO_DEFAULT_GAMMA: gamma / beta + 0.0 * _dref(delta_ref),
    ),
    LossSpec(
        name="hinge",
        label="hinge (β → ∞)",
        color="tab:olive",
        claim="C7",
        family="hinge",
        params=(),
        defaults={},
        reference_free=False,
        needs_mean_logps=False,
        delta_params=(),
        _from_ref=_no_ref_params,
        _precompute_delta=_delta_ref_only,
        _target_delta=lambda delta_ref, beta: _dref(delta_ref) + 0.0,
    ),
    LossSpec(
        name="cpo_margin",
        label="cpo_margin (C8)",
        color="tab:blue",
        claim="C8",
        family="logistic",
        params=("gamma",),
        defaults={"gamma": _L.CPO_MARGIN_DEMO_GAMMA},
        reference_free=False,
        needs_mean_logps=False,
        delta_params=("margin", "log_margin"),
        _from_ref=_cpo_from_ref,
        _precompute_delta=_offset(_cpo_offset),
        _target_delta=_over_beta(_cpo_offset),
    ),
    LossSpec(
        name="released_easy",
        label="released easy",
        color="tab:orange",
        claim="C10",
        family="logistic",
        params=("gamma",),
        defaults={"gamma": _RELEASED["gamma"]},
        reference_free=False,
        needs_mean_logps=True,
        delta_params=("mean_logp_ref_w", "mean_logp_ref_l", "gamma"),
        _from_ref=_easy_from_ref,
        _precompute_delta=_offset(_easy_offset),
        _target_delta=_easy_target,
    ),
    LossSpec(
        name="released_clip",
        label="released clip",
        color="tab:green",
        claim="C10",
        family="logistic",
        params=(),
        defaults={},
        reference_free=False,
        needs_mean_logps=False,
        delta_params=(),
        _from_ref=_no_ref_params,
        _precompute_delta=_offset(_L.released_clip_offset),
        _target_delta=_over_beta(_L.released_clip_offset),
    ),
    LossSpec(
        name="released_adaptive",
        label="released adaptive",
        color="tab:purple",
        claim="C10",
        family="logistic",
        params=("gamma", "tau", "alpha"),
        defaults=dict(_RELEASED),
        reference_free=False,
        needs_mean_logps=False,
        delta_params=("gamma", "tau", "alpha"),
        _from_ref=_no_ref_params,
        _precompute_delta=_offset(_L.released_adaptive_offset),
        _target_delta=_over_beta(_L.released_adaptive_offset),
        positive_params=("tau", "alpha"),
    ),
    LossSpec(
        name="dpop",
        label="DPOP (λ)",
        color="darkgoldenrod",
        claim="DPOP (Pal et al. 2024), PAPER §6",
        family="dpop",
        params=("lam",),
        defaults={"lam": _L.DPOP_DEFAULT_LAMBDA},
        reference_free=False,
        needs_mean_logps=False,
        delta_params=("ref_logp_w", "lam"),
        _from_ref=_dpop_from_ref,
        _precompute_delta=_dpop_pre,
        _target_delta=_dpop_target,
        needs_policy_chosen=True,
    ),
    LossSpec(
        name="dpo_nll",
        label="DPO + NLL (α)",
        color="teal",
        claim="RPO (Pang et al. 2024), PAPER §6",
        family="dpo_nll",
        params=("alpha",),
        defaults={"alpha": _L.DPO_NLL_DEFAULT_ALPHA},
        reference_free=False,
        needs_mean_logps=False,
        delta_params=("tokens_w", "alpha"),
        _from_ref=_dpo_nll_from_ref,
        _precompute_delta=_dpo_nll_pre,
        _target_delta=lambda delta_ref, beta, tokens_w=None, alpha=None: _dref(delta_ref) + 0.0,
        needs_policy_chosen=True,
    ),
)

#: name → LossSpec, in the canonical order of the losses.
LOSSES: Mapping[str, LossSpec] = MappingProxyType({s.name: s for s in _ENTRIES})
LOSS_NAMES: tuple[str, ...] = tuple(LOSSES)


#: The per-pair keywords of :meth:`LossSpec.precompute_delta` (the rest — γ, τ, α, λ — are hyper-parameters).
PER_PAIR_PARAMS = frozenset({"margin", "log_margin", "mean_logp_ref_w", "mean_logp_ref_l", "ref_logp_w", "tokens_w"})
_SWAPPED = {"mean_logp_ref_w": "mean_logp_ref_l", "mean_logp_ref_l": "mean_logp_ref_w"}


def swap_delta_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``delta_params`` of the swapped pair (y_w ↔ y_l): per-response quantities exchanged; a margin
    γ(1/π_ref(y_w) + 1/π_ref(y_l)) and the hyper-parameters are symmetric and stay (use with δ_ref → −δ_ref).
    Not for dpop / dpo_nll: their swapped pair needs y_l's own log π_ref and token count — swap a
    :class:`ReferencePairs` instead (:meth:`ReferencePairs.swapped`)."""
    if {"ref_logp_w", "tokens_w"} & set(params):
        raise ValueError("swap_delta_params cannot swap ref_logp_w / tokens_w; use ReferencePairs.swapped()")
    return {_SWAPPED.get(k, k): v for k, v in params.items()}


def get_loss(name: str) -> LossSpec:
    """The registry entry of loss `name`; ValueError listing the names when there is none."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}") from None


def loss_and_grad(
    name: str, delta_policy: Any, delta_ref: Any, beta: Any, *, policy_logp_w: Any = None, **params: Any
) -> LossAndGrad:
    """Loss and derivatives (∂ℓ/∂δ_θ; ∂ℓ/∂log π_θ(y_w) for dpop, dpo_nll) of loss `name` from δ_θ, δ_ref and its
    ``delta_params``.

    params: ``margin`` / ``log_margin`` (cpo_margin); ``mean_logp_ref_w``, ``mean_logp_ref_l``, ``gamma``
    (released_easy); ``gamma``, ``tau``, ``alpha`` (released_adaptive); ``gamma`` (simpo); ``ref_logp_w``, ``lam``
    (dpop); ``tokens_w``, ``alpha`` (dpo_nll). policy_logp_w: log π_θ(y_w|x), required by dpop and dpo_nll.
    Unknown params raise TypeError.
    """
    spec = get_loss(name)
    return spec.apply(
        delta_policy, beta, policy_logp_w=policy_logp_w, **spec.precompute_delta(delta_ref, beta, **params)
    )


def effective_target(name: str, delta_ref: Any, beta: Any, *, policy_logp_w: Any = None, **params: Any) -> Array:
    """The effective target of loss `name` (see :meth:`LossSpec.effective_target`) from δ_ref and its params."""
    return get_loss(name).effective_target_delta(delta_ref, beta, policy_logp_w=policy_logp_w, **params)


__all__ = [
    "LOSSES",
    "LOSS_NAMES",
    "PER_PAIR_PARAMS",
    "LossSpec",
    "ReferencePairs",
    "effective_target",
    "get_loss",
    "loss_and_grad",
    "swap_delta_params",
]
