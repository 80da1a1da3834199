"""Tests of the vectorised trainer (dpocheck.sims): exact steps, autograd agreement, stationary points, escape times,
reproducibility and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.special import expit, logit

from dpocheck.sims import (
    BanditBatch,
    LossConfig,
    all_pairs_by_reward,
    batched_log_softmax,
    gaussian_batch,
    gradient_flow_time,
    one_pair_per_context,
    policy_metrics,
    reference_point_metrics,
    rlhf_optimum_log_policy,
    sample_bt_repeats,
    train,
)
from dpocheck.sims.reference import fit_reference, flip_labels, misaligned_reference_batch
from dpocheck.theory import (
    LOSS_NAMES,
    escape_time,
    log_cpo_margin,
    loss_and_grad,
    population_stationary_delta,
    rlhf_optimal_log_policy,
    tabular_logit_gradient,
)


def two_response_batch(delta_ref: float, beta: float) -> BanditBatch:
    """One context, responses (y_w, y_l) = (0, 1) with log π_ref = log_softmax(±δ_ref/2)."""
    log_ref = batched_log_softmax(np.array([[[delta_ref / 2, -delta_ref / 2]]]))
    return BanditBatch(log_ref, np.zeros_like(log_ref), np.array([[[0, 0, 1]]]), beta, None)


def loss_params(name: str, batch: BanditBatch, gamma: float | None) -> dict:
    """Keyword parameters of dpocheck.theory.loss_and_grad matching LossConfig(name, gamma)."""
    lw, ll = batch.log_pi_ref_pairs()
    g = LossConfig(name, gamma=gamma).gamma_value
    if name == "cpo_margin":
        return {"log_margin": log_cpo_margin(lw, ll, g)}
    if name == "released_easy":
        return {"mean_logp_ref_w": lw, "mean_logp_ref_l": ll, "gamma": g}
    if name == "released_adaptive":
        return {"gamma": g, "tau": 2.0, "alpha": 1.0}
    if name == "simpo":
        return {"gamma": g}
    if name == "dpop":
        return {"ref_logp_w": lw, "lam": LossConfig(name).spec.defaults["lam"]}
    if name == "dpo_nll":
        return {"tokens_w": 1, "alpha": LossConfig(name).spec.defaults["alpha"]}
    return {}


def test_one_sgd_step_hand_worked() -> None:
    """Uniform reference on two responses (δ_ref = 0), β = 1, DPO, lr = 0.2.

    ℓ(0) = softplus(0) = log 2; ∂ℓ/∂δ = −σ(0) = −1/2; the logit gradient is −1/2 on y_w and +1/2 on y_l, so after one
    step z_w = log ½ + 0.1, z_l = log ½ − 0.1 and δ = 0.2. The loss recorded at step 0 is log 2.
    """
    batch = two_response_batch(0.0, 1.0)
    traj = train(batch, "dpo", 1, optimizer="sgd", lr=0.2, record_every=1)
    assert traj.metrics["loss"][0, 0] == pytest.approx(math.log(2), abs=1e-15)
    assert traj.final_delta(batch)[0, 0] == pytest.approx(0.2, abs=1e-15)
    assert traj.steps.tolist() == [0, 1]


def test_one_adam_step_hand_worked() -> None:
    """Adam's first step moves every logit with a non-zero gradient by lr·g/(|g| + ε') ≈ lr (bias correction makes
    m̂ = g, v̂ = g²): with lr = 0.01, δ moves by 2·0.01 = 0.02 up to ε = 1e-8 relative to |g| = 1/2."""
    batch = two_response_batch(0.0, 1.0)
    traj = train(batch, "dpo", 1, optimizer="adam", lr=0.01, record_every=1)
    assert traj.final_delta(batch)[0, 0] == pytest.approx(0.02, rel=1e-7)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("soft", [False, True])
def test_first_step_matches_torch_autograd(name: str, soft: bool) -> None:
    """One SGD step of the trainer equals z − lr·∇L with ∇ from torch autograd through the theory layer's own loss
    (mean over pairs; soft labels q·ℓ(δ) + (1 − q)·ℓ(−δ; swapped)), for every loss. dpop and dpo_nll read the
    policy's log π(y_w|x) (log π(y_l|x) for the swapped label), differentiated through log_softmax."""
    batch = gaussian_batch(3, 2, 4, 0.7, seed=1, misalignment=0.7)
    if soft:
        batch = batch.with_bt_population_labels()
    gamma = {"cpo_margin": 0.02, "released_easy": 0.3, "released_adaptive": 0.4, "simpo": 0.5}.get(name)
    lr = 0.05
    # start off π_ref: there every pair sits on DPOP's kink Δ_w = 0, where numpy's and torch's log-softmax may round
    # to different sides (the kink itself: test_dpop_first_step_at_the_reference_is_dpos)
    z0 = batch.log_pi_ref + 0.3 * np.random.default_rng(0).standard_normal(batch.log_pi_ref.shape)
    traj = train(batch, LossConfig(name, gamma=gamma), 1, optimizer="sgd", lr=lr, record_every=1, init_logits=z0)
    B = batch.n_instances
    b = torch.arange(B)[:, None]
    p = torch.as_tensor(batch.pairs)
    z = torch.tensor(z0, requires_grad=True)
    d = z[b, p[..., 0], p[..., 1]] - z[b, p[..., 0], p[..., 2]]
    dref = torch.as_tensor(batch.delta_ref())
    beta = torch.as_tensor(batch.beta)[:, None]
    params = {
        k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in loss_params(name, batch, gamma).items()
    }
    logp = torch.log_softmax(z, dim=-1)
    lw, ll = logp[b, p[..., 0], p[..., 1]], logp[b, p[..., 0], p[..., 2]]
    ell = loss_and_grad(name, d, dref, beta, policy_logp_w=lw, **params).loss
    if soft:
        swapped = dict(params)
        if name == "released_easy":
            swapped["mean_logp_ref_w"], swapped["mean_logp_ref_l"] = (
                params["mean_logp_ref_l"],
                params["mean_logp_ref_w"],
            )
        if name == "dpop":
            swapped["ref_logp_w"] = torch.as_tensor(batch.log_pi_ref_pairs()[1])
        q = torch.as_tensor(batch.label_prob)
        ell = q * ell + (1 - q) * loss_and_grad(name, -d, -dref, beta, policy_logp_w=ll, **swapped).loss
    ell.mean(dim=1).sum().backward()
    expected = batched_log_softmax((z - lr * z.grad).detach().numpy())
    np.testing.assert_allclose(traj.log_pi, expected, atol=1e-12, rtol=0)
    np.testing.assert_allclose(traj.metrics["loss"][0], ell.mean(dim=1).detach().numpy(), atol=1e-12, rtol=0)


