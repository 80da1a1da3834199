"""The one library of hypothesis strategies: they generate VALID inputs by construction (no filtering), for the
claim checks run by `dpocheck proofs` and for the test suite.

- Probabilities come from a log-softmax of bounded logits, so every row sums to one and has full support.
- Preference pairs have w ≠ l by construction: l = (w + k) mod Y with 1 ≤ k < Y.
- Floats are finite and, by default, not subnormal (|x| < 2.2e-308 other than 0): identities checked with relative
  tolerances are meaningless there. Pass allow_subnormal=True to probe them.

Claim checks (:mod:`dpocheck.proofs_check.claims`): :func:`reals`, :func:`uniform_betas` (β uniform on a range),
:func:`bandit_dicts` / :func:`single_pair_bandit_dicts` (bandits in TabularBandit.from_json form). Their draws fix
the counterexamples the proofs report, so change them only knowingly.

Theory-layer tests: :func:`betas` (β log-uniform, default 1e-4 … 1e4, so tiny and huge KL strengths are equally
likely), :func:`finite_floats`, :func:`log_probs`, :func:`mean_log_probs`, :func:`float_arrays`, :func:`pair_arrays`,
:func:`logit_tables`, :func:`log_policy_tables`, :func:`pair_indices`, :func:`bandits` / :func:`single_pair_bandits`
(:class:`~dpocheck.theory.TabularBandit` objects).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dpocheck.theory import TabularBandit, log_softmax

# ------------------------------------------------------------------------------------------ claim checks


def reals(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Finite floats in [lo, hi] (no NaN, no subnormals)."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def uniform_betas(lo: float = 0.01, hi: float = 20.0) -> st.SearchStrategy[float]:
    """β > 0, uniform on [lo, hi]."""
    return reals(lo, hi)


@st.composite
def bandit_dicts(
    draw: Any,
    *,
    max_contexts: int = 3,
    min_responses: int = 2,
    max_responses: int = 5,
    pairs: str = "all",
    logit_scale: float = 6.0,
    reward_scale: float = 4.0,
    beta_range: tuple[float, float] = (0.05, 10.0),
) -> dict[str, Any]:
    """A valid tabular bandit as a JSON dict (TabularBandit.from_json form with `log_pi_ref`).

    The reference comes from finite logits through a log-softmax (normalised, full support by construction).
    pairs="all": every ordered response pair (a, b), a < b, oriented by a drawn label; "single": exactly one pair
    per context; "random": 1–6 random pairs per context (both orientations may occur).
    """
    from scipy.special import logsumexp

    n_x = draw(st.integers(1, max_contexts))
    n_y = draw(st.integers(min_responses, max_responses))
    logits = np.array(draw(st.lists(reals(-logit_scale, logit_scale), min_size=n_x * n_y, max_size=n_x * n_y))).reshape(
        n_x, n_y
    )
    reward = np.array(
        draw(st.lists(reals(-reward_scale, reward_scale), min_size=n_x * n_y, max_size=n_x * n_y))
    ).reshape(n_x, n_y)
    beta = draw(reals(*beta_range))
    rows: list[list[int]] = []
    for x in range(n_x):
        if pairs == "single":
            w = draw(st.integers(0, n_y - 1))
            l = (w + draw(st.integers(1, n_y - 1))) % n_y
            rows.append([x, w, l])
        elif pairs == "all":
            for a in range(n_y):
                for b in range(a + 1, n_y):
                    rows.append([x, a, b] if draw(st.booleans()) else [x, b, a])
        elif pairs == "random":
            for _ in range(draw(st.integers(1, 6))):
                w = draw(st.integers(0, n_y - 1))
                l = (w + draw(st.integers(1, n_y - 1))) % n_y
                rows.append([x, w, l])
        else:
            raise ValueError(f"pairs must be 'all', 'single' or 'random', got {pairs!r}")
    log_ref = logits - logsumexp(logits, axis=1, keepdims=True)
    return {"beta": beta, "log_pi_ref": log_ref.tolist(), "reward": reward.tolist(), "pairs": rows}


def single_pair_bandit_dicts(max_responses: int = 4, beta_range: tuple[float, float] = (0.05, 10.0)) -> Any:
    """:func:`bandit_dicts` with exactly one pair per context."""
    return bandit_dicts(pairs="single", max_responses=max_responses, beta_range=beta_range)


# ------------------------------------------------------------------------------------------ theory-layer tests

BETA_MIN = 1e-4
BETA_MAX = 1e4
DELTA_BOUND = 1e4
LOG_PROB_MIN = -1e4


def betas(min_value: float = BETA_MIN, max_value: float = BETA_MAX) -> st.SearchStrategy[float]:
    """β > 0, log-uniform on [min_value, max_value] (the ends are reachable: hypothesis tries the bounds)."""
    lo, hi = math.log(min_value), math.log(max_value)
    return st.floats(lo, hi).map(lambda t: float(min(max(math.exp(t), min_value), max_value)))


def finite_floats(bound: float = DELTA_BOUND, allow_subnormal: bool = False) -> st.SearchStrategy[float]:
    """A finite float in [−bound, bound] (margins δ, reward gaps Δr*)."""
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=allow_subnormal)


def log_probs(min_value: float = LOG_PROB_MIN, max_value: float = 0.0) -> st.SearchStrategy[float]:
    """A log-probability in [min_value, max_value] ⊂ (−∞, 0] (summed or per-token mean)."""
    return st.floats(min_value, max_value, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def mean_log_probs(min_value: float = -20.0, max_value: float = -1e-3) -> st.SearchStrategy[float]:
    """A strictly negative per-token mean log-prob ℓ̄ (the released `easy` margin divides by it)."""
    return st.floats(min_value, max_value, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def float_arrays(n: int, lo: float, hi: float, allow_subnormal: bool = False) -> st.SearchStrategy[np.ndarray]:
    """A float64 array of shape (n,) with elements in [lo, hi]."""
    elements = st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=allow_subnormal)
    return hnp.arrays(np.float64, (n,), elements=elements)


@st.composite
def pair_arrays(
    draw: Any,
    min_size: int = 1,
    max_size: int = 6,
    delta_bound: float = 50.0,
    reward_bound: float = 20.0,
    log_prob_min: float = -50.0,
) -> dict[str, np.ndarray]:
    """Aligned float64 arrays describing N pairs: delta_policy, delta_ref, delta_reward, log_pi_ref_w/l,
    mean_logp_ref_w/l (strictly negative), len_w/len_l (≥ 1)."""
    n = draw(st.integers(min_size, max_size))
    return {
        "delta_policy": draw(float_arrays(n, -delta_bound, delta_bound)),
        "delta_ref": draw(float_arrays(n, -delta_bound, delta_bound)),
        "delta_reward": draw(float_arrays(n, -reward_bound, reward_bound)),
        "log_pi_ref_w": draw(float_arrays(n, log_prob_min, 0.0)),
        "log_pi_ref_l": draw(float_arrays(n, log_prob_min, 0.0)),
        "mean_logp_ref_w": draw(float_arrays(n, -20.0, -1e-3)),
        "mean_logp_ref_l": draw(float_arrays(n, -20.0, -1e-3)),
        "len_w": draw(float_arrays(n, 1.0, 500.0)).round(),
        "len_l": draw(float_arrays(n, 1.0, 500.0)).round(),
    }


def logit_tables(n_contexts: int, n_responses: int, bound: float = 5.0) -> st.SearchStrategy[np.ndarray]:
    """An (X, Y) float64 table of bounded logits."""
    return hnp.arrays(
        np.float64,
        (n_contexts, n_responses),
        elements=st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    )


def log_policy_tables(n_contexts: int, n_responses: int, bound: float = 5.0) -> st.SearchStrategy[np.ndarray]:
    """A normalised (X, Y) log-policy with full support: log_softmax of bounded logits."""
    return logit_tables(n_contexts, n_responses, bound).map(log_softmax)


@st.composite
def pair_indices(
    draw: Any,
    n_contexts: int,
    n_responses: int,
    min_pairs: int = 1,
    max_pairs: int = 8,
    orientation: str = "any",
) -> np.ndarray:
    """(N, 3) int64 pairs (x, w, l) with w ≠ l by construction.

    orientation="any": arbitrary labels (cycles and both orientations of a pair may occur);
    "dag": every context's pairs follow one hidden ranking of its responses (no preference cycles, so the
    constraints δ ≥ ε of E-CPOC are feasible for every ε);
    "single": exactly one pair per context (min_pairs / max_pairs ignored).
    """
    if orientation == "single":
        rows = []
        for x in range(n_contexts):
            w = draw(st.integers(0, n_responses - 1))
            k = draw(st.integers(1, n_responses - 1))
            rows.append((x, w, (w + k) % n_responses))
        return np.array(rows, dtype=np.int64).reshape(-1, 3)
    n = draw(st.integers(min_pairs, max_pairs))
    rows = []
    ranks = [draw(st.permutations(range(n_responses))) for _ in range(n_contexts)]
    for _ in range(n):
        x = draw(st.integers(0, n_contexts - 1))
        a = draw(st.integers(0, n_responses - 1))
        k = draw(st.integers(1, n_responses - 1))
        b = (a + k) % n_responses
        if orientation == "dag" and ranks[x][a] > ranks[x][b]:
            a, b = b, a
        rows.append((x, a, b))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


@st.composite
def bandits(
    draw: Any,
    max_contexts: int = 3,
    min_responses: int = 2,
    max_responses: int = 5,
    beta: st.SearchStrategy[float] | None = None,
    logit_bound: float = 5.0,
    reward_bound: float = 5.0,
    min_pairs: int = 1,
    max_pairs: int = 8,
    orientation: str = "any",
) -> TabularBandit:
    """A valid :class:`TabularBandit`: normalised full-support reference, bounded rewards, β > 0, w ≠ l."""
    n_contexts = draw(st.integers(1, max_contexts))
    n_responses = draw(st.integers(min_responses, max_responses))
    log_ref = draw(log_policy_tables(n_contexts, n_responses, logit_bound))
    reward = draw(
        hnp.arrays(
            np.float64,
            (n_contexts, n_responses),
            elements=st.floats(
                -reward_bound, reward_bound, allow_nan=False, allow_infinity=False, allow_subnormal=False
            ),
        )
    )
    b = draw(beta if beta is not None else betas())
    p = draw(pair_indices(n_contexts, n_responses, min_pairs, max_pairs, orientation))
    return TabularBandit(log_ref, reward, b, p)


def single_pair_bandits(**kwargs: Any) -> st.SearchStrategy[TabularBandit]:
    """Bandits with exactly one preference pair per context."""
    return bandits(orientation="single", **kwargs)
