"""Tests of dpocheck.llm.train's core: training rows, packed collator and forward, PreferenceTrainer, metrics, callback.

Invariants: the packed policy forward equals the packed scorer and the unshared computation; at step 0 the policy
is the reference, so the `dpo` loss is log 2 and no pair is in U; `dpo` loss and parameter gradients equal TRL's own
sigmoid DPO loss on the same batch; `cpo_margin` with γ = 0 is `dpo`; the released branches equal the independent
reproduction in dpocheck.proofs_check.released_reference; every registry loss trains; logged metrics equal the
theory functions applied to the logged log-probs; seeded CPU runs are deterministic. Tiny random Llamas built here;
one slow smoke test trains the real SmolLM2-135M-Instruct GGUF for 2 steps.
"""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from dpocheck.llm.data.types import PreferencePair  # noqa: E402
from dpocheck.llm.models import toy_model, toy_tokenizer  # noqa: E402
from dpocheck.llm.scoring.encode import EncodedPair, encode_pair  # noqa: E402
from dpocheck.llm.scoring.kernels import score_sequences  # noqa: E402
from dpocheck.llm.scoring.runner import score_pairs  # noqa: E402
from dpocheck.llm.scoring.settings import ScoreSettings  # noqa: E402
from dpocheck.llm.train import (  # noqa: E402
    ROW_COLUMNS,
    PackedPreferenceCollator,
    PreferenceTrainer,
    TrainingInputError,
    UndesirableSpaceCallback,
    build_training_rows,
    encoded_from_row,
    policy_logps,
    preference_config,
    preference_metrics,
    trainable_model,
)
from dpocheck.llm.train.dataset import TRUNCATION_COLUMNS  # noqa: E402
from dpocheck.theory import delta_opt, dpo_gradient_weight, in_undesirable_space  # noqa: E402
from dpocheck.theory.registry import LOSS_NAMES  # noqa: E402

BETA = 0.1
TEXTS = [
    ("Hello there, how are you?", "I am fine, thanks.", "Go away.", 1.5),
    ("Tell me a poem about the sea", "Waves roll in, waves roll out.", "No.", None),
    ("What is 1+2?", "3", "It is 12, obviously, as everyone knows.", -0.5),
    ("Say something nice", "You are great.", "Numbers 1, 2, 3.", None),
    ("Capital of France?", "The capital of France is Paris.", "The dog sleeps.", 2.0),
    ("Write code", "def add(a, b):\n    return a + b", "I'm sorry, I can't help with that.", None),
]
RUNTIME_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}


@pytest.fixture(scope="module")
def toy():
    tok = toy_tokenizer()
    model = toy_model(tok, seed=0)
    pairs = [PreferencePair(index=10 + i, prompt=p, chosen=c, rejected=r, delta_reward=dr) for i, (p, c, r, dr) in
             enumerate(TEXTS)]  # fmt: skip
    ref_rows, skipped = score_pairs(model, tok, pairs, ScoreSettings(chat_template="model"))
    assert not skipped
    encs = [encode_pair(tok, p, use_chat_template=True, max_length=1024) for p in pairs]
    return SimpleNamespace(tok=tok, model=model, pairs=pairs, ref_rows=ref_rows, encs=encs)