@st.composite
def small_batches(draw: st.DrawFn) -> BanditBatch:
    """Valid batches: B ≤ 3 instances, X ≤ 2 contexts, Y ≤ 4 responses, all pairs oriented by reward."""
    B = draw(st.integers(1, 3))
    X = draw(st.integers(1, 2))
    Y = draw(st.integers(2, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    beta = draw(st.sampled_from([0.01, 0.5, 3.0]))
    rng = np.random.default_rng(seed)
    reward = rng.standard_normal((B, X, Y))
    log_ref = batched_log_softmax(scale * rng.standard_normal((B, X, Y)))
    return BanditBatch(log_ref, reward, all_pairs_by_reward(reward), beta, None)


@given(small_batches())
@example(two_response_batch(0.0, 1.0))
@example(two_response_batch(-30.0, 3.0))
def test_logit_gradient_matches_theory_helper(batch: BanditBatch) -> None:
    """The trainer's scatter of ∂ℓ/∂δ onto the logits equals dpocheck.theory.tabular_logit_gradient per instance
    (divided by N: the loss is the mean over pairs)."""
    lr = 0.1
    traj = train(batch, "dpo", 1, optimizer="sgd", lr=lr, record_every=1)
    for i in range(batch.n_instances):
        inst = batch.instance(i)
        g = loss_and_grad("dpo", inst.delta_ref(), inst.delta_ref(), inst.beta).grad
        grad = tabular_logit_gradient(g, inst.pairs, inst.log_pi_ref.shape) / inst.n_pairs
        expected = batched_log_softmax((inst.log_pi_ref - lr * grad)[None])[0]
        np.testing.assert_allclose(traj.log_pi[i], expected, atol=1e-12, rtol=0)


def test_step_zero_metrics_are_the_reference() -> None:
    """At step 0 the policy is π_ref: no pair in U, no implicit-reward win (δ = δ_ref), KL 0, and p_w, E[r*] are
    π_ref's own values computed directly."""
    batch = gaussian_batch(4, 3, 5, 0.5, seed=3, misalignment=0.8)
    traj = train(batch, "dpo", 5, lr=0.1, record_every=5)
    m0 = {k: v[0] for k, v in traj.metrics.items()}
    assert np.all(m0["frac_in_U"] == 0) and np.all(m0["reward_acc"] == 0)
    np.testing.assert_allclose(m0["kl"], 0.0, atol=1e-12)
    lw, _ = batch.log_pi_ref_pairs()
    np.testing.assert_allclose(m0["p_w"], np.exp(lw).mean(axis=1), rtol=1e-12)
    expected_r = (np.exp(batch.log_pi_ref) * batch.reward).sum(-1).mean(-1)
    np.testing.assert_allclose(m0["expected_reward"], expected_r, rtol=1e-12)
    np.testing.assert_allclose(m0["pref_acc"], (batch.delta_ref() > 0).mean(axis=1))


@pytest.mark.parametrize(
    ("name", "gamma"), [("dpo", None), ("cpo_margin", 0.02), ("released_clip", None), ("released_adaptive", 0.5)]
)
def test_population_training_reaches_the_stationary_point(name: str, gamma: float | None) -> None:
    """One pair per context (free coordinates), soft labels q = σ(Δr*): gradient descent converges to
    dpocheck.theory.population_stationary_delta (C5a; the DPO value is δ_ref + Δr*/β) within 1e-6."""
    batch = one_pair_per_context(gaussian_batch(6, 4, 4, 1.0, seed=2, misalignment=0.6), seed=5)
    traj = train(batch.with_bt_population_labels(), LossConfig(name, gamma=gamma), 3000, lr=2.0, record_every=3000)
    params = {k: v for k, v in loss_params(name, batch, gamma).items() if k != "log_margin"}
    if name == "cpo_margin":
        lw, ll = batch.log_pi_ref_pairs()
        params = {"margin": gamma * (np.exp(-lw) + np.exp(-ll))}
    target = population_stationary_delta(name, batch.delta_ref(), batch.delta_reward(), 1.0, **params)
    np.testing.assert_allclose(traj.final_delta(batch), target, atol=1e-6, rtol=0)


def test_bt_sampled_repeats_reach_the_empirical_stationary_point() -> None:
    """Each pair observed 200 times with Bradley–Terry labels (hard labels): DPO's minimiser is the population
    stationary point at the empirical win rate q̂, δ_ref + logit(q̂)/β (C5a), reached within 1e-6."""
    base = one_pair_per_context(gaussian_batch(4, 3, 4, 0.5, seed=7, misalignment=0.5, reward_scale=0.5), seed=8)
    rep, q_hat = sample_bt_repeats(base, 200, seed=9)
    assert np.all((q_hat > 0) & (q_hat < 1))
    traj = train(rep, "dpo", 4000, lr=4.0, record_every=4000)
    d = traj.final_delta(base)  # δ of each original pair (x, w, l) under the trained policy
    target = population_stationary_delta("dpo", base.delta_ref(), logit(q_hat), 0.5)
    np.testing.assert_allclose(d, target, atol=1e-6, rtol=0)
    # and the empirical rate is close to the population σ(Δr*) (200 draws: within 5 standard errors)
    q = expit(base.delta_reward())
    assert np.all(np.abs(q_hat - q) <= 5 * np.sqrt(q * (1 - q) / 200) + 1e-12)


def test_dpo_population_on_all_pairs_is_the_rlhf_optimum() -> None:
    """All pairs of each context, soft labels σ(Δr*): the BT model is realisable, so DPO's population minimiser is
    π* itself (C5a); gradient descent reaches it to 1e-9 in log-probability (up to the per-context constant)."""
    batch = misaligned_reference_batch(3, 2, 4, 0.3, 1.0, seed=1).batch
    traj = train(batch.with_bt_population_labels(), "dpo", 2000, lr=20.0, record_every=2000)
    np.testing.assert_allclose(traj.log_pi, rlhf_optimum_log_policy(batch), atol=1e-9, rtol=0)


@pytest.mark.parametrize(("beta", "kappa"), [(1.0, -1.0), (0.5, -3.0), (2.0, -4.0)])
def test_simulated_escape_time_matches_closed_form(beta: float, kappa: float) -> None:
    """Gradient descent with lr = 0.01/β² leaves U at flow time within 1 % of escape_time (C4): Euler's error is
    O(lr·β²) = O(0.01)."""
    batch = two_response_batch(kappa / beta, beta)
    lr = 0.01 / beta**2
    t_closed = float(escape_time(batch.delta_ref()[0, 0], beta))
    traj = train(batch, "dpo", int(1.2 * t_closed / lr) + 1, lr=lr, record_every=10**9)
    t_sim = gradient_flow_time(traj, 1)[0, 0]
    assert abs(t_sim - t_closed) / t_closed < 0.01


def test_escape_time_is_nan_where_u_is_empty() -> None:
    """δ_ref ≥ 0: U is empty, nothing to escape (NaN)."""
    traj = train(two_response_batch(1.0, 1.0), "dpo", 10, lr=0.1)
    assert np.isnan(traj.escape_step[0, 0])


def test_runs_are_bit_for_bit_reproducible() -> None:
    """Same seed → identical trajectories (every metric, every record); another seed → different bandits."""
    a = misaligned_reference_batch(5, 2, 4, 0.3, 1.0, seed=11)
    b = misaligned_reference_batch(5, 2, 4, 0.3, 1.0, seed=11)
    c = misaligned_reference_batch(5, 2, 4, 0.3, 1.0, seed=12)
    ta = train(a.batch, LossConfig("cpo_margin", gamma=0.05), 50, optimizer="adam", lr=0.01, record_every=7)
    tb = train(b.batch, LossConfig("cpo_margin", gamma=0.05), 50, optimizer="adam", lr=0.01, record_every=7)
    for k in ta.metrics:
        assert np.array_equal(ta.metrics[k], tb.metrics[k], equal_nan=True)
    assert np.array_equal(ta.log_pi, tb.log_pi)
    assert not np.array_equal(a.batch.reward, c.batch.reward)


@pytest.mark.parametrize("flip_rate", [0.0, 0.2, 0.3, 0.4])
def test_misaligned_reference_flip_rate_is_exact(flip_rate: float) -> None:
    """Exactly round(R·N) of the N = X·Y(Y−1)/2 clean labels are flipped in every instance: N = 3·15 = 45, so the
    realised rate is round(45R)/45 (0, 9/45, 14/45 (13.5 rounds to 14), 18/45)."""
    mr = misaligned_reference_batch(8, 3, 6, flip_rate, 1.0, seed=4)
    N = 45
    assert mr.batch.n_pairs == N
    assert np.all(mr.flipped.sum(axis=1) == round(flip_rate * N))
    np.testing.assert_allclose(mr.realised_flip_rate, round(flip_rate * N) / N)
    assert abs(mr.realised_flip_rate.mean() - flip_rate) <= 0.5 / N + 1e-12
    # the clean labels follow the true reward
    assert np.all(mr.batch.delta_reward() >= 0)


def test_flip_labels_reverses_exactly_the_masked_pairs() -> None:
    """flip_labels exchanges w and l on the masked rows and leaves the others untouched."""
    rng = np.random.default_rng(0)
    reward = rng.standard_normal((4, 2, 5))
    clean = all_pairs_by_reward(reward)
    flipped, mask = flip_labels(clean, 0.3, np.random.default_rng(1))
    assert np.array_equal(flipped[mask][:, [0, 2, 1]], clean[mask])
    assert np.array_equal(flipped[~mask], clean[~mask])
    assert np.all(mask.sum(axis=1) == 6)


def test_reference_fit_follows_the_corrupted_labels() -> None:
    """The fitted reference prefers y_l more often on flipped pairs than on the others, and with the same seed the
    share of pairs with δ_ref < 0 grows with R (nested flipped sets)."""
    shares = []
    for R in (0.0, 0.2, 0.4):
        mr = misaligned_reference_batch(20, 3, 6, R, 1.0, seed=0)
        neg = mr.batch.delta_ref() < 0
        shares.append(neg.mean())
        if R > 0:
            assert neg[mr.flipped].mean() > neg[~mr.flipped].mean()
    assert shares[0] == 0.0
    assert shares[0] < shares[1] < shares[2]


def test_fit_reference_from_uniform_is_dpo_with_beta_one() -> None:
    """One step from uniform logits z = (0, 0) on one pair (Y = 2, N = 1) with lr = 2: ∂/∂δ softplus(−δ) at δ = 0
    is −σ(0) = −1/2, so the logit gradient is (−1/2, +1/2) and z becomes (0 + 2·½, 0 − 2·½) = (1, −1): δ_ref = 2."""
    log_ref = fit_reference(np.array([[[0, 0, 1]]]), 1, 2, steps=1, lr=2.0)
    assert log_ref[0, 0, 0] - log_ref[0, 0, 1] == pytest.approx(2.0, abs=1e-15)


def test_reference_points() -> None:
    """rlhf_optimum equals the theory's π* per instance; the exact E-CPOC policy satisfies δ ≥ ε on every pair."""
    batch = misaligned_reference_batch(3, 2, 4, 0.3, 1.0, seed=2).batch
    for i in range(3):
        np.testing.assert_allclose(
            rlhf_optimum_log_policy(batch)[i],
            rlhf_optimal_log_policy(batch.log_pi_ref[i], batch.reward[i], 1.0),
            atol=0,
        )
    m = reference_point_metrics(batch, "ecpoc", 0.5)
    assert np.all(m["pref_acc"] == 1.0)
    assert np.all(np.isnan(m["loss"]))
    with pytest.raises(ValueError, match="unknown reference point"):
        reference_point_metrics(batch, "nope")


def test_policy_metrics_kl_hand_worked() -> None:
    """KL between π = (½, ½) and π_ref = (¾, ¼): ½·log(½/¾) + ½·log(½/¼) = ½·log(4/3) ≈ 0.143841."""
    log_ref = np.log(np.array([[[0.75, 0.25]]]))
    batch = BanditBatch(log_ref, np.array([[[1.0, 0.0]]]), np.array([[[0, 0, 1]]]), 1.0, None)
    m = policy_metrics(batch, np.log(np.array([[[0.5, 0.5]]])))
    assert m["kl"][0] == pytest.approx(0.5 * math.log(4 / 3), rel=1e-14)
    assert m["expected_reward"][0] == pytest.approx(0.5)
    assert m["p_w"][0] == pytest.approx(0.5)
    assert m["frac_in_U"][0] == 0.0  # δ = 0 is the exit of U, not inside


def test_bad_input_is_rejected_with_clear_messages() -> None:
    """Non-normalised rows, β ≤ 0, w = l, bad labels, unknown losses and non-positive learning rates raise ValueError
    naming the instance and field."""
    good = gaussian_batch(2, 1, 3, 1.0, seed=0)
    with pytest.raises(ValueError, match="instance 1: log_pi_ref row 0"):
        lp = good.log_pi_ref.copy()
        lp[1, 0, 0] += 0.1
        BanditBatch(lp, good.reward, good.pairs, 1.0, None)
    with pytest.raises(ValueError, match="instance 0: beta"):
        BanditBatch(good.log_pi_ref, good.reward, good.pairs, [0.0, 1.0], None)
    with pytest.raises(ValueError, match=r"pairs\[0\] has w = l"):
        p = good.pairs.copy()
        p[1, 0, 2] = p[1, 0, 1]
        BanditBatch(good.log_pi_ref, good.reward, p, 1.0, None)
    with pytest.raises(ValueError, match="label_prob"):
        good.with_labels(1.5)
    with pytest.raises(ValueError, match="unknown loss"):
        LossConfig("cpo")
    with pytest.raises(ValueError, match="lr must be"):
        train(good, "dpo", 1, lr=0.0)
    with pytest.raises(ValueError, match="flip_rate"):
        misaligned_reference_batch(1, 1, 3, 1.5, 1.0, seed=0)
