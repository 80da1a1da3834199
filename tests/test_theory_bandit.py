"""Tests of dpocheck.theory.bandit: tabular bandits, the RLHF optimum in log space (C1), δ's, C2 on a bandit,
validation with messages naming the field, and the seeded constructors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from numpy.testing import assert_allclose
from scipy.special import logsumexp
from strategies import bandits, betas

from dpocheck.theory import (
    TabularBandit,
    delta_opt,
    log_softmax,
    misaligned_bandit,
    pair_values,
    policy_delta,
    random_bandit,
    rlhf_optimal_log_policy,
    sample_bt_pairs,
    violation_mask,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bandit.json"


def example_data() -> dict:
    """examples/bandit.json: β = 1, π_ref rows (0.6, 0.3, 0.1), (0.2, 0.5, 0.3); r* rows (0, 1, 0.5), (1, 0,
    0.2); pairs (0,1,0), (0,2,0), (0,1,2), (1,0,1), (1,2,1)."""
    return json.loads(EXAMPLE.read_text())


def example_bandit() -> TabularBandit:
    return TabularBandit.from_json(example_data(), extra_keys=("gamma", "epsilon"))


# ---------------------------------------------------------------- hand-worked numbers


def test_rlhf_optimum_on_two_responses_by_hand() -> None:
    """C1: π* ∝ π_ref·e^{r/β}. π_ref = (3/4, 1/4), r* = (0, (log 3)/2), β = 1/2: weights (3/4·1, 1/4·3) =
    (3/4, 3/4), so π* = (1/2, 1/2). π_ref = (1/2, 1/2), r* = (1, 0), β = 1: π* = (e, 1)/(1 + e) ≈ (0.731059,
    0.268941)."""
    lp = rlhf_optimal_log_policy(np.log([[0.75, 0.25]]), [[0.0, math.log(3) / 2]], 0.5)
    assert_allclose(np.exp(lp), [[0.5, 0.5]], rtol=1e-15)
    lp = rlhf_optimal_log_policy(np.log([[0.5, 0.5]]), [[1.0, 0.0]], 1.0)
    assert_allclose(np.exp(lp), [[math.e / (1 + math.e), 1 / (1 + math.e)]], rtol=1e-15)


def test_rlhf_optimum_stays_in_log_space_at_extremes() -> None:
    """log π_ref = (0, −1e4) (π_ref(y_1) = e^{−1e4} underflows), r* = (0, 2), β = 1e-4: logits (0, −1e4 + 2e4)
    = (0, 1e4), so log π* = (−1e4, 0) exactly, with no NaN although e^{1e4} and e^{−1e4} are not
    representable."""
    lp = rlhf_optimal_log_policy(np.array([[0.0, -1e4]]), np.array([[0.0, 2.0]]), 1e-4)
    assert_allclose(lp, [[-1e4, 0.0]], rtol=1e-15, atol=1e-12)


def test_log_softmax_policy_delta_and_pair_values_by_hand() -> None:
    """log_softmax([0, log 3]) = (log ¼, log ¾). Table [[1, 2, 4], [8, 16, 32]], pairs (0, 2, 0), (1, 0, 1):
    values at w: (4, 8), at l: (1, 16); δ = (4 − 1, 8 − 16) = (3, −8)."""
    assert_allclose(log_softmax([0.0, math.log(3)]), np.log([0.25, 0.75]), rtol=1e-15)
    t = np.array([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0]])
    p = np.array([[0, 2, 0], [1, 0, 1]])
    w, l = pair_values(t, p)
    assert w.tolist() == [4.0, 8.0] and l.tolist() == [1.0, 16.0]
    assert policy_delta(t, p).tolist() == [3.0, -8.0]


def test_example_bandit_by_hand() -> None:
    """examples/bandit.json (β = 1). δ_ref = (log .3/.6, log .1/.6, log .3/.1, log .2/.5, log .3/.5)
    = (−log 2, −log 6, log 3, log 0.4, log 0.6); Δr* = (1, 0.5, 0.5, 1, 0.2);
    β·δ_ref + Δr* = (0.307, −1.292, 1.599, 0.084, −0.311) → violated (F, T, F, F, T); δ* = δ_ref + Δr*."""
    b = example_bandit()
    dref = [-math.log(2), -math.log(6), math.log(3), math.log(0.4), math.log(0.6)]
    dr = [1.0, 0.5, 0.5, 1.0, 0.2]
    assert (b.n_contexts, b.n_responses, b.n_pairs, b.beta) == (2, 3, 5, 1.0)
    assert_allclose(b.delta_ref(), dref, rtol=1e-14)
    assert_allclose(b.delta_reward(), dr, rtol=1e-15)
    assert b.violation_mask().tolist() == [False, True, False, False, True]
    assert_allclose(b.delta_opt(), np.add(dref, dr), rtol=1e-13)
    lw, ll = b.log_pi_ref_pairs()
    assert_allclose(np.exp(lw), [0.3, 0.1, 0.3, 0.2, 0.3], rtol=1e-14)
    assert_allclose(np.exp(ll), [0.6, 0.6, 0.1, 0.5, 0.5], rtol=1e-14)


def test_with_beta_and_json_round_trip() -> None:
    """with_beta(0.25) changes only β (so δ* = δ_ref + 4·Δr*); to_json → from_json gives the same tables and
    pairs."""
    b = example_bandit()
    b4 = b.with_beta(0.25)
    assert b4.beta == 0.25 and np.array_equal(b4.pairs, b.pairs)
    assert_allclose(b4.delta_opt(), b.delta_ref() + 4 * b.delta_reward(), rtol=1e-13)
    back = TabularBandit.from_json(json.loads(json.dumps(b.to_json())))
    assert np.array_equal(back.log_pi_ref, b.log_pi_ref) and np.array_equal(back.reward, b.reward)
    assert np.array_equal(back.pairs, b.pairs) and back.beta == b.beta
    assert back.pairs.dtype == np.int64


# ---------------------------------------------------------------- properties


def _tie_bandit() -> TabularBandit:
    """π_ref = (½, ½), r* = (1, 1): δ_ref = 0 and Δr* = 0 exactly, so β·δ_ref + Δr* = 0: the boundary of
    C2."""
    return TabularBandit(np.log([[0.5, 0.5]]), [[1.0, 1.0]], 0.7, [[0, 0, 1], [0, 1, 0]])


@given(bandit=bandits())
@example(bandit=_tie_bandit())
@example(bandit=TabularBandit(np.log([[0.5, 0.5]]), [[5.0, -5.0]], 1e-4, [[0, 0, 1], [0, 1, 0]]))
@example(bandit=TabularBandit(log_softmax([[10.0, -10.0, 0.0]]), [[-5.0, 5.0, 0.0]], 1e4, [[0, 1, 0], [0, 2, 1]]))
def test_key_identity_from_the_actual_optimum(bandit) -> None:
    """C1: δ of the bandit's actual π* (log_pi_opt, computed by normalising) equals δ_ref + Δr*/β; π* rows sum
    to 1."""
    lp = bandit.log_pi_opt()
    assert np.all(np.isfinite(lp))
    assert_allclose(logsumexp(lp, axis=1), 0.0, atol=1e-12)
    expected = delta_opt(bandit.delta_ref(), bandit.delta_reward(), bandit.beta)
    scale = 1 + np.abs(bandit.delta_ref()) + np.abs(bandit.reward).max() / bandit.beta
    assert_allclose(policy_delta(lp, bandit.pairs), expected, rtol=1e-12, atol=1e-13 * scale.max())
    assert_allclose(bandit.delta_opt(), expected, rtol=1e-12, atol=1e-13 * scale.max())


@given(bandit=bandits())
@example(bandit=_tie_bandit())
@example(bandit=TabularBandit(np.log([[0.5, 0.5]]), [[5.0, -5.0]], 1e-4, [[0, 0, 1], [0, 1, 0]]))
def test_violation_iff_the_optimum_prefers_the_loser(bandit) -> None:
    """C2 ⇔ ¬C1: a pair violates β·δ_ref + Δr* > 0 iff π*(y_w|x) ≤ π*(y_l|x) for the bandit's actual π*
    (pairs within rounding of the boundary are checked only at the exact tie, where both sides say
    'violated')."""
    lp = bandit.log_pi_opt()
    p = bandit.pairs
    prefers_loser = lp[p[:, 0], p[:, 1]] <= lp[p[:, 0], p[:, 2]]
    mask = bandit.violation_mask()
    margin = bandit.beta * bandit.delta_ref() + bandit.delta_reward()
    clear = np.abs(margin) > 1e-9 * (1 + bandit.beta * np.abs(bandit.delta_ref()) + np.abs(bandit.delta_reward()))
    assert np.array_equal(mask[clear], prefers_loser[clear])
    exact = margin == 0
    assert np.all(mask[exact])
    assert np.array_equal(mask, violation_mask(bandit.delta_ref(), bandit.delta_reward(), bandit.beta))


@given(bandit=bandits(), beta=betas())
def test_json_round_trip_property(bandit, beta) -> None:
    """to_json → JSON text → from_json reproduces every field (β replaced through with_beta)."""
    b = bandit.with_beta(beta)
    back = TabularBandit.from_json(json.loads(json.dumps(b.to_json(), allow_nan=False)))
    assert np.array_equal(back.log_pi_ref, b.log_pi_ref)
    assert np.array_equal(back.reward, b.reward)
    assert np.array_equal(back.pairs, b.pairs)
    assert back.beta == beta


# ---------------------------------------------------------------- validation (messages name the field)

GOOD_LOG = np.log([[0.5, 0.5], [0.25, 0.75]])
GOOD_R = np.zeros((2, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 0.0}, r"beta: must be finite and > 0"),
        ({"beta": -1.0}, r"beta: must be finite and > 0"),
        ({"beta": math.nan}, r"beta: must be finite and > 0"),
        ({"beta": math.inf}, r"beta: must be finite and > 0"),
        ({"log_pi_ref": np.zeros((2, 1)), "reward": np.zeros((2, 1))}, r"log_pi_ref: .*≥ 2 responses"),
        ({"reward": np.zeros((2, 3))}, r"reward: shape \(2, 3\) differs"),
        ({"log_pi_ref": np.array([[np.log(0.5), math.nan], [0.0, 0.0]])}, r"log_pi_ref: entry \[0\]\[1\] is"),
        (
            {"log_pi_ref": np.array([[0.0, -math.inf], [np.log(0.5), np.log(0.5)]])},
            r"log_pi_ref: .*full support",
        ),
        ({"reward": np.array([[0.0, 0.0], [math.inf, 0.0]])}, r"reward: entry \[1\]\[0\]"),
        ({"log_pi_ref": np.log([[0.5, 0.5], [0.5, 0.6]])}, r"log_pi_ref: row 1 sums to 1\.1"),
        ({"pairs": [[0, 0, 1], [2, 0, 1]]}, r"pairs\[1\]: index x=2 out of range \[0, 2\)"),
        ({"pairs": [[0, 2, 1]]}, r"pairs\[0\]: index w=2 out of range"),
        ({"pairs": [[0, 0, -1]]}, r"pairs\[0\]: index l=-1 out of range"),
        ({"pairs": [[0, 0, 1], [1, 1, 1]]}, r"pairs\[1\]: w and l are the same response \(1\)"),
    ],
)
def test_constructor_validation_names_the_field(kwargs, message) -> None:
    """Each invalid field raises ValueError whose message names it (and the offending entry)."""
    args = {"log_pi_ref": GOOD_LOG, "reward": GOOD_R, "beta": 1.0, "pairs": [[0, 0, 1]]} | kwargs
    with pytest.raises(ValueError, match=message):
        TabularBandit(**args)


def _mutated(**changes) -> dict:
    d = example_data()
    d.pop("gamma"), d.pop("epsilon")
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], r"bandit: the top level must be a JSON object"),
        (_mutated(gama=0.1), r"unknown key\(s\) \['gama'\]"),
        (_mutated(reward=None), r"reward: missing"),
        (_mutated(beta=None), r"beta: missing"),
        (_mutated(log_pi_ref=[[0.0, 0.0]]), r"pi_ref / log_pi_ref: give exactly one"),
        (_mutated(pi_ref=None), r"pi_ref / log_pi_ref: give exactly one"),
        (_mutated(beta="0.1"), r"beta: must be a number"),
        (_mutated(beta=True), r"beta: must be a number"),
        (_mutated(beta=0), r"beta: must be finite and > 0"),
        (_mutated(beta=-0.5), r"beta: must be finite and > 0"),
        (_mutated(pi_ref=[[0.6, 0.3, 0.1], [0.2, 0.8]]), r"pi_ref: ragged rows \(lengths \[2, 3\]\)"),
        (_mutated(reward=[[0.0, 1.0, 0.5], [1.0, 0.0]]), r"reward: ragged rows"),
        (_mutated(pi_ref=[[1.1, -0.2, 0.1], [0.2, 0.5, 0.3]]), r"pi_ref: entry \[0\]\[1\] is negative"),
        (
            _mutated(pi_ref=[[0.7, 0.3, 0.0], [0.2, 0.5, 0.3]]),
            r"pi_ref: entry \[0\]\[2\] is 0; .*full support",
        ),
        (_mutated(pi_ref=[[0.6, 0.3, 0.1], [0.2, 0.5, 0.4]]), r"pi_ref: row 1 sums to \S*1\.1"),
        (_mutated(pi_ref=[[math.nan, 0.3, 0.1], [0.2, 0.5, 0.3]]), r"pi_ref: entry \[0\]\[0\] is not finite"),
        (_mutated(reward=[[0.0, "1", 0.5], [1.0, 0.0, 0.2]]), r"reward: entry \[0\]\[1\] is not a number"),
        (_mutated(reward=[[0.0, math.inf, 0.5], [1.0, 0.0, 0.2]]), r"reward: entry \[0\]\[1\] is not finite"),
        (_mutated(reward=[]), r"reward: must be a non-empty list of rows"),
        (_mutated(pairs=[[0, 1]]), r"pairs: must be a list of \[x, w, l\] integer triples"),
        (_mutated(pairs=[[0, 1.0, 0]]), r"pairs: must be a list of \[x, w, l\] integer triples"),
        (_mutated(pairs=[[0, 3, 0]]), r"pairs\[0\]: index w=3 out of range \[0, 3\)"),
        (_mutated(pairs=[[0, 1, 0], [5, 1, 0]]), r"pairs\[1\]: index x=5 out of range \[0, 2\)"),
        (_mutated(pairs=[[1, 2, 2]]), r"pairs\[0\]: w and l are the same response \(2\)"),
        (
            _mutated(pi_ref=None, log_pi_ref=[[0.0, math.nan, 0.0], [-1.0, -1.0, -1.0]]),
            r"log_pi_ref: entry \[0\]\[1\]",
        ),
    ],
)
def test_from_json_validation_names_the_field(data, message) -> None:
    """from_json rejects each kind of bad input with a message naming the field (each kind)."""
    with pytest.raises(ValueError, match=message):
        TabularBandit.from_json(data)


def test_from_json_extra_keys_and_log_form() -> None:
    """gamma/epsilon are accepted only when allowed as extra keys; the log_pi_ref form equals the pi_ref
    form."""
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epsilon', 'gamma'\]"):
        TabularBandit.from_json(example_data())
    a = example_bandit()
    d = _mutated(pi_ref=None, log_pi_ref=np.log(example_data()["pi_ref"]).tolist())
    assert_allclose(TabularBandit.from_json(d).log_pi_ref, a.log_pi_ref, rtol=0, atol=0)
    empty = TabularBandit.from_json(_mutated(pairs=[]))
    assert empty.n_pairs == 0 and empty.pairs.shape == (0, 3)


# ---------------------------------------------------------------- seeded constructors


def test_random_bandit_is_seeded_valid_and_reward_ordered() -> None:
    """random_bandit(4, 5): same seed → identical tables; another seed → different; rows normalised; all
    4·C(5,2) = 40 pairs oriented by r* (Δr* ≥ 0); n_pairs keeps a subset; BT mode samples the asked number."""
    a, b, c = random_bandit(seed=3), random_bandit(seed=3), random_bandit(seed=4)
    assert np.array_equal(a.log_pi_ref, b.log_pi_ref) and np.array_equal(a.pairs, b.pairs)
    assert not np.array_equal(a.reward, c.reward)
    assert_allclose(logsumexp(a.log_pi_ref, axis=1), 0.0, atol=1e-12)
    assert a.n_pairs == 40 and np.all(a.delta_reward() >= 0)
    sub = random_bandit(seed=3, n_pairs=7)
    assert sub.n_pairs == 7 and {tuple(r) for r in sub.pairs} <= {tuple(r) for r in a.pairs}
    bt = random_bandit(seed=3, pairs="bradley_terry", n_pairs=30)
    assert bt.n_pairs == 30
    with pytest.raises(ValueError, match="pairs must be 'reward_order' or 'bradley_terry'"):
        random_bandit(pairs="all")


def test_misaligned_bandit_degree() -> None:
    """Reference logits ∝ (1 − 2ρ)·r̃ (noise = 0): ρ = 0 ranks like r* (every reward-ordered pair has δ_ref >
    0), ρ = 1 reverses it (δ_ref < 0 everywhere), ρ = ½ is uniform (δ_ref = 0). With noise, violations grow
    with ρ."""
    b0 = misaligned_bandit(3, 4, beta=1.0, misalignment=0.0, noise=0.0, seed=1)
    b1 = misaligned_bandit(3, 4, beta=1.0, misalignment=1.0, noise=0.0, seed=1)
    bh = misaligned_bandit(3, 4, beta=1.0, misalignment=0.5, noise=0.0, seed=1)
    assert np.all(b0.delta_ref() > 0) and np.all(b1.delta_ref() < 0)
    assert_allclose(bh.delta_ref(), 0.0, atol=1e-14)
    rates = [misaligned_bandit(20, 5, beta=2.0, misalignment=r, seed=0).violation_mask().mean() for r in (0.1, 0.9)]
    assert rates[0] < rates[1]
    with pytest.raises(ValueError, match="misalignment must lie in"):
        misaligned_bandit(misalignment=1.5)


def test_bradley_terry_labels_follow_sigma_of_the_reward_gap() -> None:
    """Two responses, r* = (log 3, 0): P(y_w = 0) = σ(log 3) = 3/4. With 4000 sampled pairs the share labelled
    (w=0, l=1) is within 5σ = 5·sqrt(0.75·0.25/4000) ≈ 0.034 of 0.75, and some labels disagree with r*."""
    base = TabularBandit(np.log([[0.5, 0.5]]), [[math.log(3), 0.0]], 1.0)
    b = sample_bt_pairs(base, 4000, seed=11)
    assert b.n_pairs == 4000 and np.all(b.pairs[:, 1] != b.pairs[:, 2])
    share = float(np.mean(b.pairs[:, 1] == 0))
    assert abs(share - 0.75) < 5 * math.sqrt(0.75 * 0.25 / 4000)
    assert np.any(b.delta_reward() < 0)
    again = sample_bt_pairs(base, 4000, seed=11)
    assert np.array_equal(again.pairs, b.pairs)
    many = sample_bt_pairs(random_bandit(3, 4, seed=0), 500, seed=2)
    assert many.pairs[:, 0].max() < 3 and many.pairs[:, 1:].max() < 4 and np.all(many.pairs[:, 1] != many.pairs[:, 2])
