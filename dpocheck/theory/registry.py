"""The one table of preference losses: name → formula, derivative, precomputation, target, defaults, display.

Every consumer (sims, proofs_check, figures, the LLM trainer) reads a loss from :data:`LOSSES`; adding a loss is one
entry here plus its tests. The formulas themselves live in :mod:`dpocheck.theory.losses` (pure functions); an entry
only wires them up:

* :meth:`LossSpec.precompute` turns the reference quantities of the pairs (:class:`ReferencePairs`) into everything
  pair-constant, once before training: the logistic family (ℓ = softplus(c − β·δ_θ)) gets its offset ``c``; IPO and
  the hinge get ``delta_ref``.
* :meth:`LossSpec.apply` evaluates the per-pair loss and its exact ∂ℓ/∂δ_θ from δ_θ and that output, on numpy
  arrays or torch tensors (differentiable by autograd).

Callers that hold δ_ref and the per-pair quantities directly (a margin m, per-token mean log-probs) use
:meth:`LossSpec.precompute_delta`, and the name-based :func:`loss_and_grad` / :func:`effective_target`.
"cpo_margin" is the paper's constrained preference optimization (C8), not TRL's CPOTrainer.
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
from ._array import Array, as_arrays, require_positive_beta
from .losses import LossAndGrad
from .pairs import log_cpo_margin


@dataclass(frozen=True)
class ReferencePairs:
    """Per-pair reference quantities, arrays of one shape (numpy or torch).

    logp_w, logp_l: log π_ref(y_w|x), log π_ref(y_l|x) in the convention the loss is used with (summed or per-token
    mean). mean_logp_w, mean_logp_l: per-token mean log-probs (the released `easy` branch needs them, C10); for a
    tabular bandit every response is one token and they equal logp_w, logp_l (see :meth:`single_token`).
    """

    logp_w: Array
    logp_l: Array
    mean_logp_w: Array | None = None
    mean_logp_l: Array | None = None

    @classmethod
    def single_token(cls, logp_w: Array, logp_l: Array) -> ReferencePairs:
        """Pairs of one-token responses (tabular bandits): the per-token means are the log-probs themselves."""
        return cls(logp_w, logp_l, logp_w, logp_l)

    def delta_ref(self) -> Array:
        """δ_ref = log π_ref(y_w|x) − log π_ref(y_l|x)."""
        _, (lw, ll) = as_arrays(self.logp_w, self.logp_l)
        return lw - ll

    def swapped(self) -> ReferencePairs:
        """The same pairs with y_w and y_l exchanged (the other Bradley–Terry label, for soft labels, C5a)."""
        return ReferencePairs(self.logp_l, self.logp_w, self.mean_logp_l, self.mean_logp_w)


# ------------------------------------------------------------------------------------------- parameter checks

_SYMBOLS = {"gamma": "γ", "tau": "τ", "alpha": "α"}


def _check_param(name: str, value: Any) -> None:
    """γ ≥ 0, τ > 0, α > 0, all finite (scalars or arrays); ValueError naming the parameter otherwise."""
    v = np.asarray(value.detach().cpu() if is_torch_array(value) else value, dtype=np.float64)
    ok = np.isfinite(v) & ((v >= 0) if name == "gamma" else (v > 0))
    if not np.all(ok):
        bound = ">= 0" if name == "gamma" else "> 0"
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
    {"delta_ref": δ_ref}). params: hyper-parameter names, defaults their values when not given. delta_params: the
    keywords of :meth:`precompute_delta` (hyper-parameters and per-pair quantities such as a margin).
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

    # ---- parameters
    def resolve(self, **params: Any) -> dict[str, Any]:
        """Hyper-parameters with defaults filled in; unknown names raise TypeError, bad values ValueError."""
        extra = set(params) - set(self.params)
        if extra:
            raise TypeError(f"loss {self.name!r} takes no parameter(s) {sorted(extra)}; it takes {list(self.params)}")
        out = {**self.defaults, **params}
        for k, v in out.items():
            _check_param(k, v)
        return out

    def describe(self, **params: Any) -> str:
        """Short label such as 'cpo_margin(γ=0.05)' or 'released_adaptive(γ=0.5,τ=2,α=1)'."""
        p = self.resolve(**params)
        if not p:
            return self.name
        if self.params == ("gamma",) and np.ndim(p["gamma"]) != 0:
            return f"{self.name}(γ per instance)"
        return f"{self.name}(" + ",".join(f"{_SYMBOLS.get(k, k)}={_fmt(p[k])}" for k in self.params) + ")"

    # ---- precomputation
    def _delta_kwargs(self, ref: ReferencePairs, params: dict[str, Any]) -> dict[str, Any]:
        if self.needs_mean_logps and (ref.mean_logp_w is None or ref.mean_logp_l is None):
            raise ValueError(f"loss {self.name!r} needs per-token mean log-probs (ReferencePairs.mean_logp_w/_l)")
        return self._from_ref(ref, self.resolve(**params))

    def precompute(self, ref: ReferencePairs, beta: Any, **params: Any) -> dict[str, Array]:
        """Everything pair-constant, computed once: logistic family → {"offset": c}; ipo/hinge → {"delta_ref"}.

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
            _check_param(k, params[k])

    # ---- evaluation
    def apply(self, delta_policy: Any, beta: Any, **precomputed: Any) -> LossAndGrad:
        """Per-pair loss and exact ∂ℓ/∂δ_θ at policy margins δ_θ, from :meth:`precompute`'s output.

        Works on numpy arrays and torch tensors; a torch δ_θ with requires_grad gives a differentiable loss.
        """
        if self.family == "logistic":
            return _L.logistic_loss(delta_policy, beta, precomputed["offset"])
        if self.family == "ipo":
            return _L.ipo_loss(delta_policy, precomputed["delta_ref"], beta)
        return _L.hinge_loss(delta_policy, precomputed["delta_ref"])

    def loss_and_grad(self, delta_policy: Any, ref: ReferencePairs, beta: Any, **params: Any) -> LossAndGrad:
        """apply(δ_θ, β, **precompute(ref, β, **params))."""
        return self.apply(delta_policy, beta, **self.precompute(ref, beta, **params))

    def effective_target(self, ref: ReferencePairs, beta: Any, **params: Any) -> Array:
        """δ_θ at which the sigmoid's argument is 0 (the β → ∞ hinge target, C7/C10); IPO: its minimiser.

        dpo, hinge: δ_ref; cpo_margin: δ_ref + m/β; released_easy: δ_ref + a/β (a < 0); released_clip:
        max(δ_ref, 0); released_adaptive: δ_ref + a/α; simpo: γ/β; ipo: δ_ref + 1/(2β).
        """
        return self.effective_target_delta(ref.delta_ref(), beta, **self._delta_kwargs(ref, params))

    def effective_target_delta(self, delta_ref: Any, beta: Any, **params: Any) -> Array:
        """As :meth:`effective_target`, from δ_ref and the per-pair quantities named in ``delta_params``."""
        self._check_delta_params(params)
        require_positive_beta(beta)
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
    ),
)