def perturbed(model, seed: int = 1, scale: float = 0.02):
    """A trainable copy of ``model`` with small seeded noise on every weight (so δ_θ ≠ δ_ref)."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return m.requires_grad_(True).train()


def make_trainer(toy, rows, out, *, model=None, loss="dpo", normalize="sum", steps=3, **kw):
    model = model if model is not None else copy.deepcopy(toy.model).requires_grad_(True)
    settings = {"per_device_train_batch_size": 2, "max_steps": steps, "learning_rate": 1e-3, "beta": BETA,
                "save_strategy": "no", "seed": 0, "disable_tqdm": True}  # fmt: skip
    settings.update(kw)
    args = preference_config(str(out), **settings)
    return PreferenceTrainer(model, args, train_dataset=rows, processing_class=toy.tok, loss_name=loss,
                             normalize=normalize)  # fmt: skip


# ------------------------------------------------------------------------------------------------ rows
def test_rows_schema_join_and_dpo_offset(toy):
    rows = build_training_rows(toy.encs, list(reversed(toy.ref_rows)), "dpo", BETA)
    assert [r["index"] for r in rows] == [e.index for e in toy.encs]
    for row, enc, ref in zip(rows, toy.encs, toy.ref_rows, strict=True):
        assert set(row) == {*ROW_COLUMNS, *TRUNCATION_COLUMNS, "loss_offset"}
        assert (row["chosen_truncated"], row["rejected_truncated"]) == (enc.chosen_truncated, enc.rejected_truncated)
        assert row["ref_chosen_logp_sum"] == ref["chosen_logp_sum"]
        assert row["ref_rejected_logp_mean"] == ref["rejected_logp_mean"]
        assert (row["n_chosen"], row["n_rejected"]) == (ref["chosen_tokens"], ref["rejected_tokens"])
        # dpo: ℓ = softplus(c − β·δ_θ) with c = β·δ_ref
        assert row["loss_offset"] == BETA * (ref["chosen_logp_sum"] - ref["rejected_logp_sum"])
        back = encoded_from_row(row)
        assert (back.chosen_ids, back.rejected_ids) == (enc.chosen_ids, enc.rejected_ids)
        assert (back.chosen_start, back.rejected_start, back.shared) == (
            enc.chosen_start,
            enc.rejected_start,
            enc.shared,
        )
    assert [r["delta_reward"] for r in rows] == [t[3] for t in TEXTS]
    mean_rows = build_training_rows(toy.encs, toy.ref_rows, "dpo", BETA, normalize="mean")
    for row, ref in zip(mean_rows, toy.ref_rows, strict=True):
        assert row["loss_offset"] == BETA * (ref["chosen_logp_mean"] - ref["rejected_logp_mean"])


def _bad_ref(toy, k, **change):
    refs = [dict(r) for r in toy.ref_rows]
    refs[k].update(change)
    return refs


@pytest.mark.parametrize(
    ("kwargs", "field", "record"),
    [
        ({"beta": 0.0}, "beta", None),
        ({"beta": -1.0}, "beta", None),
        ({"beta": math.nan}, "beta", None),
        ({"loss_name": "cpo"}, "loss", None),
        ({"loss_name": "cpo_margin", "loss_params": {"gamma": -0.1}}, "gamma", None),
        ({"loss_name": "dpo", "loss_params": {"gamma": 0.1}}, "gamma", None),
        ({"normalize": "max"}, "normalize", None),
        ({"refs": ("nan", 2, "chosen_logp_sum")}, "chosen_logp_sum", 12),
        ({"refs": ("inf", 0, "rejected_logp_mean")}, "rejected_logp_mean", 10),
        ({"refs": ("tokens", 1, "chosen_tokens")}, "chosen_tokens", 11),
        ({"refs": ("drop", 3, None)}, "index", 13),
    ],
)
def test_rows_reject_bad_input(toy, kwargs, field, record):
    call = {"loss_name": "dpo", "beta": BETA, "loss_params": None, "normalize": "sum"}
    refs = toy.ref_rows
    how = kwargs.pop("refs", None)
    call.update(kwargs)
    if how is not None:
        what, k, key = how
        if what == "drop":
            refs = [r for j, r in enumerate(toy.ref_rows) if j != k]
        elif what == "tokens":
            refs = _bad_ref(toy, k, **{key: toy.ref_rows[k][key] + 1})
        else:
            refs = _bad_ref(toy, k, **{key: float(what)})
    with pytest.raises(TrainingInputError) as info:
        build_training_rows(toy.encs, refs, call["loss_name"], call["beta"], call["loss_params"], call["normalize"])
    assert info.value.field == field
    assert info.value.index == record
    assert f"'{field}'" in str(info.value)
    if record is not None:
        assert str(info.value).startswith(f"record {record}: ")


def test_rows_reject_empty_response_and_cpo_margin_overflow(toy):
    e = toy.encs[0]
    empty = EncodedPair(e.index, e.chosen_ids, e.rejected_ids, len(e.chosen_ids), e.rejected_start, e.shared, False,
                        False)  # fmt: skip
    ref = dict(toy.ref_rows[0], chosen_tokens=None)
    with pytest.raises(TrainingInputError, match="record 10: field 'chosen' is an empty response"):
        build_training_rows([empty], [ref], "dpo", BETA)
    # summed log-probs of −800 nats: 1/π_ref = e^800 overflows float64; the error names the pair and the fix
    refs = _bad_ref(toy, 4, chosen_logp_sum=-800.0)
    with pytest.raises(TrainingInputError, match=r"record 14: field 'loss'.*normalize='mean'"):
        build_training_rows(toy.encs, refs, "cpo_margin", BETA, {"gamma": 0.05})
    rows = build_training_rows(toy.encs, refs, "cpo_margin", BETA, {"gamma": 0.05}, normalize="mean")
    assert all(math.isfinite(r["loss_offset"]) for r in rows)


# --------------------------------------------------------------------------------------------- forward
def test_policy_forward_equals_packed_scorer_and_unshared(toy):
    rows = build_training_rows(toy.encs, toy.ref_rows, "dpo", BETA)
    model = copy.deepcopy(toy.model).requires_grad_(True).train()
    batch = PackedPreferenceCollator(toy.tok.pad_token_id)(rows)
    out = policy_logps(model, batch)
    assert out["chosen_logp_sum"].requires_grad and out["chosen_logp_sum"].dtype == torch.float64
    got_w, got_l = out["chosen_logp_sum"].detach().numpy(), out["rejected_logp_sum"].detach().numpy()
    ref_w = np.array([r["chosen_logp_sum"] for r in toy.ref_rows])
    ref_l = np.array([r["rejected_logp_sum"] for r in toy.ref_rows])
    np.testing.assert_allclose(got_w, ref_w, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got_l, ref_l, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["chosen_logp_mean"].detach().numpy(), [r["chosen_logp_mean"] for r in toy.ref_rows],
                               rtol=0, atol=1e-6)  # fmt: skip
    assert out["chosen_tokens"].tolist() == [r["chosen_tokens"] for r in toy.ref_rows]
    with torch.no_grad():
        seqs = [(e.chosen_ids, e.chosen_start) for e in toy.encs] + [
            (e.rejected_ids, e.rejected_start) for e in toy.encs
        ]
        unshared = [s.logp_sum for s in score_sequences(model, seqs, toy.tok.pad_token_id)]
    np.testing.assert_allclose(np.concatenate([got_w, got_l]), unshared, rtol=0, atol=1e-4)
    # gradients flow to the weights
    (out["chosen_logp_sum"] - out["rejected_logp_sum"]).sum().backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ step 0 loss
def test_step0_dpo_loss_is_log2_and_nothing_in_u(toy, tmp_path):
    rows = build_training_rows(toy.encs, toy.ref_rows, "dpo", BETA)
    trainer = make_trainer(toy, rows, tmp_path / "run", steps=1, per_device_train_batch_size=6)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    assert abs(loss.item() - math.log(2)) <= 1e-6
    trainer.train()
    first = trainer.state.log_history[0]
    assert abs(first["loss"] - math.log(2)) <= 1e-6
    assert first["share_in_u/sum"] == 0.0
    assert first["implicit_reward_accuracy/sum"] == 0.0  # δ_θ = δ_ref: no pair has δ_θ > δ_ref
    assert first["grad_weight_outside_u/sum"] == pytest.approx(BETA / 2, abs=1e-7)  # β·σ(0) (C4)
    assert "grad_weight_in_u/sum" not in first  # empty set: omitted, not NaN


# ------------------------------------------------------------------------------------ against TRL itself
def test_dpo_loss_and_gradients_equal_trl_sigmoid_loss(toy, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    rows = build_training_rows(toy.encs, toy.ref_rows, "dpo", BETA)
    # TRL scores every completion token: the rows' response ids are exactly the scored tokens here
    assert all(len(r["chosen_ids"]) == r["n_chosen"] and len(r["rejected_ids"]) == r["n_rejected"] for r in rows)
    policy = perturbed(toy.model)
    ours = make_trainer(toy, rows, tmp_path / "ours", model=copy.deepcopy(policy))
    text = Dataset.from_list([{"prompt": "Hi", "chosen": " there", "rejected": " you"}])
    trl_args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=BETA, loss_type=["sigmoid"], bf16=False,
                         activation_checkpointing=False, max_length=None, report_to="none")  # fmt: skip
    theirs = DPOTrainer(copy.deepcopy(policy), ref_model=copy.deepcopy(toy.model), args=trl_args, train_dataset=text,
                        processing_class=toy.tok)  # fmt: skip
    trl_batch = DataCollatorForPreference(pad_token_id=toy.tok.pad_token_id)(
        [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows]
    )
    ours.model.train()
    theirs.model.train()
    loss_ours = ours.compute_loss(ours.model, ours.data_collator(rows))
    loss_trl = theirs.compute_loss(theirs.model, trl_batch)
    assert abs(loss_ours.item() - math.log(2)) > 1e-2  # the policy moved away from the reference
    assert abs(loss_ours.item() - loss_trl.item()) <= 1e-5
    loss_ours.backward()
    loss_trl.backward()
    named = dict(theirs.model.named_parameters())
    worst = 0.0
    for name, p in ours.model.named_parameters():
        worst = max(worst, float((p.grad - named[name].grad).abs().max()))
    assert worst <= 1e-5


# ----------------------------------------------------------------------------------- other losses
def _loss_on_batch(toy, tmp_path, rows, loss, normalize, policy):
    tr = make_trainer(toy, rows, tmp_path / loss, model=copy.deepcopy(policy), loss=loss, normalize=normalize)
    tr.model.train()
    value = tr.compute_loss(tr.model, tr.data_collator(rows))
    value.backward()
    return value.item(), [p.grad.clone() for p in tr.model.parameters()]


def test_cpo_margin_with_gamma_zero_is_dpo(toy, tmp_path):
    policy = perturbed(toy.model)
    for normalize in ("sum", "mean"):
        dpo_rows = build_training_rows(toy.encs, toy.ref_rows, "dpo", BETA, normalize=normalize)
        cpo_rows = build_training_rows(toy.encs, toy.ref_rows, "cpo_margin", BETA, {"gamma": 0.0}, normalize)
        assert [r["loss_offset"] for r in cpo_rows] == [r["loss_offset"] for r in dpo_rows]
        v_dpo, g_dpo = _loss_on_batch(toy, tmp_path, dpo_rows, "dpo", normalize, policy)
        v_cpo, g_cpo = _loss_on_batch(toy, tmp_path, cpo_rows, "cpo_margin", normalize, policy)
        assert v_cpo == v_dpo
        assert all(torch.equal(a, b) for a, b in zip(g_cpo, g_dpo, strict=True))


@pytest.mark.parametrize(
    ("loss", "params"),
    [("released_easy", {"gamma": 0.05}), ("released_clip", {}), ("released_adaptive", {"gamma": 0.5, "tau": 2.0})],
)
def test_released_branches_equal_released_reference(toy, tmp_path, loss, params):
    from dpocheck.proofs_check import released_reference as rr

    policy = perturbed(toy.model, scale=0.05)
    rows = build_training_rows(toy.encs, toy.ref_rows, loss, BETA, params, normalize="mean")
    tr = make_trainer(toy, rows, tmp_path / loss, model=copy.deepcopy(policy), loss=loss, normalize="mean")
    tr.model.train()
    batch = tr.data_collator(rows)
    ours = tr.compute_loss(tr.model, batch)
    out = policy_logps(policy, batch)
    args = (out["chosen_logp_mean"], out["rejected_logp_mean"], batch["ref_chosen_logp_mean"],
            batch["ref_rejected_logp_mean"], BETA)  # fmt: skip
    if loss == "released_easy":
        theirs, _ = rr.easy_branch(*args, params["gamma"])
    elif loss == "released_clip":
        theirs = rr.clip_branch(*args)
    else:
        theirs, _ = rr.adaptive_branch(*args, params["gamma"], params["tau"], 1.0)
    assert ours.item() == pytest.approx(theirs.mean().item(), rel=0, abs=1e-12)
    # the gradients of the released reproduction through the same forward equal the trainer's
    ours.backward()
    theirs.mean().backward()
    for a, b in zip(tr.model.parameters(), policy.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_registry_loss_trains(toy, tmp_path, loss):
    rows = build_training_rows(toy.encs, toy.ref_rows, loss, BETA, normalize="mean")
    # the hinge max(0, δ_ref − δ_θ) is flat at the reference (C7: subgradient −1[δ_θ < δ_ref] = 0), so it
    # starts from a perturbed policy; every other loss starts at the reference
    model = perturbed(toy.model) if loss == "hinge" else None
    tr = make_trainer(toy, rows, tmp_path / loss, model=model, loss=loss, normalize="mean", steps=3)
    before = [p.detach().clone() for p in tr.model.parameters()]
    tr.train()
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert len(logs) == 3
    assert all(math.isfinite(h["loss"]) for h in logs)
    assert math.isfinite(tr.state.log_history[-1]["train_loss"])  # the Trainer's own float32 running loss
    assert tr.state.log_history[-1]["train_loss"] == pytest.approx(np.mean([h["loss"] for h in logs]), rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.model.parameters(), strict=True))


def test_hinge_is_flat_at_the_reference(toy, tmp_path):
    rows = build_training_rows(toy.encs, toy.ref_rows, "hinge", BETA)
    tr = make_trainer(toy, rows, tmp_path / "hinge", loss="hinge", steps=1)
    tr.train()
    assert tr.state.log_history[0]["loss"] == 0.0
    assert tr.state.log_history[0]["grad_norm"] == 0.0


def test_cpo_margin_summed_logps_is_linear_with_weight_beta(toy, tmp_path):
    """With summed log-probs the C8 margin is ~e^100 (log space): ℓ ≈ c − β·δ_θ, gradient weight β on every pair."""
    rows = build_training_rows(toy.encs, toy.ref_rows, "cpo_margin", BETA, {"gamma": 0.05})
    assert min(r["loss_offset"] for r in rows) > 1e30
    tr = make_trainer(toy, rows, tmp_path / "cpo", loss="cpo_margin")
    batch = tr.data_collator(rows)
    delta = torch.tensor([0.0] * len(rows), dtype=torch.float64, requires_grad=True)
    per_pair = tr.loss_spec.apply(delta, BETA, offset=batch["loss_offset"]).loss
    per_pair.sum().backward()
    assert torch.equal(delta.grad, torch.full_like(delta, -BETA))
    tr.train()
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(1e30 < h["loss"] < math.inf for h in logs)


def test_evaluate_on_eval_dataset_logs_loss_and_metrics(toy, tmp_path):
    rows = build_training_rows(toy.encs, toy.ref_rows, "dpo", BETA)
    args = preference_config(str(tmp_path / "run"), beta=BETA, per_device_eval_batch_size=3, disable_tqdm=True)
    tr = PreferenceTrainer(copy.deepcopy(toy.model).requires_grad_(True), args, train_dataset=rows,
                           eval_dataset=rows, processing_class=toy.tok)  # fmt: skip
    out = tr.evaluate()
    assert out["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert out["eval_share_in_u/sum"] == 0.0


# --------------------------------------------------------------------------------------------- metrics
def test_preference_metrics_hand_worked():
    d = np.array([-1.0, -3.0, 2.0, -0.5])
    dref = np.array([-2.0, -1.0, -1.0, 0.5])
    dr = np.array([1.0, np.nan, np.nan, -2.0])
    m = preference_metrics(d, dref, 1.0, dr, "mean")
    # in U: pair 0 only (−2 < −1 < 0); pair 1 below δ_ref; pair 2 positive; pair 3 below δ_ref (δ_ref > 0)
    assert m["share_in_u/mean"] == 0.25
    assert m["ranking_accuracy/mean"] == 0.25
    assert m["implicit_reward_accuracy/mean"] == 0.5
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert m["grad_weight_in_u/mean"] == pytest.approx(sig(-1.0), abs=1e-15)
    assert m["grad_weight_outside_u/mean"] == pytest.approx((sig(2.0) + sig(-3.0) + sig(1.0)) / 3, abs=1e-15)
    # δ* = δ_ref + Δr*/β: pair 0 → −1 (same sign as δ_θ = −1), pair 3 → −1.5 (δ_θ = −0.5: same sign)
    assert m["share_rlhf_side/mean"] == 1.0
    assert set(preference_metrics(d, dref, 1.0, None)) == {
        "share_in_u/sum", "ranking_accuracy/sum", "implicit_reward_accuracy/sum", "grad_weight_in_u/sum",
        "grad_weight_outside_u/sum",
    }  # fmt: skip
    assert preference_metrics(np.array([]), np.array([]), 1.0) == {}


def test_logged_metrics_equal_theory_on_logged_logps(toy, tmp_path):
    rows = build_training_rows(toy.encs, toy.ref_rows, "dpo", BETA)
    tr = make_trainer(toy, rows, tmp_path / "run", steps=4, learning_rate=3e-3)
    tr.record_pairs = True
    tr.train()
    logs = [h for h in tr.state.log_history if "share_in_u/sum" in h]
    assert len(logs) == len(tr.pair_records) == 4
    moved = 0
    for h, rec in zip(logs, tr.pair_records, strict=True):
        assert h["step"] == rec["step"] + 1
        d = np.array(rec["chosen_logp_sum"]) - np.array(rec["rejected_logp_sum"])
        dref = np.array(rec["ref_chosen_logp_sum"]) - np.array(rec["ref_rejected_logp_sum"])
        in_u = np.asarray(in_undesirable_space(d, dref))
        w = np.asarray(dpo_gradient_weight(d, dref, BETA))
        assert h["share_in_u/sum"] == in_u.mean()
        assert h["ranking_accuracy/sum"] == (d > 0).mean()
        assert h["implicit_reward_accuracy/sum"] == (d > dref).mean()
        if in_u.any():
            assert h["grad_weight_in_u/sum"] == pytest.approx(w[in_u].mean(), rel=1e-12)
        if (~in_u).any():
            assert h["grad_weight_outside_u/sum"] == pytest.approx(w[~in_u].mean(), rel=1e-12)
        dr = np.array(rec["delta_reward"])
        known = np.isfinite(dr)
        if known.any():
            star = np.asarray(delta_opt(dref[known], dr[known], BETA))
            assert h["share_rlhf_side/sum"] == (np.sign(d[known]) == np.sign(star)).mean()
        else:
            assert "share_rlhf_side/sum" not in h
        assert h["logps/chosen/sum"] == pytest.approx(np.mean(rec["chosen_logp_sum"]), rel=1e-12)
        moved += int(np.abs(d - dref).max() > 1e-3)
    assert moved >= 2  # the policy moved, so the checks are not all at δ_θ = δ_ref


def test_seeded_cpu_run_is_deterministic(toy, tmp_path):
    rows = build_training_rows(toy.encs, toy.ref_rows, "dpo", BETA)

    def run(name):
        tr = make_trainer(toy, rows, tmp_path / name, steps=4)
        tr.train()
        return [{k: v for k, v in h.items() if k not in RUNTIME_KEYS} for h in tr.state.log_history]

    first, second = run("a"), run("b")
    assert first == second
    assert len(first) == 5


# -------------------------------------------------------------------------------------------- callback
def test_callback_scores_whole_set_every_k_steps(toy, tmp_path):
    rows = build_training_rows(toy.encs, toy.ref_rows, "dpo", BETA)
    held = rows[:2]
    tr = make_trainer(toy, rows, tmp_path / "run", steps=4, learning_rate=3e-3)
    cb = UndesirableSpaceCallback(tr, rows, eval_every=2, out_dir=tmp_path / "run", heldout_rows=held)
    tr.add_callback(cb)
    tr.train()
    files = sorted(p.name for p in (tmp_path / "run" / "eval").iterdir())
    assert files == ["heldout-step-0.jsonl", "heldout-step-2.jsonl", "heldout-step-4.jsonl", "step-0.jsonl",
                     "step-2.jsonl", "step-4.jsonl"]  # fmt: skip
    start = [json.loads(line) for line in (tmp_path / "run" / "eval" / "step-0.jsonl").read_text().splitlines()]
    assert [r["index"] for r in start] == [r["index"] for r in rows]
    for r in start:
        assert abs(r["delta_theta"] - r["delta_ref"]) <= 1e-5 and r["in_u"] is False
    end = [json.loads(line) for line in (tmp_path / "run" / "eval" / "step-4.jsonl").read_text().splitlines()]
    # the eval file holds what `dpocheck score` gives for the trained model
    rescored, _ = score_pairs(tr.model.eval(), toy.tok, toy.pairs, ScoreSettings(chat_template="model"))
    for got, want in zip(end, rescored, strict=True):
        assert got["chosen_logp_sum"] == want["chosen_logp_sum"]
        assert got["rejected_logp_mean"] == want["rejected_logp_mean"]
        assert got["in_u"] == bool(in_undesirable_space(got["delta_theta"], got["delta_ref"]))
    logged = {h["step"]: h for h in tr.state.log_history if "eval/share_in_u/sum" in h}
    assert sorted(logged) == [0, 2, 4]
    # the eval entries come beside, not instead of, the training log of the same step
    assert [h["step"] for h in tr.state.log_history if "share_in_u/sum" in h] == [1, 2, 3, 4]
    assert logged[0]["eval/share_in_u/sum"] == 0.0
    d = np.array([r["delta_theta"] for r in end])
    dref = np.array([r["delta_ref"] for r in end])
    assert logged[4]["eval/share_in_u/sum"] == np.asarray(in_undesirable_space(d, dref)).mean()
    assert logged[4]["eval/ranking_accuracy/sum"] == (d > 0).mean()
    assert "eval/heldout/share_in_u/sum" in logged[4]
    assert not np.allclose(d, dref)  # training moved the margins


def test_callback_in_a_plain_trl_dpo_script(toy, tmp_path):
    """The callback drops into a user's own DPOTrainer (TRL's tokenisation and loss); U is watched on our rows."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = build_training_rows(toy.encs, toy.ref_rows, "dpo", BETA)
    text = Dataset.from_list([{"prompt": p, "chosen": " " + c, "rejected": " " + r} for p, c, r, _ in TEXTS])
    args = DPOConfig(output_dir=str(tmp_path / "user"), beta=BETA, bf16=False, activation_checkpointing=False,
                     max_steps=2, per_device_train_batch_size=2, learning_rate=3e-3, report_to="none",
                     use_cpu=True, logging_steps=1, disable_tqdm=True, save_strategy="no")  # fmt: skip
    trainer = DPOTrainer(copy.deepcopy(toy.model).requires_grad_(True), ref_model=copy.deepcopy(toy.model),
                         args=args, train_dataset=text, processing_class=toy.tok)  # fmt: skip
    trainer.add_callback(UndesirableSpaceCallback(trainer, rows, eval_every=2, out_dir=tmp_path / "user"))
    trainer.train()
    assert sorted(p.name for p in (tmp_path / "user" / "eval").iterdir()) == ["step-0.jsonl", "step-2.jsonl"]
    logged = {h["step"]: h for h in trainer.state.log_history if "eval/share_in_u/sum" in h}
    assert sorted(logged) == [0, 2] and logged[0]["eval/share_in_u/sum"] == 0.0
    assert [h["step"] for h in trainer.state.log_history if "rewards/accuracies" in h] == [1, 2]  # TRL's own logs


