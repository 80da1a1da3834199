"""CHES in the scorer (Razin et al. 2024, arXiv 2410.08847; PAPER §6): hidden-state sums from the scoring pass.

Invariants: on a hand-worked model (hidden state = a fixed embedding of the input token) the row's CHES is the
number worked out by hand from the definition, which fixes the positions (last prompt token … the token before the
response's last); on a toy Llama every prefix mode equals CHES computed independently from the decoder's output;
asking for hidden sums leaves every log-prob bit for bit unchanged; a model scored through its own forward (a
wrapper) has no CHES (None, not a made-up number).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dpocheck.llm.data.types import PreferencePair
from dpocheck.llm.models import toy_model, toy_tokenizer
from dpocheck.llm.scoring.encode import EncodedPair, encode_pair
from dpocheck.llm.scoring.hidden import ches_fields, segment_vector_sums
from dpocheck.llm.scoring.kernels import score_batch
from dpocheck.llm.scoring.runner import score_pairs
from dpocheck.llm.scoring.settings import ROW_KEYS, ScoreSettings
from dpocheck.theory import centered_hidden_embedding_similarity


class _EmbeddingDecoder(torch.nn.Module):
    """A 'decoder' whose hidden state at each position is a fixed 2-d embedding of the token there."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.embed = torch.nn.Embedding.from_pretrained(table, freeze=True)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        return (self.embed(input_ids),)


class _HandModel(torch.nn.Module):
    """decoder + a linear head, exposed the way a Hugging Face causal LM exposes them."""

    def __init__(self, table: torch.Tensor, vocab: int):
        super().__init__()
        self.decoder = _EmbeddingDecoder(table)
        self.head = torch.nn.Linear(table.shape[1], vocab, bias=False, dtype=torch.float64)
        torch.nn.init.normal_(self.head.weight, generator=torch.Generator().manual_seed(0))
        self.config = SimpleNamespace(vocab_size=vocab)

    def get_decoder(self):
        return self.decoder

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, **kwargs):
        return SimpleNamespace(logits=self.head(self.decoder(input_ids)[0]))


@pytest.mark.parametrize("mode", ["packed", "none"])
def test_ches_by_hand(mode):
    """Prompt [1, 2], y_w = [3, 4], y_l = [5]. The states predicting y_w's tokens sit at the prompt's last token (2)
    and at 3 (4, the last, predicts nothing): h(2) = (1, 2), h(3) = (3, −1), Σ_w = (4, 1); y_l's one token is
    predicted from 2: Σ_l = (1, 2). CHES = ⟨(4, 1), (1, 2)⟩ − ‖(4, 1)‖² = 6 − 17 = −11. Means: (2, ½) and (1, 2):
    2 + 1 − (4 + ¼) = −1.25."""
    table = torch.zeros((6, 2), dtype=torch.float64)
    table[2], table[3], table[4], table[5] = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0]), 100.0, -100.0
    model = _HandModel(table, vocab=6)
    pair = EncodedPair(0, (1, 2, 3, 4), (1, 2, 5), 2, 2, 2, False, False)
    chosen, rejected = score_batch(model, [pair], 0, mode, hidden_sums=True)
    assert chosen.hidden_sum.tolist() == [4.0, 1.0] and rejected.hidden_sum.tolist() == [1.0, 2.0]
    assert ches_fields(chosen, rejected) == {"ches_sum": -11.0, "ches_mean": -1.25}


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return toy_model(tok, seed=0)


WORDS = "the capital of France is Paris sure here a short poem about sea waves roll in out dog fox".split()


def _pairs(n: int) -> list[PreferencePair]:
    out = []
    for i in range(n):
        prompt = f"Question: {' '.join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(2 + i % 5))}?"
        chosen = " " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 4)) + "."
        rejected = " " + " ".join(WORDS[(2 * i + j + 5) % len(WORDS)] for j in range(1 + (i * 5) % 6)) + "!"
        out.append(PreferencePair(i, prompt, chosen, rejected))
    return out


def _independent_ches(model, tok, pair) -> tuple[float, float]:
    """CHES from the decoder's output of each full sequence on its own (no mask, no cache, no packing)."""
    e = encode_pair(tok, pair, use_chat_template=True, max_length=1024)
    sums = []
    for ids, start in ((e.chosen_ids, e.chosen_start), (e.rejected_ids, e.rejected_start)):
        with torch.no_grad():
            h = model.get_decoder()(input_ids=torch.tensor([list(ids)]))[0][0].double().numpy()
        sums.append((h[start - 1 : len(ids) - 1].sum(0), len(ids) - start))
    (hw, nw), (hl, nl) = sums
    return float(centered_hidden_embedding_similarity(hw, hl)), float(
        centered_hidden_embedding_similarity(hw / nw, hl / nl)
    )


@pytest.mark.parametrize("mode", ["packed", "cache", "none"])
def test_every_prefix_mode_equals_the_independent_ches(tok, model, mode):
    pairs = _pairs(7)
    rows, skipped = score_pairs(model, tok, pairs, ScoreSettings(prefix_mode=mode))
    assert not skipped and all(tuple(r) == ROW_KEYS for r in rows)
    for pair, row in zip(pairs, rows, strict=True):
        want_sum, want_mean = _independent_ches(model, tok, pair)
        assert row["ches_sum"] == pytest.approx(want_sum, rel=1e-4, abs=1e-3)
        assert row["ches_mean"] == pytest.approx(want_mean, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("mode", ["packed", "cache", "none"])
def test_hidden_sums_leave_the_log_probs_bit_identical(tok, model, mode):
    enc = [encode_pair(tok, p, use_chat_template=True) for p in _pairs(9)]
    with torch.inference_mode():
        plain = score_batch(model, enc, tok.pad_token_id, mode)
        with_h = score_batch(model, enc, tok.pad_token_id, mode, hidden_sums=True)
    assert [(s.logp_sum, s.tokens, s.finite) for s in plain] == [(s.logp_sum, s.tokens, s.finite) for s in with_h]
    assert all(s.hidden_sum is None for s in plain)
    assert all(s.hidden_sum.dtype == np.float64 and s.hidden_sum.shape == (32,) for s in with_h)


def test_a_model_scored_through_its_own_forward_has_no_ches(tok, model):
    class Wrapper(torch.nn.Module):  # hides get_decoder / get_output_embeddings, like DistributedDataParallel
        def __init__(self, inner):
            super().__init__()
            self.module = inner
            self.config = inner.config

        def forward(self, **kwargs):
            return self.module(**kwargs)

    rows, _ = score_pairs(Wrapper(model), tok, _pairs(3), ScoreSettings())
    direct, _ = score_pairs(model, tok, _pairs(3), ScoreSettings())
    assert all(r["ches_sum"] is None and r["ches_mean"] is None for r in rows)
    for a, b in zip(rows, direct, strict=True):
        assert a["chosen_logp_sum"] == pytest.approx(b["chosen_logp_sum"], abs=1e-4)


def test_both_segment_sum_paths_agree():
    """The CPU path (index_add_) and the CUDA path (one-hot matmul, forced here) give the same float64 sums, chunked
    or not; slots without rows stay zero."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(50, 3, generator=gen)
    slot = torch.sort(torch.randint(0, 7, (50,), generator=gen)).values
    want = torch.zeros(9, 3, dtype=torch.float64).index_add_(0, slot, x.double())
    for dense in (False, True):
        for chunk in (4, 2048):
            got = segment_vector_sums(x, slot, 9, chunk, dense=dense)
            assert got.dtype == torch.float64 and torch.allclose(got, want, rtol=0, atol=1e-12)