#: name → LossSpec, in the canonical order of the losses.
LOSSES: Mapping[str, LossSpec] = MappingProxyType({s.name: s for s in _ENTRIES})
LOSS_NAMES: tuple[str, ...] = tuple(LOSSES)


#: The per-pair keywords of :meth:`LossSpec.precompute_delta` (the rest — γ, τ, α — are hyper-parameters).
PER_PAIR_PARAMS = frozenset({"margin", "log_margin", "mean_logp_ref_w", "mean_logp_ref_l"})
_SWAPPED = {"mean_logp_ref_w": "mean_logp_ref_l", "mean_logp_ref_l": "mean_logp_ref_w"}


def swap_delta_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``delta_params`` of the swapped pair (y_w ↔ y_l): per-response quantities exchanged; a margin
    γ(1/π_ref(y_w) + 1/π_ref(y_l)) and the hyper-parameters are symmetric and stay (use with δ_ref → −δ_ref)."""
    return {_SWAPPED.get(k, k): v for k, v in params.items()}


def get_loss(name: str) -> LossSpec:
    """The registry entry of loss `name`; ValueError listing the names when there is none."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}") from None


def loss_and_grad(name: str, delta_policy: Any, delta_ref: Any, beta: Any, **params: Any) -> LossAndGrad:
    """Loss and ∂ℓ/∂δ_θ of loss `name` from δ_θ, δ_ref and its ``delta_params``.

    params: ``margin`` / ``log_margin`` (cpo_margin); ``mean_logp_ref_w``, ``mean_logp_ref_l``, ``gamma``
    (released_easy); ``gamma``, ``tau``, ``alpha`` (released_adaptive); ``gamma`` (simpo). Unknown params raise
    TypeError.
    """
    spec = get_loss(name)
    return spec.apply(delta_policy, beta, **spec.precompute_delta(delta_ref, beta, **params))


def effective_target(name: str, delta_ref: Any, beta: Any, **params: Any) -> Array:
    """The effective target of loss `name` (see :meth:`LossSpec.effective_target`) from δ_ref and its params."""
    return get_loss(name).effective_target_delta(delta_ref, beta, **params)


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
