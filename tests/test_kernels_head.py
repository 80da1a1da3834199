"""The scorer's output head, padding and attention backends (dpocheck.llm.kernels), on tiny random Llamas.

Invariants: applying the head to the scored hidden states (in chunks) gives the model's own logits' log-probs;
a model whose logits the head cannot reproduce is detected and scored through its own forward; padding packed
rows to a multiple of 64 changes nothing but padding; sums per sequence are plain ordered float64 sums; every
SDPA backend that runs on this machine gives the math backend's scores.
"""

from __future__ import annotations

import math

import pytest
import torch

from dpocheck.llm import kernels as K
from dpocheck.llm.encode import encode_pair
from dpocheck.llm.models import toy_model, toy_tokenizer
from dpocheck.llm.types import PreferencePair

WORDS = "the capital of France is Paris sure here a short poem about sea waves roll in out dog fox".split()


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def enc(tok):
    pairs = []
    for i in range(10):
        prompt = "Q: " + " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(2 + i % 4)) + "?"
        chosen = " " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 5)) + "."
        rejected = " " + " ".join(WORDS[(2 * i + j + 5) % len(WORDS)] for j in range(2 + (i * 3) % 4)) + "!"
        pairs.append(PreferencePair(i, prompt, chosen, rejected))
    return [encode_pair(tok, p, use_chat_template=True) for p in pairs]


def _fresh(tok, **overrides):
    m = toy_model(tok, seed=0, **overrides)
    m.eval()
    return m


def _values(scores):
    return [s.logp_sum for s in scores]


def _own_forward(model):
    """The same model scored through its own forward (the head helper disabled)."""
    model._dpocheck_head = None
    return model


@pytest.mark.parametrize("mode", ["packed", "cache", "none"])
def test_head_on_kept_states_equals_the_models_own_logits(tok, enc, mode):
    with torch.no_grad():
        mine = K.score_batch(_fresh(tok), enc, prefix_mode=mode)
        own = K.score_batch(_own_forward(_fresh(tok)), enc, prefix_mode=mode)
    assert K._head_of(_fresh(tok)) is not None  # the Llama's decoder + lm_head are used
    for a, b in zip(_values(mine), _values(own), strict=True):
        assert abs(a - b) <= 1e-5
    assert [s.tokens for s in mine] == [s.tokens for s in own]


def test_head_chunks_change_nothing(tok, enc, monkeypatch):
    with torch.no_grad():
        whole = K.score_batch(_fresh(tok), enc)
        monkeypatch.setattr(K, "HEAD_CHUNK", 3)
        chunked = K.score_batch(_fresh(tok), enc)
    for a, b in zip(_values(whole), _values(chunked), strict=True):
        assert abs(a - b) <= 1e-9


def test_logits_the_head_cannot_reproduce_fall_back_to_the_models_forward(tok, enc):
    """A config asking for final-logit soft-capping that the Llama forward does not apply: the probe sees the
    mismatch, and scores are the model's own (unshared computation)."""
    model = _fresh(tok)
    model.config.final_logit_softcapping = 0.5
    assert K._head_of(model) is None
    with torch.no_grad():
        got = K.score_batch(model, enc)
        ref = K.score_batch(_own_forward(_fresh(tok)), enc, prefix_mode="none")
    for a, b in zip(_values(got), _values(ref), strict=True):
        assert abs(a - b) <= 1e-4


def test_padding_to_a_multiple_of_64(tok, enc):
    ids, seg, pos, keep, which = K.pack_pairs(enc, 0, pad_multiple=64)
    assert ids.shape[1] % 64 == 0 and ids.shape[1] >= 64
    plain = K.pack_pairs(enc, 0, pad_multiple=1)
    n = plain[0].shape[1]
    assert torch.equal(ids[:, :n], plain[0]) and torch.equal(keep[:, :n], plain[3]) and not keep[:, n:].any()
    assert (seg[:, n:] == -1).all()
    model = _fresh(tok)
    with torch.no_grad():
        a = K.score_batch_packed(model, enc, pad_multiple=1)
        b = K.score_batch_packed(model, enc, pad_multiple=64)
    for x, y in zip(_values(a), _values(b), strict=True):
        assert abs(x - y) <= 1e-5
    assert K.default_pad_multiple(torch.device("cpu")) == 1
    assert K.default_pad_multiple(torch.device("cuda", 0)) == 64
    real = sum(len(e.chosen_ids) + len(e.rejected_ids) - e.prefix_len for e in enc)
    assert K.padding_efficiency(enc, 1) == pytest.approx(real / (len(enc) * n))
    assert K.padding_efficiency(enc, 64) == pytest.approx(real / (len(enc) * ids.shape[1]))
    with pytest.raises(ValueError, match="pad_multiple"):
        K.pack_pairs(enc, 0, pad_multiple=0)


def test_segment_sums_are_ordered_float64_sums():
    logp = torch.tensor([-0.1, -1e-17, -2.5, -3.0, float("-inf"), -0.25], dtype=torch.float64)
    slot = torch.tensor([0, 0, 1, 1, 3, 0])
    sums, finite = K._segment_sums(logp, slot, 4)
    assert sums.tolist()[:3] == [(-0.1 + -1e-17) + -0.25, -2.5 + -3.0, 0.0]
    assert math.isinf(sums[3]) and finite.tolist() == [True, True, True, False]


def test_every_available_sdpa_backend_gives_the_math_scores(tok, enc):
    model = _fresh(tok)
    with torch.no_grad(), K.sdpa_backend("math"):
        ref = _values(K.score_batch(model, enc))
    ran = []
    for name in K.SDPA_BACKENDS:
        try:
            with torch.no_grad(), K.sdpa_backend(name):
                got = _values(K.score_batch(model, enc))
        except RuntimeError as err:  # this backend cannot run these shapes/masks on this machine
            assert "kernel" in str(err).lower() or "not" in str(err).lower(), err
            continue
        ran.append(name)
        for a, b in zip(got, ref, strict=True):
            assert abs(a - b) <= 1e-4, name
    assert {"auto", "math"} <= set(ran)
    print(f"SDPA backends that ran the packed mask on this machine: {ran}")
    with pytest.raises(ValueError, match="--sdpa-backend"):
        with K.sdpa_backend("fastest"):
            pass