# ------------------------------------------------------------------------------------------ real model
@pytest.mark.slow
@pytest.mark.llm
def test_smollm2_two_steps_start_at_log2(tmp_path):
    from dpocheck.llm.data.load import default_data_dir, load_pairs
    from dpocheck.llm.models import default_model_path, load_model

    path = default_model_path()
    if not path.exists():
        pytest.skip("SmolLM2 GGUF not installed")
    hh = default_data_dir() / "hh-rlhf-harmless-base-test.jsonl.gz"
    if not hh.exists():
        pytest.skip("shared HH-RLHF data not available")
    pairs = load_pairs(hh, limit=40).pairs
    pairs = sorted(pairs, key=lambda p: len(str(p.prompt)) + len(p.chosen) + len(p.rejected))[:2]
    lm = load_model(path)
    settings = ScoreSettings(chat_template="auto", max_length=256)
    ref_rows, skipped = score_pairs(lm.model, lm.tokenizer, pairs, settings)
    assert not skipped
    encs = [encode_pair(lm.tokenizer, p, use_chat_template=True, max_length=256) for p in pairs]
    rows = build_training_rows(encs, ref_rows, "dpo", BETA)
    model = trainable_model(lm.model)
    assert getattr(model, "hf_quantizer", None) is None and not model.is_quantized and model.training
    args = preference_config(str(tmp_path / "smol"), per_device_train_batch_size=1, max_steps=2, learning_rate=1e-5,
                             beta=BETA, save_strategy="no", seed=0, disable_tqdm=True)  # fmt: skip
    tr = PreferenceTrainer(model, args, train_dataset=rows, processing_class=lm.tokenizer, loss_name="dpo")
    tr.train()
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert abs(logs[0]["loss"] - math.log(2)) <= 1e-6
    assert logs[0]["share_in_u/sum"] == 0.0
    assert len(logs) == 2 and math.isfinite(logs[1]["loss"])
